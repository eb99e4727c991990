import Dispatch

/// The numbers systemd's STATUS= line shows.
public struct DaemonStatus: Sendable, Equatable {
    /// "not finalized", "finalized" or "stopping".
    public var state: String
    public var operations: UInt64
    public var denials: UInt64
    public init(state: String, operations: UInt64, denials: UInt64) {
        self.state = state
        self.operations = operations
        self.denials = denials
    }
}

/// Where the daemon gets its STATUS= numbers.
public protocol StatusSource: AnyObject {
    func status() -> DaemonStatus
}

/// What the daemon's lifecycle glue needs from the hypervisor side (the request dispatcher implements it).
/// Every call happens on the server queue.
public protocol DaemonCore: StatusSource {
    /// Makes the session of each accepted connection.
    var sessionFactory: SessionFactory { get }
    /// Runs pKVM finalization now (the configured delay has passed). Returns true once finalized, also when it
    /// already was. READY=1 is sent only after this returns true, or after `onFinalized` is called.
    func finalize() -> Bool
    /// Set by the daemon: call it when finalization completes by another path (an admin FINALIZE).
    var onFinalized: (() -> Void)? { get set }
    /// SIGTERM or SIGINT: from now on answer new requests SHUTTING_DOWN; the server stops reading next.
    func beginStopping()
}

/// What the daemon hands the core when building it.
public struct DaemonServices {
    public let configuration: DaemonConfiguration
    /// The serial queue that owns the server, the sessions, the core and the audit sink.
    public let queue: DispatchQueue
    /// Where denials go (journald, coalesced).
    public let audit: JournalAuditSink
}
