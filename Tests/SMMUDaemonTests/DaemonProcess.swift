import Dispatch
import CSocketShims
import Foundation
import TestSupport
import Glibc
@testable import SMMUDaemon

/// A datagram socket standing in for systemd's NOTIFY_SOCKET, so a test sees READY=1, STATUS= and STOPPING=1.
///
/// It answers as systemd does, from a thread of its own: every descriptor a datagram carries is closed once the
/// datagram is read. That is BARRIER=1's protocol (sd_notify_barrier sends a pipe's write end and waits for the
/// read end to see it closed), and FDSTORE=1 here is a store that keeps nothing (FileDescriptorStoreMax=0).
final class NotifyReceiver: @unchecked Sendable {  // `received` and `barriers` under `lock`
    let path: String
    let fd: Int32
    private let lock = NSLock()
    private var datagrams: [String] = []
    private var barrierCount = 0
    private var stopped = false
    private let done = DispatchSemaphore(value: 0)

    init(path: String) throws {
        self.path = path
        fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0, ListeningSocket.withAddress(path, { bind(fd, $0, $1) }) == 0 else { throw TestIOError("bind \(path)") }
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
    var received: [String] { lock.withLock { datagrams } }
    /// BARRIER=1 datagrams answered so far.
    var barriers: Int { lock.withLock { barrierCount } }

    /// Waits for a datagram containing `line` (e.g. "READY=1"); returns it, or nil after `seconds`.
    func wait(for line: String, seconds: Double = 10) -> String? {
        let deadline = Date().addingTimeInterval(seconds)
        repeat {
            if let seen = received.first(where: { $0.split(separator: "\n").contains(Substring(line)) }) { return seen }
            usleep(10_000)
        } while Date() < deadline
        return nil
    }

    var sawReady: Bool { received.contains { $0.split(separator: "\n").contains("READY=1") } }
}

/// smmu-hypd (this build's) running as a child with a temporary socket and its own NOTIFY_SOCKET.
final class DaemonProcess: DaemonChild {
    let notify: NotifyReceiver

    /// - Parameters:
    ///   - arguments: extra command-line arguments (after `--config` and `--socket`).
    ///   - launcher: a program to start the daemon through, given the notify socket path
    ///     (e.g. systemd-socket-activate, which passes on only the variables named with -E).
    init(arguments: [String] = [], config: String = repositoryRoot + "/Config/tegra234.yaml",
         launcher: (_ notifySocket: String) -> [String] = { _ in [] }, socketPath: String? = nil, environment: [String: String] = [:]) throws {
        let directory = try TemporaryDirectory()
        notify = try NotifyReceiver(path: directory.path + "/notify.sock")
        try super.init(
            binary: DaemonBinary.besideTests, directory: directory, config: config, socketPath: socketPath, arguments: arguments,
            launcher: launcher(notify.path), environment: ["NOTIFY_SOCKET": notify.path].merging(environment) { $1 })
    }

    /// Connects once the socket accepts.
    func connect(seconds: Double = 10) throws -> TestClient {
        var client: TestClient?
        _ = eventually(seconds: seconds) {
            client = try? TestClient(path: socketPath)
            return client != nil
        }
        guard let client else { throw TestIOError("daemon socket \(socketPath) never accepted", errno: 0) }
        return client
    }
}

/// Protocol v1 frames, built by hand from the protocol page (the daemon tests do not trust the codec under test).
enum Frame {
    static func request(_ opcode: UInt8, tag: UInt32, payload: [UInt8] = []) -> [UInt8] {
        le(UInt64(0x4D53), 2) + [1, opcode] + le(UInt64(tag), 4) + le(0, 4) + le(UInt64(payload.count), 4) + payload
    }

    static func hello(role: UInt32, name: String, tag: UInt32 = 1) -> [UInt8] {
        request(0x01, tag: tag, payload: le(UInt64(role), 4) + le(0, 4) + Array(name.utf8))
    }

    static func read(address: UInt64, tag: UInt32) -> [UInt8] {
        request(0x02, tag: tag, payload: le(address, 8) + le(4, 4) + le(0, 4))
    }

    static func le(_ value: UInt64, _ bytes: Int) -> [UInt8] { (0..<bytes).map { UInt8((value >> (8 * UInt64($0))) & 0xFF) } }

    /// Reads one response: (opcode, tag, status, payload).
    static func response(from client: TestClient) throws -> (opcode: UInt8, tag: UInt32, status: UInt32, payload: [UInt8]) {
        let header = try client.read(exactly: 16)
        func u32(_ at: Int) -> UInt32 { (0..<4).reduce(0) { $0 | UInt32(header[at + $1]) << (8 * UInt32($1)) } }
        let payload = try client.read(exactly: Int(u32(12)))
        return (header[3], u32(4), u32(8), payload)
    }
}
