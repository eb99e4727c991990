import Foundation
#if canImport(Glibc)
    import Glibc
#endif

/// Where the tests find the smmu-hypd binary.
public enum DaemonBinary {
    /// The one built beside the test bundle (the daemon's own tests: always this build's).
    public static let besideTests: String = {
        let exe = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        var dir = URL(fileURLWithPath: exe).deletingLastPathComponent()
        for _ in 0..<4 {
            let candidate = dir.appendingPathComponent("smmu-hypd").path
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
            dir.deleteLastPathComponent()
        }
        return "smmu-hypd"
    }()

    /// $SMMU_HYPD_BIN, relative to the repository root unless absolute (the client's tests against a real daemon).
    public static var fromEnvironment: String {
        let binary = ProcessInfo.processInfo.environment["SMMU_HYPD_BIN"] ?? ""
        return binary.hasPrefix("/") ? binary : repositoryRoot + "/" + binary
    }
}

/// smmu-hypd running as a child on a socket in a temporary directory: the real-daemon spawner of every test target.
/// The daemon inherits none of the socket-activation or watchdog variables unless `environment` names them.
open class DaemonChild {
    public let directory: TemporaryDirectory
    public let socketPath: String
    public let process = Process()
    public let started = Date()
    private let stderrPipe: Pipe?

    /// - Parameters:
    ///   - arguments: extra command-line arguments (after `--config` and `--socket`).
    ///   - launcher: a command to start the daemon through (e.g. systemd-socket-activate), or none.
    ///   - captureStandardError: keep the daemon's stderr for `standardError()`; else it is inherited (a long-lived
    ///     daemon that nobody reads must not fill a pipe).
    public init(
        binary: String, directory: TemporaryDirectory, config: String = repositoryRoot + "/Config/tegra234.yaml",
        socketPath: String? = nil, arguments: [String] = [], launcher: [String] = [], environment: [String: String] = [:],
        captureStandardError: Bool = true
    ) throws {
        self.directory = directory
        self.socketPath = socketPath ?? directory.path + "/smmu-hypd.sock"
        let command = launcher + [binary, "--config", config, "--socket", self.socketPath] + arguments
        process.executableURL = URL(fileURLWithPath: command[0])
        process.arguments = Array(command.dropFirst())
        var env = ProcessInfo.processInfo.environment
        for (k, v) in environment { env[k] = v }
        for key in ["LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES", "WATCHDOG_USEC", "WATCHDOG_PID"] where environment[key] == nil {
            env[key] = nil
        }
        process.environment = env
        stderrPipe = captureStandardError ? Pipe() : nil
        if let stderrPipe { process.standardError = stderrPipe }
        process.standardOutput = FileHandle.nullDevice
        try process.run()
    }

    deinit {
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
        directory.remove()
    }

    /// Sends a signal and waits for the exit; returns the exit status (nil on timeout).
    @discardableResult
    public func stop(signal: Int32 = SIGTERM, seconds: Double = 10) -> Int32? {
        if process.isRunning { kill(process.processIdentifier, signal) }
        return waitForExit(seconds: seconds)
    }

    public func waitForExit(seconds: Double = 10) -> Int32? {
        guard eventually(seconds: seconds, { !process.isRunning }) else { return nil }
        return process.terminationStatus
    }

    /// Everything the daemon wrote to stderr (after it exited); empty unless captured.
    public func standardError() -> String {
        guard let stderrPipe else { return "" }
        return String(decoding: stderrPipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    }
}
