// The seam between the socket server (bytes, fds, connections) and the protocol (frames, sessions).
// The server owns every Session and calls it only on its serial queue, so sessions need no locks.

/// The peer's credentials, taken with SO_PEERCRED when the connection is accepted (roles are checked against them).
public struct PeerCredentials: Sendable, Equatable {
    public var pid: Int32
    public var uid: UInt32
    public var gid: UInt32
    public init(pid: Int32, uid: UInt32, gid: UInt32) {
        self.pid = pid
        self.uid = uid
        self.gid = gid
    }
}

/// Names one accepted connection for the life of the server (never reused).
public struct ConnectionID: Hashable, Sendable, CustomStringConvertible {
    public let rawValue: UInt64
    public init(rawValue: UInt64) { self.rawValue = rawValue }
    public var description: String { "#\(rawValue)" }
}

/// What a session wants done with its connection after it handled some input.
public enum SessionVerdict: Sendable, Equatable {
    case keepOpen
    /// Write what is pending, then close (a framing error, for instance).
    case closeAfterFlush
}

/// One connection's protocol state; called only on the server queue.
public protocol Session: AnyObject {
    /// Consume `input` (all of it, keeping partial frames internally) plus any fds that arrived with it
    /// (take ownership of those you keep, leave the rest in `fds` for the server to close); append responses to `output`.
    func receive(_ input: UnsafeRawBufferPointer, fds: inout [Int32], output: inout [UInt8]) -> SessionVerdict
    /// The connection is gone (peer closed, error, or shutdown).
    func closed()
    /// True when the session no longer wants requests read (EVENTS mode): the server stops reading but keeps writing.
    var wantsInput: Bool { get }
    /// True once the peer has been greeted (a HELLO accepted). Until then the connection costs a descriptor and
    /// serves nobody: the server closes it at the HELLO deadline, and first when the connection cap is reached.
    var isGreeted: Bool { get }
    /// True when the session holds complete requests it has not answered yet, because answering them now
    /// would push `output` past `outputLimit` (frame-level back-pressure for large responses such as DUMP).
    var hasPendingInput: Bool { get }
    /// Called when the connection's output has drained below half its bound while `hasPendingInput`:
    /// answer more of the held requests, appending to `output` (which holds only unsent bytes).
    func resumeInput(output: inout [UInt8]) -> SessionVerdict
    /// The input received and not run yet (a partial frame, or requests held back), and the payload bytes of an
    /// unsupported frame still to skip: restart mode takes only whole frames off the socket (InputTake).
    func withUnconsumedInput<R>(_ body: (UnsafeRawBufferPointer, _ skip: Int) -> R) -> R
}

extension Session {
    public var hasPendingInput: Bool { false }
    public func resumeInput(output: inout [UInt8]) -> SessionVerdict { .keepOpen }
    public func withUnconsumedInput<R>(_ body: (UnsafeRawBufferPointer, _ skip: Int) -> R) -> R {
        body(UnsafeRawBufferPointer(start: nil, count: 0), 0)
    }
}

public protocol SessionFactory: AnyObject {
    func makeSession(connection: ConnectionID, peer: PeerCredentials, server: ServerHandle) -> Session
}

/// What the server did to keep connections bounded (G8), for STATS.
public struct ConnectionCounters: Sendable, Equatable {
    /// Connections accepted since start.
    public var accepted: UInt64 = 0
    /// Newcomers closed at once because the cap was reached and every open connection was greeted.
    public var refused: UInt64 = 0
    /// Un-greeted connections closed to make room for a newcomer (cap reached, or no descriptor left).
    public var evicted: UInt64 = 0
    /// Un-greeted connections closed at the HELLO deadline.
    public var helloTimeouts: UInt64 = 0
    /// Connections closed because all connections' unsent output passed its bound.
    public var closedForOutput: UInt64 = 0
    /// Events connections closed because their own unread events passed the per-connection hard limit.
    public var closedForUnreadEvents: UInt64 = 0
    public init() {}
}

/// What a session (or the dispatcher) may ask of the server, from the server queue: push unsolicited bytes (events),
/// read its counters.
public protocol ServerHandle: AnyObject {
    func send(_ bytes: [UInt8], to connection: ConnectionID)
    var connectionCounters: ConnectionCounters { get }
}

extension ServerHandle {
    public var connectionCounters: ConnectionCounters { ConnectionCounters() }
}
