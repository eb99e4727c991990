import Testing
@testable import SMMUModel

/// A run of speculative translations (`speculating`: the walk cache and the last-level table decode) answers
/// exactly what probing page by page answers: compared on two identical machines over pages of every kind.
@Suite("Speculative runs: the walk cache and the leaf-table decode")
struct LeafRunTests {
    static let sid = Stage1Tests.sid
    static let bank = Stage1Tests.bank
    static let base: UInt64 = 0x1000_0000 - 0x10_0000   // 3 MiB from here crosses two 2 MiB boundaries
    static let pages = 768

    /// A machine whose stage-1 tables hold, page by page, one of: nothing, read-write, read-only, privileged-only,
    /// no access flag, an output the filter refuses, an output past the address size, a level-3 descriptor with
    /// bits[1:0] = 0b01 (invalid there); plus a 2 MiB block right after the range.
    static func machine(filter: RangeFilter) throws -> (Machine, PageTableBuilder) {
        var m = Machine(filter: filter)
        let d = m.driver
        d.reset()
        _ = d.testSMRMasks()
        let pt = try m.builder(.stage1)
        d.attachStage1(bank: bank, ttbr0: pt.root, tcr: pt.tcr)
        d.route(smr: 0, stream: sid, mask: 0x7F80, toBank: bank)
        var rng = SplitMix(seed: 0x5EED)
        for i in 0..<UInt64(pages) {
            let va = base + i << 12, pa = Machine.ramBase + (i % 4096) << 12
            switch rng.next() % 9 {
            case 0, 1: continue
            case 2: try pt.map(va, to: pa, size: 0x1000, attributes: .readOnly)
            case 3: try pt.map(va, to: pa, size: 0x1000, attributes: .init(user: false))
            case 4: try pt.map(va, to: pa, size: 0x1000, attributes: .init(accessFlag: false))
            case 5: try pt.map(va, to: Machine.ramBase + (200 << 20) + i << 12, size: 0x1000)   // refused output
            case 6:
                try pt.map(va, to: pa, size: 0x1000)
                let (desc, _) = try #require(pt.leaf(for: va))
                let address = try #require(Self.descriptorAddress(m, pt, va))
                _ = m.memory.write64(i & 1 == 0 ? desc | 0x8000_0000_0000 : desc & ~2, at: address)
            default: try pt.map(va, to: pa, size: 0x1000)
            }
        }
        try pt.map(0x1040_0000, to: Machine.ramBase + 0x20_0000, size: 0x20_0000)   // the range ends at 0x1020_0000
        return (m, pt)
    }

    /// The physical address of va's level-3 descriptor (the builder's tables are identity-mapped RAM).
    static func descriptorAddress(_ m: Machine, _ pt: PageTableBuilder, _ va: UInt64) -> UInt64? {
        var table = pt.root
        for level in 0...2 {
            let index = (va >> UInt64(39 - 9 * level)) & 511
            guard let d = m.memory.read64(at: table + index * 8), d & 3 == 3 else { return nil }
            table = StageParameters.addressField(d, lowBit: 12)
        }
        return table + ((va >> 12) & 511) * 8
    }

    @Test(arguments: [DMAAccess.read, .write, [.write, .privileged], [.privileged, .instructionFetch]])
    func runAnswersWhatEachProbeAnswers(access: DMAAccess) throws {
        let allowed = Machine.ramBase..<(Machine.ramBase + (192 << 20))   // tables included, not the refused outputs
        let (a, _) = try Self.machine(filter: RangeFilter(allowed))
        let (b, _) = try Self.machine(filter: RangeFilter(allowed))
        let stream = StreamID(Self.sid)
        var translated = 0, faulted = 0
        // Up, then down, then up again: the run's cached leaf table changes region in both directions.
        let order = Array(0..<(Self.pages + 600)) + (0..<(Self.pages + 600)).reversed() + Array(0..<300)
        b.smmu.speculating(stream: stream) {
            for i in order {
                let iova = Self.base + UInt64(i) << 12 + 0x18
                var slow = a.smmu.probe(stream: stream, iova: iova, access: access)
                var fast = b.smmu.probe(stream: stream, iova: iova, access: access)
                // The one documented difference: the run's decodes do not fill the TLB (later passes hit in a's).
                slow.tlbHit = false
                fast.tlbHit = false
                #expect(fast == slow, "iova 0x\(String(iova, radix: 16))")
                #expect(a.smmu.extent(of: slow, stream: stream) == b.smmu.extent(of: fast, stream: stream))
                if slow.physicalAddress != nil { translated += 1 } else { faulted += 1 }
            }
        }
        #expect(translated > 300 && faulted > 300, "\(translated) translated, \(faulted) faulted")   // both kinds compared
        #expect(b.driver.r32(.FSR, Self.bank) == 0)    // a probe records no fault, in a run or not
    }

    @Test func aPageTheTLBStillHoldsIsNoHole() throws {
        let (m, pt) = try Self.machine(filter: RangeFilter(0..<UInt64.max))
        let stream = StreamID(Self.sid)
        let first: UInt64 = 0x1020_0000, stale = first + 0x3000   // after the mixed range: nothing mapped there
        try pt.map(stale, to: Machine.ramBase + 0x7000, size: 0x1000)
        #expect(m.smmu.translate(stream: stream, iova: stale, access: .read).physicalAddress == Machine.ramBase + 0x7000)
        try pt.unmap(stale, size: 0x1000)            // no TLBI yet: the TLB still translates it, as hardware would
        try pt.map(first + 0x9000, to: Machine.ramBase, size: 0x1000)   // a last-level table for the region
        m.smmu.speculating(stream: stream) {
            var answers: [UInt64?] = []
            #expect(m.smmu.probeLeafRun(stream: stream, iova: first, access: .read, down: false, limit: 10) { _, t in
                answers.append(t.physicalAddress)
                return true
            } == 10)
            #expect(answers == [nil, nil, nil, Machine.ramBase + 0x7000, nil, nil, nil, nil, nil, Machine.ramBase],
                    "holes, the page the TLB holds, holes, the mapped page")
            #expect(m.smmu.probe(stream: stream, iova: stale, access: .read).physicalAddress == Machine.ramBase + 0x7000)
        }
    }

    @Test func theCacheLivesOnlyInsideTheRun() throws {
        let (m, pt) = try Self.machine(filter: RangeFilter(0..<UInt64.max))
        let stream = StreamID(Self.sid)
        let iova: UInt64 = 0x1020_5000      // after the mixed range, before the block
        try pt.map(iova, to: Machine.ramBase + 0x7000, size: 0x1000)
        // The level-2 table descriptor above iova, then the same table moved: a copy elsewhere mapping another PA.
        let leaf = try #require(Self.descriptorAddress(m, pt, iova))
        let table = leaf & ~0xFFF
        let copy = Machine.ramBase + (100 << 20)
        for i in 0..<UInt64(512) { _ = m.memory.write64(m.memory.read64(at: table + i * 8) ?? 0, at: copy + i * 8) }
        _ = m.memory.write64((m.memory.read64(at: leaf) ?? 0) & ~0xFFFF_FFFF_F000 | (Machine.ramBase + 0x9000),
                             at: copy + (leaf & 0xFFF))
        var l2 = pt.root
        for level in 0...1 { l2 = StageParameters.addressField(m.memory.read64(at: l2 + ((iova >> UInt64(39 - 9 * level)) & 511) * 8)!, lowBit: 12) }
        let l2Entry = l2 + ((iova >> 21) & 511) * 8
        let before = try #require(m.memory.read64(at: l2Entry))
        m.smmu.speculating(stream: stream) {
            // A hole next to it: fills the run's caches for this region.
            #expect(m.smmu.probe(stream: stream, iova: iova - 0x1000, access: .read).fault == .translation)
            _ = m.memory.write64(before & 0xFFF | copy | before & ~0xFFFF_FFFF_F000, at: l2Entry)
            // Inside the run the table descriptor read before is reused, as a walk cache would.
            #expect(m.smmu.probe(stream: stream, iova: iova, access: .read).physicalAddress == Machine.ramBase + 0x7000)
        }
        // After it, a probe walks again and sees the new table (nothing of the run went into the TLB).
        #expect(m.smmu.probe(stream: stream, iova: iova, access: .read).physicalAddress == Machine.ramBase + 0x9000)
    }
}

extension LeafRunTests {
    /// The level-2 descriptor's address above `va` (the builder's tables are identity-mapped RAM).
    static func level2Entry(_ m: Machine, _ pt: PageTableBuilder, _ va: UInt64) -> UInt64? {
        var table = pt.root
        for level in 0...1 {
            guard let d = m.memory.read64(at: table + ((va >> UInt64(39 - 9 * level)) & 511) * 8), d & 3 == 3 else { return nil }
            table = StageParameters.addressField(d, lowBit: 12)
        }
        return table + ((va >> 21) & 511) * 8
    }

    /// `probeLeafRun` (DMA_PREFETCH's bulk decode) answers each page exactly as a probe does, walking as the daemon
    /// does (a page a run cannot answer is probed), up and down over: the mixed tables, a 2 MiB hole with no table,
    /// a block, and pages the TLB still holds after their descriptors went without a TLBI, in a table and in a hole.
    @Test(arguments: [DMAAccess.read, .write, [.write, .privileged]])
    func aLeafRunAnswersWhatEachProbeAnswers(access: DMAAccess) throws {
        let allowed = Machine.ramBase..<(Machine.ramBase + (192 << 20))
        let (a, ptA) = try Self.machine(filter: RangeFilter(allowed))
        let (b, ptB) = try Self.machine(filter: RangeFilter(allowed))
        let stream = StreamID(Self.sid)
        let staleInTable: [UInt64] = [Self.base + 0x2_0000, Self.base + 0x2_1000, Self.base + 0x11_0000]
        let staleInHole: UInt64 = 0x1060_5000   // after the block; its whole 2 MiB loses its table
        for (m, pt) in [(a, ptA), (b, ptB)] {
            try pt.map(staleInHole, to: Machine.ramBase + 0x7000, size: 0x1000)
            for va in staleInTable + [staleInHole] {
                _ = m.smmu.translate(stream: stream, iova: va, access: .read)     // into the TLB, if it translates
                _ = m.memory.write64(0, at: try #require(Self.descriptorAddress(m, pt, va)))
            }
            _ = m.memory.write64(0, at: try #require(Self.level2Entry(m, pt, staleInHole)))
            m.driver.w32(.FSR, Self.bank, m.driver.r32(.FSR, Self.bank))    // the set-up's faults, cleared
        }
        #expect(a.smmu.probe(stream: stream, iova: staleInHole, access: .read).physicalAddress == Machine.ramBase + 0x7000,
                "the TLB still holds a page of the hole")
        var inRuns = 0, probed = 0, inHoles = 0
        func compare(_ page: UInt64, _ fast: Translation) {
            var slow = a.smmu.probe(stream: stream, iova: page, access: access)
            var fast = fast
            slow.tlbHit = false
            fast.tlbHit = false
            #expect(fast == slow, "iova 0x\(String(page, radix: 16))")
            #expect(a.smmu.extent(of: slow, stream: stream) == b.smmu.extent(of: fast, stream: stream))
        }
        b.smmu.speculating(stream: stream) {
            for (start, down) in [(Self.base, false), (UInt64(0x1080_0000), true), (Self.base + 0x8_0000, false)] {
                var page = start, steps = 0
                let total = 2100
                while steps < total {
                    let probe = down ? page - 0x1000 : page
                    var answered: [UInt64] = []
                    let n = b.smmu.probeLeafRun(stream: stream, iova: probe + 0x18, access: access, down: down,
                                                limit: total - steps) { p, t in
                        answered.append(p)
                        compare(p, t)
                        return true
                    }
                    if n == 0 {
                        compare(probe, b.smmu.probe(stream: stream, iova: probe, access: access))
                        probed += 1
                        page = down ? probe : probe + 0x1000
                        steps += 1
                        continue
                    }
                    #expect(n == answered.count && n <= total - steps)
                    #expect(answered == (0..<n).map { down ? probe - UInt64($0) << 12 : probe + UInt64($0) << 12 },
                            "consecutive pages in order")
                    #expect(Set(answered.map { $0 >> 21 }).count == 1, "one table's pages")
                    inRuns += n
                    inHoles += answered.filter { (0x1020_0000..<0x1040_0000).contains($0) || $0 >= 0x1060_0000 }.count
                    page = down ? probe - UInt64(n - 1) << 12 : probe + UInt64(n) << 12
                    steps += n
                }
            }
        }
        #expect(inRuns > 4000 && probed > 100 && inHoles > 1000, "\(inRuns) in runs, \(probed) probed, \(inHoles) in holes")
        #expect(b.driver.r32(.FSR, Self.bank) == 0, "a run records no fault")
        // After a run, faults are recorded again.
        _ = b.smmu.translate(stream: stream, iova: 0x1020_1000, access: access)
        #expect(b.driver.r32(.FSR, Self.bank) != 0)
    }

    /// A run stops when told to, and answers nothing outside `speculating` (no walk cache to hold its table).
    @Test func aLeafRunStopsWhenToldAndOnlyInsideARun() throws {
        let (m, pt) = try Self.machine(filter: RangeFilter(0..<UInt64.max))
        let stream = StreamID(Self.sid)
        let table: UInt64 = 0x1020_0000     // after the mixed range: a 2 MiB of its own
        for i in 0..<UInt64(16) { try pt.map(table + i << 12, to: Machine.ramBase + i << 12, size: 0x1000) }
        let all: (UInt64, Translation) -> Bool = { _, _ in true }
        #expect(m.smmu.probeLeafRun(stream: stream, iova: table, access: .read, down: false, limit: 64, all) == 0)
        m.smmu.speculating(stream: stream) {
            var seen = 0
            #expect(m.smmu.probeLeafRun(stream: stream, iova: table, access: .read, down: false, limit: 64) { _, _ in
                seen += 1
                return seen < 5
            } == 5)
            #expect(m.smmu.probeLeafRun(stream: stream, iova: table + 0x3000, access: .read, down: false, limit: 7, all) == 7)
            #expect(m.smmu.probeLeafRun(stream: stream, iova: table + 0x1F_F000, access: .read, down: false, limit: 64, all) == 1,
                    "a table's last page ends a run up")
            #expect(m.smmu.probeLeafRun(stream: stream, iova: table, access: .read, down: true, limit: 64, all) == 1,
                    "a table's first page ends a run down")
            #expect(m.smmu.probeLeafRun(stream: stream, iova: table + 0x5000, access: .read, down: true, limit: 64, all) == 6)
        }
    }
}

/// A small deterministic generator for the tests' page mixes.
struct SplitMix {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
