#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif
import CSocketShims
import POSIXCalls
import SystemPackage

/// A failed socket call: which call, and errno.
public struct SocketError: Error, Hashable, Sendable, CustomStringConvertible {
    public enum Call: String, Sendable { case socket, connect, send, recv, poll, close }
    public let call: Call
    public let errno: Errno
    public init(_ call: Call, errno: Errno) {
        self.call = call
        self.errno = errno
    }
    init(_ failure: SyscallFailure) {
        self.init(Call(rawValue: failure.call) ?? .close, errno: failure.errno)
    }
    public var description: String { "\(call.rawValue): \(errno) (errno \(errno.rawValue))" }
}

/// A connected AF_UNIX stream socket: the only place SMMUClient makes syscalls.
/// Sends use MSG_NOSIGNAL (a closed peer is an error, not SIGPIPE); waits use poll(2).
final class UnixStream {
    private(set) var fd: Int32

    init(fd: Int32) { self.fd = fd }

    /// Connects to the socket at `path` (at most 107 bytes).
    static func connect(path: String) throws(SMMUClientError) -> UnixStream {
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        let capacity = MemoryLayout.size(ofValue: addr.sun_path)
        guard !bytes.isEmpty, bytes.count < capacity else { throw .badSocketPath(path) }
        withUnsafeMutableBytes(of: &addr.sun_path) { raw in
            raw.copyBytes(from: bytes)
            raw[bytes.count] = 0
        }
        let fd: Int32
        do { fd = try syscall("socket") { socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0) } }
        catch { throw .socket(SocketError(error)) }
        do {
            // Not retried on EINTR: the connection goes on in the background, and a second connect() would fail.
            _ = try syscall("connect", retryOnInterrupt: false) {
                withUnsafePointer(to: &addr) {
                    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                        Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
                    }
                }
            }
        } catch {
            Glibc.close(fd)
            throw .socket(SocketError(error))
        }
        return UnixStream(fd: fd)
    }

    deinit { close() }

    func close() {
        if fd >= 0 {
            Glibc.close(fd)
            fd = -1
        }
    }

    /// What poll(2) reported. Hang-up and error count as readable: the next receive reports them.
    struct Readiness {
        var readable = false
        var writable = false
        var timedOut: Bool { !readable && !writable }
    }

    /// Waits until the socket is readable (or writable) or `timeout` passes; nil waits forever.
    func wait(readable: Bool, writable: Bool, timeout: Duration?) throws(SMMUClientError) -> Readiness {
        var events: Int16 = 0
        if readable { events |= Int16(POLLIN) }
        if writable { events |= Int16(POLLOUT) }
        var pfd = pollfd(fd: fd, events: events, revents: 0)
        let ms: Int32 = timeout.map { Int32(clamping: $0.components.seconds * 1000 + $0.components.attoseconds / 1_000_000_000_000_000) } ?? -1
        do { _ = try syscall("poll") { poll(&pfd, 1, ms) } } catch { throw .socket(SocketError(error)) }
        let r = pfd.revents
        return Readiness(readable: r & Int16(POLLIN | POLLHUP | POLLERR) != 0, writable: r & Int16(POLLOUT) != 0)
    }

    /// Sends what it can without blocking; returns the count (0 when the socket buffer is full).
    func sendSome(_ bytes: UnsafeRawBufferPointer, fds: [Int32] = []) throws(SMMUClientError) -> Int {
        guard fd >= 0 else { throw .closed }
        do {
            return try syscall("send") {
                fds.withUnsafeBufferPointer { fdp in
                    csock_send_with_fds(fd, bytes.baseAddress, bytes.count, fdp.baseAddress, Int32(fdp.count),
                        Int32(MSG_NOSIGNAL) | Int32(MSG_DONTWAIT))
                }
            }
        } catch where error.errno == .resourceTemporarilyUnavailable || error.errno == .wouldBlock {
            return 0
        } catch {
            throw .socket(SocketError(error))
        }
    }

    /// Sends every byte, blocking as needed (fds go with the first byte).
    func sendAll(_ bytes: UnsafeRawBufferPointer, fds: [Int32] = [], timeout: Duration?) throws(SMMUClientError) {
        var offset = 0
        var pending = fds
        while offset < bytes.count || !pending.isEmpty {
            let n = try sendSome(UnsafeRawBufferPointer(rebasing: bytes[offset...]), fds: pending)
            if n > 0 {
                offset += n
                pending = []
            } else if try wait(readable: false, writable: true, timeout: timeout).timedOut {
                throw .timedOut
            }
        }
    }

    /// Receives what is available without blocking: the count, 0 if nothing yet, nil at end of stream.
    func receiveSome(into space: UnsafeMutableRawBufferPointer) throws(SMMUClientError) -> Int? {
        guard fd >= 0 else { throw .closed }
        do {
            let n = try syscall("recv", retryOnInterrupt: false) { recv(fd, space.baseAddress, space.count, Int32(MSG_DONTWAIT)) }
            return n > 0 ? n : nil
        } catch {
            switch error.errno {
            case .resourceTemporarilyUnavailable, .wouldBlock, .interrupted: return 0
            case .connectionReset: return nil
            default: throw .socket(SocketError(error))
            }
        }
    }
}
