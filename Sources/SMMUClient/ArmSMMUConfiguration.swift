/// What Linux's `arm_smmu_device_cfg_probe()` derives from IDR0, IDR1 and IDR2, and what it prints.
///
/// The derivation is Linux's own (drivers/iommu/arm/arm-smmu/arm-smmu.c), re-done here from the
/// register values a client reads, independently of the daemon's model, so the two check each other.
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
    /// - Parameter mappedSize: the register window's size (Linux's `resource_size`), for the size warning.
    public init(idr0: UInt32, idr1: UInt32, idr2: UInt32, mappedSize: UInt64) throws(ProbeFailure) {
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
        if space != mappedSize {
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
