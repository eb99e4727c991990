/// The hypervisor's lifecycle, as the host sees it in HELLO: `notFinalized → finalized → stopping`.
public enum LifecycleState: UInt32, Sendable, Codable, CustomStringConvertible {
    case notFinalized = 0
    case finalized = 1
    case stopping = 2

    public var description: String {
        switch self {
        case .notFinalized: "not finalized"
        case .finalized: "finalized"
        case .stopping: "stopping"
        }
    }
}

/// The lifecycle state machine. Events return what should happen; `Hypervisor` does it.
struct Lifecycle {
    private(set) var state: LifecycleState = .notFinalized

    init(state: LifecycleState = .notFinalized) { self.state = state }

    enum FinalizeAction: Equatable {
        /// Take the SMMUs now (pKVM's finalize_pkvm() at device_initcall_sync).
        case takeOwnership
        /// Already done: FINALIZE is idempotent.
        case nothing
        /// Stopping: too late to finalize.
        case refuse
    }

    mutating func finalize() -> FinalizeAction {
        switch state {
        case .notFinalized:
            state = .finalized
            return .takeOwnership
        case .finalized: return .nothing
        case .stopping: return .refuse
        }
    }

    enum HostFinalizeAction: Equatable {
        /// The host's own pKVM finalization: take the SMMUs now.
        case takeOwnership
        /// Refused and audited: the configuration does not let the host finalize, or it already did.
        case refuse(TrapRule)
        /// Stopping: too late to finalize.
        case stopping
    }

    /// The host's PROT_FINALIZE (pKVM's `__pkvm_prot_finalize`): allowed once, before finalization, and only where
    /// the configuration makes the host's finalization the one that counts. As pKVM answers -EPERM to a second
    /// call, a repeat is refused, not ignored.
    mutating func hostFinalize(permitted: Bool) -> HostFinalizeAction {
        switch state {
        case .stopping: return .stopping
        case _ where !permitted: return .refuse(.finalizeNotHost)
        case .finalized: return .refuse(.finalizeRepeated)
        case .notFinalized:
            state = .finalized
            return .takeOwnership
        }
    }

    mutating func stop() { state = .stopping }

    /// G1: until finalization no host access may reach an SMMU.
    var servesHostAccesses: Bool { state != .notFinalized }
}
