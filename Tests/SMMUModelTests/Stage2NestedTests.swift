import Testing
@testable import SMMUModel

@Suite("Stage 2, nested, and every CBAR type")
struct Stage2NestedTests {
    static let ipaBase: UInt64 = 0x4000_0000

    /// Stage-2 tables mapping IPA [ipaBase, ipaBase + 64 MiB) to RAM, in 2 MiB blocks.
    static func stage2(_ m: inout Machine, granule: PageTableBuilder.Granule = .size4K, inputBits: Int = 40,
                       startLevel: Int? = nil) throws -> PageTableBuilder {
        let s2 = try m.builder(.stage2, granule, inputBits: inputBits, startLevel: startLevel)
        try s2.mapRange(ipaBase, to: Machine.ramBase, size: 64 << 20)
        return s2
    }

    @Test func stage2OnlyBank() throws {
        var m = Machine()
        let d = m.driver
        d.reset()
        let s2 = try Self.stage2(&m)
        d.attachStage2(bank: 0, vttbr: s2.root, vtcr: s2.vtcr, vmid: 1)
        d.route(smr: 0, stream: 0x30, toBank: 0)
        let t = m.smmu.translate(stream: StreamID(0x30), iova: Self.ipaBase + 0x12_3456, access: .write)
        #expect(t.physicalAddress == Machine.ramBase + 0x12_3456)
        // Outside the stage-2 mapping: translation fault with IPAFAR.
        #expect(m.smmu.translate(stream: StreamID(0x30), iova: 0x1000, access: .read).fault == .translation)
        #expect(d.r32(.FSR, 0) == 0x2 && d.r64(.IPAFAR, 0) == 0x1000)
        d.w32(.FSR, 0, 0xFFFF_FFFF)
        // Linux stage-2 flush_all: TLBIVMID + global sync; TLBIIPAS2 per page.
        _ = m.smmu.translate(stream: StreamID(0x30), iova: Self.ipaBase, access: .read)
        #expect(m.smmu.tlbEntryCount == 2)
        d.w64(.TLBIIPAS2L, 0, (Self.ipaBase + 0x12_3000) >> 12)
        #expect(m.smmu.tlbEntryCount == 1)
        d.w32(.TLBIVMID, 2)
        #expect(m.smmu.tlbEntryCount == 1)
        d.w32(.TLBIVMID, 1)
        d.sync()
        #expect(m.smmu.tlbEntryCount == 0)
        // Stage-2 permissions: S2AP read-only.
        try s2.map(Self.ipaBase + (64 << 20), to: Machine.ramBase, size: 0x1000, attributes: .readOnly)
        #expect(m.smmu.translate(stream: StreamID(0x30), iova: Self.ipaBase + (64 << 20), access: .write).fault == .permission)
        #expect(d.r32(.FSR, 0) == 0x8)
    }

    @Test(arguments: [(PageTableBuilder.Granule.size4K, 40, 1), (.size4K, 40, nil), (.size4K, 48, 0),
                      (.size64K, 48, 1), (.size16K, 40, 2), (.size64K, 40, 2)] as [(PageTableBuilder.Granule, Int, Int?)])
    func stage2GranulesAndConcatenatedStartLevels(granule: PageTableBuilder.Granule, inputBits: Int, startLevel: Int?) throws {
        var m = Machine()
        let d = m.driver
        d.reset()
        let s2 = try m.builder(.stage2, granule, inputBits: inputBits, startLevel: startLevel)
        let ipa = (UInt64(1) << UInt64(inputBits)) - granule.bytes       // the top of the IPA space
        try s2.map(ipa, to: Machine.ramBase + granule.bytes, size: granule.bytes)
        d.attachStage2(bank: 2, vttbr: s2.root, vtcr: s2.vtcr, vmid: 5)
        d.route(smr: 1, stream: 0x31, toBank: 2)
        let t = m.smmu.translate(stream: StreamID(0x31), iova: ipa + 0x18, access: .read)
        #expect(t.physicalAddress == Machine.ramBase + granule.bytes + 0x18)
        #expect(m.smmu.translate(stream: StreamID(0x31), iova: 1 << UInt64(inputBits), access: .read).fault == .translation)
    }

    @Test func nestedTranslatesWalksAndOutputThroughStage2() throws {
        let filter = RangeFilter(Machine.ramBase..<(Machine.ramBase + Machine.ramSize))
        var m = Machine(filter: filter)
        let d = m.driver
        d.reset()
        let s2 = try Self.stage2(&m)
        // Stage-1 tables live at IPAs: build them through an IPA view of RAM.
        let ipaView = IPAView(memory: m.memory, offset: Machine.ramBase - Self.ipaBase)
        let s1 = try PageTableBuilder(memory: ipaView, stage: .stage1, tablePool: (Self.ipaBase + (32 << 20))..<(Self.ipaBase + (36 << 20)))
        try s1.map(0x7000, to: Self.ipaBase + 0x5000, size: 0x1000)
        d.attachStage2(bank: 9, vttbr: s2.root, vtcr: s2.vtcr, vmid: 3)
        d.w32(.SMR, 0, 0)
        d.attachStage1(bank: 4, ttbr0: s1.root, tcr: s1.tcr)
        d.w32(.CBAR, 4, 3 << 16 | 9 << 8 | 3)                             // nested over bank 9
        d.route(smr: 0, stream: 0x11, toBank: 4)
        filter.asked = []
        let t = m.smmu.translate(stream: StreamID(0x11), iova: 0x7010, access: .read)
        #expect(t.physicalAddress == Machine.ramBase + 0x5010 && t.contextBank == 4)
        // Every descriptor read was at a physical (RAM) address, never an IPA.
        let walks = filter.asked.filter { $0.2 == .tableWalk }.map(\.1)
        let s2Levels = 4 - s2.startLevel
        #expect(walks.count == 4 * (1 + s2Levels) + s2Levels)   // each S1 read after an S2 walk, then the output's
        #expect(walks.allSatisfy { $0 >= Machine.ramBase })
        // A stage-2 hole under a stage-1 table: the fault names the IPA.
        try s2.unmap(Self.ipaBase + (32 << 20), size: 0x1000)
        d.w32(.TLBIALLNSNH, 0)
        #expect(m.smmu.translate(stream: StreamID(0x11), iova: 0x7010, access: .read).fault == .translation)
        #expect(d.r64(.IPAFAR, 4) == s1.root && d.r64(.FAR, 4) == 0x7010)
        // TLBIIPAS2 on the stage-2 bank reaches the nested entry.
        d.w32(.FSR, 4, 0xFFFF_FFFF)
        try s2.map(Self.ipaBase + (32 << 20), to: Machine.ramBase + (32 << 20), size: 0x1000)
        #expect(m.smmu.translate(stream: StreamID(0x11), iova: 0x7010, access: .read).physicalAddress != nil)
        d.w64(.TLBIIPAS2, 9, (Self.ipaBase + 0x5000) >> 12)
        #expect(m.smmu.tlbEntryCount == 0)
    }

    @Test func everyCBARType() throws {
        var m = Machine()
        let d = m.driver
        d.reset()
        let s2 = try Self.stage2(&m)
        let s1 = try m.builder(.stage1)
        try s1.map(0x1000, to: Self.ipaBase + 0x3000, size: 0x1000)     // valid as IPA or as PA? IPA
        d.attachStage2(bank: 1, vttbr: s2.root, vtcr: s2.vtcr, vmid: 2)
        d.attachStage1(bank: 0, ttbr0: s1.root, tcr: s1.tcr)
        d.route(smr: 0, stream: 1, toBank: 0)
        let s = StreamID(1)
        // 1: S1 with S2 bypass: the stage-1 output is the PA.
        #expect(m.smmu.translate(stream: s, iova: 0x1000, access: .read).physicalAddress == Self.ipaBase + 0x3000)
        // 2: S1 then fault. (Reprogramming a bank needs a TLBI, as on hardware.)
        d.w32(.CBAR, 0, 2 << 16)
        d.w32(.TLBIALL, 0, 0)
        #expect(m.smmu.translate(stream: s, iova: 0x1000, access: .read).fault == .streamFault)
        // 3: nested over bank 1 (stage-1 tables here are at PAs that stage 2 does not map: fault).
        d.w32(.CBAR, 0, 3 << 16 | 1 << 8)
        d.w32(.TLBIALL, 0, 0)
        #expect(m.smmu.translate(stream: s, iova: 0x1000, access: .read).fault == .translation)
        // 0: stage 2 only, with bank 0's TCR as VTCR.
        d.attachStage2(bank: 0, vttbr: s2.root, vtcr: s2.vtcr, vmid: 2)
        #expect(m.smmu.translate(stream: s, iova: Self.ipaBase + 0x10, access: .read).physicalAddress == Machine.ramBase + 0x10)
    }

    @Test func vmid16ComesFromCBA2R() throws {
        let c = MMU500Configuration(idr0: 0x7C00_1E80, idr1: 0xE000_0080, idr2: 0x0000_D555, idr7: 0x21)
        var m = Machine(c)
        let d = m.driver
        d.reset()
        #expect(d.r32(.sCR0) == 0x8020_1C36)
        let s2 = try Self.stage2(&m)
        d.attachStage2(bank: 0, vttbr: s2.root, vtcr: s2.vtcr, vmid: 0)
        d.w32(.CBA2R, 0, 0x1234 << 16 | 1)
        d.route(smr: 0, stream: 1, toBank: 0)
        _ = m.smmu.translate(stream: StreamID(1), iova: Self.ipaBase, access: .read)
        d.w32(.TLBIVMID, 0)
        #expect(m.smmu.tlbEntryCount == 1)
        d.w32(.TLBIVMID, 0x1234)
        #expect(m.smmu.tlbEntryCount == 0)
    }
}

/// Physical memory seen at IPAs: address - offset... plus offset. Lets a builder write stage-1
/// tables at the IPAs the SMMU will walk them at.
final class IPAView: PhysicalMemory {
    let memory: PhysicalMemory
    let offset: UInt64
    init(memory: PhysicalMemory, offset: UInt64) {
        self.memory = memory
        self.offset = offset
    }
    func read64(at address: UInt64) -> UInt64? { memory.read64(at: address + offset) }
    func write64(_ value: UInt64, at address: UInt64) -> Bool { memory.write64(value, at: address + offset) }
}
