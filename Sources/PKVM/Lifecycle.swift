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

    mutating func stop() { state = .stopping }

    /// G1: until finalization no host access may reach an SMMU.
    var servesHostAccesses: Bool { state != .notFinalized }
}
