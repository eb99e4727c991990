import CSocketShims
import Dispatch
import Foundation
#if canImport(Glibc)
    import Glibc
#endif

/// A datagram socket standing in for systemd's NOTIFY_SOCKET, so a test sees READY=1, STATUS= and STOPPING=1.
///
/// It answers as systemd does, from a thread of its own: every descriptor a datagram carries is closed once the
/// datagram is read. That is BARRIER=1's protocol (sd_notify_barrier sends a pipe's write end and waits for the
/// read end to see it closed), and FDSTORE=1 here is a store that keeps nothing (FileDescriptorStoreMax=0).
public final class NotifyReceiver: @unchecked Sendable {  // `received` and `barriers` under `lock`
    public let path: String
    public let fd: Int32
    private let lock = NSLock()
    private var datagrams: [String] = []
    private var barrierCount = 0
    private var stopped = false
    private let done = DispatchSemaphore(value: 0)

    public init(path: String) throws {
        self.path = path
        fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0, bindUnixSocket(fd, path) == 0 else { throw TestIOError("bind \(path)") }
        let thread = Thread { [self] in serve() }
        thread.start()
    }

    deinit {
        lock.withLock { stopped = true }
        done.wait()
        close(fd)
    }

    private func serve() {
        defer { done.signal() }
        var buffer = [UInt8](repeating: 0, count: 4096)
        var fds = [Int32](repeating: -1, count: 64)
        while !lock.withLock({ stopped }) {
            var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            guard poll(&pfd, 1, 20) == 1 else { continue }
            var count: Int32 = 0
            var truncated: Int32 = 0
            let n = csock_recv_with_fds(fd, &buffer, buffer.count, &fds, Int32(fds.count), &count, &truncated, Int32(MSG_DONTWAIT))
            for i in 0..<Int(max(0, min(count, Int32(fds.count)))) { close(fds[i]) }
            guard n > 0 else { continue }
            let text = String(decoding: buffer[0..<n], as: UTF8.self)
            lock.withLock {
                datagrams.append(text)
                if text.split(separator: "\n").contains("BARRIER=1") { barrierCount += 1 }
            }
        }
    }

    /// Every datagram so far.
    public var received: [String] { lock.withLock { datagrams } }
    /// BARRIER=1 datagrams answered so far.
    public var barriers: Int { lock.withLock { barrierCount } }

    /// Waits for a datagram containing `line` (e.g. "READY=1"); returns it, or nil after `seconds`.
    public func wait(for line: String, seconds: Double = 10) -> String? {
        let deadline = Date().addingTimeInterval(seconds)
        repeat {
            if let seen = received.first(where: { $0.split(separator: "\n").contains(Substring(line)) }) { return seen }
            usleep(10_000)
        } while Date() < deadline
        return nil
    }

    public var sawReady: Bool { received.contains { $0.split(separator: "\n").contains("READY=1") } }
}

/// bind() to the Unix socket path `path` (cut to what sockaddr_un holds).
public func bindUnixSocket(_ fd: Int32, _ path: String) -> Int32 {
    var addr = sockaddr_un()
    addr.sun_family = sa_family_t(AF_UNIX)
    withUnsafeMutableBytes(of: &addr.sun_path) { raw in
        let bytes = Array(path.utf8.prefix(raw.count - 1))
        raw.copyBytes(from: bytes)
        raw[bytes.count] = 0
    }
    return withUnsafePointer(to: &addr) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
    }
}
