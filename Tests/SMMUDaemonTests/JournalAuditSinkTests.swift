import Dispatch
import TestSupport
import Foundation
import Glibc
import Synchronization
import Testing
@testable import SMMUDaemon

/// True when a journald listens (scripts/test.sh and .ci/run start one). With SMMU_HYPD_REQUIRE_JOURNALD=1
/// its absence fails the run instead of skipping the journald tests.
let journaldRunning: Bool = {
    // A journald listens when a datagram connect succeeds (a socket file left by a dead one refuses).
    let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
    let present = fd >= 0 && ListeningSocket.withAddress("/run/systemd/journal/socket", { connect(fd, $0, $1) }) == 0
    if fd >= 0 { close(fd) }
    if !present && ProcessInfo.processInfo.environment["SMMU_HYPD_REQUIRE_JOURNALD"] == "1" {
        fatalError("SMMU_HYPD_REQUIRE_JOURNALD=1 but /run/systemd/journal/socket is missing")
    }
    return present
}()

/// The journal entries with a field equal to a value, as JSON objects (`journalctl -o json FIELD=value`).
func journalEntries(_ match: String) throws -> [[String: Any]] {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/journalctl")
    process.arguments = ["-o", "json", "--no-pager", "--output-fields=MESSAGE,MESSAGE_ID,PRIORITY,SYSLOG_IDENTIFIER,SMMU_RULE,SMMU_CLIENT,SMMU_PID,SMMU_UID,SMMU_WINDOW,SMMU_REGISTER,SMMU_OFFSET,SMMU_VALUE,SMMU_WIDTH,SMMU_STREAM,SMMU_COUNT,CODE_FILE", match]
    let pipe = Pipe()
    process.standardOutput = pipe
    process.standardError = FileHandle.nullDevice
    try process.run()
    let data = pipe.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return String(decoding: data, as: UTF8.self).split(separator: "\n").compactMap {
        try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]
    }
}

/// Sum of SMMU_COUNT over the entries.
func countSum(_ entries: [[String: Any]]) -> Int {
    entries.reduce(0) { $0 + (Int($1["SMMU_COUNT"] as? String ?? "") ?? 0) }
}

func sampleRecord(rule: String, client: String = "test-host", value: UInt64 = 0x8000_0010, pid: Int32 = getpid()) -> AuditRecord {
    AuditRecord(rule: rule, messageID: "3f1d6c2a9b7e4f0c8a5d1e2b7c9f0a11", message: "SMR write would match a stream the host does not own",
                client: client, pid: pid, uid: getuid(), window: "niso1a", register: "SMR[3]", offset: 0x80C,
                value: value, width: 4, streams: [0x10, 0x11])
}

struct JournalAuditSinkTests {
    @Test(.enabled(if: journaldRunning))
    func recordCarriesEveryFieldInTheRealJournal() throws {
        let rule = "TEST.fields-\(UUID().uuidString.prefix(8))"
        let queue = DispatchQueue(label: "audit-test")
        let sink = JournalAuditSink(burst: 64, summaryInterval: .seconds(1), queue: queue)
        queue.sync { sink.record(sampleRecord(rule: rule)) }
        let expected = JournalAuditSink.Counters(denials: 1, written: 1)
        #expect(queue.sync { sink.counters } == expected)
        var entries: [[String: Any]] = []
        #expect(eventually(seconds: 10) { entries = (try? journalEntries("SMMU_RULE=\(rule)")) ?? []; return entries.count == 1 })
        let e = try #require(entries.first)
        #expect(e["PRIORITY"] as? String == "4")
        #expect(e["MESSAGE_ID"] as? String == "3f1d6c2a9b7e4f0c8a5d1e2b7c9f0a11")
        #expect(e["SYSLOG_IDENTIFIER"] as? String == "smmu-hypd")
        #expect(e["SMMU_CLIENT"] as? String == "test-host")
        #expect(e["SMMU_PID"] as? String == String(getpid()))
        #expect(e["SMMU_UID"] as? String == String(getuid()))
        #expect(e["SMMU_WINDOW"] as? String == "niso1a")
        #expect(e["SMMU_REGISTER"] as? String == "SMR[3]")
        #expect(e["SMMU_OFFSET"] as? String == "0x80c")
        #expect(e["SMMU_VALUE"] as? String == "0x80000010")
        #expect(e["SMMU_WIDTH"] as? String == "4")
        #expect(e["SMMU_STREAM"] as? String == "0x10,0x11")
        #expect(e["SMMU_COUNT"] as? String == "1")
        #expect((e["MESSAGE"] as? String)?.hasPrefix("SMR write would match") == true)
        #expect((e["CODE_FILE"] as? String)?.isEmpty == false)
    }

    @Test(.enabled(if: journaldRunning))
    func floodIsCoalescedAndTheJournalAddsUpToTheDenials() throws {
        let rule = "TEST.flood-\(UUID().uuidString.prefix(8))"
        let queue = DispatchQueue(label: "audit-test")
        let sink = JournalAuditSink(burst: 10, summaryInterval: .milliseconds(100), queue: queue)
        queue.sync { sink.start() }
        // Two peers flood the same rule; each gets its own burst and its own summary.
        for i in 0..<3000 {
            queue.async { sink.record(sampleRecord(rule: rule, client: i % 3 == 0 ? "a" : "b", value: UInt64(i), pid: i % 3 == 0 ? 1001 : 1002)) }
        }
        Thread.sleep(forTimeInterval: 0.3)  // at least one summary interval passes
        queue.sync { sink.stop() }
        let counters = queue.sync { sink.counters }
        #expect(counters.denials == 3000)
        #expect(counters.written + counters.coalesced == 3000)
        #expect(counters.written <= 2 * 10 * 2, "at most a burst per client per second (the flood spans at most 2 windows)")
        #expect(counters.summaries >= 2)
        var entries: [[String: Any]] = []
        #expect(eventually(seconds: 10) {
            entries = (try? journalEntries("SMMU_RULE=\(rule)")) ?? []
            return countSum(entries) == 3000
        }, "journal sum \(countSum(entries)) over \(entries.count) entries")
        let summaries = entries.filter { $0["MESSAGE_ID"] as? String == AuditMessageIDs.coalesced }
        #expect(summaries.count == Int(counters.summaries))
        #expect(countSum(entries.filter { $0["SMMU_PID"] as? String == "1001" }) == 1000)
        #expect(entries.count == Int(counters.written + counters.summaries))
    }

    @Test(.enabled(if: journaldRunning))
    func twoPeersWithTheSameNameAreCountedSeparately() throws {
        let rule = "TEST.peers-\(UUID().uuidString.prefix(8))"
        let queue = DispatchQueue(label: "audit-test")
        let sink = JournalAuditSink(burst: 2, summaryInterval: .seconds(1), queue: queue)
        // Another process picks the victim's HELLO name: its denials must not add to the victim's count.
        queue.sync {
            for _ in 0..<7 { sink.record(sampleRecord(rule: rule, client: "shared-name", pid: 2001)) }
            for _ in 0..<3 { sink.record(sampleRecord(rule: rule, client: "shared-name", pid: 2002)) }
            sink.stop()
        }
        #expect(queue.sync { sink.counters.summaries } == 2, "one summary per peer")
        var entries: [[String: Any]] = []
        #expect(eventually(seconds: 10) { entries = (try? journalEntries("SMMU_RULE=\(rule)")) ?? []; return countSum(entries) == 10 })
        #expect(countSum(entries.filter { $0["SMMU_PID"] as? String == "2001" }) == 7)
        #expect(countSum(entries.filter { $0["SMMU_PID"] as? String == "2002" }) == 3)
        let summaries = entries.filter { $0["MESSAGE_ID"] as? String == AuditMessageIDs.coalesced }
        #expect(summaries.count == 2)
        #expect(entries.allSatisfy { $0["SMMU_PID"] != nil && $0["SMMU_UID"] as? String == String(getuid()) },
                "every record, summaries included, names the peer")
    }

    @Test(.enabled(if: journaldRunning))
    func floodAcrossManyPeersStaysUnderTheGlobalBudgetAndAddsUp() throws {
        let rule = "TEST.budget-\(UUID().uuidString.prefix(8))"
        let clock = Mutex(ContinuousClock.now)
        let emittedAt = Mutex<[ContinuousClock.Instant]>([])
        let destination = JournalAuditSink.Destination(journal: { fields in
            emittedAt.withLock { $0.append(clock.withLock { $0 }) }
            return JournalAuditSink.Destination.system.journal(fields)
        }, fallback: { _ in true })
        let queue = DispatchQueue(label: "audit-test")
        let budget = 20
        let sink = JournalAuditSink(burst: 5, summaryInterval: .milliseconds(100), maxRecordsPerSecond: budget, queue: queue,
                                    destination: destination, now: { clock.withLock { $0 } })
        let start = clock.withLock { $0 }
        queue.sync {
            // 200 peers, 10 denials each, all within the first simulated second: 2000 records would be 100 times the budget.
            for i in 0..<2000 { sink.record(sampleRecord(rule: rule, value: UInt64(i), pid: Int32(3000 + i % 200))) }
            // The summary timer fires every 100 ms; summaries that do not fit wait for a later second.
            for _ in 0..<400 where sink.counters.awaitingSummary > 0 {
                clock.withLock { $0 += .milliseconds(100) }
                sink.flush()
            }
        }
        let counters = queue.sync { sink.counters }
        #expect(counters.denials == 2000 && counters.awaitingSummary == 0)
        #expect(counters.written == UInt64(sink.fullRecordBudget), "full records stop at the budget less the summaries' share")
        var perSecond: [Int64: Int] = [:]
        for t in emittedAt.withLock({ $0 }) { perSecond[(t - start).components.seconds, default: 0] += 1 }
        #expect(perSecond.values.allSatisfy { $0 <= budget }, "records per simulated second: \(perSecond.sorted { $0.key < $1.key })")
        var entries: [[String: Any]] = []
        #expect(eventually(seconds: 10) { entries = (try? journalEntries("SMMU_RULE=\(rule)")) ?? []; return countSum(entries) == 2000 },
                "journal sum \(countSum(entries)) over \(entries.count) entries")
        #expect(entries.count == Int(counters.written + counters.summaries))
    }

    @Test func withoutJournaldRecordsGoToStderrAndAreStillCounted() {
        let lines = Mutex<[String]>([])
        let destination = JournalAuditSink.Destination(journal: { _ in false }, fallback: { line in
            lines.withLock { $0.append(line) }
            return true
        })
        let queue = DispatchQueue(label: "audit-test")
        let sink = JournalAuditSink(burst: 2, summaryInterval: .seconds(1), queue: queue, destination: destination)
        queue.sync {
            for _ in 0..<5 { sink.record(sampleRecord(rule: "G2.smr-foreign-stream")) }
            sink.flush()
        }
        let counters = queue.sync { sink.counters }
        let expected = JournalAuditSink.Counters(denials: 5, written: 0, coalesced: 3, summaries: 1, stderrFallback: 3)
        #expect(counters == expected)
        let captured = lines.withLock { $0 }
        #expect(captured.count == 3)
        #expect(captured.allSatisfy { !$0.contains("\n") && $0.contains("SMMU_RULE=G2.smr-foreign-stream") })
        #expect(captured[0].contains("SMMU_COUNT=1") && captured[2].contains("SMMU_COUNT=3"))
    }

    @Test func burstWindowRestartsEverySecond() {
        let clock = Mutex(ContinuousClock.now)
        let written = Mutex(0)
        let destination = JournalAuditSink.Destination(journal: { _ in written.withLock { $0 += 1 }; return true }, fallback: { _ in true })
        let queue = DispatchQueue(label: "audit-test")
        let sink = JournalAuditSink(burst: 3, summaryInterval: .seconds(1), queue: queue, destination: destination,
                                    now: { clock.withLock { $0 } })
        queue.sync {
            for _ in 0..<5 { sink.record(sampleRecord(rule: "r")) }      // 3 written, 2 counted
            clock.withLock { $0 += .milliseconds(1001) }
            for _ in 0..<2 { sink.record(sampleRecord(rule: "r")) }      // a new second: written
            sink.record(sampleRecord(rule: "other"))                     // another rule has its own burst
            sink.flush()                                                 // one summary of 2
        }
        let journaled: Int = written.withLock { $0 }
        #expect(journaled == 7)  // 3 + 2 in the new second + 1 other rule + 1 summary
        let expected = JournalAuditSink.Counters(denials: 8, written: 6, coalesced: 2, summaries: 1)
        #expect(queue.sync { sink.counters } == expected)
    }

    @Test func invalidFieldNamesAreRefusedBeforeSending() {
        #expect(Systemd.isValidFieldName("SMMU_RULE"))
        #expect(!Systemd.isValidFieldName("smmu_rule"))
        #expect(!Systemd.isValidFieldName("_PID"))
        #expect(!Systemd.isValidFieldName(String(repeating: "A", count: 65)))
        #expect(!Systemd.isValidFieldName("SMMU-RULE"))
        guard case .failure(let error) = Systemd.journal([("lower", "x")]) else {
            Issue.record("a lowercase field name was sent")
            return
        }
        #expect(error == .invalidFieldName("lower"))
    }

    @Test func catalogHasAnEntryForEveryMessageID() throws {
        let text = try String(contentsOfFile: repositoryRoot + "/systemd/smmu-hypd.catalog", encoding: .utf8)
        var entries: [String: String] = [:]  // id -> subject
        var current: String?
        for line in text.split(separator: "\n", omittingEmptySubsequences: false) {
            if line.hasPrefix("-- ") {
                let id = String(line.dropFirst(3))
                #expect(id.count == 32 && id.allSatisfy(\.isHexDigit), "malformed catalog id \(id)")
                #expect(entries[id] == nil, "duplicate catalog entry \(id)")
                entries[id] = ""
                current = id
            } else if let id = current, line.hasPrefix("Subject: ") {
                entries[id] = String(line.dropFirst(9))
            }
        }
        let table = AuditMessageIDs.all
        #expect(Set(table.map(\.id)).count == table.count, "MESSAGE_IDs must be distinct per rule")
        for entry in table {
            let subject = try #require(entries[entry.id], "no catalog entry for \(entry.rule) (\(entry.id))")
            #expect(!subject.isEmpty)
        }
        #expect(Set(entries.keys) == Set(table.map(\.id)), "catalog entries without a rule")
    }
}
