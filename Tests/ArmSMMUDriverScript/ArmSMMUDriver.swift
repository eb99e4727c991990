import SMMUModel

/// The Linux arm-smmu driver's register sequences (shared/reference/linux-arm-smmu.md §3), written once for
/// every test that plays the driver: on the bare model (SMMUModelTests) and through the trap handler
/// (HypervisorTests). A conforming type says how a 32- or 64-bit access reaches the registers and what a
/// refused access or a failed check means to its tests; the sequences come from this extension.
///
/// (`SMMUClient.LinuxProbe` stays separate on purpose: it is a host driver that knows only Linux's
/// offsets and meets the daemon on the wire, so it cannot share the model's register table.)
public protocol ArmSMMUDriver {
    func r32(_ name: RegisterName, _ index: Int) -> UInt32
    func r64(_ name: RegisterName, _ index: Int) -> UInt64
    func w32(_ name: RegisterName, _ index: Int, _ value: UInt32)
    func w64(_ name: RegisterName, _ index: Int, _ value: UInt64)
    /// A condition the driver relies on (a TLB sync that completes); the conforming type records a false one.
    func require(_ condition: Bool, _ what: String)
    /// The implementation's step just before the final sCR0 write (`nvidia_smmu_reset`); none by default.
    func implementationReset()
}

/// What `arm_smmu_device_cfg_probe()` derives from IDR0-2 (§1.1, §2, §3a), from the raw bits.
public struct ArmSMMUProbe: Equatable, Sendable {
    public var pgshift: Int, numpage: Int, numCB: Int, numS2CB: Int, numSMRG: Int
    public var streamIDMask: UInt32, ipaSize: Int, paSize: Int, vaSize: Int
    public var vmid16: Bool, exids: Bool, atosns: Bool
    public var s1: Bool, s2: Bool, nested: Bool
}

/// What `arm_smmu_context_fault()` reads.
public struct ArmSMMUContextFault: Equatable, Sendable {
    public var far: UInt64, fsr: UInt32, fsynr0: UInt32, cbfrsynra: UInt32
}

/// What `arm_smmu_global_fault()` reads.
public struct ArmSMMUGlobalFault: Equatable, Sendable {
    public var gfsr: UInt32, gfsynr0: UInt32, gfsynr1: UInt32, gfsynr2: UInt32
}

extension ArmSMMUDriver {
    public func implementationReset() {}

    public func r32(_ name: RegisterName) -> UInt32 { r32(name, 0) }
    public func r64(_ name: RegisterName) -> UInt64 { r64(name, 0) }
    public func w32(_ name: RegisterName, _ value: UInt32) { w32(name, 0, value) }

    // MARK: §3a arm_smmu_device_cfg_probe

    public func probe() -> ArmSMMUProbe {
        let id0 = r32(.IDR0), id1 = r32(.IDR1), id2 = r32(.IDR2)
        func bits(_ field: UInt32) -> Int { field < 5 ? [32, 36, 40, 42, 44][Int(field)] : 48 }
        let exids = id0 & (1 << 8) != 0
        return ArmSMMUProbe(
            pgshift: id1 & (1 << 31) != 0 ? 16 : 12, numpage: 1 << (Int((id1 >> 28) & 7) + 1),
            numCB: Int(id1 & 0xFF), numS2CB: Int((id1 >> 16) & 0xFF), numSMRG: Int(id0 & 0xFF),
            streamIDMask: exids ? 0xFFFF : (1 << ((id0 >> 9) & 0xF)) - 1,
            ipaSize: bits(id2 & 0xF), paSize: bits((id2 >> 4) & 0xF), vaSize: bits((id2 >> 8) & 0xF),
            vmid16: id2 & (1 << 15) != 0, exids: exids, atosns: id0 & (1 << 26) != 0,
            s1: id0 & (1 << 30) != 0, s2: id0 & (1 << 29) != 0, nested: id0 & (1 << 28) != 0)
    }

    // MARK: §3.0 step 7 + §3b arm_smmu_device_reset (disable_bypass = y)

    /// `arm_smmu_rmr_install_bypass_smr()` then `arm_smmu_device_reset()`. Returns the sCR0 value written last
    /// (the one that enables translation).
    @discardableResult
    public func reset() -> UInt32 {
        let p = probe()
        w32(.sCR0, r32(.sCR0) | 1)                      // rmr_install_bypass_smr: CLIENTPD
        w32(.sGFSR, r32(.sGFSR))
        for i in 0..<p.numSMRG {
            w32(.S2CR, i, 0x0002_0000)
            w32(.SMR, i, 0)
        }
        for i in 0..<p.numCB {
            w32(.SCTLR, i, 0)
            w32(.FSR, i, 0xC000_01FE)
        }
        w32(.TLBIALLH, 0xFFFF_FFFF)
        w32(.TLBIALLNSNH, 0xFFFF_FFFF)
        var reg = r32(.sCR0)
        reg |= (1 << 1) | (1 << 2) | (1 << 4) | (1 << 5)     // GFRE GFIE GCFGFRE GCFGFIE
        reg |= (1 << 11) | (1 << 12)                          // VMIDPNE PTM
        reg &= ~UInt32(1)                                     // CLIENTPD
        reg |= 1 << 10                                        // USFCFG (disable_bypass)
        reg &= ~UInt32(1 << 13)                               // FB
        reg &= ~UInt32(3 << 14)                               // BSU
        if p.vmid16 { reg |= 1 << 31 }
        implementationReset()
        sync()
        w32(.sCR0, reg)
        return reg
    }

    /// §3b' `arm_smmu_test_smr_masks()`: returns (streamid_mask, smr_mask_mask) as the driver computes them.
    public func testSMRMasks(index: Int = 0) -> (UInt32, UInt32) {
        var mask = probe().streamIDMask
        w32(.SMR, index, mask)
        mask = r32(.SMR, index) & 0xFFFF
        w32(.SMR, index, mask << 16)
        return (mask, r32(.SMR, index) >> 16)
    }

    // MARK: §3c attach

    /// `arm_smmu_write_context_bank()` for a stage-1 domain, AArch64, ASID = cbndx. `vmid` is the CBA2R VMID16
    /// field (Linux leaves it 0 for stage 1; model tests tag banks apart with it).
    public func attachStage1(bank: Int, ttbr0: UInt64, tcr: UInt32 = 0x0080_2010, vmid: UInt32 = 0) {
        let asid = UInt64(bank)
        w32(.CBA2R, bank, 0x1 | vmid << 16)
        w32(.CBAR, bank, 0x0001_F300)
        w32(.TCR2, bank, 0x0003_8015)
        w32(.TCR, bank, tcr)
        w64(.TTBR0, bank, asid << 48 | ttbr0)
        w64(.TTBR1, bank, asid << 48)
        w32(.MAIR0, bank, 0xF404_FF44)
        w32(.MAIR1, bank, 0)
        w32(.SCTLR, bank, 0x1067)
    }

    /// A stage-2 (type 0) or nested (type 3 over `s2Bank`) context bank: CBA2R, CBAR, TCR (VTCR),
    /// TTBR0 (VTTBR), SCTLR.
    public func attachStage2(bank: Int, vttbr: UInt64, vtcr: UInt32, vmid: UInt32, type: UInt32 = 0, s2Bank: UInt32 = 0) {
        w32(.CBA2R, bank, 0x1)
        w32(.CBAR, bank, type << 16 | (type == 3 ? s2Bank << 8 : 0) | vmid)
        w32(.TCR, bank, vtcr)
        w64(.TTBR0, bank, vttbr)
        w32(.SCTLR, bank, 0x67)
    }

    /// `arm_smmu_master_alloc_smes()` + install_s2crs(TRANS): S2CR, SMR, then S2CR = cbndx.
    public func route(smr index: Int, stream: UInt16, mask: UInt16 = 0, toBank bank: Int) {
        w32(.S2CR, index, 0x0002_0000)
        w32(.SMR, index, 1 << 31 | UInt32(mask) << 16 | UInt32(stream))
        w32(.S2CR, index, UInt32(bank))
    }

    /// The identity domain: the stream's S2CR set to BYPASS.
    public func bypass(smr index: Int, stream: UInt16, mask: UInt16 = 0) {
        w32(.S2CR, index, 0x0002_0000)
        w32(.SMR, index, 1 << 31 | UInt32(mask) << 16 | UInt32(stream))
        w32(.S2CR, index, 0x0001_0000)
    }

    // MARK: §3d TLB maintenance

    /// `__arm_smmu_tlb_sync` on the global page: write, then poll until GSACTIVE reads 0.
    public func sync() {
        w32(.sTLBGSYNC, 0xFFFF_FFFF)
        require(r32(.sTLBGSTATUS) & 1 == 0, "sTLBGSTATUS.GSACTIVE clear after sTLBGSYNC")
    }

    public func contextSync(_ bank: Int) {
        w32(.TLBSYNC, bank, 0xFFFF_FFFF)
        require(r32(.TLBSTATUS, bank) & 1 == 0, "TLBSTATUS.SACTIVE clear after TLBSYNC on bank \(bank)")
    }

    /// Unmap of one 4 KiB page of a stage-1 domain: TLBIVAL then context sync.
    public func invalidate(iova: UInt64, bank: Int) {
        w64(.TLBIVAL, bank, (iova >> 12) | UInt64(bank) << 48)
        contextSync(bank)
    }

    // MARK: §3e fault handlers

    /// `arm_smmu_context_fault`: FAR, FSR, FSYNR0, CBFRSYNRA; nil when no fault bits; W1C.
    public func contextFault(bank: Int) -> ArmSMMUContextFault? {
        let f = ArmSMMUContextFault(far: r64(.FAR, bank), fsr: r32(.FSR, bank), fsynr0: r32(.FSYNR0, bank),
                                    cbfrsynra: r32(.CBFRSYNRA, bank))
        guard f.fsr & 0xC000_01FE != 0 else { return nil }
        w32(.FSR, bank, f.fsr)
        return f
    }

    /// `arm_smmu_global_fault`: all four read, nil when sGFSR is 0, then W1C.
    public func globalFault() -> ArmSMMUGlobalFault? {
        let g = ArmSMMUGlobalFault(gfsr: r32(.sGFSR), gfsynr0: r32(.sGFSYNR0), gfsynr1: r32(.sGFSYNR1),
                                   gfsynr2: r32(.sGFSYNR2))
        guard g.gfsr != 0 else { return nil }
        w32(.sGFSR, g.gfsr)
        return g
    }
}
