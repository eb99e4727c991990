import CSocketShims
import Glibc
import Testing
@testable import SMMUDaemon

/// The restart journal and the output file without a daemon: what a process that takes them over after a crash
/// reads back. The crash is simulated by stopping at each step and opening the same memfd again.
struct RestartJournalTests {
    /// A second view of the same memfd, as the next process gets it from the fd store.
    func reopen(_ journal: RestartJournal) throws -> RestartJournal {
        try RestartJournal.open(fd: dup(journal.fd))
    }

    /// Simulates one read: `bytes` peeked into the scratch area, the DATA record prepared, and (if `received`) the
    /// bytes put where recv() puts them. Nothing is committed: the process "dies" here.
    func pendingRead(_ journal: RestartJournal, _ bytes: [UInt8], received: Bool) throws {
        journal.scratch.copyBytes(from: bytes)
        let target = try #require(journal.beginData(connection: 7, files: [], count: bytes.count))
        #expect(target.elementsEqual(bytes.map { ~$0 }))
        if received { target.copyBytes(from: bytes) }
    }

    @Test func recordsReadBackInOrder() throws {
        let journal = try RestartJournal.create(capacity: 1 << 20)
        #expect(journal.append(.accept, connection: 1, payload: [1, 2, 3]))
        journal.scratch.copyBytes(from: [9, 8, 7, 6, 5])
        let target = try #require(journal.beginData(connection: 1, files: [FDStore.FileIdentity(device: 3, inode: 4)], count: 5))
        target.copyBytes(from: [9, 8, 7, 6, 5])
        journal.commitData(received: 5)
        #expect(journal.append(.close, connection: 1, payload: CloseReason.helloTimeout.rawValue.littleEndianBytes))
        let again = try reopen(journal)
        let records = try again.records()
        #expect(records.map(\.kind) == [.accept, .data, .close])
        #expect(Array(records[0].payload) == [1, 2, 3])
        let data = try #require(records[1].data)
        #expect(data.files == [FDStore.FileIdentity(device: 3, inode: 4)])
        #expect(Array(data.bytes) == [9, 8, 7, 6, 5])
        #expect(records[2].connection == 1)
    }

    /// SIGKILL after recv() returned but before the commit: the bytes left the socket, so the record must count.
    @Test func aReceiveThatHappenedIsCommittedAfterACrash() throws {
        let journal = try RestartJournal.create(capacity: 1 << 20)
        journal.append(.accept, connection: 7)
        try pendingRead(journal, [0x4D, 0x53, 0x01, 0x02, 0x00, 0xFF], received: true)
        #expect(try journal.records().count == 1)  // not committed by the process that "died"
        let again = try reopen(journal)
        let records = try again.records()
        #expect(records.map(\.kind) == [.accept, .data])
        #expect(Array(try #require(records[1].data).bytes) == [0x4D, 0x53, 0x01, 0x02, 0x00, 0xFF])
    }

    /// SIGKILL between the peek and recv(): the bytes are still in the socket and must not be replayed too.
    @Test func aReceiveThatDidNotHappenIsDropped() throws {
        let journal = try RestartJournal.create(capacity: 1 << 20)
        journal.append(.accept, connection: 7)
        try pendingRead(journal, [0, 0, 0, 0, 0, 0, 0, 0], received: false)
        let again = try reopen(journal)
        #expect(try again.records().map(\.kind) == [.accept])
        // The next read overwrites the abandoned one.
        try pendingRead(again, [1, 2, 3], received: true)
        again.commitData(received: 3)
        #expect(try reopen(again).records().map(\.kind) == [.accept, .data])
    }

    @Test func aFullJournalRefusesRecords() throws {
        let journal = try RestartJournal.create(capacity: RestartJournal.recordsStart + 64)
        #expect(journal.append(.finalize, payload: Array(repeating: 1, count: 40)))
        #expect(!journal.append(.finalize, payload: Array(repeating: 1, count: 40)))
        journal.scratch.copyBytes(from: [1, 2, 3])
        #expect(journal.beginData(connection: 1, files: [], count: 3) == nil)
    }

    @Test func anotherFileOrVersionIsRefused() throws {
        let fd = csock_memfd("not-a-journal")
        #expect(ftruncate(fd, off_t(RestartJournal.recordsStart + 4096)) == 0)
        #expect(throws: RestartJournalError.notAJournal) { try RestartJournal.open(fd: dup(fd)) }
        close(fd)
        let journal = try RestartJournal.create(capacity: 1 << 20)
        journal.base.storeBytes(of: UInt32(99).littleEndian, toByteOffset: 8, as: UInt32.self)
        #expect(throws: RestartJournalError.unsupportedVersion(99)) { try reopen(journal) }
    }

    /// Version 3 added RING records only: a version 2 journal (restart mode refused RING then) is replayed as it is.
    @Test func aVersion2JournalIsStillRead() throws {
        let journal = try RestartJournal.create(capacity: 1 << 20)
        #expect(journal.append(.finalize))
        journal.base.storeBytes(of: UInt32(2).littleEndian, toByteOffset: 8, as: UInt32.self)
        #expect(try reopen(journal).records().map(\.kind) == [.finalize])
        journal.base.storeBytes(of: UInt32(1).littleEndian, toByteOffset: 8, as: UInt32.self)
        #expect(throws: RestartJournalError.unsupportedVersion(1)) { try reopen(journal) }
    }

    /// The output file's offset is what the peer got: a replay regenerating the stream writes only what is past it,
    /// and the next flush sends exactly the rest.
    @Test func outputFileResumesAtWhatThePeerGot() throws {
        var pair: [Int32] = [0, 0]
        #expect(socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, &pair) == 0)
        defer { close(pair[0]); close(pair[1]) }
        let first = try #require(OutputFile.make())
        let stream = (0..<100).map { UInt8($0) }
        #expect(stream[0..<60].withUnsafeBytes { first.append($0) })
        #expect(first.flush(to: pair[0]) == .drained)
        #expect(first.sent == 60)
        // The "next process": the same open file, the stream regenerated from its start by the replay.
        let next = OutputFile(fd: dup(first.fd))
        #expect(next.sent == 60)
        #expect(stream.withUnsafeBytes { next.append($0) })
        #expect(next.pending == 40)
        #expect(next.flush(to: pair[0]) == .drained)
        var got = [UInt8](repeating: 0, count: 200)
        let n = recv(pair[1], &got, got.count, Int32(MSG_DONTWAIT))
        #expect(Array(got[0..<n]) == stream)  // every byte once, in order
    }
}
