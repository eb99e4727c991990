import CSystemd
import Dispatch
import Glibc

/// Writes each denial as a structured journal record (sd_journal_sendv), coalescing floods so that the
/// sum of SMMU_COUNT over the journal always equals the number of denials (G7).
///
/// Denials are attributed and coalesced by peer: (SO_PEERCRED pid, uid, rule), never by the HELLO name, which any
/// process may choose (keyed by name, one process could add to another's count or hide in it). Per peer and rule
/// at most `burst` records are written per second; and across all peers at most `maxRecordsPerSecond` records,
/// summaries included, so journald's own rate limit can never drop one silently. A quarter of that budget is kept
/// for summaries. What exceeds either is counted, and every summary interval (and at `stop()`) one summary per
/// (peer, rule) carries the count, oldest first; summaries the budget has no room for wait for the next interval
/// with their counts. When journald is missing or refuses a record, the same record goes to stderr as one line,
/// without blocking. Confined to the server queue, like the hypervisor that produces the records.
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
        /// Coalesced denials whose summary is not written yet (the next intervals write them).
        public var awaitingSummary: UInt64 = 0
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

    struct Key: Hashable {
        let peer: AuditPeer
        let rule: String
    }

    struct RateWindow {
        var start: ContinuousClock.Instant
        var written = 0
        var suppressed: UInt64 = 0
        /// When the first denial now awaiting a summary was counted (summaries go out oldest first).
        var awaitingSince: UInt64 = 0
        var client = ""
    }

    /// Peers and rules tracked at most; past it a new peer's coalesced denials go under pid 0 of its uid.
    static let maxKeys = 4096

    public let queue: DispatchQueue
    public let burst: Int
    public let summaryInterval: Duration
    public let maxRecordsPerSecond: Int
    public internal(set) var counters = Counters()
    /// True while a restart replays requests whose records the previous process already wrote: they are counted as
    /// written, not written again.
    public var replaying = false
    private let destination: Destination
    let now: @Sendable () -> ContinuousClock.Instant
    var windows: [Key: RateWindow] = [:]
    private var timer: DispatchSourceTimer?
    /// The global budget's current second and what it spent.
    var budgetStart: ContinuousClock.Instant?
    var budgetSpent = 0
    var sequence: UInt64 = 0

    public init(burst: Int, summaryInterval: Duration, maxRecordsPerSecond: Int = 200, queue: DispatchQueue,
                destination: Destination = .system,
                now: @escaping @Sendable () -> ContinuousClock.Instant = { ContinuousClock.now }) {
        self.burst = burst
        self.summaryInterval = summaryInterval
        self.maxRecordsPerSecond = max(1, maxRecordsPerSecond)
        self.queue = queue
        self.destination = destination
        self.now = now
    }

    /// Full records may use the budget less what is kept for summaries (a quarter, at least one).
    var fullRecordBudget: Int { maxRecordsPerSecond - max(1, maxRecordsPerSecond / 4) }

    /// Starts the summary timer on the queue.
    public func start() {
        let timer = DispatchSource.makeTimerSource(queue: queue)
        timer.schedule(deadline: .now() + summaryInterval.timeInterval, repeating: summaryInterval.timeInterval)
        timer.setEventHandler { [weak self] in self?.flush() }
        timer.resume()
        self.timer = timer
    }

    /// Stops the timer after writing every pending summary, budget or not (shutdown: the journal must add up).
    public func stop() {
        flush(force: true)
        timer?.cancel()
        timer = nil
    }

    /// Records one denial: written now, or counted for a later summary.
    public func record(_ record: AuditRecord) {
        counters.denials += 1
        var key = Key(peer: AuditPeer(pid: record.pid, uid: record.uid), rule: record.rule)
        if windows[key] == nil && windows.count >= Self.maxKeys {
            key = Key(peer: AuditPeer(pid: 0, uid: record.uid), rule: record.rule)
        }
        let t = now()
        var window = windows[key] ?? RateWindow(start: t)
        window.client = record.client
        if t - window.start >= .seconds(1) {
            window.start = t
            window.written = 0
        }
        if window.written < burst && spendBudget(at: t, limit: fullRecordBudget) {
            window.written += 1
            if emit(record.journalFields) { counters.written += 1 }
        } else {
            if window.suppressed == 0 {
                sequence += 1
                window.awaitingSince = sequence
            }
            window.suppressed += 1
            counters.coalesced += 1
            counters.awaitingSummary += 1
        }
        windows[key] = window
    }

    /// Writes one summary per (peer, rule) with denials counted since its last one, oldest first, as far as the
    /// budget allows (`force`: all of them); forgets peers idle for two seconds.
    public func flush(force: Bool = false) {
        let t = now()
        let waiting = windows.filter { $0.value.suppressed > 0 }.sorted { $0.value.awaitingSince < $1.value.awaitingSince }
        for (key, window) in waiting {
            guard spendBudget(at: t, limit: maxRecordsPerSecond) || force else { break }
            let summary = AuditSummary(rule: key.rule, peer: key.peer, client: window.client, count: window.suppressed, burst: burst)
            _ = emit(summary.journalFields)
            counters.summaries += 1
            counters.awaitingSummary -= window.suppressed
            windows[key]?.suppressed = 0
        }
        for (key, window) in windows where window.suppressed == 0 && t - window.start >= .seconds(2) {
            windows[key] = nil  // idle: forget it, so many short-lived clients do not grow the table
        }
    }

    /// Takes one record from the current second's global budget if fewer than `limit` were spent.
    private func spendBudget(at t: ContinuousClock.Instant, limit: Int) -> Bool {
        if let start = budgetStart, t - start < .seconds(1) {
            guard budgetSpent < limit else { return false }
        } else {
            budgetStart = t
            budgetSpent = 0
            guard limit > 0 else { return false }
        }
        budgetSpent += 1
        return true
    }

    /// Sends to journald, else to stderr. Returns true when journald took it.
    private func emit(_ fields: [(name: String, value: String)]) -> Bool {
        if replaying { return true }
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
