import PKVM

/// Who finalized pKVM, for the log and STATS: the configured delay, the operator, or the host's own finalization.
public enum Finalizer: Sendable, Equatable, CustomStringConvertible {
    /// `finalization.mode: delay`.
    case timer
    /// An admin FINALIZE.
    case admin(ClientIdentity)
    /// The host's PROT_FINALIZE (`finalization.mode: host`): a guest kernel's `finalize_pkvm()` under QEMU.
    case host(ClientIdentity)

    public var description: String {
        switch self {
        case .timer: "the finalization delay"
        case .admin(let c): "an admin FINALIZE from \(c.name) (pid \(c.pid))"
        case .host(let c): "the host's PROT_FINALIZE from \(c.name) (pid \(c.pid))"
        }
    }

    /// STATS' `finalized_by`.
    var statistics: [String: Any] {
        switch self {
        case .timer: ["by": "timer"]
        case .admin: ["by": "admin"]   // the operator's identity is not a host's business
        case .host(let c): ["by": "host", "client": c.name, "pid": Int(c.pid)]
        }
    }
}

/// The three ways to finalize meet here, so READY=1 and the epoch's events follow from one completion.
extension Dispatcher {
    /// Runs pKVM finalization (the delay timer or an admin FINALIZE) and tells the daemon once it is done.
    /// Returns false when stopping.
    @discardableResult
    public func finalize(by finalizer: Finalizer = .timer) -> Bool {
        let before = hypervisor.lifecycle
        guard hypervisor.finalize() else { return false }
        if before == .notFinalized { completeFinalization(by: finalizer) }
        return true
    }

    /// PROT_FINALIZE: the host finalizes, once, where the configuration grants it (the hypervisor decides and
    /// audits a refusal).
    func hostFinalize(client: ClientIdentity) -> Outcome<Void> {
        let outcome = hypervisor.hostFinalize(client: client)
        if case .ok = outcome { completeFinalization(by: .host(client)) }
        return outcome
    }

    private func completeFinalization(by finalizer: Finalizer) {
        finalizedBy = finalizer
        trace?.finalized()   // a record only for the timer: FINALIZE and PROT_FINALIZE are exchanges of their own
        onFinalized?()
        events.publishChanges(to: server)
    }
}
