#if canImport(Glibc)
import Glibc
#endif
import WireProtocol

/// Why a replay did not finish identical. `divergence` is the daemon answering differently (exit 1); the rest are
/// a trace or a setup that cannot be replayed (exit 2).
public enum ReplayError: Error, CustomStringConvertible {
    case divergence(ReplayDivergence)
    case badTrace(String)
    case setup(String)

    public var description: String {
        switch self {
        case .divergence(let d): d.description
        case .badTrace(let why): "bad trace: \(why)"
        case .setup(let why): "cannot replay: \(why)"
        }
    }
}

/// The first record whose answer differs: where, what was asked, what the trace says and what the daemon said.
public struct ReplayDivergence: Sendable, CustomStringConvertible {
    public var record: Int
    public var session: UInt64
    public var request: String
    public var expected: String
    public var actual: String

    public var description: String {
        "divergence at record \(record) (session \(session)): \(request)\n  expected: \(expected)\n  actual:   \(actual)"
    }
}

/// What a replay did.
public struct ReplaySummary: Sendable {
    public var records = 0
    public var exchanges = 0
    public var events = 0
    public var sessions = 0
    public var end: TraceEnd?
}

/// Replays a trace against a daemon (docs/trace-format.md, "Replay"): the recorded sessions, each on its own
/// connection with the recorded role, in the recorded global order, one request at a time; every answer and every
/// event compared byte for byte (STATS by header only: it counts this replayer's own connection and time-dependent
/// audit coalescing). Needs a daemon in the state the trace began in, with manual finalization (the trace says when
/// the timer finalized; the replayer asks for it then) and a peer allowed every role.
public final class TraceReplayer {
    private let socketPath: String
    private let timeout: Duration
    private var sessions: [UInt64: SMMUClient] = [:]
    private var admin: SMMUClient?
    private let memory = ReplayMemory()
    private var summary = ReplaySummary()
    private var eventSessions: Set<UInt64> = []

    public init(socketPath: String, timeout: Duration = .seconds(10)) {
        self.socketPath = socketPath
        self.timeout = timeout
    }

    deinit {
        for c in sessions.values { c.close() }
        admin?.close()
    }

    /// Reads a whole trace, checking every record: a corrupt tail is a bad trace (exit 2) before anything is
    /// replayed, never a divergence halfway through.
    public static func load(_ trace: [UInt8]) throws(ReplayError) -> (TraceHeader, [TraceRecord]) {
        do { return try TraceReader.read(trace) } catch { throw .badTrace(error.description) }
    }

    /// Replays `trace` (the file's bytes); returns when every record matched.
    public func run(_ trace: [UInt8]) throws(ReplayError) -> ReplaySummary {
        try run(records: Self.load(trace).1)
    }

    /// Replays records read by `load`.
    public func run(records: [TraceRecord]) throws(ReplayError) -> ReplaySummary {
        admin = try connect(role: .admin, name: "smmuctl-replay")
        for (index, record) in records.enumerated() {
            try replay(record, index: index)
            summary.records += 1
        }
        try checkNoExtraEvents(after: records.count)
        return summary
    }

    private func replay(_ record: TraceRecord, index: Int) throws(ReplayError) {
        switch record {
        case .sessionOpened(let s, _):
            sessions[s] = try connect(role: nil, name: "")
            summary.sessions += 1
        case .exchange(let e):
            try exchange(e, index: index)
            summary.exchanges += 1
        case .event(let s, let frames):
            guard let client = sessions[s] else { return }  // a subscriber from before the trace began
            try expect(frames, from: client, index: index, session: s, request: "(an event, after the record before)")
            summary.events += 1
        case .sessionClosed(let s):
            sessions.removeValue(forKey: s)?.close()
            memory.sessionClosed(s)
            eventSessions.remove(s)
            try awaitOpenConnections()
        case .finalized:
            do { try admin!.finalize() } catch {
                throw .divergence(ReplayDivergence(record: index, session: 0, request: "finalization (the daemon's timer)",
                                                   expected: "FINALIZE OK", actual: "\(error)"))
            }
        case .end(let why):
            summary.end = why
        }
    }

    private func exchange(_ e: TraceExchange, index: Int) throws(ReplayError) {
        let client: SMMUClient
        if let c = sessions[e.session] {
            client = c
        } else {
            // A connection from before the trace began: greet it as it had been.
            client = try connect(role: e.role, name: "smmuctl-replay")
            sessions[e.session] = client
        }
        for m in e.memory { try memory.write(m) }
        var fds: [Int32] = []
        if let d = e.descriptor { fds.append(try memory.descriptor(for: d)) }
        defer { for fd in fds { close(fd) } }
        let words = TraceWords.request(e.request)
        do { try client.sendRaw(e.request, fds: fds) } catch {
            throw .divergence(ReplayDivergence(record: index, session: e.session, request: words,
                                               expected: TraceWords.response(e.response), actual: "sending failed: \(error)"))
        }
        let header = FrameHeader(decoding: e.request)
        let op = header.flatMap { Opcode(rawValue: $0.opcode) }
        try expect(e.response, from: client, index: index, session: e.session, request: words,
                   headerOnly: op == .stats)
        guard let h = TraceWords.split(e.response).first.flatMap(FrameHeader.init(decoding:)), h.statusCode == .ok else { return }
        if op == .events { eventSessions.insert(e.session) }
        if op == .memMap, let d = e.descriptor, case .memMap(let m)? = try? Request.decode(opcode: .memMap, payload: Array(e.request.dropFirst(FrameHeader.size))) {
            memory.mapped(session: e.session, address: m.address, size: m.size, offset: m.offset, file: d.file)
        }
    }

    /// Reads as many frames as `expected` holds and compares them.
    private func expect(_ expected: [UInt8], from client: SMMUClient, index: Int, session: UInt64, request: String,
                        headerOnly: Bool = false) throws(ReplayError) {
        var actual: [UInt8] = []
        for want in TraceWords.split(expected) {
            let frame: SMMUClient.Frame
            do { frame = try client.receiveFrame() } catch {
                let got = actual.isEmpty ? "\(error)" : TraceWords.response(actual) + "; then \(error)"
                throw .divergence(ReplayDivergence(record: index, session: session, request: request,
                                                   expected: TraceWords.response(expected), actual: got))
            }
            let bytes = frame.header.encoded + frame.payload
            actual += bytes
            let same = headerOnly ? Array(bytes.prefix(12)) == Array(want.prefix(12)) : bytes == want
            if !same {
                throw .divergence(ReplayDivergence(record: index, session: session, request: request,
                                                   expected: TraceWords.response(expected), actual: TraceWords.response(actual)))
            }
        }
    }

    /// Every event connection has nothing more to say once the trace is done.
    private func checkNoExtraEvents(after count: Int) throws(ReplayError) {
        for s in eventSessions.sorted() {
            guard let client = sessions[s] else { continue }
            client.timeout = .milliseconds(200)
            if let frame = try? client.receiveFrame() {
                throw .divergence(ReplayDivergence(
                    record: count, session: s, request: "(after the last record)", expected: "no more events",
                    actual: TraceWords.response(frame.header.encoded + frame.payload)))
            }
        }
    }

    private func connect(role: Role?, name: String) throws(ReplayError) -> SMMUClient {
        do {
            let c = try SMMUClient(path: socketPath, timeout: timeout)
            if let role { try c.hello(role: role, name: name) }
            return c
        } catch {
            throw .setup("connecting to \(socketPath): \(error)")
        }
    }

    /// A close is the daemon's to notice: wait until it has (its open connections are ours), so that what the close
    /// undoes (mapped memory, epoch pages, rings) is undone before the next record, as it was when recorded.
    private func awaitOpenConnections() throws(ReplayError) {
        let want = sessions.count + 1
        let clock = ContinuousClock()
        let deadline = clock.now + timeout
        while true {
            guard let stats = try? admin!.stats() else { throw .setup("STATS on the admin connection failed") }
            if Self.openConnections(stats) == want { return }
            guard clock.now < deadline else { break }
            usleep(1000)
        }
        throw .setup("the daemon still counts a closed connection as open after \(timeout)")
    }

    /// `"connections":{..."open":N...}` from STATS' JSON (keys sorted, no spaces).
    static func openConnections(_ json: String) -> Int? {
        guard let c = json.range(of: "\"connections\":{"),
              let o = json.range(of: "\"open\":", range: c.upperBound..<json.endIndex) else { return nil }
        return Int(json[o.upperBound...].prefix { $0.isNumber })
    }
}
