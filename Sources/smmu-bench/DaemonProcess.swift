import Foundation
import Glibc
import SMMUClient

/// The daemon under test: `smmu-hypd` started on a private socket with immediate finalization,
/// its output kept in a log file beside the socket, stopped with SIGTERM at the end.
final class DaemonProcess {
    let socketPath: String
    let logPath: String
    private let process = Process()

    /// `notify`: a NOTIFY_SOCKET (TestSupport's NotifyReceiver, answering BARRIER=1 as systemd does) to run in restart mode (`--fd-store`); nil: outside it.
    init(executable: String, config: String, directory: String, notify: String? = nil) throws(BenchError) {
        socketPath = directory + "/smmu-hypd.sock"
        logPath = directory + "/smmu-hypd.log"
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = ["--config", config, "--socket", socketPath, "--finalize-delay", "0"]
            + (notify == nil ? [] : ["--fd-store"])
        var environment = ProcessInfo.processInfo.environment
        environment["NOTIFY_SOCKET"] = notify
        environment["FDSTORE"] = nil
        environment["LISTEN_FDS"] = nil
        environment["LISTEN_PID"] = nil
        process.environment = environment
        FileManager.default.createFile(atPath: logPath, contents: nil)
        guard let log = FileHandle(forWritingAtPath: logPath) else { throw .unexpected("cannot open \(logPath)") }
        process.standardOutput = log
        process.standardError = log
        do { try process.run() } catch { throw .unexpected("cannot start \(executable): \(error)") }
    }

    var pid: Int32 { process.processIdentifier }

    /// Connects once the socket accepts, within `timeout` seconds.
    func connect(timeout: Double = 20) throws(BenchError) -> SMMUClient {
        try connectWhenListening(path: socketPath, server: process, name: "smmu-hypd (log: \(logPath))", timeout: timeout)
    }

    /// VmRSS from /proc/PID/status, in bytes.
    func residentBytes() -> Int? {
        guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return nil }
        for line in status.split(separator: "\n") where line.hasPrefix("VmRSS:") {
            let kb = line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first.flatMap { Int($0) }
            return kb.map { $0 * 1024 }
        }
        return nil
    }

    /// SIGTERM, then SIGKILL if it has not exited within 5 s. Returns the exit status.
    @discardableResult
    func stop() -> Int32 {
        guard process.isRunning else { return process.terminationStatus }
        kill(pid, SIGTERM)
        let deadline = monotonicNanoseconds() + 5_000_000_000
        while process.isRunning && monotonicNanoseconds() < deadline { usleep(10_000) }
        if process.isRunning { kill(pid, SIGKILL) }
        process.waitUntilExit()
        return process.terminationStatus
    }

    deinit { stop() }
}
