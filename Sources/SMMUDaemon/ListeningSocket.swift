import Glibc
import POSIXCalls
import SystemPackage

/// Why the daemon could not get its listening socket.
public enum SocketError: Error, Equatable, CustomStringConvertible {
    case pathTooLong(String)
    case inUse(String)
    case notASocket(String)
    /// A call on `path` failed.
    case system(SyscallFailure, path: String)

    public var description: String {
        switch self {
        case .pathTooLong(let p): "socket path too long for sockaddr_un (max 107 bytes): \(p)"
        case .inUse(let p): "socket \(p) is in use by a running server (connect succeeded); refusing to start"
        case .notASocket(let p): "\(p) exists and is not a socket; refusing to replace it"
        case .system(let failure, let p): "\(failure.call)(\(p)): \(failure.errno)"
        }
    }
}

/// A listening AF_UNIX SOCK_STREAM socket, non-blocking and close-on-exec: bound by the daemon
/// (then `path` is set and the file is removed at shutdown) or adopted from socket activation.
public struct ListeningSocket: Sendable {
    public let fd: Int32
    /// The path the daemon bound, or nil for an adopted socket (systemd owns its file).
    public let path: String?

    /// Adopts a socket passed by systemd (already listening).
    public static func adopt(fd: Int32) -> ListeningSocket {
        _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
        _ = fcntl(fd, F_SETFD, fcntl(fd, F_GETFD) | FD_CLOEXEC)
        return ListeningSocket(fd: fd, path: nil)
    }

    /// Binds and listens at `path` with file mode `mode` (applied with chmod after bind, so the umask does not
    /// narrow it). A stale socket file (nobody accepts: connect fails with ECONNREFUSED) is replaced;
    /// a live one is refused. A missing parent directory is created (0755).
    public static func bind(path: String, mode: UInt32, backlog: Int32 = 128) throws(SocketError) -> ListeningSocket {
        guard path.utf8.count < MemoryLayout.size(ofValue: sockaddr_un().sun_path) else { throw .pathTooLong(path) }
        makeParentDirectory(of: path)
        let fd = try call("socket", on: path) {
            socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
        }
        do throws(SocketError) {
            try bindReplacingStale(fd: fd, path: path)
            _ = try call("chmod", on: path) { chmod(path, mode_t(mode)) }
            _ = try call("listen", on: path) { listen(fd, backlog) }
        } catch {
            close(fd)
            throw error
        }
        return ListeningSocket(fd: fd, path: path)
    }

    private static func bindReplacingStale(fd: Int32, path: String) throws(SocketError) {
        for _ in 0..<3 {
            do throws(SyscallFailure) {
                _ = try syscall("bind") { withAddress(path, { Glibc.bind(fd, $0, $1) }) }
                return
            } catch where error.errno != .addressInUse {
                throw .system(error, path: path)
            } catch {}
            var st = stat()
            guard lstat(path, &st) == 0 else { continue }  // vanished meanwhile: retry
            guard (st.st_mode & S_IFMT) == S_IFSOCK else { throw .notASocket(path) }
            switch probe(path) {
            case 0: throw .inUse(path)
            case ECONNREFUSED: unlink(path)
            case ENOENT: continue
            case let e: throw .system(SyscallFailure("connect", errno: Errno(rawValue: e)), path: path)
            }
        }
        throw .system(SyscallFailure("bind", errno: .addressInUse), path: path)
    }

    /// `syscall` with the failure named by the socket path.
    private static func call(_ name: String, on path: String, _ body: () -> Int32) throws(SocketError) -> Int32 {
        do { return try syscall(name, body) } catch { throw .system(error, path: path) }
    }

    /// connect() to `path`: 0 when a server accepts there, else the errno.
    static func probe(_ path: String) -> Int32 {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return errno }
        defer { close(fd) }
        return withAddress(path, { connect(fd, $0, $1) }) == 0 ? 0 : errno
    }

    static func withAddress(_ path: String, _ body: (UnsafePointer<sockaddr>, socklen_t) -> Int32) -> Int32 {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            let bytes = Array(path.utf8.prefix(raw.count - 1))
            raw.copyBytes(from: bytes)
            raw[bytes.count] = 0
        }
        return withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { body($0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
    }

    private static func makeParentDirectory(of path: String) {
        let bytes = Array(path.utf8)
        for i in bytes.indices where i > 0 && bytes[i] == UInt8(ascii: "/") {
            _ = mkdir(String(decoding: bytes[..<i], as: UTF8.self), 0o755)
        }
    }
}
