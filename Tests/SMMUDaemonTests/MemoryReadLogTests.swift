import ArmSMMUDriver
import Dispatch
import Foundation
import PKVM
import SMMUClient
import SMMUModel
import Testing
import TestSupport
import WireProtocol
@testable import SMMUDaemon

#if canImport(Glibc)
    import Glibc
#endif

/// A restart's replay without sockets: a checkpoint, requests after it, then the client changes its memory (as a
/// guest with iommu.strict=1 unmaps a DMA buffer right after the DMA) and the daemon's RAM files hold a later write.
/// Replaying the same request bytes over the checkpoint, with the reads journaled (MemoryReadLog), must answer byte
/// for byte as the original did and end in the same state; without them it does not.
@Suite(.serialized) struct MemoryReadLogTests {
    /// The host's MMIO through the trap handler, as a driver's port (the driver attaches a context bank).
    struct HostPort: RegisterPort {
        let hypervisor: Hypervisor
        var base: UInt64 { hypervisor.windows[0].base }
        let client = ClientIdentity(name: "driver")
        func read32(_ offset: UInt64) -> UInt32 { UInt32(truncatingIfNeeded: read(offset, .word)) }
        func read64(_ offset: UInt64) -> UInt64 { read(offset, .doubleword) }
        func write32(_ offset: UInt64, _ value: UInt32) { write(offset, UInt64(value), .word) }
        func write64(_ offset: UInt64, _ value: UInt64) { write(offset, value, .doubleword) }
        func read(_ offset: UInt64, _ width: AccessWidth) -> UInt64 {
            hypervisor.hostRead(address: base + offset, width: width, client: client).value ?? 0
        }
        func write(_ offset: UInt64, _ value: UInt64, _ width: AccessWidth) {
            _ = hypervisor.hostWrite(address: base + offset, value: value, width: width, client: client)
        }
    }

    static let clientBase: UInt64 = 0x8100_0000
    static let clientSize = 0x10000
    static let ownPage: UInt64 = 0x8000_1000
    static let iova: UInt64 = 0x10_0000
    static let pages = 8

    let config: DaemonConfiguration
    let policy: HypervisorPolicy
    let server = DispatcherStateImageTests.Server()

    init() throws {
        config = try DaemonConfiguration.load(path: repositoryRoot + "/Config/generic4k.yaml")
        policy = try DaemonCore.policy(config)
    }

    func sink() -> JournalAuditSink {
        JournalAuditSink(burst: 8, summaryInterval: .seconds(3600), queue: DispatchQueue(label: "reads"),
                         destination: DispatcherStateImageTests.Journal().destination)
    }

    func r(_ request: Request, _ tag: UInt32) -> [UInt8] { request.encoded(tag: tag) }

    /// The requests after the checkpoint: the device's DMAs through the client's tables (twice: the second pass
    /// rereads the same descriptors), the host's MEM_READ of its own RAM, then its MEM_WRITE there.
    var suffix: [(session: Int, bytes: [UInt8])] {
        var out: [(Int, [UInt8])] = []
        for pass in 0..<2 {
            for page in 0..<Self.pages {
                let iova = Self.iova + UInt64(page) << 12 + UInt64(pass * 8)
                out.append((1, r(.dma(DMARequest(window: 0, streamID: 0x20, iova: iova, flags: [])), UInt32(100 + pass * 10 + page))))
            }
        }
        out.append((0, r(.memRead(MemReadRequest(address: Self.ownPage, length: 8)), 200)))
        out.append((0, r(.memRead(MemReadRequest(address: Self.clientBase + 0x9000, length: 16)), 201)))
        out.append((0, r(.memWrite(MemWriteRequest(address: Self.ownPage, bytes: Array("after!!!".utf8))), 202)))
        return out
    }

    /// The daemon at the checkpoint: finalized, the client's memory mapped with stage-1 tables in it, a context bank
    /// attached to them, "before" in its own RAM.
    func setUp(ram: [Int32], memfd: Int32) throws -> (DaemonCore, [Session]) {
        let core = try DaemonCore.make(config, audit: sink(), ramFiles: ram)
        let d = core.dispatcher
        let sessions = [10, 11].map {
            d.makeSession(connection: ConnectionID(rawValue: UInt64($0)), peer: PeerCredentials(pid: 1, uid: 0, gid: 0),
                          server: server)
        }
        _ = DispatcherStateImageTests.send(r(.hello(HelloRequest(role: .host, name: "vmm")), 1), to: sessions[0])
        _ = DispatcherStateImageTests.send(r(.hello(HelloRequest(role: .device, name: "disk")), 1), to: sessions[1])
        #expect(core.hypervisor.finalize())
        let mapped = DispatcherStateImageTests.send(
            r(.memMap(MemMapRequest(address: Self.clientBase, size: UInt64(Self.clientSize), offset: 0)), 2),
            to: sessions[0], fds: [dup(memfd)])
        #expect(mapped.count == FrameHeader.size && FrameHeader(decoding: mapped)?.statusCode == .ok)
        let tables = try PageTableBuilder(memory: core.hypervisor.memory, stage: .stage1,
                                          tablePool: Self.clientBase..<(Self.clientBase + 0x8000))
        for page in 0..<Self.pages {
            try tables.map(Self.iova + UInt64(page) << 12, to: 0x8000_0000 + UInt64(page) << 12, size: 4096)
        }
        guard case .success(let smmu) = ArmSMMU.cfgProbe([HostPort(hypervisor: core.hypervisor)]) else {
            throw CocoaError(.featureUnsupported)
        }
        #expect(smmu.deviceReset().syncCompleted)
        smmu.attach(bank: 0, .stage1(asid: 1, pageTable: tables.root, tcr: tables.tcr), streams: [(index: 0, id: 0x20, mask: 0)])
        _ = DispatcherStateImageTests.send(
            r(.memWrite(MemWriteRequest(address: Self.ownPage, bytes: Array("before!!".utf8))), 3), to: sessions[0])
        return (core, sessions)
    }

    /// Replays `suffix` over the checkpoint, with the journaled reads (nil: none); answers and the DUMP after.
    func replay(_ checkpoint: (HypervisorStateImage, DispatcherStateImage), ram: [Int32], memfd: Int32,
                reads: [[UInt8]]?, requests: [(session: Int, bytes: [UInt8])]? = nil) throws -> (answers: [[UInt8]], dump: String) {
        ReplayMappings.begin()
        defer { ReplayMappings.finish() }
        let core = try DaemonCore.restore(config, audit: sink(), image: checkpoint.0, ramFiles: ram) {
            m throws(StateImageError) in try Dispatcher.sharedMemory(fd: memfd, for: m)
        }
        core.dispatcher.adopt(server: server)
        let sessions = try core.dispatcher.restore(checkpoint.1).map(\.session)
        let log = MemoryReadLog()
        let copies = (reads ?? []).map { bytes -> UnsafeMutableRawBufferPointer in
            let p = UnsafeMutableRawBufferPointer.allocate(byteCount: bytes.count, alignment: 8)
            p.copyBytes(from: bytes)
            return p
        }
        defer { for p in copies { p.deallocate() } }
        if reads != nil {
            log.beginReplay(copies.map { UnsafeRawBufferPointer($0) })
            log.attach(to: core.hypervisor.memory)
        }
        let answers = (requests ?? suffix).map { DispatcherStateImageTests.send($0.bytes, to: sessions[$0.session]) }
        MemoryReadLog.detach(from: core.hypervisor.memory)
        #expect(log.uncovered == 0 && log.mismatched == 0)
        return (answers, DumpDocument(hypervisor: core.hypervisor).json(limit: 1 << 20))
    }

    /// The daemon of `setUp` over new RAM files and client memory, and its checkpoint: what each test replays over.
    struct Checkpointed {
        let ram: [Int32]
        let memfd: Int32
        let core: DaemonCore
        let sessions: [Session]
        let checkpoint: (HypervisorStateImage, DispatcherStateImage)
    }

    func withCheckpoint(_ body: (Checkpointed) throws -> Void) throws {
        let ram = try #require(RAMFiles.create(policy))
        defer { for fd in ram { close(fd) } }
        let memfd = try SMMUClient.makeSharedMemory(size: Self.clientSize, name: "guest-ram")
        defer { close(memfd) }
        let (core, sessions) = try setUp(ram: ram, memfd: memfd)
        let checkpoint = (core.hypervisor.checkpointImage(),
                          core.dispatcher.stateImage(sessions: sessions.map { ($0, []) }, serverCounters: .init(), audit: nil))
        try body(Checkpointed(ram: ram, memfd: memfd, core: core, sessions: sessions, checkpoint: checkpoint))
    }

    @Test func aReplayAfterTheClientChangedItsMemoryAnswersAsTheOriginal() throws {
        try withCheckpoint { c in
            let (ram, memfd, core, sessions, checkpoint) = (c.ram, c.memfd, c.core, c.sessions, c.checkpoint)
            #expect(checkpoint.0.memory == nil, "RAM stays in its files")

            // The original, journaling its reads as restart mode does: one READS payload per request that had any.
            let log = MemoryReadLog()
            log.attach(to: core.hypervisor.memory)
            var reads: [[UInt8]] = []
            var original: [[UInt8]] = []
            for (i, request) in suffix.enumerated() {
                original.append(DispatcherStateImageTests.send(request.bytes, to: sessions[request.session]))
                if let payload = log.takePending() { reads.append(payload) }
                #expect(FrameHeader(decoding: original[i])?.statusCode == .ok, "request \(i)")
            }
            MemoryReadLog.detach(from: core.hypervisor.memory)
            let dump = DumpDocument(hypervisor: core.hypervisor).json(limit: 1 << 20)
            // Each distinct descriptor once (the second pass rereads them), MEM_READ's bytes each time: 4 levels with one
            // table each, 8 leaves; then 8 + 16 bytes.
            let observations = reads.map { $0.count }.reduce(0, +)
            #expect(observations == (3 + Self.pages) * (MemoryReadLog.observationHeader + 8)
                    + 2 * MemoryReadLog.observationHeader + 8 + 16)

            // The client unmaps everything (its tables now read as zeros), and the RAM file holds the later MEM_WRITE.
            let zeros = [UInt8](repeating: 0, count: 0x8000)
            #expect(pwrite(memfd, zeros, zeros.count, 0) == zeros.count)
            var clientData = [UInt8](repeating: 0xC5, count: 16)
            #expect(pwrite(memfd, clientData, 16, 0x9000) == 16)

            // Without the journaled reads the replay walks the zeros (faults) and reads "after!!!".
            let blind = try replay(checkpoint, ram: ram, memfd: memfd, reads: nil)
            #expect(blind.answers != original)
            #expect(blind.answers[0] != original[0], "the first DMA faults on the unmapped tables")

            // With them: every answer byte for byte, and the same state.
            let exact = try replay(checkpoint, ram: ram, memfd: memfd, reads: reads)
            for (i, (a, b)) in zip(exact.answers, original).enumerated() { #expect(a == b, "request \(i)") }
            #expect(exact.dump == dump)
            // The replay wrote into a private mapping of the client's memory: the client's own bytes are untouched.
            var tables = [UInt8](repeating: 1, count: 0x8000)
            #expect(pread(memfd, &tables, tables.count, 0) == tables.count && tables == zeros)
            #expect(pread(memfd, &clientData, 16, 0x9000) == 16 && clientData == [UInt8](repeating: 0xC5, count: 16))
            // The RAM file ends as the original left it: the replayed MEM_WRITE comes after the read it put back.
            var own = [UInt8](repeating: 0, count: 8)
            #expect(pread(ram[0], &own, 8, off_t(Self.ownPage - 0x8000_0000)) == 8 && own == Array("after!!!".utf8))
        }
    }

    /// A read the journal does not cover (the request a crash interrupted) is journaled by the replaying process;
    /// one it covers is not journaled again.
    @Test func aReplayJournalsOnlyWhatTheJournalLacks() {
        let memory = try! MemoryMap(regions: [(0x1000, 0x1000)])
        memory.writeBytes([1, 2, 3, 4, 5, 6, 7, 8], at: 0x1000)
        let original = MemoryReadLog()
        original.attach(to: memory)
        _ = memory.read64(at: 0x1000)
        _ = memory.read64(at: 0x1000)   // same value: left out
        let payload = original.takePending()!
        #expect(payload.count == MemoryReadLog.observationHeader + 8)
        _ = memory.read64(at: 0x1008)   // the "crashed" request's read: never committed
        MemoryReadLog.detach(from: memory)
        memory.writeBytes([9, 9, 9, 9, 9, 9, 9, 9], at: 0x1000)   // RAM is ahead

        let replay = MemoryReadLog()
        payload.withUnsafeBytes { replay.beginReplay([$0]) }
        replay.attach(to: memory)
        #expect(memory.read64(at: 0x1000) == 0x0807_0605_0403_0201)
        #expect(memory.read64(at: 0x1000) == 0x0807_0605_0403_0201)
        #expect(replay.takePending() == nil)
        #expect(memory.read64(at: 0x1008) == 0)
        let fresh = replay.takePending()!
        #expect(fresh.count == MemoryReadLog.observationHeader + 8)
        #expect(fresh.withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) } == 2, "its index follows the replayed reads")
        #expect(replay.uncovered == 0 && replay.mismatched == 0)
        MemoryReadLog.detach(from: memory)
    }

    /// A run of descriptors (DMA_PREFETCH's bulk decode) is left out when every word of it was journaled with its
    /// value, else journaled whole; a replay puts the whole run back before it is read.
    @Test func aRunIsLeftOutOnlyWhenEveryWordWasJournaled() {
        let memory = try! MemoryMap(regions: [(0x1000, 0x1000)])
        for i in 0..<UInt64(8) { memory.write64(0x100 + i, at: 0x1000 + i * 8) }
        let original = MemoryReadLog()
        original.attach(to: memory)
        let words = UnsafeMutablePointer<UInt64>.allocate(capacity: 8)
        defer { words.deallocate() }
        _ = memory.read64(at: 0x1008)                          // one word of the run, journaled alone
        #expect(memory.read64Run(at: 0x1000, count: 8, into: words))   // the others are new: the whole run
        #expect(memory.read64Run(at: 0x1000, count: 8, into: words))   // every word as journaled: left out
        #expect(memory.read64Run(at: 0x1010, count: 4, into: words))   // a part of it too
        let payload = original.takePending()!
        #expect(payload.count == 2 * MemoryReadLog.observationHeader + 8 + 64)
        memory.write64(0xBAD, at: 0x1020)                      // the next run sees a changed word: journaled again
        #expect(memory.read64Run(at: 0x1000, count: 8, into: words))
        #expect(original.takePending()?.count == MemoryReadLog.observationHeader + 64)
        MemoryReadLog.detach(from: memory)

        for i in 0..<UInt64(8) { memory.write64(0x900 + i, at: 0x1000 + i * 8) }   // RAM is ahead
        let replay = MemoryReadLog()
        payload.withUnsafeBytes { replay.beginReplay([$0]) }
        replay.attach(to: memory)
        #expect(memory.read64(at: 0x1008) == 0x101)
        #expect(memory.read64Run(at: 0x1000, count: 8, into: words))
        #expect((0..<8).allSatisfy { words[$0] == 0x100 + UInt64($0) }, "the run as the original read it")
        #expect(memory.read64Run(at: 0x1000, count: 8, into: words) && words[7] == 0x107)
        #expect(replay.takePending() == nil && replay.uncovered == 0 && replay.mismatched == 0)
        MemoryReadLog.detach(from: memory)
    }

    /// The request a crash interrupted (applied, its reads never journaled, its answer never sent) runs again in the
    /// replay and must read the client's memory as it is now: not the older bytes an earlier replayed read of the same
    /// address put into the private copy (with a guest, a descriptor it rewrote: the replay published a stale
    /// translation and QEMU read a garbage virtqueue descriptor).
    @Test func theInterruptedRequestReadsTheClientsMemoryAsItIsNow() throws {
        try withCheckpoint { c in
            let (ram, memfd, core, sessions, checkpoint) = (c.ram, c.memfd, c.core, c.sessions, c.checkpoint)
            let requests = [(session: 0, bytes: r(.memRead(MemReadRequest(address: Self.clientBase + 0x9000, length: 16)), 300)),
                            (session: 0, bytes: r(.memRead(MemReadRequest(address: Self.clientBase + 0x9000, length: 16)), 301))]
            let log = MemoryReadLog()
            log.attach(to: core.hypervisor.memory)
            let first = DispatcherStateImageTests.send(requests[0].bytes, to: sessions[0])
            let reads = [try #require(log.takePending())]
            // The client rewrites the bytes; the next request reads them, and the crash comes before its reads are journaled.
            let data = [UInt8](repeating: 0xC5, count: 16)
            #expect(pwrite(memfd, data, 16, 0x9000) == 16)
            let second = DispatcherStateImageTests.send(requests[1].bytes, to: sessions[0])
            _ = log.takePending()
            MemoryReadLog.detach(from: core.hypervisor.memory)
            #expect(Array(second.suffix(16)) == data && first != second)

            let replayed = try replay(checkpoint, ram: ram, memfd: memfd, reads: reads, requests: requests)
            #expect(replayed.answers[0] == first, "the journaled read")
            #expect(replayed.answers[1] == second, "the interrupted request reads the client's bytes as they are now")
        }
    }
}
