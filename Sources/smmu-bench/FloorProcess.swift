import Foundation
import Glibc
import SMMUClient

/// The echo floor in a process of its own (`smmu-bench --serve-floor PATH`), so that it and the daemon sit
/// the same distance from the client: another process, reached over the same kind of socket.
final class FloorProcess {
    let path: String
    private let process = Process()

    init(executable: String, path: String) throws(BenchError) {
        self.path = path
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = ["--serve-floor", path]
        do { try process.run() } catch { throw .unexpected("cannot start the floor (\(executable)): \(error)") }
    }

    /// Connects once the floor listens.
    func connect(timeout: Double = 10) throws(BenchError) -> SMMUClient {
        try connectWhenListening(path: path, server: process, name: "the floor", timeout: timeout)
    }

    func stop() {
        guard process.isRunning else { return }
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
    }

    deinit { stop() }
}

/// Connects to `path` once `server` listens on it, within `timeout` seconds; fails at once if it exited.
func connectWhenListening(path: String, server: Process, name: String, timeout: Double) throws(BenchError) -> SMMUClient {
    let deadline = monotonicNanoseconds() + UInt64(timeout * 1e9)
    while true {
        do { return try SMMUClient(path: path, timeout: .seconds(30)) } catch {
            guard server.isRunning else { throw .unexpected("\(name) exited (\(server.terminationStatus))") }
            if monotonicNanoseconds() > deadline { throw .client("connecting to \(path)", error) }
            usleep(10_000)
        }
    }
}
