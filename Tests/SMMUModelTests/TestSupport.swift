import Testing
@testable import SMMUModel

/// MMIO as the Linux driver does it: 32- and 64-bit accesses at offsets computed from the
/// register table, failing the test on an access error.
struct Driver {
    let smmu: MMU500
    var config: MMU500Configuration { smmu.configuration }

    func offset(_ name: RegisterName, _ index: Int = 0) -> UInt64 { config.offset(of: name, index: index) }

    func r32(_ name: RegisterName, _ index: Int = 0) -> UInt32 {
        let v = smmu.read(offset: offset(name, index), width: .word)
        #expect(throws: Never.self) { try v.get() }
        return UInt32(truncatingIfNeeded: (try? v.get()) ?? 0)
    }

    func r64(_ name: RegisterName, _ index: Int = 0) -> UInt64 {
        let v = smmu.read(offset: offset(name, index), width: .doubleword)
        #expect(throws: Never.self) { try v.get() }
        return (try? v.get()) ?? 0
    }

    func w32(_ name: RegisterName, _ index: Int = 0, _ value: UInt32) {
        let r = smmu.write(offset: offset(name, index), value: UInt64(value), width: .word)
        #expect(throws: Never.self) { try r.get() }
    }

    func w32(_ name: RegisterName, _ value: UInt32) { w32(name, 0, value) }

    func w64(_ name: RegisterName, _ index: Int = 0, _ value: UInt64) {
        let r = smmu.write(offset: offset(name, index), value: value, width: .doubleword)
        #expect(throws: Never.self) { try r.get() }
    }

    // MARK: Linux sequences (reference §3)

    /// What `arm_smmu_device_cfg_probe()` derives from IDR0-2 (§1.1, §2, §3a), computed here
    /// independently of MMU500Configuration.
    struct Probe: Equatable {
        var pgshift: Int, numpage: Int, numCB: Int, numS2CB: Int, numSMRG: Int
        var streamIDMask: UInt32, ipaSize: Int, paSize: Int, vaSize: Int, vmid16: Bool
        var s1: Bool, s2: Bool, nested: Bool
    }

    func probe() -> Probe {
        let id0 = r32(.IDR0), id1 = r32(.IDR1), id2 = r32(.IDR2)
        func bits(_ f: UInt32) -> Int { [32, 36, 40, 42, 44][safe: Int(f)] ?? 48 }
        let size = 1 << (Int((id1 >> 28) & 7) + 1)
        return Probe(
            pgshift: id1 & (1 << 31) != 0 ? 16 : 12, numpage: size, numCB: Int(id1 & 0xFF),
            numS2CB: Int((id1 >> 16) & 0xFF), numSMRG: Int(id0 & 0xFF),
            streamIDMask: (1 << ((id0 >> 9) & 0xF)) - 1, ipaSize: bits(id2 & 0xF), paSize: bits((id2 >> 4) & 0xF),
            vaSize: bits((id2 >> 8) & 0xF), vmid16: id2 & (1 << 15) != 0,
            s1: id0 & (1 << 30) != 0, s2: id0 & (1 << 29) != 0, nested: id0 & (1 << 28) != 0)
    }

    /// `arm_smmu_rmr_install_bypass_smr()` then `arm_smmu_device_reset()` (§3.0 step 7, §3b),
    /// disable_bypass = y, generic impl.
    func fullReset() {
        w32(.sCR0, r32(.sCR0) | 1)
        w32(.sGFSR, r32(.sGFSR))
        for i in 0..<config.numStreamMatchGroups {
            w32(.S2CR, i, 0x0002_0000)
            w32(.SMR, i, 0)
        }
        for i in 0..<config.numContextBanks {
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
        if probe().vmid16 { reg |= 1 << 31 }
        sync()
        w32(.sCR0, reg)
    }

    /// `__arm_smmu_tlb_sync` on the global page: write, then poll until GSACTIVE reads 0.
    func sync() {
        w32(.sTLBGSYNC, 0xFFFF_FFFF)
        #expect(r32(.sTLBGSTATUS) & 1 == 0)
    }

    func contextSync(_ bank: Int) {
        w32(.TLBSYNC, bank, 0xFFFF_FFFF)
        #expect(r32(.TLBSTATUS, bank) & 1 == 0)
    }

    /// `arm_smmu_test_smr_masks()` (§3b'): returns (streamid_mask, smr_mask_mask).
    func testSMRMasks(index: Int = 0) -> (UInt32, UInt32) {
        var streamIDMask = probe().streamIDMask
        w32(.SMR, index, streamIDMask)
        streamIDMask = r32(.SMR, index) & 0xFFFF
        w32(.SMR, index, streamIDMask << 16)
        return (streamIDMask, r32(.SMR, index) >> 16)
    }

    /// `arm_smmu_write_context_bank()` for a stage-1 domain (§3c), AArch64, ASID = cbndx.
    func attachStage1(bank: Int, ttbr0: UInt64, tcr: UInt32 = 0x0080_2010) {
        let asid = UInt64(bank)
        w32(.CBA2R, bank, 0x1 | (probe().vmid16 ? UInt32(bank) << 16 : 0))
        w32(.CBAR, bank, 0x0001_F300)
        w32(.TCR2, bank, 0x0003_8015)
        w32(.TCR, bank, tcr)
        w64(.TTBR0, bank, asid << 48 | ttbr0)
        w64(.TTBR1, bank, asid << 48)
        w32(.MAIR0, bank, 0xF404_FF44)
        w32(.MAIR1, bank, 0)
        w32(.SCTLR, bank, 0x1067)
    }

    /// A stage-2 (or any type) context bank: CBA2R, CBAR, TCR (VTCR), TTBR0 (VTTBR), SCTLR.
    func attachStage2(bank: Int, vttbr: UInt64, vtcr: UInt32, vmid: UInt32, type: UInt32 = 0, s2Bank: UInt32 = 0) {
        w32(.CBA2R, bank, 0x1)
        w32(.CBAR, bank, type << 16 | (type == 3 ? s2Bank << 8 : 0) | vmid)
        w32(.TCR, bank, vtcr)
        w64(.TTBR0, bank, vttbr)
        w32(.SCTLR, bank, 0x67)
    }

    /// `arm_smmu_master_alloc_smes()` + install_s2crs(TRANS): S2CR then SMR, then S2CR = cbndx.
    func route(smr index: Int, stream: UInt16, mask: UInt16 = 0, toBank bank: Int) {
        w32(.S2CR, index, 0x0002_0000)
        w32(.SMR, index, 1 << 31 | UInt32(mask) << 16 | UInt32(stream))
        w32(.S2CR, index, UInt32(bank))
    }
}

/// The error of a write, if any (Result<Void, _> is not Equatable).
func writeError(_ r: Result<Void, AccessError>) -> AccessError? {
    if case .failure(let e) = r { return e }
    return nil
}

extension Array {
    subscript(safe i: Int) -> Element? { indices.contains(i) ? self[i] : nil }
}

/// A machine: RAM at 0x8000_0000 (256 MiB), one MMU-500, a table pool.
struct Machine {
    static let ramBase: UInt64 = 0x8000_0000
    static let ramSize: UInt64 = 256 << 20
    let memory: MemoryMap
    let smmu: MMU500
    var driver: Driver { Driver(smmu: smmu) }
    var nextPool: UInt64 = Machine.ramBase + (128 << 20)

    init(_ configuration: MMU500Configuration = .tegra234, filter: DownstreamFilter? = nil) {
        memory = try! MemoryMap(regions: [(Self.ramBase, Self.ramSize)])
        smmu = MMU500(configuration: configuration, memory: memory, filter: filter)
    }

    /// A table builder with its own 4 MiB of pool.
    mutating func builder(_ stage: PageTableBuilder.Stage, _ granule: PageTableBuilder.Granule = .size4K,
                          inputBits: Int = 48, startLevel: Int? = nil) throws -> PageTableBuilder {
        let pool = nextPool..<(nextPool + (4 << 20))
        nextPool += 4 << 20
        return try PageTableBuilder(memory: memory, stage: stage, granule: granule, inputBits: inputBits,
                                    tablePool: pool, startLevel: startLevel)
    }
}

/// A downstream filter that allows one address range and remembers what it was asked.
final class RangeFilter: DownstreamFilter {
    var allowed: Range<UInt64>
    var asked: [(StreamID, UInt64, MemoryAccessKind)] = []
    init(_ allowed: Range<UInt64>) { self.allowed = allowed }
    func permits(stream: StreamID, address: UInt64, kind: MemoryAccessKind) -> Bool {
        asked.append((stream, address, kind))
        return allowed.contains(address)
    }
}
