import Testing
import Hypervisor
import SMMUModel

/// The Linux arm-smmu driver's MMIO, as the host kernel makes it: physical addresses through
/// `hostRead`/`hostWrite`, offsets from the page layout, every access expected to succeed.
/// With two windows it is the NVIDIA 2-instance impl: writes go to every instance in order,
/// reads come from instance 0 (linux-arm-smmu.md §4.1).
struct LinuxDriver {
    let machine: Machine
    let windows: [Int]
    var hv: Hypervisor { machine.hv }
    var layout: MMU500Configuration { hv.policy.topology.windows[windows[0]].configuration }

    func address(_ name: RegisterName, _ index: Int = 0, window: Int? = nil) -> UInt64 {
        hv.windows[window ?? windows[0]].base + layout.offset(of: name, index: index)
    }

    // MARK: Raw accesses (results, for attacks)

    func read(_ name: RegisterName, _ index: Int = 0, width: AccessWidth = .word, window: Int? = nil)
        -> HostAccessResult<UInt64>
    {
        hv.hostRead(address: address(name, index, window: window), width: width, client: machine.client)
    }

    func write(_ name: RegisterName, _ index: Int, _ value: UInt64, width: AccessWidth = .word,
               window: Int? = nil) -> HostAccessResult<Void> {
        hv.hostWrite(address: address(name, index, window: window), value: value, width: width, client: machine.client)
    }

    func write(_ name: RegisterName, _ value: UInt64, width: AccessWidth = .word, window: Int? = nil)
        -> HostAccessResult<Void>
    {
        write(name, 0, value, width: width, window: window)
    }

    // MARK: Driver accesses (must succeed)

    func w32(_ name: RegisterName, _ value: UInt32, sourceLocation: SourceLocation = #_sourceLocation) {
        w32(name, 0, value, sourceLocation: sourceLocation)
    }

    func r32(_ name: RegisterName, _ index: Int = 0, sourceLocation: SourceLocation = #_sourceLocation) -> UInt32 {
        let r = read(name, index)
        #expect(r.value != nil, "R32 \(name)[\(index)]: \(r)", sourceLocation: sourceLocation)
        return UInt32(truncatingIfNeeded: r.value ?? 0xDEAD_BEEF)
    }

    func r64(_ name: RegisterName, _ index: Int = 0, sourceLocation: SourceLocation = #_sourceLocation) -> UInt64 {
        let r = read(name, index, width: .doubleword)
        #expect(r.value != nil, "R64 \(name)[\(index)]: \(r)", sourceLocation: sourceLocation)
        return r.value ?? 0xDEAD_BEEF
    }

    func w32(_ name: RegisterName, _ index: Int, _ value: UInt32, sourceLocation: SourceLocation = #_sourceLocation) {
        for w in windows {
            let r = write(name, index, UInt64(value), window: w)
            #expect(r.value != nil, "W32 \(name)[\(index)] = 0x\(String(value, radix: 16)) on window \(w): \(r)",
                    sourceLocation: sourceLocation)
        }
    }

    func w64(_ name: RegisterName, _ index: Int, _ value: UInt64, sourceLocation: SourceLocation = #_sourceLocation) {
        for w in windows {
            let r = write(name, index, value, width: .doubleword, window: w)
            #expect(r.value != nil, "W64 \(name)[\(index)] on window \(w): \(r)", sourceLocation: sourceLocation)
        }
    }

    // MARK: §3a arm_smmu_device_cfg_probe

    /// What cfg_probe derives from IDR0-2, computed here from the raw bits.
    struct Probe: Equatable {
        var pgshift: Int, numpage: Int, numCB: Int, numS2CB: Int, numSMRG: Int
        var streamIDMask: UInt32, vmid16: Bool, exids: Bool, atosns: Bool
        var s1: Bool, s2: Bool, nested: Bool
    }

    func probe() -> Probe {
        let id0 = r32(.IDR0), id1 = r32(.IDR1), id2 = r32(.IDR2)
        return Probe(
            pgshift: id1 & (1 << 31) != 0 ? 16 : 12, numpage: 1 << (Int((id1 >> 28) & 7) + 1),
            numCB: Int(id1 & 0xFF), numS2CB: Int((id1 >> 16) & 0xFF), numSMRG: Int(id0 & 0xFF),
            streamIDMask: id0 & (1 << 8) != 0 ? 0xFFFF : (1 << ((id0 >> 9) & 0xF)) - 1,
            vmid16: id2 & (1 << 15) != 0, exids: id0 & (1 << 8) != 0, atosns: id0 & (1 << 26) != 0,
            s1: id0 & (1 << 30) != 0, s2: id0 & (1 << 29) != 0, nested: id0 & (1 << 28) != 0)
    }

    // MARK: §3.0 step 7 + §3b arm_smmu_device_reset (disable_bypass = y, NVIDIA impl)

    /// Returns the sCR0 value written last (the one that enables translation).
    @discardableResult
    func reset() -> UInt32 {
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
        reg |= 1 << 10                                        // USFCFG
        reg &= ~UInt32(1 << 13)                               // FB
        reg &= ~UInt32(3 << 14)                               // BSU
        if p.vmid16 { reg |= 1 << 31 }
        if windows.count > 1 {                                // nvidia_smmu_reset: per-instance W1C
            for w in windows {
                let g = read(.sGFSR, window: w).value ?? 0
                _ = write(.sGFSR, g, window: w)
            }
        }
        sync()
        w32(.sCR0, reg)
        return reg
    }

    /// §3b': returns (streamid_mask, smr_mask_mask) as the driver computes them.
    func testSMRMasks(index: Int = 0) -> (UInt32, UInt32) {
        var mask = probe().streamIDMask
        w32(.SMR, index, mask)
        mask = r32(.SMR, index) & 0xFFFF
        w32(.SMR, index, mask << 16)
        return (mask, r32(.SMR, index) >> 16)
    }

    // MARK: §3c attach

    /// `arm_smmu_write_context_bank()` for a stage-1 domain, AArch64, ASID = cbndx.
    func attachStage1(bank: Int, ttbr0: UInt64, tcr: UInt32 = 0x0080_2010) {
        let asid = UInt64(bank)
        w32(.CBA2R, bank, 0x1)
        w32(.CBAR, bank, 0x0001_F300)
        w32(.TCR2, bank, 0x0003_8015)
        w32(.TCR, bank, tcr)
        w64(.TTBR0, bank, asid << 48 | ttbr0)
        w64(.TTBR1, bank, asid << 48)
        w32(.MAIR0, bank, 0xF404_FF44)
        w32(.MAIR1, bank, 0)
        w32(.SCTLR, bank, 0x1067)
    }

    /// A stage-2 (type 0) or nested (type 3 over `s2Bank`) context bank.
    func attachStage2(bank: Int, vttbr: UInt64, vtcr: UInt32, vmid: UInt32, type: UInt32 = 0, s2Bank: UInt32 = 0) {
        w32(.CBA2R, bank, 0x1)
        w32(.CBAR, bank, type << 16 | (type == 3 ? s2Bank << 8 : 0) | vmid)
        w32(.TCR, bank, vtcr)
        w64(.TTBR0, bank, vttbr)
        w32(.SCTLR, bank, 0x67)
    }

    /// `arm_smmu_master_alloc_smes()` + install_s2crs(TRANS): S2CR, SMR, then S2CR = cbndx.
    func route(smr index: Int, stream: UInt16, mask: UInt16 = 0, toBank bank: Int) {
        w32(.S2CR, index, 0x0002_0000)
        w32(.SMR, index, 1 << 31 | UInt32(mask) << 16 | UInt32(stream))
        w32(.S2CR, index, UInt32(bank))
    }

    /// The identity domain: the stream's S2CR set to BYPASS.
    func bypass(smr index: Int, stream: UInt16, mask: UInt16 = 0) {
        w32(.S2CR, index, 0x0002_0000)
        w32(.SMR, index, 1 << 31 | UInt32(mask) << 16 | UInt32(stream))
        w32(.S2CR, index, 0x0001_0000)
    }

    // MARK: §3d TLB maintenance

    func sync() {
        w32(.sTLBGSYNC, 0xFFFF_FFFF)
        #expect(r32(.sTLBGSTATUS) & 1 == 0)
    }

    func contextSync(_ bank: Int) {
        w32(.TLBSYNC, bank, 0xFFFF_FFFF)
        #expect(r32(.TLBSTATUS, bank) & 1 == 0)
    }

    /// Unmap of one 4 KiB page of a stage-1 domain: TLBIVAL then context sync.
    func invalidate(iova: UInt64, bank: Int) {
        w64(.TLBIVAL, bank, (iova >> 12) | UInt64(bank) << 48)
        contextSync(bank)
    }

    // MARK: §3e fault handlers

    struct ContextFault: Equatable {
        var far: UInt64, fsr: UInt32, fsynr0: UInt32, cbfrsynra: UInt32
    }

    /// `arm_smmu_context_fault`: FAR, FSR, FSYNR0, CBFRSYNRA; nil when no fault bits; W1C.
    func contextFault(bank: Int) -> ContextFault? {
        let f = ContextFault(far: r64(.FAR, bank), fsr: r32(.FSR, bank), fsynr0: r32(.FSYNR0, bank),
                             cbfrsynra: r32(.CBFRSYNRA, bank))
        guard f.fsr & 0xC000_01FE != 0 else { return nil }
        w32(.FSR, bank, f.fsr)
        return f
    }

    struct GlobalFault: Equatable {
        var gfsr: UInt32, gfsynr0: UInt32, gfsynr1: UInt32, gfsynr2: UInt32
    }

    /// `arm_smmu_global_fault`: all four read, nil when sGFSR is 0, then W1C.
    func globalFault() -> GlobalFault? {
        let g = GlobalFault(gfsr: r32(.sGFSR), gfsynr0: r32(.sGFSYNR0), gfsynr1: r32(.sGFSYNR1), gfsynr2: r32(.sGFSYNR2))
        guard g.gfsr != 0 else { return nil }
        w32(.sGFSR, g.gfsr)
        return g
    }
}
