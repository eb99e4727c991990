import CSystemd
import Dispatch
import Glibc

/// Writes each denial as a structured journal record (sd_journal_sendv), coalescing floods so that the
/// sum of SMMU_COUNT over the journal always equals the number of denials (G7).
///
/// Per (client, rule), at most `burst` records are written per second; further ones are counted, and every
/// summary interval (and at `flush()`) one summary record per (client, rule) carries the count. When journald is
/// missing or refuses a record, the same record goes to stderr as one line, without blocking.
/// Confined to the server queue, like the hypervisor that produces the records.
public final class JournalAuditSink: @unchecked Sendable {  // invariant: used only on `queue`
    public struct Counters: Sendable, Equatable {
        /// Every denial recorded (the G7 total).
        public var denials: UInt64 = 0
        /// Full records sent to journald.
        public var written: UInt64 = 0
        /// Denials counted into a summary instead of written one by one.
        public var coalesced: UInt64 = 0
        /// Summary records sent (to journald or stderr).
        public var summaries: UInt64 = 0
        /// Records (full or summary) written to stderr because journald was unavailable.
        public var stderrFallback: UInt64 = 0
        /// Records that even stderr would not take without blocking.
        public var lost: UInt64 = 0
    }

    /// Where records go: journald normally; tests substitute a failing journal to exercise the fallback.
    public struct Destination: Sendable {
        public var journal: @Sendable ([(name: String, value: String)]) -> Bool
        public var fallback: @Sendable (String) -> Bool
        public static let system = Destination(
            journal: { fields in
                if case .success = Systemd.journal(fields) { return true }
                return false
            },
            fallback: writeToStandardError)
    }

    private struct Key: Hashable {
        let client: String
        let rule: String
    }

    private struct RateWindow {
        var start: ContinuousClock.Instant
        var written = 0
        var suppressed: UInt64 = 0
    }

    public let queue: DispatchQueue
    public let burst: Int
    public let summaryInterval: Duration
    public private(set) var counters = Counters()
    private let destination: Destination
    private let now: @Sendable () -> ContinuousClock.Instant
    private var windows: [Key: RateWindow] = [:]
    private var timer: DispatchSourceTimer?

    public init(burst: Int, summaryInterval: Duration, queue: DispatchQueue, destination: Destination = .system,
                now: @escaping @Sendable () -> ContinuousClock.Instant = { ContinuousClock.now }) {
        self.burst = burst
        self.summaryInterval = summaryInterval
        self.queue = queue
        self.destination = destination
        self.now = now
    }

    /// Starts the summary timer on the queue.
    public func start() {
        let timer = DispatchSource.makeTimerSource(queue: queue)
        timer.schedule(deadline: .now() + summaryInterval.timeInterval, repeating: summaryInterval.timeInterval)
        timer.setEventHandler { [weak self] in self?.flush() }
        timer.resume()
        self.timer = timer
    }

    /// Stops the timer after writing the pending summaries (shutdown).
    public func stop() {
        flush()
        timer?.cancel()
        timer = nil
    }

    /// Records one denial: written now, or counted for the next summary.
    public func record(_ record: AuditRecord) {
        counters.denials += 1
        let key = Key(client: record.client, rule: record.rule)
        let t = now()
        var window = windows[key] ?? RateWindow(start: t)
        if t - window.start >= .seconds(1) {
            window.start = t
            window.written = 0
        }
        if window.written < burst {
            window.written += 1
            if emit(record.journalFields) { counters.written += 1 }
        } else {
            window.suppressed += 1
            counters.coalesced += 1
        }
        windows[key] = window
    }

    /// Writes one summary record per (client, rule) with denials counted since the last one.
    public func flush() {
        let t = now()
        for (key, window) in windows.sorted(by: { ($0.key.client, $0.key.rule) < ($1.key.client, $1.key.rule) }) {
            if window.suppressed > 0 {
                _ = emit(summaryFields(key: key, count: window.suppressed))
                counters.summaries += 1
                windows[key]?.suppressed = 0
            } else if t - window.start >= .seconds(2) {
                windows[key] = nil  // idle: forget it, so many short-lived clients do not grow the table
            }
        }
    }

    private func summaryFields(key: Key, count: UInt64) -> [(name: String, value: String)] {
        [
            ("MESSAGE", "\(count) further denials by client \(key.client) under rule \(key.rule) were coalesced (more than \(burst) per second)"),
            ("PRIORITY", "4"),
            ("MESSAGE_ID", AuditMessageIDs.coalesced),
            ("SYSLOG_IDENTIFIER", "smmu-hypd"),
            ("SMMU_RULE", key.rule),
            ("SMMU_CLIENT", key.client),
            ("SMMU_COUNT", String(count)),
        ]
    }

    /// Sends to journald, else to stderr. Returns true when journald took it.
    private func emit(_ fields: [(name: String, value: String)]) -> Bool {
        if destination.journal(fields) { return true }
        let line = "smmu-hypd audit: " + fields.map { "\($0.name)=\(Self.escaped($0.value))" }.joined(separator: " ")
        if destination.fallback(line) { counters.stderrFallback += 1 } else { counters.lost += 1 }
        return false
    }

    private static func escaped(_ value: String) -> String {
        value.contains(where: { $0 == " " || $0.isNewline || $0 == "\"" })
            ? "\"" + value.replacingNewlinesAndQuotes() + "\"" : value
    }
}

extension String {
    fileprivate func replacingNewlinesAndQuotes() -> String {
        var out = ""
        for c in self {
            switch c {
            case "\n", "\r": out += "\\n"
            case "\"": out += "\\\""
            default: out.append(c)
            }
        }
        return out
    }
}

/// One line to stderr without ever blocking: under systemd stderr is a socket (MSG_DONTWAIT works);
/// otherwise a plain write (a terminal or file does not block for long).
@Sendable func writeToStandardError(_ line: String) -> Bool {
    let bytes = Array((line + "\n").utf8)
    let n = bytes.withUnsafeBytes { raw -> Int in
        let sent = send(STDERR_FILENO, raw.baseAddress, raw.count, Int32(MSG_DONTWAIT) | Int32(MSG_NOSIGNAL))
        if sent < 0 && errno == ENOTSOCK { return write(STDERR_FILENO, raw.baseAddress, raw.count) }
        return sent
    }
    return n == bytes.count
}
