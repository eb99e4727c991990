import Dispatch
import CSocketShims
import Foundation
import TestSupport
import Glibc
@testable import SMMUDaemon

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
