import WireProtocol

/// Why a client call failed. A non-OK status from the daemon is ``status(_:)``; the rest are local.
public enum SMMUClientError: Error, Hashable, Sendable, CustomStringConvertible {
    /// The daemon answered with this status (DENIED, DEFERRED, BAD_ADDRESS, ...).
    case status(Status)
    /// A socket call failed.
    case socket(SocketError)
    /// The daemon closed the connection.
    case closed
    /// No answer within the client's timeout.
    case timedOut
    /// The socket path does not fit a sockaddr_un.
    case badSocketPath(String)
    /// The daemon sent something protocol v1 does not allow (wrong tag, size, opcode...).
    case protocolViolation(String)
    /// The request itself cannot be encoded (e.g. a HELLO name over 64 bytes, a MEM_READ over 65520).
    case invalidArgument(String)

    public var description: String {
        switch self {
        case .status(let s): "daemon answered \(s)"
        case .socket(let e): "socket error: \(e)"
        case .closed: "connection closed by the daemon"
        case .timedOut: "timed out waiting for the daemon"
        case .badSocketPath(let p): "socket path too long or empty: \(p)"
        case .protocolViolation(let r): "protocol violation: \(r)"
        case .invalidArgument(let r): "invalid argument: \(r)"
        }
    }
}
