import Testing
@testable import SMMUModel

@Suite("Stage-1 translation, TLB maintenance and context faults")
struct Stage1Tests {
    static let sid: UInt16 = 0x0E          // XUSB_HOST on niso1
    static let bank = 3

    /// Reset, SMR mask probe, attach a Linux stage-1 domain, install the SME (`arm_smmu_attach_dev`,
    /// `arm_smmu_write_context_bank`, `arm_smmu_write_sme`).
    static func attached(_ granule: PageTableBuilder.Granule = .size4K, tcr: UInt32? = nil)
        throws -> (Machine, PageTableBuilder) {
        var m = Machine()
        let d = m.driver
        d.reset()
        _ = d.testSMRMasks()
        let pt = try m.builder(.stage1, granule)
        d.attachStage1(bank: bank, ttbr0: pt.root, tcr: tcr ?? pt.tcr)
        d.route(smr: 0, stream: sid, mask: 0x7F80, toBank: bank)
        #expect(d.r32(.SMR, 0) == 0xFF80_000E)
        return (m, pt)
    }

    @Test func linuxAttachThenDMA() throws {
        let (m, pt) = try Self.attached()
        #expect(pt.tcr == 0x0080_2010)        // what Linux computes for 4K, 48-bit, non-coherent
        try pt.map(0x1000_0000, to: Machine.ramBase + 0x5000, size: 0x1000)
        let t = m.smmu.translate(stream: StreamID(Self.sid), iova: 0x1000_0123, access: .write)
        #expect(t == Translation(outcome: .translated(physicalAddress: Machine.ramBase + 0x5123),
                                 contextBank: Self.bank, tlbHit: false))
        // The mask 0x7f80 makes stream 0x0E | 0x100 match the same SMR.
        let again = m.smmu.translate(stream: StreamID(Self.sid | 0x100), iova: 0x1000_0FF8, access: .read)
        #expect(again.physicalAddress == Machine.ramBase + 0x5FF8)
        #expect(again.tlbHit)
        #expect(m.smmu.tlbStatistics.hits == 1 && m.smmu.tlbStatistics.misses == 1)
        #expect(m.driver.r32(.FSR, Self.bank) == 0)
    }

    @Test func unmapInvalidateSyncThenFaultClearedByW1C() throws {
        let (m, pt) = try Self.attached()
        let d = m.driver
        let iova: UInt64 = 0x4_0000_2000
        try pt.map(iova, to: Machine.ramBase + 0x10_0000, size: 0x1000)
        #expect(m.smmu.translate(stream: StreamID(Self.sid), iova: iova + 8, access: .read).physicalAddress
                == Machine.ramBase + 0x10_0008)
        try pt.unmap(iova, size: 0x1000)
        // Stale until invalidated, as on hardware.
        #expect(m.smmu.translate(stream: StreamID(Self.sid), iova: iova, access: .read).tlbHit)
        d.w64(.TLBIVAL, Self.bank, (iova >> 12) | UInt64(Self.bank) << 48)
        d.contextSync(Self.bank)
        let t = m.smmu.translate(stream: StreamID(Self.sid), iova: iova + 0x40, access: .write)
        #expect(t.fault == .translation && t.contextBank == Self.bank)
        // The generic context fault handler's reads (`arm_smmu_context_fault`).
        let far = d.r64(.FAR, Self.bank)
        let fsr = d.r32(.FSR, Self.bank)
        let fsynr0 = d.r32(.FSYNR0, Self.bank)
        let cbfrsynra = d.r32(.CBFRSYNRA, Self.bank)
        #expect(fsr & 0xC000_01FE == 0x2)              // TF
        #expect(far == iova + 0x40)
        #expect(fsynr0 & (1 << 4) != 0)                // WNR
        #expect(fsynr0 & 3 == 3)                       // PLVL: the level-3 descriptor was invalid
        #expect(fsynr0 & (1 << 10) == 0)               // not a walk refusal
        #expect(cbfrsynra & 0xFFFF == UInt32(Self.sid))
        #expect(m.smmu.contextInterruptAsserted(bank: Self.bank))   // SCTLR.CFIE
        d.w32(.FSR, Self.bank, fsr)
        #expect(d.r32(.FSR, Self.bank) == 0)
        #expect(!m.smmu.contextInterruptAsserted(bank: Self.bank))
    }

    @Test func secondFaultSetsMultiAndKeepsFirstSyndrome() throws {
        let (m, _) = try Self.attached()
        let d = m.driver
        _ = m.smmu.translate(stream: StreamID(Self.sid), iova: 0x1000, access: .read)
        _ = m.smmu.translate(stream: StreamID(Self.sid), iova: 0x9000, access: .write)
        #expect(d.r32(.FSR, Self.bank) == 0x8000_0002)
        #expect(d.r64(.FAR, Self.bank) == 0x1000)
        #expect(d.r32(.FSYNR0, Self.bank) & (1 << 4) == 0)
    }

    @Test func staleEntryIsUsedUntilInvalidated() throws {
        let (m, pt) = try Self.attached()
        let d = m.driver
        try pt.map(0x2000, to: Machine.ramBase + 0x1000, size: 0x1000)
        _ = m.smmu.translate(stream: StreamID(Self.sid), iova: 0x2000, access: .read)
        try pt.map(0x2000, to: Machine.ramBase + 0x7000, size: 0x1000)    // remap without TLBI
        #expect(m.smmu.translate(stream: StreamID(Self.sid), iova: 0x2000, access: .read).physicalAddress
                == Machine.ramBase + 0x1000)
        // Another ASID's invalidation leaves it alone; this ASID's removes it.
        d.w32(.TLBIASID, Self.bank, UInt32(Self.bank + 1))
        #expect(m.smmu.translate(stream: StreamID(Self.sid), iova: 0x2000, access: .read).tlbHit)
        d.w32(.TLBIASID, Self.bank, UInt32(Self.bank))
        d.contextSync(Self.bank)
        let t = m.smmu.translate(stream: StreamID(Self.sid), iova: 0x2000, access: .read)
        #expect(t.physicalAddress == Machine.ramBase + 0x7000 && !t.tlbHit)
    }

    @Test func tlbiVAOnlyRemovesThatPage() throws {
        let (m, pt) = try Self.attached()
        let d = m.driver
        for i: UInt64 in 0..<4 {
            try pt.map(0x10_0000 + i * 0x1000, to: Machine.ramBase + i * 0x1000, size: 0x1000)
            _ = m.smmu.translate(stream: StreamID(Self.sid), iova: 0x10_0000 + i * 0x1000, access: .read)
        }
        #expect(m.smmu.tlbEntryCount == 4)
        d.w64(.TLBIVA, Self.bank, (0x10_2000 >> 12) | UInt64(Self.bank) << 48)
        #expect(m.smmu.tlbEntryCount == 3)
        d.w64(.TLBIVAA, Self.bank, 0x10_0000 >> 12)
        #expect(m.smmu.tlbEntryCount == 2)
        // TLBIVAL with a different ASID does not match nG entries.
        d.w64(.TLBIVAL, Self.bank, (0x10_1000 >> 12) | UInt64(9) << 48)
        #expect(m.smmu.tlbEntryCount == 2)
        d.w32(.TLBIALL, Self.bank, 0)
        #expect(m.smmu.tlbEntryCount == 0)
    }

    @Test func tlbiViaTwoHalvesActsOnTheLowWrite() throws {
        let (m, pt) = try Self.attached()
        try pt.map(0x3000, to: Machine.ramBase, size: 0x1000)
        _ = m.smmu.translate(stream: StreamID(Self.sid), iova: 0x3000, access: .read)
        let off = m.smmu.configuration.offset(of: .TLBIVA, index: Self.bank)
        try m.smmu.write(offset: off + 4, value: UInt64(Self.bank) << 16, width: .word).get()
        #expect(m.smmu.tlbEntryCount == 1)
        try m.smmu.write(offset: off, value: 3, width: .word).get()
        #expect(m.smmu.tlbEntryCount == 0)
    }

    @Test func globalTLBIs() throws {
        let (m, pt) = try Self.attached()
        let d = m.driver
        try pt.map(0x3000, to: Machine.ramBase, size: 0x1000)
        _ = m.smmu.translate(stream: StreamID(Self.sid), iova: 0x3000, access: .read)
        d.w32(.TLBIALLH, 0xFFFF_FFFF)                  // no hypervisor entries exist
        d.w32(.TLBIVMID, 7)                            // another VMID (stage-1 banks use VMID 0)
        #expect(m.smmu.tlbEntryCount == 1)
        d.w32(.TLBIVMID, 0)
        #expect(m.smmu.tlbEntryCount == 0)
        _ = m.smmu.translate(stream: StreamID(Self.sid), iova: 0x3000, access: .read)
        d.w32(.TLBIALLNSNH, 0xFFFF_FFFF)
        #expect(m.smmu.tlbEntryCount == 0)
    }

    @Test func permissionFaults() throws {
        let (m, pt) = try Self.attached()
        let d = m.driver
        try pt.map(0x5000, to: Machine.ramBase, size: 0x1000, attributes: .init(writable: false, user: false))
        try pt.map(0x6000, to: Machine.ramBase, size: 0x1000, attributes: .init(executeNever: true))
        try pt.map(0x7000, to: Machine.ramBase, size: 0x1000, attributes: .init(user: true))
        let s = StreamID(Self.sid)
        #expect(m.smmu.translate(stream: s, iova: 0x5000, access: [.privileged]).physicalAddress == Machine.ramBase)
        #expect(m.smmu.translate(stream: s, iova: 0x5000, access: [.write, .privileged]).fault == .permission)
        #expect(d.r32(.FSR, Self.bank) == 0x8)                         // PF
        #expect(d.r32(.FSYNR0, Self.bank) & 0x33 == 0x33)              // WNR, PNU, PLVL 3
        d.w32(.FSR, Self.bank, 0x8)
        // Unprivileged access to a privileged-only page; from the TLB too.
        #expect(m.smmu.translate(stream: s, iova: 0x5000, access: .read).fault == .permission)
        d.w32(.FSR, Self.bank, 0xFFFF_FFFF)
        #expect(m.smmu.translate(stream: s, iova: 0x6000, access: [.instructionFetch]).fault == .permission)
        #expect(d.r32(.FSYNR0, Self.bank) & (1 << 6) != 0)            // IND
        d.w32(.FSR, Self.bank, 0xFFFF_FFFF)
        #expect(m.smmu.translate(stream: s, iova: 0x7000, access: .write).physicalAddress == Machine.ramBase)
        // EL0-writable implies PXN.
        #expect(m.smmu.translate(stream: s, iova: 0x7000, access: [.instructionFetch, .privileged]).fault == .permission)
    }

    @Test func accessFlagFault() throws {
        let (m, pt) = try Self.attached()
        try pt.map(0x8000, to: Machine.ramBase, size: 0x1000, attributes: .init(accessFlag: false))
        let t = m.smmu.translate(stream: StreamID(Self.sid), iova: 0x8000, access: .read)
        #expect(t.fault == .accessFlag)
        #expect(m.driver.r32(.FSR, Self.bank) == 0x4)                  // AFF
        #expect(m.smmu.tlbEntryCount == 0)
    }

    @Test func addressBeyondT0SZIsATranslationFaultAtLevel0() throws {
        let (m, _) = try Self.attached()
        let t = m.smmu.translate(stream: StreamID(Self.sid), iova: 1 << 48, access: .read)
        #expect(t.fault == .translation)
        #expect(m.driver.r32(.FSYNR0, Self.bank) & 3 == 0)
    }

    @Test func outputAddressBeyondPASizeIsAnAddressSizeFault() throws {
        let (m, pt) = try Self.attached()
        let d = m.driver
        d.w32(.TCR2, Self.bank, 0x0003_8010)               // PASIZE 0: 32-bit
        try pt.map(0x9000, to: 0x1_0000_0000, size: 0x1000)
        #expect(m.smmu.translate(stream: StreamID(Self.sid), iova: 0x9000, access: .read).fault == .addressSize)
        #expect(d.r32(.FSR, Self.bank) == 0x80)                        // ASF
    }

    /// Every granule with its page and block sizes (4K: 4K/2M/1G; 16K: 16K/32M; 64K: 64K/512M).
    @Test(arguments: [
        (PageTableBuilder.Granule.size4K, UInt64(0x1000)), (.size4K, 0x20_0000), (.size4K, 0x4000_0000),
        (.size16K, 0x4000), (.size16K, 0x200_0000), (.size64K, 0x1_0000), (.size64K, 0x2000_0000),
    ])
    func granulesAndBlocks(granule: PageTableBuilder.Granule, size: UInt64) throws {
        let (m, pt) = try Self.attached(granule)
        let iova: UInt64 = 0x80_0000_0000 + size * 3
        let pa: UInt64 = size >= 0x4000_0000 ? 0 : Machine.ramBase + (size >= 0x2000_0000 ? 0 : size)
        try pt.map(iova, to: pa, size: size)
        for offset in [0, size / 2 + 8, size - 8] {
            let t = m.smmu.translate(stream: StreamID(Self.sid), iova: iova + offset, access: .write)
            #expect(t.physicalAddress == pa + offset, "granule \(granule) size \(size) offset \(offset)")
        }
        #expect(m.smmu.translate(stream: StreamID(Self.sid), iova: iova + size, access: .read).fault == .translation)
        // TLBIVA anywhere in the mapping removes it (the entry spans the whole block).
        m.driver.w64(.TLBIVA, Self.bank, ((iova + size - 0x1000) >> 12) | UInt64(Self.bank) << 48)
        #expect(m.smmu.tlbEntryCount == 0)
    }

    @Test func ttbr1SelectedByAddressRange() throws {
        var m = Machine()
        let d = m.driver
        d.reset()
        let low = try m.builder(.stage1)
        let high = try m.builder(.stage1)
        d.attachStage1(bank: 1, ttbr0: low.root, tcr: 0x0000_2010 | 16 << 16 | PageTableBuilder.Granule.size4K.tg1 << 30)
        d.w64(.TTBR1, 1, UInt64(1) << 48 | high.root)
        d.route(smr: 0, stream: 5, toBank: 1)
        try low.map(0x1000, to: Machine.ramBase + 0x1000, size: 0x1000)
        try high.map(0xFFFF_0000_0000_1000 & 0xFFFF_FFFF_FFFF, to: Machine.ramBase + 0x2000, size: 0x1000)
        #expect(m.smmu.translate(stream: StreamID(5), iova: 0x1000, access: .read).physicalAddress == Machine.ramBase + 0x1000)
        #expect(m.smmu.translate(stream: StreamID(5), iova: 0xFFFF_0000_0000_1010, access: .read).physicalAddress
                == Machine.ramBase + 0x2010)
        // EPD1 turns the upper range off.
        d.w32(.TCR, 1, d.smmu.configuration.supportsStage1 ? (0x0000_2010 | 16 << 16 | 2 << 30 | 1 << 23) : 0)
        d.w32(.TLBIALL, 1, 0)
        #expect(m.smmu.translate(stream: StreamID(5), iova: 0xFFFF_0000_0000_1010, access: .read).fault == .translation)
    }

    /// Identity domain, blocked domain, then release_device (`arm_smmu_attach_dev_type`, `arm_smmu_release_device`).
    @Test func identityBlockedAndRelease() throws {
        let (m, pt) = try Self.attached()
        let d = m.driver
        try pt.map(0x1000, to: Machine.ramBase, size: 0x1000)
        let s = StreamID(Self.sid)
        #expect(m.smmu.translate(stream: s, iova: 0x1000, access: .read).physicalAddress == Machine.ramBase)
        d.w32(.S2CR, 0, 0x0001_0000)                                  // identity
        #expect(m.smmu.translate(stream: s, iova: 0x8000_1000, access: .read)
                == Translation(outcome: .translated(physicalAddress: 0x8000_1000)))
        d.w32(.S2CR, 0, 0x0002_0000)                                  // blocked
        #expect(m.smmu.translate(stream: s, iova: 0x1000, access: .read).fault == .streamFault)
        d.w32(.SMR, 0, 0x7F80_000E)                                   // released: VALID clear
        #expect(m.smmu.translate(stream: s, iova: 0x1000, access: .read).fault == .unidentifiedStream)
        #expect(d.r32(.sGFSR) == 0x2 && d.r32(.sGFSYNR1) & 0xFFFF == UInt32(Self.sid))
        d.w32(.SCTLR, Self.bank, 0)                                   // domain free
        #expect(d.r32(.FSR, Self.bank) == 0)
    }

    @Test func sctlrMOffIsFlat() throws {
        let (m, pt) = try Self.attached()
        try pt.map(0x1234_5000, to: Machine.ramBase, size: 0x1000)
        #expect(m.smmu.translate(stream: StreamID(Self.sid), iova: 0x1234_5678, access: .read).physicalAddress
                == Machine.ramBase + 0x678)
        m.driver.w32(.SCTLR, Self.bank, 0)                 // the cached entry no longer applies
        let t = m.smmu.translate(stream: StreamID(Self.sid), iova: 0x1234_5678, access: .read)
        #expect(t.physicalAddress == 0x1234_5678 && t.contextBank == Self.bank)
    }

    @Test func va64ClearFaults() throws {
        let (m, pt) = try Self.attached()
        try pt.map(0x1000, to: Machine.ramBase, size: 0x1000)
        m.driver.w32(.CBA2R, Self.bank, 0)
        #expect(m.smmu.translate(stream: StreamID(Self.sid), iova: 0x1000, access: .read).fault == .translation)
    }
}
