import Testing
@testable import SMMUModel

/// Where a bank's tables are: the pages VM_DONATE must not give away.
@Suite struct TablePagesTests {
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
        let pages = try #require(m.smmu.tablePages(bank: 2, limit: 100))
        #expect(pages.count == 7)
        #expect(pages.contains(pt.root))
        #expect(!pages.contains(data) && !pages.contains(data + 0x1000), "leaf targets are data, not tables")
        // Every page found is in the builder's pool, where the tables live.
        #expect(pages.allSatisfy { $0 >= pt.root && $0 < pt.root + (4 << 20) })
        #expect(m.smmu.tablePages(bank: 2, limit: 3) == nil, "past the limit the answer is: too many")
    }

    @Test func a64KTableCountsAsSixteenPagesButASmallRootAsOneAndDisabledRangesAreSkipped() throws {
        var m = Machine()
        let d = m.driver
        d.reset()
        let pt = try m.builder(.stage1, .size64K)
        d.attachStage1(bank: 0, ttbr0: pt.root, tcr: pt.tcr)
        try pt.map(0x1_0000, to: Machine.ramBase, size: 0x1_0000)
        let pages = try #require(m.smmu.tablePages(bank: 0, limit: 1000))
        // 48-bit input, 64K granule: the level-1 root has 64 entries (512 bytes, one page); the level-2
        // and level-3 tables are 64 KiB each, sixteen 4 KiB pages apiece.
        #expect(pages.contains(pt.root))
        #expect(pages.count == 1 + 16 + 16)
        // EPD0: TTBR0 is not walked, so its tables are not live.
        d.w32(.TCR, 0, pt.tcr | 1 << 7)
        #expect(m.smmu.tablePages(bank: 0, limit: 1000) == [])
    }
}
