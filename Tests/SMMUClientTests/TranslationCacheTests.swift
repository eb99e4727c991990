import Foundation
import Testing
import WireProtocol
import CSocketShims

@testable import SMMUClient

#if canImport(Glibc)
    import Glibc
#endif

/// Protocol v1.1's translation caching against the real daemon: a device that caches DMA_CACHED answers
/// exactly as docs/protocol-v1.md says (an entry is used only while the shared epoch page still shows the
/// epoch it was answered in) never uses a translation the host has ended, however it ended it.
@Suite(.serialized, .enabled(if: ProcessInfo.processInfo.environment["SMMU_HYPD_BIN"] != nil, "set SMMU_HYPD_BIN to run against the daemon"))
struct TranslationCacheTests {
    /// The device side: the client library's `TranslationCache` over the connection's shared epoch page (what
    /// qemu/smmu-hypd-device.c does), asking DMA_CACHED on a miss.
    final class DeviceCache {
        let client: SMMUClient
        let page: EpochPage
        let cache: TranslationCache<EpochPage>
        var hits: Int { cache.statistics.hits }
        var misses: Int { cache.statistics.misses }

        /// `useLog` false: an old (v1.1) client, which drops everything at every advance.
        init(client: SMMUClient, useLog: Bool = true) throws {
            self.client = client
            page = try EpochPage(client: client)
            precondition(page.epoch == page.sharedAt, "the page shows the epoch DMA_EPOCH answered")
            cache = TranslationCache(memory: page, epoch: page.sharedAt, useLog: useLog)
        }

        var epoch: UInt64 { page.epoch }

        /// (physical address or nil for a fault, whether it came from the cache)
        func translate(stream: UInt32, iova: UInt64, write: Bool = false) throws -> (pa: UInt64?, cached: Bool) {
            if let pa = cache.lookup(window: 0, stream: stream, iova: iova, write: write) { return (pa, true) }
            let r = try client.dmaCached(window: 0, stream: stream, iova: iova, flags: write ? .write : [])
            guard r.fault == 0 else { return (nil, false) }
            cache.insert(window: 0, stream: stream, iova: iova, answer: r)
            return (r.physicalAddress, false)
        }
    }

    /// Host-side fixtures: a stage-1 domain on window 0's context bank 0 for `stream`, its tables in a memfd the
    /// daemon shares (MEM_MAP), edited directly as the guest's kernel edits its io-pgtable.
    struct Domain {
        static let stream: UInt32 = 0x10
        static let tables: UInt64 = 0x8000_0000       // L0, L1, L2, L3 at +0, +0x1000, +0x2000, +0x3000
        static let tableBytes = 0x40_0000
        static let data: UInt64 = 0x8040_0000        // daemon memory (not the memfd): donatable
        static let block: UInt64 = 0x8060_0000       // a 2 MiB block's output, mapped at IOVA 0x20_0000
        static let pageDescriptor: UInt64 = 1 << 10 | 1 << 6 | 0b11   // AF, AP[1] (EL0 read/write), page
        let host: SMMUClient
        let file: Int32
        let base: UInt64, cb0: UInt64

        init(host: SMMUClient, hello: HelloResponse) throws {
            self.host = host
            let w = hello.windows[0]
            base = w.base
            cb0 = w.base + w.size / 2
            file = try SMMUClient.makeSharedMemory(size: Self.tableBytes, name: "tables")
            try host.memMap(address: Self.tables, size: UInt64(Self.tableBytes), offset: 0, fd: file)
            setEntry(table: 0, index: 0, Self.tables + 0x1000 | 0b11)
            setEntry(table: 1, index: 0, Self.tables + 0x2000 | 0b11)
            setEntry(table: 2, index: 0, Self.tables + 0x3000 | 0b11)
            let page = UInt64(w.pageSize)
            try host.write(address: base + page + 0x800, value: 1)                 // CBA2R0: VA64
            try host.write(address: base + page, value: 0x0001_0000)               // CBAR0: S1, S2 bypass
            try host.write(address: cb0 + 0x10, value: 0b101)                      // TCR2: 48-bit PA
            try host.write(address: cb0 + 0x20, value: Self.tables, width: 8)      // TTBR0, ASID 0
            try host.write(address: cb0 + 0x30, value: 16 | 1 << 23)              // TCR: T0SZ 16, 4 KiB, EPD1
            try host.write(address: cb0, value: 1)                                 // SCTLR.M
            try host.write(address: base + 0xC00, value: 0)                        // S2CR0: translate, bank 0
            try host.write(address: base + 0x800, value: 1 << 31 | UInt64(Self.stream))   // SMR0
        }

        func setEntry(table: Int, index: Int, _ value: UInt64) {
            var v = value.littleEndian
            precondition(pwrite(file, &v, 8, off_t(table * 0x1000 + index * 8)) == 8)
        }

        func map(iova: UInt64, to pa: UInt64) { setEntry(table: 3, index: Int(iova >> 12 & 0x1FF), pa | Self.pageDescriptor) }

        /// Linux's strict unmap: clear the PTE, TLBIVAL, TLBSYNC, poll TLBSTATUS.
        func unmap(iova: UInt64) throws {
            setEntry(table: 3, index: Int(iova >> 12 & 0x1FF), 0)
            try host.write(address: cb0 + 0x620, value: iova >> 12, width: 8)
            try host.write(address: cb0 + 0x7F0, value: 0)
            #expect(try host.read(address: cb0 + 0x7F4) == 0)
        }
    }

    /// A daemon, a host with the stage-1 domain attached, and a device connection with its cache.
    static func start(useLog: Bool = true) throws -> (RunningDaemon, SMMUClient, Domain, SMMUClient, DeviceCache) {
        let daemon = try RunningDaemon()
        let (host, hello) = try daemon.connect()
        let domain = try Domain(host: host, hello: hello)
        let (deviceClient, _) = try daemon.connect(role: .device)
        return (daemon, host, domain, deviceClient, try DeviceCache(client: deviceClient, useLog: useLog))
    }

    @Test("strict unmap: across 3,000 map/DMA/unmap cycles a DMA to the IOVA just unmapped faults every time, never a cached hit; v1.2's log keeps the rest cached",
          arguments: [true, false])
    func strictUnmapNeverHitsAStaleEntry(useLog: Bool) throws {
        let (daemon, _, domain, _, cache) = try Self.start(useLog: useLog)
        defer { close(domain.file); daemon.stop() }
        #expect(cache.cache.usesLog == useLog, "a v1.2 daemon keeps the log")
        let ring: UInt64 = 0x1F_F000                    // the virtqueue's page: used between every unmap
        domain.map(iova: ring, to: Domain.data + 0xFF000)
        var staleHits = 0, missedFaults = 0, wrong = 0, ringMisses = 0
        for i in 0..<3000 {
            let iova: UInt64 = 0x10_0000 + UInt64(i % 200) << 12
            let pa = Domain.data + UInt64(i % 64) << 12
            domain.map(iova: iova, to: pa)
            for offset: UInt64 in [0x10, 0x800, 0xFF8] {     // the first asks the daemon, the others hit
                let r = try cache.translate(stream: Domain.stream, iova: iova + offset, write: offset == 0x800)
                if r.pa != pa + offset { wrong += 1 }
            }
            if try !cache.translate(stream: Domain.stream, iova: ring + 0x40).cached { ringMisses += 1 }
            try domain.unmap(iova: iova)
            let after = try cache.translate(stream: Domain.stream, iova: iova + 0x10)
            if after.cached { staleHits += 1 }
            if after.pa != nil { missedFaults += 1 }
        }
        #expect(staleHits == 0 && missedFaults == 0 && wrong == 0)
        #expect(cache.hits >= 5000, "the cache serves the repeat accesses: \(cache.hits) hits, \(cache.misses) misses")
        let s = cache.cache.statistics
        if useLog {
            #expect(ringMisses == 1 && s.fullFlushes == 0 && s.rangesApplied >= 3000, "\(s)")
        } else {
            #expect(ringMisses == 3000 && s.rangesApplied == 0, "an old client asks again after every TLBI")
        }
    }

    /// Lazy invalidation as a batch: unmap many (PTEs cleared), then one TLBIVAL each and one sync, as a driver's
    /// flush of freed IOVAs does; IOVAs are reused only after. Over the log's 126 slots the device flushes all.
    @Test("batched unmaps over the socket: each unmapped IOVA faults after the batch's TLBIs, the others stay cached; contiguous records merge",
          arguments: [100, 200])
    func batchedUnmapsNeverHitAStaleEntry(batch: Int) throws {
        let (daemon, host, domain, _, cache) = try Self.start()
        defer { close(domain.file); daemon.stop() }
        let ring: UInt64 = 0x1F_F000
        domain.map(iova: ring, to: Domain.data + 0xFF000)
        var staleHits = 0, missedFaults = 0, wrong = 0
        let rounds = 2000 / batch
        for round in 0..<rounds {
            let iovas = (0..<batch).map { UInt64(0x10_0000) + UInt64(($0 + round * 5) % 250) << 12 }
            for (i, iova) in iovas.enumerated() {
                let pa = Domain.data + UInt64((i + round) % 64) << 12
                domain.map(iova: iova, to: pa)
                if try cache.translate(stream: Domain.stream, iova: iova + 8, write: true).pa != pa + 8 { wrong += 1 }
                _ = try cache.translate(stream: Domain.stream, iova: ring)
            }
            for iova in iovas { domain.setEntry(table: 3, index: Int(iova >> 12 & 0x1FF), 0) }
            for iova in iovas { try host.write(address: domain.cb0 + 0x620, value: iova >> 12, width: 8) }
            try host.write(address: domain.cb0 + 0x7F0, value: 0)
            #expect(try host.read(address: domain.cb0 + 0x7F4) == 0)
            for iova in iovas {
                let after = try cache.translate(stream: Domain.stream, iova: iova + 8)
                if after.cached { staleHits += 1 }
                if after.pa != nil { missedFaults += 1 }
            }
        }
        #expect(staleHits == 0 && missedFaults == 0 && wrong == 0)
        let s = cache.cache.statistics
        // The batch's IOVAs are contiguous (wrapping once at most): the daemon merges their records (v1.3), so
        // even a batch over the log's slots is read as a few ranges, never an overflow.
        #expect(s.fullFlushes == 0 && s.rangeDrops >= rounds * batch / 2, "\(s)")
        #expect(s.rangesApplied <= rounds * 3, "\(s)")
    }

    @Test("DMA_PREFETCH answers the pages after the access (v1.2: or before it) up to the first unmapped one, or (v1.2) the mapped ones around it; holes fault nowhere")
    func prefetchStopsSilentlyAtAHole() throws {
        let (daemon, host, domain, deviceClient, _) = try Self.start()
        defer { close(domain.file); daemon.stop() }
        for i in UInt64(0)..<8 { domain.map(iova: 0x10_0000 + i << 12, to: Domain.data + (7 - i) << 12) }
        let got = try #require(try deviceClient.dmaPrefetch(window: 0, stream: Domain.stream, iova: 0x10_0010, pages: 16))
        #expect(got.ranges.map(\.physicalAddress) == [Domain.data + 7 << 12 | 0x10] + (1..<8).map { Domain.data + (7 - $0) << 12 })
        #expect(got.ranges.allSatisfy { $0.sizeShift == 12 && $0.access == 3 })
        #expect(try host.read(address: domain.cb0 + 0x58) == 0, "the speculative miss at 0x108000 recorded no fault")
        // v1.2 backward: the pages before the access, down to the first unmapped one (0x10_0000 - 0x1000).
        let back = try #require(try deviceClient.dmaPrefetch(window: 0, stream: Domain.stream, iova: 0x10_5010, pages: 16,
                                                             backward: true))
        #expect(back.ranges.map(\.physicalAddress) == [Domain.data + 2 << 12 | 0x10] + (1...5).map { Domain.data + (2 + $0) << 12 })
        #expect(back.ranges.allSatisfy { $0.sizeShift == 12 && $0.reachShift == 12 })
        #expect(try host.read(address: domain.cb0 + 0x58) == 0, "the speculative miss at 0xFF000 recorded no fault")
        // v1.2 around, holes skipped: 8 pages probed after the access's page (0x106..0x10D), then 8 before it.
        domain.map(iova: 0x10_A000, to: Domain.data + 0xA000)
        domain.map(iova: 0x10_C000, to: Domain.data + 0xC000)
        domain.map(iova: 0x0F_E000, to: Domain.data + 0xE000)
        let around = try #require(try deviceClient.dmaPrefetch(window: 0, stream: Domain.stream, iova: 0x10_5010, pages: 8,
                                                               aroundSkippingHoles: true))
        #expect(around.pageOffsets == [0, 1, 2, 5, 7, -1, -2, -3, -4, -5, -7])
        #expect(around.ranges.map(\.physicalAddress) == [Domain.data + 2 << 12 | 0x10, Domain.data + 1 << 12, Domain.data,
                                                          Domain.data + 0xA000, Domain.data + 0xC000]
                + (3...7).map { Domain.data + $0 << 12 } + [Domain.data + 0xE000])
        #expect(try host.read(address: domain.cb0 + 0x58) == 0, "the holes probed recorded no fault")
        // The access itself faulting is a real fault: FAULT, recorded in the bank's FSR.
        #expect(try deviceClient.dmaPrefetch(window: 0, stream: Domain.stream, iova: 0x10_8000, pages: 4) == nil)
        #expect(try host.read(address: domain.cb0 + 0x58) & 0x2 != 0)
        // v1.3: up to 512 pages (a v1.2 daemon took 64); beyond, INVALID.
        let wide = try #require(try deviceClient.dmaPrefetch(window: 0, stream: Domain.stream, iova: 0x10_5010,
                                                             pages: DMAPrefetchRequest.maxPages, aroundSkippingHoles: true))
        #expect(wide.pageOffsets == around.pageOffsets && wide.ranges.map(\.physicalAddress) == around.ranges.map(\.physicalAddress))
        #expect(throws: SMMUClientError.self) {
            _ = try deviceClient.dmaPrefetch(window: 0, stream: Domain.stream, iova: 0x10_0000, pages: DMAPrefetchRequest.maxPages + 1)
        }
    }

    @Test("a 2 MiB block is one answer; donating a page of it, assigning the stream or destroying the VM ends every cached entry")
    func hypercallsNeverBypassedByTheCache() throws {
        let (daemon, host, domain, deviceClient, cache) = try Self.start()
        defer { close(domain.file); daemon.stop() }

        // A 2 MiB block: one DMA_CACHED answer covers it, the rest of its pages hit.
        domain.setEntry(table: 2, index: 1, Domain.block | 1 << 10 | 1 << 6 | 0b01)
        let first = try deviceClient.dmaCached(window: 0, stream: Domain.stream, iova: 0x20_0000 + 0x1234)
        #expect(first.fault == 0 && first.sizeShift == 21 && first.access == 3 && first.physicalAddress == Domain.block + 0x1234)
        _ = try cache.translate(stream: Domain.stream, iova: 0x20_0000)
        #expect(try cache.translate(stream: Domain.stream, iova: 0x3F_F000).cached)

        // VM_DONATE of one page inside the block: nothing cached before it is used after it; that page faults and
        // the block's other pages are now described one 4 KiB page at a time.
        let vm = try host.vmCreate()
        try host.vmDonate(vm: vm, address: Domain.block + 0x5_0000, size: 0x1000)
        let donated = try cache.translate(stream: Domain.stream, iova: 0x25_0000)
        #expect(!donated.cached && donated.pa == nil, "a page given to a VM is not reachable through a cached block")
        #expect(try deviceClient.dmaCached(window: 0, stream: Domain.stream, iova: 0x26_0000).sizeShift == 12)

        // A bypassed host stream's cached page, then VM_ASSIGN_STREAM: the stream is the VM's, the entry is gone.
        let sCR0 = try host.read(address: domain.base)
        try host.write(address: domain.base, value: sCR0 & ~(1 << 10))   // USFCFG 0: unmatched streams bypass
        let other: UInt32 = 0x20
        let target = Domain.data + 0x10_0000
        #expect(try cache.translate(stream: other, iova: target).pa == target)
        #expect(try cache.translate(stream: other, iova: target).cached)
        try host.vmAssignStream(vm: vm, window: 0, stream: other)
        let assigned = try cache.translate(stream: other, iova: target)
        #expect(!assigned.cached && assigned.pa == nil, "the VM's stage-2 does not map a host page")

        // The VM's own page, cached, then VM_DESTROY: scrubbed and back to the host, the entry is not used.
        try host.vmDonate(vm: vm, address: target, size: 0x1000)
        #expect(try cache.translate(stream: other, iova: target).pa == target)
        #expect(try cache.translate(stream: other, iova: target).cached)
        let before = cache.epoch
        try host.vmDestroy(vm: vm)
        #expect(cache.epoch != before)
        #expect(try !cache.translate(stream: other, iova: target).cached)

        // A host SMR or S2CR write ends cached entries too: S2CR0 to FAULT, the mapped page faults at once.
        domain.map(iova: 0x10_0000, to: Domain.data)
        #expect(try cache.translate(stream: Domain.stream, iova: 0x10_0000).pa == Domain.data)
        try host.write(address: domain.base + 0xC00, value: 0x0002_0000)
        let routed = try cache.translate(stream: Domain.stream, iova: 0x10_0000)
        #expect(!routed.cached && routed.pa == nil)
    }
}
