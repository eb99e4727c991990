import Testing
import TestSupport
@testable import SMMUModel

@Suite("Downstream filter and missing memory")
struct FilterAndAbortTests {
    static let bank = 6
    static let tables = (Machine.ramBase + (128 << 20))..<(Machine.ramBase + (132 << 20))

    static func setUp(_ filter: RangeFilter) throws -> (Machine, PageTableBuilder) {
        var m = Machine(filter: filter)
        let d = m.driver
        d.reset()
        let pt = try m.builder(.stage1)
        #expect(Self.tables.contains(pt.root))
        d.attachStage1(bank: Self.bank, ttbr0: pt.root)
        d.route(smr: 0, stream: 0x20, toBank: Self.bank)
        return (m, pt)
    }

    @Test func refusedTableWalkIsAnOwnershipFaultWithPTWF() throws {
        let filter = RangeFilter(Machine.ramBase..<(Machine.ramBase + (1 << 20)))   // data only, no tables
        let (m, pt) = try Self.setUp(filter)
        try pt.map(0x1000, to: Machine.ramBase, size: 0x1000)
        let t = m.smmu.translate(stream: StreamID(0x20), iova: 0x1000, access: .read)
        #expect(t.fault == .ownership && t.contextBank == Self.bank)
        #expect(filter.asked.map(\.1) == [pt.root])                  // stopped at the first read
        #expect(filter.asked.map(\.2) == [.tableWalk])
        let d = m.driver
        #expect(d.r32(.FSR, Self.bank) == 0x2)                       // recorded as TF
        #expect(d.r32(.FSYNR0, Self.bank) & (1 << 10) != 0)          // PTWF
        #expect(d.r32(.FSYNR0, Self.bank) & 3 == 0)                  // at level 0
    }

    @Test func refusedOutputIsAnOwnershipFaultEvenFromTheTLB() throws {
        let filter = RangeFilter(Machine.ramBase..<(Machine.ramBase + Machine.ramSize))
        let (m, pt) = try Self.setUp(filter)
        try pt.map(0x1000, to: Machine.ramBase + 0x3000, size: 0x1000)
        #expect(m.smmu.translate(stream: StreamID(0x20), iova: 0x1000, access: .write).physicalAddress != nil)
        #expect(filter.asked.last.map { $0.1 == Machine.ramBase + 0x3000 && $0.2 == .data(write: true) } == true)
        // The owner changes its mind: the cached translation is refused too.
        filter.allowed = Self.tables
        let t = m.smmu.translate(stream: StreamID(0x20), iova: 0x1000, access: .write)
        #expect(t.fault == .ownership && !t.tlbHit)
        #expect(m.driver.r32(.FSR, Self.bank) == 0x2)
        #expect(m.driver.r32(.FSYNR0, Self.bank) & (1 << 10) == 0)  // not a walk
    }

    @Test func tablesOutsideRAMAreAnExternalFault() throws {
        var m = Machine()
        let d = m.driver
        d.reset()
        _ = try m.builder(.stage1)
        d.attachStage1(bank: 1, ttbr0: 0x4000_0000)                  // no RAM there
        d.route(smr: 0, stream: 0x21, toBank: 1)
        #expect(m.smmu.translate(stream: StreamID(0x21), iova: 0x1000, access: .read).fault == .translation)
        #expect(d.r32(.FSR, 1) == 0x10)                              // EF
    }

    @Test func hostileRegisterValuesFaultWithoutTrapping() throws {
        var m = Machine()
        let d = m.driver
        d.reset()
        let pt = try m.builder(.stage1)
        d.attachStage1(bank: 0, ttbr0: pt.root)
        d.route(smr: 0, stream: 1, toBank: 0)
        for tcr: UInt32 in [0x3F, 0x0000_C000 | 0x30, 0xFFFF_FFFF, 0x0000_0000, 0x0000_4028] {
            d.w32(.TCR, 0, tcr)
            d.w32(.TLBIALLNSNH, 0)
            for iova: UInt64 in [0, 0xFFF, 1 << 47, .max, 0x8000_0000_0000_0000] {
                _ = m.smmu.translate(stream: StreamID(1), iova: iova, access: [.write, .instructionFetch])
            }
        }
        d.w32(.CBAR, 0, 3 << 16 | 0xFF << 8)            // nested over a bank beyond NUMCB
        d.w32(.TCR, 1, 0xFFFF_FFFF)                      // and a hostile VTCR elsewhere
        d.w32(.CBAR, 1, 0)
        d.w32(.SCTLR, 1, 1)
        for cbar: UInt32 in [3 << 16 | 0xFF << 8, 3 << 16 | 1 << 8, 0] {
            d.w32(.CBAR, 0, cbar)
            d.w32(.TCR, 0, 0xFFFF_FFFF)
            d.w32(.TLBIALLNSNH, 0)
            _ = m.smmu.translate(stream: StreamID(1), iova: .max, access: .read)
            _ = m.smmu.translate(stream: StreamID(1), iova: 0, access: .read)
        }
        #expect(d.r32(.FSR, 0) != 0)
        #expect(throws: PageTableBuilder.BuilderError.invalidParameters) {
            _ = try PageTableBuilder(memory: m.memory, stage: .stage1, granule: .size64K, inputBits: 68,
                                     tablePool: Machine.ramBase..<(Machine.ramBase + (1 << 20)))
        }
    }
}

@Suite("Random register traffic")
struct RandomTrafficTests {
    /// Any sequence of accesses anywhere in the window, then DMA from any stream: errors or
    /// faults, never a trap. Seeded, so a failure reproduces.
    @Test(arguments: [MMU500Configuration.tegra234, .generic4K])
    func randomWritesThenDMA(config: MMU500Configuration) throws {
        var rng = SplitMix64(seed: 0x5EED)
        var m = Machine(config)
        let pt = try m.builder(.stage1)
        try pt.mapRange(0, to: Machine.ramBase, size: 0x10_000)
        let hot: [RegisterName] = [.sCR0, .SMR, .S2CR, .CBAR, .CBA2R, .SCTLR, .TCR, .TCR2, .TTBR0, .TTBR1,
                                   .TLBIVA, .TLBIASID, .TLBIIPAS2, .TLBIVMID, .FSR, .sGFSR]
        for round in 0..<4000 {
            let width: AccessWidth = rng.next() & 1 == 0 ? .word : .doubleword
            let offset: UInt64
            if round % 2 == 0 {
                let name = hot[Int(rng.next() % UInt64(hot.count))]
                let index = Int(rng.next() % 4)
                offset = config.offset(of: name, index: index)
            } else {
                offset = rng.next() % (config.windowSize + 64) & ~3
            }
            var value = rng.next()
            if rng.next() % 3 == 0 { value = pt.root | (rng.next() & 0xFFFF) << 48 }
            _ = m.smmu.write(offset: offset, value: value, width: width)
            _ = m.smmu.read(offset: offset, width: width)
            if round % 8 == 0 {
                let t = m.smmu.translate(stream: StreamID(UInt16(truncatingIfNeeded: rng.next())),
                                         iova: rng.next() % 3 == 0 ? rng.next() : rng.next() % 0x10_000,
                                         access: DMAAccess(rawValue: UInt32(rng.next() & 7)))
                if let bank = t.contextBank { #expect(bank < config.numContextBanks) }
            }
        }
    }
}
