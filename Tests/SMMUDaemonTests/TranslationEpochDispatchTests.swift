import Foundation
import PKVM
import SMMUModel
import SMMUClient
import Testing
import WireProtocol
@testable import SMMUDaemon

#if canImport(Glibc)
    import Glibc
#endif

/// Protocol v1.1 at the dispatcher: DMA_EPOCH's descriptor rules and DMA_CACHED's answer.
@Suite struct TranslationEpochDispatchTests {
    @Test("DMA_EPOCH takes exactly one sealed memfd, once per connection, and the page then follows the epoch")
    func epochPageRules() throws {
        let t = try DispatcherTests()
        _ = t.exchange(t.request(.hello(HelloRequest(role: .device, name: "dma"))))
        // A file that is not a memfd sealed against shrinking is refused, as MEM_MAP refuses it.
        var template = Array("/tmp/smmu-epoch.XXXXXX".utf8CString)
        let unsealed = mkstemp(&template)
        unlink(template)
        #expect(ftruncate(unsealed, 4096) == 0)
        #expect(t.exchange(t.request(.dmaEpoch), fds: [unsealed]).frames.map { $0.0.statusCode } == [.invalid])
        close(unsealed)
        let fd = try SMMUClient.makeSharedMemory(size: 4096, name: "epoch")
        defer { close(fd) }
        let r = t.exchange(t.request(.dmaEpoch), fds: [dup(fd)])   // the dispatcher closes what it is given
        #expect(r.frames.map { $0.0.statusCode } == [.ok] && r.frames.first?.1.count == 8)
        let answered = r.frames.first.map { f in f.1.withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) } } ?? 0
        let page = mmap(nil, 4096, PROT_READ, MAP_SHARED, fd, 0)!
        defer { munmap(page, 4096) }
        #expect(page.load(as: UInt64.self) == answered && answered == t.dispatcher.hypervisor.translationEpoch.value)
        #expect(t.exchange(t.request(.dmaEpoch), fds: [dup(fd)]).frames.map { $0.0.statusCode } == [.invalid], "one per connection")
        // Finalization reprograms the SMMU: the page shows the new epoch before FINALIZE's caller hears of it.
        t.dispatcher.finalize()
        #expect(page.load(as: UInt64.self) == t.dispatcher.hypervisor.translationEpoch.value)
        #expect(page.load(as: UInt64.self) != answered)
        // DMA_CACHED to a host page: a 4 KiB, read-write answer in the current epoch. Finalized, no SMR
        // matches: the unidentified stream faults, with the 24 bytes carrying the fault.
        let d = t.exchange(t.request(.dmaCached(DMARequest(window: 0, streamID: 3, iova: 0x8000_1000, flags: []))))
        #expect(d.frames.map { $0.0.statusCode } == [.fault] && d.frames.first?.1.count == 24)
        // Without its descriptor DMA_EPOCH is MALFORMED and the connection closes.
        let other = t.dispatcher.makeSession(connection: ConnectionID(rawValue: 2),
                                             peer: PeerCredentials(pid: 43, uid: 1000, gid: 1000),
                                             server: DispatcherTests.Server())
        _ = t.exchange(t.request(.hello(HelloRequest(role: .device, name: "dma2"))), on: other)
        let bad = t.exchange(t.request(.dmaEpoch), on: other)
        #expect(bad.frames.map { $0.0.statusCode } == [.malformed] && bad.verdict == .closeAfterFlush)
    }

    @Test("DMA_CACHED before finalization (bypass at reset) answers a 4 KiB read-write page in the current epoch")
    func cachedAnswerInBypass() throws {
        let t = try DispatcherTests()
        _ = t.exchange(t.request(.hello(HelloRequest(role: .device, name: "dma"))))
        let r = t.exchange(t.request(.dmaCached(DMARequest(window: 0, streamID: 3, iova: 0x8000_1234, flags: [.write]))))
        #expect(r.frames.map { $0.0.statusCode } == [.ok])
        let answer = r.frames.first.flatMap { f in f.1.withUnsafeBytes { try? CachedDMAResult.decode($0) } }
        #expect(answer == CachedDMAResult(physicalAddress: 0x8000_1234, fault: 0, sizeShift: 12, access: 3, reachShift: 12,
                                          epoch: t.dispatcher.hypervisor.translationEpoch.value))
    }

    /// The hypervisor outlives a dispatcher (a fuzzer serves each input with a new dispatcher over one hypervisor):
    /// an epoch advance after the dispatcher is gone must find nobody to tell, not a freed object.
    @Test func anEpochAdvanceAfterTheDispatcherIsGoneIsHarmless() throws {
        let policy = HypervisorPolicy(topology: .generic4K(base: DispatcherTests.base),
                                      hostRAM: [PhysicalRange(base: 0x8000_0000, size: 1 << 20)],
                                      hypervisorRAM: PhysicalRange(base: 0x7F00_0000, size: 1 << 20))
        let memory = try MemoryMap(regions: [(0x8000_0000, 1 << 20), (0x7F00_0000, 1 << 20)])
        let hv = try Hypervisor(policy: policy, memory: memory, audit: CollectingAuditSink())
        let fd = try SMMUClient.makeSharedMemory(size: 4096, name: "epoch")
        defer { close(fd) }
        do {
            let dispatcher = Dispatcher(hypervisor: hv)
            // A device shares its page: the dispatcher's epoch pages now hear every advance.
            #expect(dispatcher.attachEpochPage(fd: fd, connection: ConnectionID(rawValue: 1)).0 == .ok)
        }
        let before = hv.translationEpoch.value
        #expect(hv.finalize())   // resets and reprograms every instance: the epoch advances
        #expect(hv.translationEpoch.value > before)
    }
}
