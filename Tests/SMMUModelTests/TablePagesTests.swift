import Testing
@testable import SMMUModel

/// Where a bank's tables are: the pages VM_DONATE must not give away.
@Suite struct TablePagesTests {
    /// The pages `bank` walks, or nil when the scan ran out of budget.
    static func tablePages(_ smmu: MMU500, bank: Int, budget: Int = 1 << 20,
                           readable: @escaping (UInt64) -> Bool = { _ in true }) -> Set<UInt64>? {
        var scan = TablePageScan(budget: budget, readable: readable)
        return smmu.collectTablePages(bank: bank, into: &scan) ? scan.pages : nil
    }

    @Test func stage1TablesAreFoundLevelByLevelAndLeavesAreNot() throws {
        var m = Machine()
        let d = m.driver
        d.reset()
        let pt = try m.builder(.stage1)
        d.attachStage1(bank: 2, ttbr0: pt.root, tcr: pt.tcr)
        let data: UInt64 = Machine.ramBase + 0x40_0000
        // Two IOVAs far apart need two level-1, two level-2 and two level-3 tables under one root.
        try pt.map(0x1000, to: data, size: 0x1000)
        try pt.map(0x80_4000_0000, to: data + 0x1000, size: 0x1000)
        let pages = try #require(Self.tablePages(m.smmu, bank: 2))
        #expect(pages.count == 7)
        #expect(pages.contains(pt.root))
        #expect(!pages.contains(data) && !pages.contains(data + 0x1000), "leaf targets are data, not tables")
        // Every page found is in the builder's pool, where the tables live.
        #expect(pages.allSatisfy { $0 >= pt.root && $0 < pt.root + (4 << 20) })
        #expect(Self.tablePages(m.smmu, bank: 2, budget: 3) == nil, "past the budget the answer is: too much work")
        // Tables in memory the owner may not read are not followed (the scan reads what the owner's walks may).
        let unreadable = try #require(Self.tablePages(m.smmu, bank: 2, readable: { $0 & ~0xFFF != pt.root }))
        #expect(unreadable == [pt.root], "the root's descriptors were not read, so nothing below it was found")
    }

    @Test func sharedTablesAreReadOnceAcrossBanksAndACycleEnds() throws {
        var m = Machine()
        let d = m.driver
        d.reset()
        let pt = try m.builder(.stage1)
        try pt.map(0x1000, to: Machine.ramBase + 0x40_0000, size: 0x1000)
        for bank in 0..<8 { d.attachStage1(bank: bank, ttbr0: pt.root, tcr: pt.tcr) }
        var one = TablePageScan(budget: 1 << 20)
        #expect(m.smmu.collectTablePages(bank: 0, into: &one))
        var all = TablePageScan(budget: 1 << 20)
        for bank in 0..<8 { #expect(m.smmu.collectTablePages(bank: bank, into: &all)) }
        #expect(all.pages == one.pages && all.pages.count == 4)
        #expect(all.work < one.work + 8 * 16, "seven more banks over the same tables cost almost nothing")
        // A table that points at itself (level 0 entry 0 -> the root) is visited once per level, no more.
        _ = m.memory.write64(pt.root | 0b11, at: pt.root)
        var cyclic = TablePageScan(budget: 1 << 20)
        #expect(m.smmu.collectTablePages(bank: 0, into: &cyclic))
        #expect(cyclic.work < 4 * 512 + 16)
    }

    @Test func a64KTableCountsAsSixteenPagesButASmallRootAsOneAndDisabledRangesAreSkipped() throws {
        var m = Machine()
        let d = m.driver
        d.reset()
        let pt = try m.builder(.stage1, .size64K)
        d.attachStage1(bank: 0, ttbr0: pt.root, tcr: pt.tcr)
        try pt.map(0x1_0000, to: Machine.ramBase, size: 0x1_0000)
        let pages = try #require(Self.tablePages(m.smmu, bank: 0))
        // 48-bit input, 64K granule: the level-1 root has 64 entries (512 bytes, one page); the level-2
        // and level-3 tables are 64 KiB each, sixteen 4 KiB pages apiece.
        #expect(pages.contains(pt.root))
        #expect(pages.count == 1 + 16 + 16)
        // EPD0: TTBR0 is not walked, so its tables are not live.
        d.w32(.TCR, 0, pt.tcr | 1 << 7)
        #expect(Self.tablePages(m.smmu, bank: 0) == [])
    }
}
