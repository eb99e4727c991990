import Testing
@testable import SMMUModel

@Suite("Register table and decoding")
struct RegisterMapTests {
    @Test func tableCoversEveryNameOnceInCaseOrder() {
        #expect(RegisterMap.all.map(\.name) == RegisterName.allCases)
        for name in RegisterName.allCases { #expect(RegisterMap.descriptor(name).name == name) }
    }

    @Test func noTwoRegistersOverlapInOneSpace() {
        for space in [RegisterSpace.gr0, .gr1, .contextBank] {
            var owner: [UInt32: RegisterName] = [:]
            for d in RegisterMap.all where d.space == space {
                for i in 0..<d.count {
                    let base = d.offset + UInt32(i) * d.stride
                    for word in stride(from: base, to: base + UInt32(d.width.bytes), by: 4) {
                        #expect(owner[word] == nil, "\(d.name) overlaps \(String(describing: owner[word]))")
                        owner[word] = d.name
                    }
                }
            }
        }
    }

    /// Offsets Linux uses (the ARM_SMMU_GR0_*, ARM_SMMU_GR1_* and ARM_SMMU_CB_* macros of arm-smmu.h), computed by the table for Tegra234.
    @Test func offsetsMatchLinuxForTegra() {
        let c = MMU500Configuration.tegra234
        #expect(c.offset(of: .sGFSR) == 0x48)
        #expect(c.offset(of: .sTLBGSTATUS) == 0x74)
        #expect(c.offset(of: .SMR, index: 5) == 0x814)
        #expect(c.offset(of: .S2CR, index: 127) == 0xDFC)
        #expect(c.offset(of: .CBAR, index: 2) == 0x10008)
        #expect(c.offset(of: .CBFRSYNRA, index: 1) == 0x10404)
        #expect(c.offset(of: .CBA2R, index: 0) == 0x10800)
        #expect(c.offset(of: .SCTLR, index: 0) == 0x80_0000)
        #expect(c.offset(of: .FSR, index: 127) == 0xFF_0058)
        #expect(c.offset(of: .TLBIVAL, index: 3) == 0x83_0620)
        #expect(c.offset(of: .ATSR, index: 1) == 0x81_08F0)
        let g = MMU500Configuration.generic4K
        #expect(g.offset(of: .CBAR, index: 1) == 0x1004)
        #expect(g.offset(of: .TTBR0, index: 1) == 0x11020)
    }

    @Test func everyRegisterDecodesAtItsOwnOffset() throws {
        let smmu = MMU500(configuration: .generic4K, memory: MemoryMap())
        for (location, _) in smmu.registers() {
            let d = RegisterMap.descriptor(location.name)
            let off = smmu.configuration.offset(of: location.name, index: location.index)
            let decoded = try smmu.decode(offset: off, width: d.width).get()
            #expect(decoded == .register(location, width: d.width))
        }
    }

    @Test func reservedOffsetsReadZeroAndIgnoreWrites() throws {
        let smmu = MMU500(configuration: .tegra234, memory: MemoryMap())
        let before = smmu.registers().map(\.value)
        // sCR2 (0x8, not modelled), a hole in GR0, page 2 (reserved), a CB page hole, PMU space.
        for off: UInt64 in [0x8, 0x1FC, 0x2_0000, 0x7F_0000, 0x80_0100, 0x80_0E00] {
            #expect(try smmu.decode(offset: off, width: .word).get() == .reserved(off < 0x80_0000 ? (off < 0x1_0000 ? .gr0 : .gr1) : .contextBank))
            try smmu.write(offset: off, value: 0xFFFF_FFFF, width: .word).get()
            #expect(try smmu.read(offset: off, width: .word).get() == 0)
        }
        #expect(smmu.registers().map(\.value) == before)
    }

    @Test func arrayEntriesBeyondTheImplementedCountAreReserved() throws {
        let smmu = MMU500(configuration: .generic4K, memory: MemoryMap())  // 48 SMRs, 16 CBs
        let smr48 = smmu.configuration.offset(of: .SMR, index: 47) + 4
        #expect(try smmu.decode(offset: smr48, width: .word).get() == .reserved(.gr0))
        try smmu.write(offset: smr48, value: 0x8000_0001, width: .word).get()
        #expect(try smmu.read(offset: smr48, width: .word).get() == 0)
        let cbar16 = smmu.configuration.offset(of: .CBAR, index: 15) + 4
        #expect(try smmu.decode(offset: cbar16, width: .word).get() == .reserved(.gr1))
        #expect(smmu.registers().filter { $0.location.name == .SMR }.count == 48)
        #expect(smmu.registers().filter { $0.location.name == .FSR }.count == 16)
    }

    @Test func accessErrors() {
        let smmu = MMU500(configuration: .generic4K, memory: MemoryMap())
        let c = smmu.configuration
        #expect(smmu.read(offset: c.windowSize, width: .word) == .failure(.outsideWindow))
        #expect(smmu.read(offset: c.windowSize - 4, width: .doubleword) == .failure(.outsideWindow))
        #expect(smmu.read(offset: 0x2, width: .word) == .failure(.misaligned))
        #expect(smmu.read(offset: c.offset(of: .TTBR0, index: 0) + 4, width: .doubleword) == .failure(.misaligned))
        #expect(smmu.read(offset: c.offset(of: .sCR0), width: .doubleword) == .failure(.wideAccessToNarrowRegister(.sCR0)))
        #expect(writeError(smmu.write(offset: c.offset(of: .FSR, index: 0), value: 0, width: .doubleword))
                == .wideAccessToNarrowRegister(.FSR))
        // 0x8 is reserved, 0xC is... reserved too; 0x48 sGFSR with 0x4C sGFSRRESTORE: narrow.
        #expect(smmu.read(offset: c.offset(of: .sGFSR), width: .doubleword) == .failure(.wideAccessToNarrowRegister(.sGFSR)))
    }

    @Test func sixtyFourBitRegistersTakeTwoHalves() throws {
        let smmu = MMU500(configuration: .tegra234, memory: MemoryMap())
        let d = Driver(smmu: smmu)
        let ttbr = d.offset(.TTBR0, 7)
        #expect(try smmu.decode(offset: ttbr + 4, width: .word).get()
                == .register(RegisterLocation(name: .TTBR0, index: 7, byteOffset: 4), width: .word))
        try smmu.write(offset: ttbr + 4, value: 0x0007_0000, width: .word).get()
        try smmu.write(offset: ttbr, value: 0x8123_4000, width: .word).get()
        #expect(d.r64(.TTBR0, 7) == 0x0007_0000_8123_4000)
        d.w64(.TTBR0, 7, 0x1122_3344_5566_7788)
        #expect(try smmu.read(offset: ttbr, width: .word).get() == 0x5566_7788)
        #expect(try smmu.read(offset: ttbr + 4, width: .word).get() == 0x1122_3344)
        // Writing the low half leaves the high half alone.
        try smmu.write(offset: ttbr, value: 0, width: .word).get()
        #expect(d.r64(.TTBR0, 7) == 0x1122_3344_0000_0000)
    }

    @Test func idRegistersAreReadOnlyAndComeFromTheConfiguration() {
        let d = Driver(smmu: MMU500(configuration: .tegra234, memory: MemoryMap()))
        #expect(d.r32(.IDR0) == 0x7C00_1E80)
        #expect(d.r32(.IDR1) == 0xE000_0080)
        #expect(d.r32(.IDR2) == 0x0000_5555)
        d.w32(.IDR1, 0)
        d.w32(.IDR0, 0xFFFF_FFFF)
        #expect(d.r32(.IDR1) == 0xE000_0080)
        #expect(d.r32(.IDR0) == 0x7C00_1E80)
    }

    @Test func writableMasksAndResetValues() {
        let smmu = MMU500(configuration: .tegra234, memory: MemoryMap())
        let d = Driver(smmu: smmu)
        #expect(d.r32(.sCR0) == 0x0020_0001)
        #expect(d.r32(.CBAR, 5) == 0x0002_0000)
        d.w32(.CBAR, 5, 0xFFFF_FFFF)
        #expect(d.r32(.CBAR, 5) == 0x00FF_FFFF)          // IRPTNDX is read-only
        d.w32(.SMR, 3, 0xFFFF_FFFF)
        #expect(d.r32(.SMR, 3) == 0xFFFF_7FFF)          // bit 15 (ID) not implemented
        d.w32(.CBA2R, 1, 0xFFFF_FFFF)
        #expect(d.r32(.CBA2R, 1) == 0xFFFF_0003)
        d.w32(.TLBIASID, 0, 5)
        #expect(d.r32(.TLBIASID, 0) == 0)               // write-only reads zero
        d.w32(.sTLBGSYNC, 0xFFFF_FFFF)
        #expect(d.r32(.sTLBGSTATUS) == 0)
        smmu.poke(.TCR, index: 2, 0x1234)
        #expect(smmu.peek(.TCR, index: 2) == 0x1234)
        smmu.reset()
        #expect(smmu.peek(.TCR, index: 2) == 0)
        #expect(d.r32(.SMR, 3) == 0)
    }

    @Test func faultStatusIsWriteOneToClearAndRestorable() {
        let smmu = MMU500(configuration: .tegra234, memory: MemoryMap())
        let d = Driver(smmu: smmu)
        d.w32(.FSRRESTORE, 4, 0x8000_000A)              // MULTI | PF | TF
        #expect(d.r32(.FSR, 4) == 0x8000_000A)
        #expect(d.r32(.FSR, 3) == 0)
        d.w32(.FSR, 4, 0x2)                               // clears TF only
        #expect(d.r32(.FSR, 4) == 0x8000_0008)
        d.w32(.FSR, 4, 0xC000_01FE)
        #expect(d.r32(.FSR, 4) == 0)
        d.w32(.sGFSRRESTORE, 0x8000_0006)
        #expect(d.r32(.sGFSR) == 0x8000_0006)
        d.w32(.sGFSR, d.r32(.sGFSR))
        #expect(d.r32(.sGFSR) == 0)
    }
}
