import ArgumentParser
import Foundation
import SMMUClient
import WireProtocol

/// TRACE (admin): record every request and its answer into a file the daemon creates (docs/trace-format.md).
struct Trace: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Start, stop or show the daemon's MMIO trace (admin).",
        subcommands: [TraceStart.self, TraceStop.self, TraceStatusCommand.self, TraceShow.self])

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

/// A trace file in words, one line per record (no daemon needed): to read what a board or a run did.
struct TraceShow: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "show", abstract: "Print a trace file's records in words (exit 2 if it is not a whole trace).")
    @Argument(help: "The trace file.") var file: String
    @Option(help: "Print at most this many records.") var limit: Int?
    @Flag(help: "Also print the answers.") var answers = false

    func run() throws {
        guard let data = FileManager.default.contents(atPath: file) else {
            printError("smmuctl trace show: cannot read \(file)")
            throw ExitCode(2)
        }
        var reader: TraceReader
        do { reader = try TraceReader(bytes: [UInt8](data)) } catch {
            printError("smmuctl trace show: \(file): \(error)")
            throw ExitCode(2)
        }
        print("trace version \(reader.header.version), configuration \(reader.header.configuration.count) bytes "
              + "(fingerprint \(hex(reader.header.fingerprint))), \(data.count) bytes")
        var shown = 0
        do {
            while let record = try reader.next() {
                if let limit, shown >= limit { continue }
                print("\(reader.index - 1)\t" + Self.words(record, answers: answers))
                shown += 1
            }
        } catch {
            printError("smmuctl trace show: \(error)")
            throw ExitCode(2)
        }
    }

    static func words(_ record: TraceRecord, answers: Bool) -> String {
        switch record {
        case .sessionOpened(let s, let peer): "session \(s) opened by uid \(peer.uid) gid \(peer.gid) pid \(peer.pid)"
        case .exchange(let e):
            "session \(e.session) \(e.role.map { "\($0)" } ?? "-")\(e.viaRing ? " ring" : ""): " + TraceWords.request(e.request)
                + (e.memory.isEmpty ? "" : " (\(e.memory.count) client memory reads)")
                + (answers ? " -> " + TraceWords.response(e.response) : "")
        case .event(let s, let frames): "session \(s): " + TraceWords.response(frames)
        case .sessionClosed(let s): "session \(s) closed"
        case .finalized: "finalized (the daemon's timer)"
        case .end(let why): "end: \(why)"
        }
    }
}
