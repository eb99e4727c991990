import Dispatch
import Glibc
import Logging
import SMMUModel

/// Restart mode: what the server keeps in systemd's fd store and the restart journal so that a new process, after
/// `systemctl restart` or a crash, serves every connection on from where the old one was (docs/hypervisor-model.md,
/// "Restart and crash survival").
///
/// Stored (FDSTORE=1): the journal and the checkpoint before it ("journal.g", "checkpoint.g": RestartGenerations),
/// and per connection n, under "c.n": its socket, its output file
/// (OutputFile) and every descriptor it passed (MEM_MAP, DMA_EPOCH). A connection's name is removed
/// (FDSTOREREMOVE=1) when it closes, so systemd holds no socket the daemon closed.
final class ServerPersistence {
    /// The journal input is appended to, and its generation (see RestartGenerations).
    private(set) var journal: RestartJournal
    private(set) var generation: UInt64
    let store: any RestartStore
    let logger: Logger
    /// True while the journal is being replayed: nothing is sent and nothing journaled.
    var replaying = false
    /// Set when the journal filled up: the daemon serves on but no longer survives a crash.
    private(set) var disabled = false
    /// The memory reads requests made since the journal began (READS records).
    let reads = MemoryReadLog()
    /// Bytes of READS records in the current journal (the checkpoint log line shows them).
    private(set) var readsBytes = 0
    /// The memory map whose reads `reads` journals (`journalReads(of:)`).
    private weak var memory: MemoryMap?
    /// Input sessions hold received but not run, in all and per connection: what a checkpoint carries (InputTake).
    private(set) var heldInput = 0
    private var heldInputBy: [ConnectionID: Int] = [:]
    /// All connections' held input at most, give or take a frame each: a connection is read one frame at a time
    /// (which its session always runs at once) while a read's worth more would pass it (G8; a checkpoint encodes
    /// about 1 MiB in 3 ms).
    static let maxHeldInput = 1 << 20

    init(journal: RestartJournal, generation: UInt64 = 0, store: any RestartStore = SystemdFDStore(), logger: Logger) {
        self.journal = journal
        self.generation = generation
        self.store = store
        self.logger = logger
    }

    /// The journal input is received into, or nil once disabled.
    var activeJournal: RestartJournal? { disabled ? nil : journal }

    /// From now on input is journaled into `next` (a checkpoint of generation `generation` precedes it).
    func replaceJournal(_ next: RestartJournal, generation: UInt64) {
        journal = next
        self.generation = generation
        reads.reset()
        readsBytes = 0
    }

    /// Journals the reads `memory` makes for requests from now on (READS records; MemoryReadLog).
    func journalReads(of memory: MemoryMap) {
        self.memory = memory
        reads.attach(to: memory)
    }

    /// Journals the reads made since the last commit. Called before any answer reaches an output file, so every
    /// byte an output file holds was computed from journaled reads; during a replay too (reads the journal does not
    /// cover: those of the request a crash interrupted, whose answer no output file holds).
    func commitReads() {
        guard !disabled, let payload = reads.takePending() else { return }
        if !journal.append(.reads, payload: payload) { journalFull() }
        readsBytes += RestartJournal.recordHeaderSize + payload.count
    }

    static func name(of connection: ConnectionID) -> String { "c.\(connection.rawValue)" }

    /// A connection was admitted: its socket and output file are stored, then the journal says so.
    func accepted(_ id: ConnectionID, fd: Int32, peer: PeerCredentials, output: OutputFile) {
        guard !disabled, !replaying else { return }
        store.store([fd, output.fd], name: Self.name(of: id), poll: true)
        let socket = FDStore.FileIdentity(fd: fd) ?? FDStore.FileIdentity(device: 0, inode: 0)
        let file = FDStore.FileIdentity(fd: output.fd) ?? FDStore.FileIdentity(device: 0, inode: 0)
        var payload: [UInt8] = []
        for v in [UInt32(bitPattern: peer.pid), peer.uid, peer.gid, 0] { payload += v.littleEndianBytes }
        for v in [socket.device, socket.inode, file.device, file.inode] { payload += v.littleEndianBytes }
        record(.accept, connection: id.rawValue, payload: payload)
    }

    /// Descriptors a client passed, stored before the bytes carrying them are consumed; BARRIER=1 makes sure
    /// systemd has them before the journal can name them.
    func storeFiles(_ fds: [Int32], connection: ConnectionID) {
        guard !disabled, !replaying else { return }
        store.store(fds, name: Self.name(of: connection), poll: false)
        if !store.barrier() { logger.warning("fd store: no BARRIER=1 answer; a descriptor of \(connection) may not survive a crash") }
    }

    /// A ring request taken from `connection`'s ring (`request`; nil: the ring was attached at request word `seq`),
    /// committed before it is applied and before its answer is published (docs/hypervisor-model.md).
    func journalRing(_ connection: ConnectionID, seq: UInt32, request: UnsafeRawBufferPointer?) {
        guard !disabled, !replaying else { return }
        var payload = seq.littleEndianBytes + [0, 0, 0, 0]
        if let request { payload += request }
        record(.ring, connection: connection.rawValue, payload: payload)
    }

    func closed(_ id: ConnectionID, reason: CloseReason) {
        noteHeldInput(id, bytes: 0)
        guard !replaying else { return }
        if !disabled { record(.close, connection: id.rawValue, payload: reason.rawValue.littleEndianBytes) }
        store.remove(name: Self.name(of: id))
    }

    func noteHeldInput(_ id: ConnectionID, bytes: Int) {
        heldInput += bytes - (heldInputBy[id] ?? 0)
        heldInputBy[id] = bytes == 0 ? nil : bytes
    }

    /// How many bytes beyond its first frame connection `id` may take now: `chunk`, or 0 near the bound.
    func heldInputRoom(for id: ConnectionID, chunk: Int) -> Int {
        mayHold(id, bytes: chunk) ? chunk : 0
    }

    /// Whether connection `id` may hold `bytes` of input read but not run (a frame's start) within the bound on all
    /// connections' held input.
    func mayHold(_ id: ConnectionID, bytes: Int) -> Bool {
        heldInput - (heldInputBy[id] ?? 0) + bytes <= Self.maxHeldInput
    }

    func resumed(_ id: ConnectionID) {
        guard !disabled, !replaying else { return }
        record(.resume, connection: id.rawValue)
    }

    func refused() {
        guard !disabled, !replaying else { return }
        record(.refused)
    }

    func finalizing() {
        guard !disabled, !replaying else { return }
        record(.finalize)
    }

    private func record(_ kind: RestartJournal.Kind, connection: UInt64 = 0, payload: [UInt8] = []) {
        if !journal.append(kind, connection: connection, payload: payload) { journalFull() }
    }

    /// Out of journal: the journal leaves the store (a next start would replay an incomplete history), and the
    /// daemon serves on without crash survival. Logged once.
    func journalFull() {
        guard !disabled else { return }
        disabled = true
        if let memory { MemoryReadLog.detach(from: memory) }
        reads.reset()
        store.remove(name: RestartGenerations.name(.journal, generation))
        logger.error("restart journal full (\(journal.capacity) bytes): a crash or restart from now on loses the connections")
    }
}

extension FixedWidthInteger {
    var littleEndianBytes: [UInt8] { withUnsafeBytes(of: littleEndian) { Array($0) } }
}

extension UnsafeRawBufferPointer {
    func le<T: FixedWidthInteger>(_ offset: Int, as: T.Type = T.self) -> T {
        T(littleEndian: loadUnaligned(fromByteOffset: offset, as: T.self))
    }
}

/// What a restore found (logged, and used by the tests).
public struct RestoreReport: Sendable, Equatable {
    public var records = 0
    public var connections = 0
    public var adopted = 0
    public var gone = 0
    public var remappedClientMemory = 0
    /// Reads the replay made that the journal should have held, or held for another address: a replay that diverged
    /// (zero unless something is wrong).
    public var uncoveredReads = 0
    public var mismatchedReads = 0
    /// Rings served on, and how many of them got an answer the previous process had not published.
    public var ringsResumed = 0
    public var ringAnswersPublished = 0
}

extension UnixServer {
    /// Replays the journal over the fresh core, with the descriptors systemd handed back, then serves every
    /// connection still open. `finalize` runs the finalization a FINALIZE record says the timer ran.
    /// With a checkpoint, its connections are installed first (its state is the core's already) and the journal,
    /// which then holds only what came after it, is replayed over them.
    func restore(journal: RestartJournal, stored: [FDStore.Entry], checkpoint: RestoredCheckpoint?,
                 finalize: () -> Void) throws(RestartJournalError) -> RestoreReport {
        dispatchPrecondition(condition: .onQueue(queue))
        var report = RestoreReport()
        var byIdentity: [FDStore.FileIdentity: FDStore.Entry] = [:]
        for entry in stored { byIdentity[entry.identity] = entry }
        var used = Set<FDStore.FileIdentity>()
        func take(_ identity: FDStore.FileIdentity) -> Int32 {
            guard let entry = byIdentity[identity] else { return -1 }
            used.insert(identity)
            return entry.fd
        }
        persistence?.replaying = true
        ReplayMappings.begin()
        defer { ReplayMappings.finish() }
        if let checkpoint { install(checkpoint, take: take) }
        let records = try journal.records()
        report.records = records.count
        // Every replayed request reads the memory its original read (MemoryReadLog).
        persistence?.reads.beginReplay(records.filter { $0.kind == .reads }.map(\.payload))
        for (index, record) in records.enumerated() {
            // A long replay must not look like a hang: systemd's watchdog (WatchdogSec=) counts from the start.
            if index % 4096 == 4095 { Systemd.notify(.watchdog) }
            let id = ConnectionID(rawValue: record.connection)
            switch record.kind {
            case .accept:
                let p = record.payload
                guard p.count == 48 else { throw .corrupt(offset: 0) }
                let peer = PeerCredentials(pid: Int32(bitPattern: p.le(0, as: UInt32.self)), uid: p.le(4), gid: p.le(8))
                let socket = take(FDStore.FileIdentity(device: p.le(16), inode: p.le(24)))
                let outFD = take(FDStore.FileIdentity(device: p.le(32), inode: p.le(40)))
                let output = outFD >= 0 ? OutputFile(fd: outFD) : OutputFile.make()
                replayAccept(id: id, fd: socket, peer: peer, output: output)
                nextID = max(nextID, id.rawValue + 1)
            case .data:
                guard let data = record.data else { throw .corrupt(offset: 0) }
                let fds = data.files.compactMap { identity -> Int32? in
                    let fd = take(identity)
                    return fd >= 0 ? dup(fd) : nil
                }
                connection(id)?.replayReceive(data.bytes, fds: fds)
            case .resume:
                connection(id)?.replayResume()
            case .close:
                let reason = record.payload.count >= 4 ? CloseReason(rawValue: record.payload.le(0)) ?? .plain : .plain
                count(reason)
                connection(id)?.replayClose()
            case .finalize:
                finalize()
            case .refused:
                counters.refused += 1
            case .reads:
                break  // applied as the replay reads (beginReplay above)
            case .ring:
                guard record.payload.count >= 8 else { throw .corrupt(offset: 0) }
                let request = record.payload.count > 8 ? UnsafeRawBufferPointer(rebasing: record.payload[8...]) : nil
                ring(of: id)?.replay(seq: record.payload.le(0), request: request)
            }
        }
        if let reads = persistence?.reads {
            report.uncoveredReads = reads.uncovered
            report.mismatchedReads = reads.mismatched
            persistence?.commitReads()
            reads.endReplay()
        }
        persistence?.replaying = false
        report.remappedClientMemory = ReplayMappings.finish()
        // A socket stored just before the crash, with no ACCEPT committed yet: admitted now, under its own id.
        for entry in stored where !used.contains(entry.identity) && Systemd.isConnectedUnixStream(entry.fd) {
            guard let n = UInt64(entry.name.dropFirst(2)), entry.name.hasPrefix("c."), n >= nextID else { continue }
            used.insert(entry.identity)
            nextID = n
            admitStored(fd: entry.fd)
            report.adopted += 1
        }
        for entry in stored where !used.contains(entry.identity) { close(entry.fd) }
        for c in Array(openConnections) {
            if c.resumeAfterReplay() {
                report.connections += 1
                if !c.session.isGreeted { awaitHello(c.id) }
            } else {
                report.gone += 1
            }
        }
        // Rings of the connections served on: the last replayed answers published (or found published), clients woken.
        for c in openConnections {
            guard let ring = ring(of: c.id) else { continue }
            switch ring.resumeAfterReplay() {
            case .nothingReplayed: report.ringsResumed += 1
            case .published: report.ringsResumed += 1; report.ringAnswersPublished += 1
            case .alreadyPublished(let differing):
                report.ringsResumed += 1
                if let op = differing {
                    logger.info("restore: \(c.id): the replayed ring answer differs from the one the previous process published (opcode 0x\(String(op, radix: 16))); the client has that one")
                }
            }
        }
        // Names of connections that ended (their CLOSE is in the journal) may still be stored by a crash before the removal.
        let live = Set(openConnections.map { ServerPersistence.name(of: $0.id) })
        for name in Set(stored.map(\.name)) where name.hasPrefix("c.") && !live.contains(name) { FDStore.remove(name: name) }
        return report
    }

    /// A connection whose replayed answers do not line up with its stream (ReplayCheck): logged, and one journal
    /// record for the audit (MESSAGE_ID `AuditMessageIDs.replayMisaligned`); the caller closes it.
    func replayMisaligned(_ c: Connection, _ problem: ReplayCheck.Problem) {
        let offset: Int
        let what: String
        switch problem {
        case .misaligned(let at):
            offset = at
            what = "a replayed answer at stream byte \(at) does not line up with what the previous process wrote"
        case .short(let written, let produced):
            offset = written
            what = "the replay regenerated \(written) bytes of answers, the previous process had written \(produced)"
        }
        let client = (c.session as? DispatcherSession)?.clientName ?? "?"
        logger.error("restore: closing \(c.id) (\(client), pid \(c.peer.pid)): \(what)")
        _ = Systemd.journal([
            ("MESSAGE", "restart: closed connection \(c.id.rawValue) of \(client) (pid \(c.peer.pid)): \(what)"),
            ("PRIORITY", "3"),
            ("MESSAGE_ID", AuditMessageIDs.replayMisaligned),
            ("SYSLOG_IDENTIFIER", "smmu-hypd"),
            ("SMMU_CLIENT", client),
            ("SMMU_PID", String(c.peer.pid)),
            ("SMMU_UID", String(c.peer.uid)),
            ("SMMU_OFFSET", String(offset)),
        ])
    }

    /// The ring of connection `id`'s session, if it has one.
    func ring(of id: ConnectionID) -> SharedRing? {
        guard let session = connection(id)?.session as? DispatcherSession else { return nil }
        return session.dispatcher.rings[id]
    }

    private func count(_ reason: CloseReason) {
        switch reason {
        case .plain: break
        case .evicted: counters.evicted += 1
        case .helloTimeout: counters.helloTimeouts += 1
        case .output: counters.closedForOutput += 1
        case .unreadEvents: counters.closedForUnreadEvents += 1
        }
    }
}
