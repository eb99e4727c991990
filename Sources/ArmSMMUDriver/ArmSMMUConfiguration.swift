/// What Linux's `arm_smmu_device_cfg_probe()` derives from IDR0, IDR1 and IDR2, and what it prints.
///
/// The derivation is Linux's own (drivers/iommu/arm/arm-smmu/arm-smmu.c), re-done here from the
/// register values the driver reads, independently of the emulator's model, so the two check each other.
public struct ArmSMMUConfiguration: Hashable, Sendable {
    public var idr0: UInt32, idr1: UInt32, idr2: UInt32

    public var stage1: Bool, stage2: Bool, nested: Bool
    /// FEAT_TRANS_OPS: S1TS and not ATOSNS (SMMUv2).
    public var translationOps: Bool
    public var coherentWalkRegister: Bool
    public var extendedIDs: Bool
    public var streamMatching: Bool
    /// `(1 << NUMSIDB) - 1`, or 0xffff with EXIDS; refined by the SMR mask test.
    public var streamIDMask: UInt32
    /// SMR/S2CR pairs (NUMSMRG), or `1 << NUMSIDB` stream-indexing entries without SMS.
    public var numMappingGroups: Int
    public var aarch32L: Bool, aarch32S: Bool
    public var pageShift: Int
    /// Pages in the global half; context bank n is page `numPage + n`.
    public var numPage: Int
    public var numContextBanks: Int, numS2ContextBanks: Int
    public var ipaSize: Int, paSize: Int, vaSize: Int
    public var vmid16: Bool
    public var aarch64_4K: Bool, aarch64_16K: Bool, aarch64_64K: Bool
    public var pageSizeBitmap: UInt64
    /// The notices Linux prints, in order (dev_notice / dev_warn text, without the device prefix).
    public var lines: [String]

    /// Why Linux's cfg_probe would fail with -ENODEV.
    public enum ProbeFailure: Error, Hashable, Sendable, CustomStringConvertible {
        case noTranslationSupport
        case streamMatchingWithoutSMRs
        case impossibleS2ContextBanks(s2: Int, total: Int)
        public var description: String {
            switch self {
            case .noTranslationSupport: "\tno translation support!"
            case .streamMatchingWithoutSMRs: "stream-matching supported, but no SMRs present!"
            case .impossibleS2ContextBanks: "impossible number of S2 context banks!"
            }
        }
    }

    /// `arm_smmu_id_size_to_bits`.
    static func sizeToBits(_ field: UInt32) -> Int {
        switch field {
        case 0: 32
        case 1: 36
        case 2: 40
        case 3: 42
        case 4: 44
        default: 48
        }
    }

    /// Derives the configuration as Linux does for an SMMUv2 (MMU-500).
    /// - Parameter mappedSize: the register window's size (Linux's `resource_size`), for the size warning;
    ///   nil when the caller has no mapping to compare with.
    public init(idr0: UInt32, idr1: UInt32, idr2: UInt32, mappedSize: UInt64?) throws(ProbeFailure) {
        self.idr0 = idr0
        self.idr1 = idr1
        self.idr2 = idr2
        var lines = ["probing hardware configuration...", "SMMUv2 with:"]
        func bit(_ v: UInt32, _ n: Int) -> Bool { v >> n & 1 == 1 }
        func field(_ v: UInt32, _ lo: Int, _ width: Int) -> UInt32 { v >> lo & (1 << width - 1) }

        // ID0
        stage1 = bit(idr0, 30)
        stage2 = bit(idr0, 29)
        nested = bit(idr0, 28)
        if stage1 { lines.append("\tstage 1 translation") }
        if stage2 { lines.append("\tstage 2 translation") }
        if nested { lines.append("\tnested translation") }
        guard stage1 || stage2 else { throw .noTranslationSupport }
        translationOps = stage1 && !bit(idr0, 26)
        if translationOps { lines.append("\taddress translation ops") }
        coherentWalkRegister = bit(idr0, 14)
        // The firmware (DT) says no dma-coherent on Tegra234: Linux notes an override if IDR0.CTTW disagrees.
        if coherentWalkRegister { lines.append("\t(IDR0.CTTW overridden by FW configuration)") }
        extendedIDs = bit(idr0, 8)
        var size = extendedIDs ? 1 << 16 : 1 << Int(field(idr0, 9, 4))
        streamIDMask = UInt32(size - 1)
        streamMatching = bit(idr0, 27)
        if streamMatching {
            size = Int(field(idr0, 0, 8))
            guard size > 0 else { throw .streamMatchingWithoutSMRs }
            lines.append("\tstream matching with \(size) register groups")
        }
        numMappingGroups = size
        aarch32L = !bit(idr0, 25)
        aarch32S = aarch32L && !bit(idr0, 24)

        // ID1
        pageShift = bit(idr1, 31) ? 16 : 12
        let pages = 1 << (Int(field(idr1, 28, 3)) + 1)
        let space = UInt64(2 * pages) << UInt64(pageShift)
        if let mappedSize, space != mappedSize {
            lines.append(
                "SMMU address space size (0x\(String(space, radix: 16))) differs from mapped region size (0x\(String(mappedSize, radix: 16)))!"
            )
        }
        numPage = pages
        numS2ContextBanks = Int(field(idr1, 16, 8))
        numContextBanks = Int(field(idr1, 0, 8))
        guard numS2ContextBanks <= numContextBanks else {
            throw .impossibleS2ContextBanks(s2: numS2ContextBanks, total: numContextBanks)
        }
        lines.append("\t\(numContextBanks) context banks (\(numS2ContextBanks) stage-2 only)")

        // ID2
        ipaSize = Self.sizeToBits(field(idr2, 0, 4))
        paSize = Self.sizeToBits(field(idr2, 4, 4))
        vaSize = Self.sizeToBits(field(idr2, 8, 4))
        vmid16 = bit(idr2, 15)
        aarch64_4K = bit(idr2, 12)
        aarch64_16K = bit(idr2, 13)
        aarch64_64K = bit(idr2, 14)

        var bitmap: UInt64 = 0
        if aarch32S { bitmap |= 0x1000 | 0x10000 | 0x10_0000 | 0x100_0000 }
        if aarch32L || aarch64_4K { bitmap |= 0x1000 | 0x20_0000 | 0x4000_0000 }
        if aarch64_16K { bitmap |= 0x4000 | 0x200_0000 }
        if aarch64_64K { bitmap |= 0x10000 | 0x2000_0000 }
        pageSizeBitmap = bitmap
        let hex = String(bitmap, radix: 16)
        lines.append("\tSupported page sizes: 0x" + String(repeating: "0", count: max(0, 8 - hex.count)) + hex)
        if stage1 { lines.append("\tStage-1: \(vaSize)-bit VA -> \(ipaSize)-bit IPA") }
        if stage2 { lines.append("\tStage-2: \(ipaSize)-bit IPA -> \(paSize)-bit PA") }
        self.lines = lines
    }
}

extension ArmSMMUConfiguration {
    /// `arm_smmu_page()`: the offset of page `n` from the instance's base.
    public func offset(page n: Int) -> UInt64 { UInt64(n) << UInt64(pageShift) }
    /// `ARM_SMMU_GR1`: the offset of global register space 1.
    public var gr1: UInt64 { offset(page: 1) }
    /// `ARM_SMMU_CB(smmu, n)`: the offset of context bank `n`'s page.
    public func cb(_ n: Int) -> UInt64 { offset(page: numPage + n) }

    /// Linux's name for the register at `offset` (e.g. `GR0_S2CR(2)`, `CB5_FSR`), or the page and offset.
    public func registerName(at offset: UInt64) -> String {
        let page = Int(offset >> UInt64(pageShift)), within = offset & (UInt64(1) << UInt64(pageShift) - 1)
        func hex(_ v: UInt64) -> String { "0x" + String(v, radix: 16) }
        switch page {
        case 0:
            let named: [UInt64: String] = [
                ARM_SMMU.GR0.sCR0: "sCR0", ARM_SMMU.GR0.sACR: "sACR", ARM_SMMU.GR0.ID0: "ID0", ARM_SMMU.GR0.ID1: "ID1",
                ARM_SMMU.GR0.ID2: "ID2", ARM_SMMU.GR0.ID7: "ID7", ARM_SMMU.GR0.sGFSR: "sGFSR",
                ARM_SMMU.GR0.sGFSYNR0: "sGFSYNR0", ARM_SMMU.GR0.sGFSYNR1: "sGFSYNR1", ARM_SMMU.GR0.sGFSYNR2: "sGFSYNR2",
                ARM_SMMU.GR0.TLBIVMID: "TLBIVMID", ARM_SMMU.GR0.TLBIALLNSNH: "TLBIALLNSNH",
                ARM_SMMU.GR0.TLBIALLH: "TLBIALLH", ARM_SMMU.GR0.sTLBGSYNC: "sTLBGSYNC",
                ARM_SMMU.GR0.sTLBGSTATUS: "sTLBGSTATUS",
            ]
            if let name = named[within] { return "GR0_" + name }
            if (0x800..<0xC00).contains(within) { return "GR0_SMR(\((within - 0x800) / 4))" }
            if (0xC00..<0x1000).contains(within) { return "GR0_S2CR(\((within - 0xC00) / 4))" }
            return "GR0+" + hex(within)
        case 1:
            let n = Int(within & 0x3FF) / 4
            switch within >> 10 {
            case 0: return "GR1_CBAR(\(n))"
            case 1: return "GR1_CBFRSYNRA(\(n))"
            case 2: return "GR1_CBA2R(\(n))"
            default: return "GR1+" + hex(within)
            }
        case numPage...:
            let named: [UInt64: String] = [
                ARM_SMMU.CB.SCTLR: "SCTLR", ARM_SMMU.CB.ACTLR: "ACTLR", ARM_SMMU.CB.RESUME: "RESUME",
                ARM_SMMU.CB.TCR2: "TCR2", ARM_SMMU.CB.TTBR0: "TTBR0", ARM_SMMU.CB.TTBR1: "TTBR1",
                ARM_SMMU.CB.TCR: "TCR", ARM_SMMU.CB.CONTEXTIDR: "CONTEXTIDR", ARM_SMMU.CB.S1_MAIR0: "S1_MAIR0",
                ARM_SMMU.CB.S1_MAIR1: "S1_MAIR1", ARM_SMMU.CB.PAR: "PAR", ARM_SMMU.CB.FSR: "FSR",
                ARM_SMMU.CB.FAR: "FAR", ARM_SMMU.CB.FSYNR0: "FSYNR0", ARM_SMMU.CB.S1_TLBIVA: "S1_TLBIVA",
                ARM_SMMU.CB.S1_TLBIASID: "S1_TLBIASID", ARM_SMMU.CB.S1_TLBIVAL: "S1_TLBIVAL",
                ARM_SMMU.CB.S2_TLBIIPAS2: "S2_TLBIIPAS2", ARM_SMMU.CB.S2_TLBIIPAS2L: "S2_TLBIIPAS2L",
                ARM_SMMU.CB.TLBSYNC: "TLBSYNC", ARM_SMMU.CB.TLBSTATUS: "TLBSTATUS",
            ]
            return "CB\(page - numPage)_" + (named[within] ?? hex(within))
        default:
            return "page \(page)+" + hex(within)
        }
    }
}
