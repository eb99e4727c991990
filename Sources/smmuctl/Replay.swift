import ArgumentParser
import Foundation
import SMMUClient
import WireProtocol

#if canImport(Glibc)
    import Glibc
#endif

/// `smmuctl replay TRACE`: the trace's requests against a fresh daemon, every answer compared (docs/trace-format.md).
/// Exit 0 identical, 1 at the first divergence (printed), 2 a bad trace, bad usage, or a daemon that cannot be run.
struct Replay: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Replay a recorded trace against a fresh daemon and report the first divergence.",
        discussion: """
            By default starts smmu-hypd under the configuration the trace recorded (its header), on a private socket, \
            with manual finalization and no trace of its own. --config runs it under FILE instead, which must be the \
            same configuration (--any-config to skip that check). --socket replays against a running daemon, which \
            must be in the state the trace began in, with manual finalization. Replay connects as every recorded \
            role: run it as a user the daemon allows every role (root).
            Exit status: 0 identical, 1 divergence, 2 bad trace or usage.
            """)

    @Argument(help: "The trace file.") var trace: String
    @Option(help: "Replay against the daemon on this socket (it must be fresh).") var socket: String?
    @Option(help: "Start the daemon with this configuration file.") var config: String?
    @Flag(help: "With --config: replay even when FILE is not the configuration the trace recorded.") var anyConfig = false
    @Option(help: "The smmu-hypd binary (default: $SMMU_HYPD_BIN, else the one beside smmuctl).") var daemon: String?
    @Option(help: "Seconds to wait for each answer.") var timeout: Int = 10

    func run() throws {
        guard let data = FileManager.default.contents(atPath: trace) else { fail("cannot read \(trace)") }
        let bytes = [UInt8](data)
        let header: TraceHeader, records: [TraceRecord]
        do { (header, records) = try TraceReplayer.load(bytes) } catch { fail("\(trace): \(error)") }
        if socket != nil && config != nil { fail("--socket and --config exclude each other") }

        var spawned: ReplayDaemon?
        let path: String
        if let socket {
            path = socket
        } else {
            var text = header.configuration
            if let config {
                guard let file = FileManager.default.contents(atPath: config) else { fail("cannot read \(config)") }
                text = [UInt8](file)
                if TraceFormat.fingerprint(text) != header.fingerprint && !anyConfig {
                    fail("\(config) is not the configuration \(trace) was recorded under (fingerprint "
                         + "\(hex(TraceFormat.fingerprint(text))), the trace's \(hex(header.fingerprint))); --any-config to replay anyway")
                }
            }
            if text.isEmpty { fail("\(trace) holds no configuration: pass --config or --socket") }
            do { spawned = try ReplayDaemon(executable: daemonPath(), configuration: text) } catch { fail("\(error)") }
            path = spawned!.socketPath
        }
        defer { spawned?.stop() }

        let replayer = TraceReplayer(socketPath: path, timeout: .seconds(timeout))
        do {
            let s = try replayer.run(records: records)
            var line = "identical: \(s.records) records (\(s.exchanges) requests, \(s.events) events, \(s.sessions) connections)"
            if let end = s.end, end != .stopped { line += "; the trace was \(end) when recorded" }
            print(line)
        } catch {
            switch error {
            case .divergence(let d):
                print(d.description)
                spawned?.stop()
                throw ExitCode(1)
            case .badTrace, .setup:
                if let spawned {
                    spawned.stop(keepLog: true)
                    printError("smmu-hypd log: \(spawned.logPath)")
                }
                fail("\(error)")
            }
        }
    }

    private func daemonPath() -> String {
        if let daemon { return daemon }
        if let env = ProcessInfo.processInfo.environment["SMMU_HYPD_BIN"] { return env }
        let me = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath()
        return me.deletingLastPathComponent().appendingPathComponent("smmu-hypd").path
    }

    private func fail(_ message: String) -> Never {
        printError("smmuctl replay: " + message)
        Glibc.exit(2)
    }
}

/// smmu-hypd started for a replay: the given configuration text in a private directory, its own socket there,
/// manual finalization, no trace; stopped with SIGTERM.
final class ReplayDaemon {
    let socketPath: String
    let logPath: String
    private let directory: String
    private let process = Process()

    struct Failure: Error, CustomStringConvertible {
        let description: String
    }

    init(executable: String, configuration: [UInt8]) throws {
        var template = Array("/tmp/smmuctl-replay.XXXXXX".utf8CString)
        guard let dir = mkdtemp(&template) else { throw Failure(description: "mkdtemp: \(String(cString: strerror(errno)))") }
        directory = String(cString: dir)
        socketPath = directory + "/smmu-hypd.sock"
        logPath = directory + "/smmu-hypd.log"
        let configPath = directory + "/config.yaml"
        guard FileManager.default.createFile(atPath: configPath, contents: Data(configuration)),
              FileManager.default.createFile(atPath: logPath, contents: nil),
              let log = FileHandle(forWritingAtPath: logPath) else {
            throw Failure(description: "cannot write into \(directory)")
        }
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = ["--config", configPath, "--socket", socketPath, "--finalize", "manual", "--no-trace"]
        var environment = ProcessInfo.processInfo.environment
        for key in ["NOTIFY_SOCKET", "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES", "WATCHDOG_USEC", "WATCHDOG_PID"] {
            environment[key] = nil
        }
        process.environment = environment
        process.standardOutput = log
        process.standardError = log
        do { try process.run() } catch { throw Failure(description: "cannot start \(executable): \(error)") }
        for _ in 0..<1000 {
            if let c = try? SMMUClient(path: socketPath, timeout: .seconds(5)) {
                c.close()
                return
            }
            guard process.isRunning else { break }
            usleep(10_000)
        }
        let tail = (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? ""
        stop(keepLog: true)
        throw Failure(description: "smmu-hypd did not start listening: \(tail.suffix(2000))")
    }

    /// SIGTERM, then SIGKILL after 5 s; removes the directory, or all but the daemon's log (`keepLog`).
    func stop(keepLog: Bool = false) {
        if process.isRunning {
            kill(process.processIdentifier, SIGTERM)
            for _ in 0..<500 where process.isRunning { usleep(10_000) }
            if process.isRunning { kill(process.processIdentifier, SIGKILL) }
            process.waitUntilExit()
        }
        try? FileManager.default.removeItem(atPath: socketPath)
        if !keepLog { try? FileManager.default.removeItem(atPath: directory) }
    }
}
