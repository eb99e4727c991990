import Foundation
import PKVM
import SMMUModel
import SMMUClient
import TestSupport
import Testing
import WireProtocol
@testable import SMMUDaemon

#if canImport(Glibc)
    import Glibc
#endif

/// Protocol v1.2 at the dispatcher, no sockets: the daemon's real request path writes the epoch page's log, and
/// the client library's `TranslationCache` reads it as a device would. A DMA to an IOVA whose unmap the host has
/// invalidated faults every time, while what no TLBI named stays cached.
@Suite struct InvalidationLogDispatchTests {
    /// A finalized generic MMU-500, a host session with a stage-1 domain for `stream` on bank 0 (its tables in host
    /// RAM, edited directly as the guest's kernel edits its io-pgtable), and a device session with its cache.
    final class Fixture {
        static let base: UInt64 = 0x2B40_0000
        static let ram: UInt64 = 0x8000_0000
        static let tables = ram                       // L0, L1, L2, L3s at +0, +0x1000, +0x2000, +0x3000...
        static let data = ram + 0x10_0000             // data pages
        static let stream: UInt32 = 0x10
        static let pageDescriptor: UInt64 = 1 << 10 | 1 << 6 | 0b11   // AF, AP[1] (EL0 read/write), page
        let dispatcher: Dispatcher
        let memory: MemoryMap
        let host: Session, device: Session
        let page: EpochPage
        private(set) var cache: TranslationCache<EpochPage>!
        let cb0: UInt64
        var tag: UInt32 = 1

        init(useLog: Bool = true) throws {
            let policy = HypervisorPolicy(topology: .generic4K(base: Self.base),
                                          hostRAM: [PhysicalRange(base: Self.ram, size: 8 << 20)],
                                          hypervisorRAM: PhysicalRange(base: 0x7F00_0000, size: 1 << 20))
            memory = try MemoryMap(regions: [(Self.ram, 8 << 20), (0x7F00_0000, 1 << 20)])
            let dispatcher = Dispatcher(hypervisor: try Hypervisor(policy: policy, memory: memory, audit: CollectingAuditSink()))
            self.dispatcher = dispatcher
            dispatcher.finalize()
            let w = dispatcher.hypervisor.windows[0]
            cb0 = w.base + w.size / 2
            func session(_ id: UInt64) -> Session {
                dispatcher.makeSession(connection: ConnectionID(rawValue: id), peer: PeerCredentials(pid: Int32(id), uid: 0, gid: 0),
                                       server: DispatcherTests.Server())
            }
            host = session(1)
            let device = session(2)
            self.device = device
            let fd = try SMMUClient.makeSharedMemory(size: 4096, name: "epoch")
            defer { close(fd) }
            #expect(Self.send(.hello(HelloRequest(role: .host, name: "host")), on: host).0 == .ok)
            #expect(Self.send(.hello(HelloRequest(role: .device, name: "dma")), on: device).0 == .ok)
            page = try EpochPage(mapping: fd) { () throws(SMMUClientError) in
                var fds = [dup(fd)]
                var out: [UInt8] = []
                _ = Request.dmaEpoch.encoded(tag: 1).withUnsafeBytes { device.receive($0, fds: &fds, output: &out) }
                return dispatcher.hypervisor.translationEpoch.value
            }
            #expect(page.keepsLog && page.epoch == page.sharedAt)
            set(table: 0, index: 0, Self.tables + 0x1000 | 0b11)
            set(table: 1, index: 0, Self.tables + 0x2000 | 0b11)
            set(table: 2, index: 0, Self.tables + 0x3000 | 0b11)   // IOVAs [0, 2 MiB)
            set(table: 2, index: 1, Self.tables + 0x4000 | 0b11)   // IOVAs [2, 4 MiB)
            set(table: 2, index: 2, Self.tables + 0x5000 | 0b11)   // IOVAs [4, 6 MiB)
            write(w.base + UInt64(w.pageSize) + 0x800, 1)            // CBA2R0: VA64
            write(w.base + UInt64(w.pageSize), 0x0001_0000)          // CBAR0: S1, S2 bypass
            write(cb0 + 0x10, 0b101)                                  // TCR2: 48-bit PA
            write(cb0 + 0x20, Self.tables, width: 8)                  // TTBR0, ASID 0
            write(cb0 + 0x30, 16 | 1 << 23)                           // TCR: T0SZ 16, 4 KiB, EPD1
            write(cb0, 1)                                             // SCTLR.M
            write(w.base + 0xC00, 0)                                  // S2CR0: translate, bank 0
            write(w.base + 0x800, 1 << 31 | UInt64(Self.stream))      // SMR0
            // The cache starts empty after the set-up, so its statistics count the test's own changes.
            cache = TranslationCache(memory: page, epoch: page.epoch, useLog: useLog)
        }

        static func send(_ r: Request, on s: Session) -> (Status?, [UInt8]) {
            var fds: [Int32] = []
            var out: [UInt8] = []
            _ = r.encoded(tag: 9).withUnsafeBytes { s.receive($0, fds: &fds, output: &out) }
            let frame = responseFrames(out).first
            return (frame?.0.statusCode, frame?.1 ?? [])
        }

        func set(table: Int, index: Int, _ value: UInt64) {
            #expect(memory.write64(value, at: Self.tables + UInt64(table) * 0x1000 + UInt64(index) * 8))
        }

        func write(_ address: UInt64, _ value: UInt64, width: UInt32 = 4) {
            #expect(Self.send(.write(WriteRequest(address: address, value: value, width: width)), on: host).0 == .ok)
        }

        /// A 4 KiB page below 6 MiB.
        func map(iova: UInt64, to pa: UInt64) {
            precondition(iova < 6 << 20)
            set(table: 3 + Int(iova >> 21), index: Int(iova >> 12 & 0x1FF), pa | Self.pageDescriptor)
        }
        func clear(iova: UInt64) { set(table: 3 + Int(iova >> 21), index: Int(iova >> 12 & 0x1FF), 0) }
        func tlbival(_ iova: UInt64) { write(cb0 + 0x620, iova >> 12, width: 8) }
        func sync() {
            write(cb0 + 0x7F0, 0)
            #expect(Self.send(.read(ReadRequest(address: cb0 + 0x7F4, width: 4)), on: host).0 == .ok)
        }

        /// A device's DMA: the cache, else DMA_CACHED (kept when it may be). Nil for a fault.
        func dma(_ iova: UInt64, write: Bool = false) -> (pa: UInt64?, cached: Bool) {
            if let pa = cache.lookup(window: 0, stream: Self.stream, iova: iova, write: write) { return (pa, true) }
            let (status, payload) = Self.send(.dmaCached(DMARequest(window: 0, streamID: Self.stream, iova: iova,
                                                                    flags: write ? .write : [])), on: device)
            guard status == .ok, let r = payload.withUnsafeBytes({ try? CachedDMAResult.decode($0) }) else { return (nil, false) }
            cache.insert(window: 0, stream: Self.stream, iova: iova, answer: r)
            return (r.physicalAddress, false)
        }
    }

    /// The virtqueue's page: mapped once, used between every unmap; with the log it is never asked again.
    static let ring: UInt64 = 0x1FF000

    @Test("strict unmaps: 3,000 map/DMA/unmap cycles, the unmapped IOVA faults every time, the ring's page stays cached")
    func strictCycles() throws {
        let f = try Fixture()
        f.map(iova: Self.ring, to: Fixture.data + 0xFF000)
        var stale = 0, missedFaults = 0, wrong = 0, ringMisses = 0
        for i in 0..<3000 {
            let iova: UInt64 = 0x10_0000 + UInt64(i % 200) << 12
            let pa = Fixture.data + UInt64(i % 64) << 12
            f.map(iova: iova, to: pa)
            for offset: UInt64 in [0x10, 0x800, 0xFF8] where f.dma(iova + offset, write: offset == 0x800).pa != pa + offset {
                wrong += 1
            }
            if !f.dma(Self.ring + 0x40).cached { ringMisses += 1 }
            f.clear(iova: iova)
            f.tlbival(iova)
            f.sync()
            let after = f.dma(iova + 0x10)
            if after.cached { stale += 1 }
            if after.pa != nil { missedFaults += 1 }
        }
        #expect(stale == 0 && missedFaults == 0 && wrong == 0)
        #expect(ringMisses == 1, "only the first use of the ring's page asks the daemon")
        #expect(f.cache.statistics.fullFlushes == 0 && f.cache.statistics.rangesApplied == 3000)
        #expect(f.cache.statistics.hits >= 3000 * 3 - 1)
    }

    /// Lazy invalidation as a flush queue batches it: a batch of unmaps (PTEs cleared at once), then one TLBIVAL per
    /// freed IOVA and a sync; the IOVAs are reused only after. Near each other (a strict 1 MiB unmap looks the
    /// same), the daemon merges their records (v1.3); alternating between two regions 3 MiB apart nothing merges,
    /// and a batch past the log's slots overflows it.
    @Test("batched unmaps: every IOVA of the batch faults after its TLBIVAL, the others stay cached; near ones merge, an overflowing batch flushes all",
          arguments: [(32, false), (126, false), (127, false), (300, false), (127, true), (300, true)])
    func batchedCycles(batch: Int, near: Bool) throws {
        let f = try Fixture()
        f.map(iova: Self.ring, to: Fixture.data + 0xFF000)
        var stale = 0, missedFaults = 0, wrong = 0
        let rounds = 3000 / batch + 1
        func iova(_ j: Int) -> UInt64 {
            near ? 0x20_0000 + UInt64(j % 400) << 12 : (j % 2 == 0 ? 0x20_0000 : 0x50_0000) + UInt64(j / 2 % 200) << 12
        }
        for round in 0..<rounds {
            let iovas = (0..<batch).map { iova($0 + round * 7) }
            for (i, iova) in iovas.enumerated() {
                f.map(iova: iova, to: Fixture.data + UInt64((i + round) % 200) << 12)
                if f.dma(iova + 0x20, write: true).pa != Fixture.data + UInt64((i + round) % 200) << 12 + 0x20 { wrong += 1 }
                _ = f.dma(Self.ring)
            }
            for iova in iovas { f.clear(iova: iova) }
            for iova in iovas { f.tlbival(iova) }
            f.sync()
            for iova in iovas {
                let after = f.dma(iova + 0x20)
                if after.cached { stale += 1 }
                if after.pa != nil { missedFaults += 1 }
            }
        }
        #expect(stale == 0 && missedFaults == 0 && wrong == 0)
        let s = f.cache.statistics
        if near {
            // A batch wraps at most once in its 400 pages: one or two merged records per batch, none overflows.
            #expect(s.fullFlushes == 0 && s.rangesApplied <= rounds * 2 && s.rangeDrops >= rounds * batch - 400, "\(s)")
        } else if batch <= InvalidationLog.slots {
            #expect(s.fullFlushes == 0 && s.rangesApplied == rounds * batch && s.rangeDrops >= rounds * batch - 400)
        } else {
            #expect(s.fullFlushes == rounds && s.lastFullFlush == .overflow, "\(s)")
        }
    }

    @Test("an old (v1.1) client that ignores the log drops everything on every advance, and is as correct")
    func oldClientIgnoresTheLog() throws {
        let f = try Fixture(useLog: false)
        #expect(!f.cache.usesLog)
        f.map(iova: Self.ring, to: Fixture.data)
        var stale = 0
        for i in 0..<500 {
            let iova: UInt64 = 0x10_0000 + UInt64(i % 100) << 12
            f.map(iova: iova, to: Fixture.data + 0x1000)
            _ = f.dma(iova)
            #expect(f.dma(iova).cached)
            f.clear(iova: iova)
            f.tlbival(iova)
            f.sync()
            if f.dma(iova).cached || f.dma(iova).pa != nil { stale += 1 }
        }
        #expect(stale == 0 && f.cache.statistics.fullFlushes == 500 && f.cache.statistics.rangesApplied == 0)
    }

    @Test("a TLBIVAL anywhere in a block ends every cached piece of it: 2 MiB and 1 GiB blocks")
    func blocksEndWhole() throws {
        let f = try Fixture()
        // A 2 MiB block at IOVA 0x40_0000 (L2 index 2) onto RAM + 2 MiB.
        f.set(table: 2, index: 2, Fixture.ram + 0x20_0000 | 1 << 10 | 1 << 6 | 0b01)
        #expect(f.dma(0x40_0000 + 0x1234).pa == Fixture.ram + 0x20_1234)
        #expect(f.dma(0x5F_F000).cached)
        f.set(table: 2, index: 2, 0)
        f.tlbival(0x5F_F000)                         // the block's last page: not the page first asked for
        f.sync()
        #expect(f.dma(0x40_0000 + 0x1234).pa == nil)
        // A 1 GiB block at IOVA 0x4000_0000 (L1 index 1) onto RAM's gigabyte: its 2 MiB pieces are cached one by one,
        // and a TLBIVAL in one piece ends the others.
        f.set(table: 1, index: 1, (Fixture.ram & ~0x3FFF_FFFF) | 1 << 10 | 1 << 6 | 0b01)
        let gigabyte = UInt64(0x4000_0000) + (Fixture.ram & 0x3FFF_FFFF)
        #expect(f.dma(gigabyte + 0x40_0010).pa == Fixture.ram + 0x40_0010)
        #expect(f.dma(gigabyte + 0x40_0010).cached)
        let before = f.cache.statistics.rangeDrops
        f.set(table: 1, index: 1, 0)
        f.tlbival(0x4000_0000 + 0x1000)               // another 2 MiB piece of the same gigabyte
        f.sync()
        let after = f.dma(gigabyte + 0x40_0010)
        #expect(!after.cached && after.pa == nil)
        #expect(f.cache.statistics.rangeDrops == before + 1 && f.cache.statistics.fullFlushes == 0)
    }

    @Test("hypercalls and configuration writes are never bypassed: VM_DONATE of a cached page, an S2CR write")
    func hypercallsAreFullFlushes() throws {
        let f = try Fixture()
        f.map(iova: 0x10_0000, to: Fixture.data)
        f.map(iova: 0x10_1000, to: Fixture.data + 0x1000)
        #expect(f.dma(0x10_0000).pa == Fixture.data && f.dma(0x10_0000).cached && f.dma(0x10_1000).pa != nil)
        let (status, payload) = Fixture.send(.vmCreate, on: f.host)
        #expect(status == .ok)
        let vm = payload.withUnsafeBytes { $0.loadLE(UInt32.self, at: 0) }
        #expect(Fixture.send(.vmDonate(VMDonateRequest(vm: vm, address: Fixture.data, size: 0x1000)), on: f.host).0 == .ok)
        let donated = f.dma(0x10_0000)
        #expect(!donated.cached && donated.pa == nil, "a page given to a VM is not reachable through the cache")
        #expect(f.cache.statistics.lastFullFlush == .unranged)
        #expect(f.dma(0x10_1000).pa == Fixture.data + 0x1000 && f.dma(0x10_1000).cached)
        f.write(Fixture.base + 0xC00, 0x0002_0000)   // S2CR0: fault
        let routed = f.dma(0x10_1000)
        #expect(!routed.cached && routed.pa == nil)
    }
}

/// The seqlock under real concurrency: the daemon's writer (`SharedPageWords`, C11 atomics) on one thread, the
/// client's `TranslationCache` over a read-only mapping of the same memfd on another, as a device reads its page
/// while the daemon serves the host.
@Suite struct InvalidationLogConcurrencyTests {
    /// The "translations": a version per page, changed and published under one lock (the daemon's serial queue);
    /// `changes[p]` lists (epoch, version) of every change of page p.
    final class Truth: @unchecked Sendable {
        let lock = NSLock()
        var versions = [UInt64](repeating: 1, count: 64)
        var changes = [[(epoch: UInt64, version: UInt64)]](repeating: [], count: 64)
        var epoch: UInt64 = 1
        var done = false
    }

    @Test("a reader thread never hits a translation a published record ended, while a writer thread rewrites every slot")
    func readerNeverStaleUnderConcurrentWriter() throws {
        let fd = try SMMUClient.makeSharedMemory(size: 4096, name: "epoch")
        defer { close(fd) }
        let rw = try #require(mmap(nil, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0))
        defer { munmap(rw, 4096) }
        let writer = SharedPageWords(base: rw)
        InvalidationLog.initialize(writer, epoch: 1)
        let page = try EpochPage(mapping: fd) { () throws(SMMUClientError) in 1 }
        let cache = TranslationCache(memory: page, epoch: 1)
        let truth = Truth()
        let thread = Thread {
            var rng = SplitMix64(seed: 7)
            for i in 0..<40_000 {
                if i % 8 == 0 { usleep(50) }   // let the reader find its entries between bursts of changes
                truth.lock.lock()
                let p = Int(rng.next() % 64)
                truth.epoch += 1
                let everything = rng.next() % 64 == 0
                truth.versions[p] += 1
                truth.changes[p].append((truth.epoch, truth.versions[p]))
                let record = everything ? InvalidationRecord.everything
                    : InvalidationRecord(kind: .address, address: UInt64(p) << 12, pages: 1, window: 0)
                InvalidationLog.publish(record, epoch: truth.epoch, to: writer)
                truth.lock.unlock()
            }
            truth.lock.lock()
            truth.done = true
            truth.lock.unlock()
        }
        thread.start()
        var rng = SplitMix64(seed: 11)
        var stale = 0, lookups = 0
        while true {
            truth.lock.lock()
            let finished = truth.done
            truth.lock.unlock()
            if finished { break }
            let p = UInt64(rng.next() % 64)
            lookups += 1
            if let pa = cache.lookup(window: 0, stream: 1, iova: p << 12, write: false) {
                let version = pa >> 20, seen = cache.seen
                truth.lock.lock()
                if truth.changes[Int(p)].contains(where: { $0.epoch <= seen && $0.version > version }) { stale += 1 }
                truth.lock.unlock()
            } else {
                truth.lock.lock()
                let answer = CachedDMAResult(physicalAddress: truth.versions[Int(p)] << 20 | p << 12, fault: 0, sizeShift: 12,
                                             access: 3, reachShift: 12, epoch: truth.epoch)
                truth.lock.unlock()
                cache.insert(window: 0, stream: 1, iova: p << 12, answer: answer)
            }
        }
        let s = cache.statistics
        #expect(stale == 0, "\(s)")
        #expect(s.hits > 1000 && s.rangesApplied > 1000 && s.fullFlushes > 0, "\(lookups) lookups: \(s)")
    }
}
