import ArgumentParser
import SMMUClient
import WireProtocol

/// TRACE (admin): record every request and its answer into a file the daemon creates (docs/trace-format.md).
struct Trace: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Start, stop or show the daemon's MMIO trace (admin).",
        subcommands: [TraceStart.self, TraceStop.self, TraceStatusCommand.self])

    static func call(_ connection: Connection, _ request: TraceControlRequest) throws {
        let (client, _) = try connection.open(defaultRole: .admin)
        let payload = try perform { () throws(SMMUClientError) in try client.callOK(.trace(request)) }
        guard let status = try? TraceStatus.decode(payload) else {
            printError("smmuctl: TRACE answered \(payload.count) bytes, not 32")
            throw ExitCode(ExitCodes.failure)
        }
        let state = status.recording ? "recording" : status.end.map { "\($0)" } ?? "never started"
        print("\(state): \(status.bytes) bytes, \(status.records) records, max \(status.maxBytes) bytes")
    }
}

struct TraceStart: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "start",
        abstract: "Record to a new file (the daemon creates it; an existing file is refused).")
    @OptionGroup var connection: Connection
    @Argument(help: "Absolute path, as the daemon sees it (default: the configuration's trace.path).") var path: String?
    @Option(help: "End the trace, marked truncated, before this size (default: trace.max_bytes).") var maxBytes: UInt64 = 0

    func run() throws { try Trace.call(connection, TraceControlRequest(.start, maxBytes: maxBytes, path: path ?? "")) }
}

struct TraceStop: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "stop", abstract: "Stop recording (the trace ends complete).")
    @OptionGroup var connection: Connection
    func run() throws { try Trace.call(connection, TraceControlRequest(.stop)) }
}

struct TraceStatusCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "status", abstract: "Whether a trace is recording, and its size.")
    @OptionGroup var connection: Connection
    func run() throws { try Trace.call(connection, TraceControlRequest(.status)) }
}
