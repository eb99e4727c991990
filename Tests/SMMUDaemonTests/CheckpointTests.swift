import CSocketShims
import Glibc
import Logging
import PKVM
import Testing
@testable import SMMUDaemon

/// Checkpoints without a daemon: the daemon is "killed" after every step of a move to the next generation, and what
/// the next process takes over from the store must give the same state. The state here is a stand-in with the same
/// contract as the daemon's (a pure function of the journal's input): the sum of every byte received.
struct CheckpointTests {
    /// The fd store as a table of names to duplicated descriptors, with FDSTORE's and FDSTOREREMOVE's meaning.
    final class TableStore: RestartStore {
        var entries: [(name: String, fd: Int32)] = []
        var answersBarrier = true

        func store(_ fds: [Int32], name: String, poll: Bool) -> Bool {
            for fd in fds { entries.append((name, dup(fd))) }
            return true
        }

        func remove(name: String) -> Bool {
            for e in entries where e.name == name { close(e.fd) }
            entries.removeAll { $0.name == name }
            return true
        }

        func barrier() -> Bool { answersBarrier }

        var names: Set<String> { Set(entries.map(\.name)) }

        /// What systemd hands the next process: a duplicate of each stored descriptor with its name.
        func handBack() -> [FDStore.Entry] {
            entries.map { e in
                let fd = dup(e.fd)
                return FDStore.Entry(fd: fd, name: e.name, identity: FDStore.FileIdentity(fd: fd)!)
            }
        }

        deinit { for e in entries { close(e.fd) } }
    }

    let logger = Logger(label: "test")

    /// Input as the daemon journals it: one DATA record of `bytes`.
    func receive(_ bytes: [UInt8], into journal: RestartJournal) throws {
        journal.scratch.copyBytes(from: bytes)
        let target = try #require(journal.beginData(connection: 1, files: [], count: bytes.count))
        target.copyBytes(from: bytes)
        journal.commitData(received: bytes.count)
    }

    func sum(_ journal: RestartJournal) throws -> Int {
        try journal.records().compactMap(\.data).reduce(0) { $0 + $1.bytes.reduce(0) { $0 + Int($1) } }
    }

    /// A checkpoint of the stand-in state.
    func checkpoint(generation: UInt64, state: Int) throws -> Int32 {
        var w = StateImageWriter()
        w.int(state)
        return try Checkpoint(generation: generation, nextConnection: 2, connections: [], hypervisor: w.bytes,
                              dispatcher: []).sealedFile()
    }

    /// The next process: the newest usable generation's checkpoint, then its journal replayed.
    func restoredState(_ store: TableStore) throws -> (generation: UInt64, state: Int) {
        var problems: [String] = []
        let t = try #require(ServerPersistence.takeOver(stored: store.handBack(), store: store, problems: &problems))
        var base = 0
        if let c = t.checkpoint {
            var r = StateImageReader(c.hypervisor)
            base = try r.int()
        }
        for e in t.others { close(e.fd) }
        return (t.generation, base + (try sum(t.journal)))
    }

    /// A daemon at generation 0 with `input` journaled, its journal stored as the daemon stores it.
    func running(_ store: TableStore, input: [[UInt8]]) throws -> (ServerPersistence, Int) {
        let journal = try RestartJournal.create(capacity: 1 << 20)
        store.store([journal.fd], name: RestartGenerations.name(.journal, 0), poll: false)
        let p = ServerPersistence(journal: journal, store: store, logger: logger)
        for bytes in input { try receive(bytes, into: p.journal) }
        return (p, input.joined().reduce(0) { $0 + Int($1) })
    }

    @Test func aCrashAfterAnyStepOfACheckpointLeavesTheSameState() throws {
        let steps = RestartGenerations.advance(from: 0)
        for k in 0...steps.count {
            let store = TableStore()
            let (p, state) = try running(store, input: [[1, 2, 3], [40], [200, 7]])
            let fd = try checkpoint(generation: 1, state: state)
            let next = try RestartJournal.create(capacity: 1 << 20)
            p.advance(checkpoint: fd, journal: next, limit: k)
            close(fd)
            // "Killed" here: whatever pair the next process picks holds exactly the state.
            let restored = try restoredState(store)
            #expect(restored.state == state, "crash after \(k) steps: \(store.names)")
            #expect(restored.generation == (k >= 2 ? 1 : 0), "crash after \(k) steps")
            // Only the chosen pair is left stored.
            #expect(store.names == (restored.generation == 0 ? ["journal.0"] : ["journal.1", "checkpoint.1"]))
        }
    }

    @Test func inputAfterACheckpointGoesToTheNewJournalOnly() throws {
        let store = TableStore()
        let (p, state) = try running(store, input: [[5, 5]])
        for g in 1...3 as ClosedRange<UInt64> {
            let fd = try checkpoint(generation: g, state: state + Int(g - 1) * 9)
            #expect(p.advance(checkpoint: fd, journal: try RestartJournal.create(capacity: 1 << 20)))
            close(fd)
            try receive([4, 5], into: p.journal)
            #expect(p.generation == g)
            #expect(store.names == ["journal.\(g)", "checkpoint.\(g)"])
        }
        let restored = try restoredState(store)
        #expect(restored == (3, 10 + 3 * 9))
        // A crash in the middle of the next move, after the new pair was stored: the newest pair wins.
        let fd = try checkpoint(generation: 4, state: 10 + 3 * 9)
        p.advance(checkpoint: fd, journal: try RestartJournal.create(capacity: 1 << 20), limit: 3)
        close(fd)
        #expect(try restoredState(store) == (4, 37))
    }

    @Test func withoutABarrierAnswerTheDaemonStaysOnItsGeneration() throws {
        let store = TableStore()
        let (p, state) = try running(store, input: [[9]])
        store.answersBarrier = false
        let fd = try checkpoint(generation: 1, state: state)
        #expect(!p.advance(checkpoint: fd, journal: try RestartJournal.create(capacity: 1 << 20)))
        close(fd)
        #expect(p.generation == 0)
        #expect(store.names == ["journal.0"])
        try receive([1], into: p.journal)
        #expect(try restoredState(store) == (0, 10))
    }

    /// A checkpoint that cannot be read (damaged, unsealed, another generation's) is passed over for an older pair.
    @Test func anUnusableCheckpointFallsBackToTheOlderPair() throws {
        for damage in 0..<3 {
            let store = TableStore()
            let (_, state) = try running(store, input: [[1, 1]])
            var bytes = Checkpoint(generation: damage == 2 ? 7 : 1, nextConnection: 1, connections: [],
                                   hypervisor: [1, 2, 3], dispatcher: [4]).encoded()
            if damage == 0 { bytes[bytes.count - 1] ^= 1 }
            let fd = csock_memfd("checkpoint")
            #expect(pwrite(fd, bytes, bytes.count, 0) == bytes.count)
            if damage != 1 { #expect(csock_add_seals(fd, Checkpoint.allSeals) == 0) }
            store.store([fd], name: "checkpoint.1", poll: false)
            let newer = try RestartJournal.create(capacity: 1 << 20)
            withExtendedLifetime(newer) { _ = store.store([newer.fd], name: "journal.1", poll: false) }
            close(fd)
            var problems: [String] = []
            let t = try #require(ServerPersistence.takeOver(stored: store.handBack(), store: store, problems: &problems))
            #expect(t.generation == 0 && t.checkpoint == nil, "damage \(damage)")
            #expect(try sum(t.journal) == state)
            #expect(problems.count == 1 && problems[0].hasPrefix("checkpoint.1"), "\(problems)")
            #expect(store.names == ["journal.0"])
        }
    }

    @Test func aCheckpointReadsBackAndCannotBeChanged() throws {
        let c = Checkpoint(
            generation: 5, nextConnection: 42,
            connections: [.init(id: 3, socket: .init(device: 1, inode: 2), output: .init(device: 1, inode: 3),
                                outputWritten: 1234, epochPage: .init(device: 9, inode: 8),
                                ring: .init(file: .init(device: 9, inode: 7), answered: 0xFFFF_FFFE, ended: true)),
                          .init(id: 41, socket: .init(device: 1, inode: 4), output: .init(device: 1, inode: 5),
                                outputWritten: 0, epochPage: nil)],
            hypervisor: Array(repeating: 0xAB, count: 10_000), dispatcher: [1, 2, 3])
        let fd = try c.sealedFile()
        defer { close(fd) }
        #expect(try Checkpoint.read(fd: fd) == c)
        #expect(pwrite(fd, [0], 1, 0) == -1)  // F_SEAL_WRITE
        #expect(ftruncate(fd, 10) == -1)  // F_SEAL_SHRINK
    }

    @Test func storedNamesParse() {
        #expect(RestartGenerations.parse("journal.0")! == (.journal, 0))
        #expect(RestartGenerations.parse("checkpoint.17")! == (.checkpoint, 17))
        #expect(RestartGenerations.parse("c.17") == nil)
        #expect(RestartGenerations.parse("journal.") == nil)
        #expect(RestartGenerations.parse("journal") == nil)
    }
}
