/// What an MMU-500 instance implements, as its ID registers say, and the numbers Linux's
/// `arm_smmu_device_cfg_probe()` derives from them (drivers/iommu/arm/arm-smmu/arm-smmu.c; the ID register
/// fields are the SMMUv2 architecture's, "SMMU_IDR0" to "SMMU_IDR7").
public struct MMU500Configuration: Sendable, Equatable, Hashable {
    public var idr0: UInt32
    public var idr1: UInt32
    public var idr2: UInt32
    public var idr7: UInt32

    public init(idr0: UInt32, idr1: UInt32, idr2: UInt32, idr7: UInt32) {
        self.idr0 = idr0
        self.idr1 = idr1
        self.idr2 = idr2
        self.idr7 = idr7
    }

    /// Tegra234 (the ID values a Jetson Orin's arm-smmu probe reports in its boot log): S1/S2/nested, ATOSNS, 15-bit stream IDs, 128 SMRs; 64 KiB pages,
    /// NUMPAGENDXB 6 (16 MiB window), 128 context banks; 48-bit IAS/OAS/UBS, 4K and 64K tables.
    /// IDR7 is not read on Tegra; r2p1 as in the Xilinx model.
    public static let tegra234 = MMU500Configuration(
        idr0: 0x7C00_1E80, idr1: 0xE000_0080, idr2: 0x0000_5555, idr7: 0x21)

    /// The Xilinx QEMU MMU-500 (`smmu500_regs_info[]` in Xilinx/qemu hw/misc/arm-smmu.c): 48 SMRs, 4 KiB pages, 16 pages, 16 context banks.
    public static let generic4K = MMU500Configuration(
        idr0: 0xFC01_3E30, idr1: 0x3000_0F10, idr2: 0x0000_5555, idr7: 0x21)

    /// A generic MMU-500 for a QEMU `virt` machine: the Xilinx IDR0/IDR2 with 64 KiB register
    /// pages, NUMPAGENDXB 6 (so the register space is exactly 16 MiB) and 16 context banks.
    public static let qemuVirt = MMU500Configuration(
        idr0: 0xFC01_3E30, idr1: 0xE000_0010, idr2: 0x0000_5555, idr7: 0x21)

    /// The value of an ID register: IDR3..IDR6 are reserved on MMU-500 and read as zero.
    public func value(of id: IdentificationRegister) -> UInt32 {
        switch id {
        case .idr0: idr0
        case .idr1: idr1
        case .idr2: idr2
        case .idr3, .idr4, .idr5, .idr6: 0
        case .idr7: idr7
        }
    }

    // MARK: Derived, as arm_smmu_device_cfg_probe() derives them.

    /// IDR1.PAGESIZE: 16 (64 KiB) or 12 (4 KiB).
    public var pageShift: Int { idr1 & (1 << 31) != 0 ? 16 : 12 }
    public var pageSize: UInt64 { 1 << UInt64(pageShift) }
    /// Pages in the global half: 1 << (NUMPAGENDXB + 1). Context bank n is page numPage + n.
    public var numPage: Int { 1 << (Int((idr1 >> 28) & 0x7) + 1) }
    /// The whole register space: global half plus context-bank half.
    public var windowSize: UInt64 { 2 * UInt64(numPage) << UInt64(pageShift) }
    /// IDR1.NUMCB, limited to the pages the context-bank half has.
    public var numContextBanks: Int { min(Int(idr1 & 0xFF), numPage) }
    /// IDR1.NUMS2CB.
    public var numS2ContextBanks: Int { Int((idr1 >> 16) & 0xFF) }
    /// IDR0.NUMSMRG when IDR0.SMS (stream matching); MMU-500 always matches streams.
    public var numStreamMatchGroups: Int {
        supportsStreamMatching ? min(Int(idr0 & 0xFF), RegisterMap.maximumArrayLength) : 0
    }
    public var supportsStreamMatching: Bool { idr0 & (1 << 27) != 0 }
    public var supportsStage1: Bool { idr0 & (1 << 30) != 0 }
    /// IDR0.NUMSIDB (16 with EXIDS).
    public var streamIDBits: Int { idr0 & (1 << 8) != 0 ? 16 : Int((idr0 >> 9) & 0xF) }
    /// Stream ID bits an SMR compares: (1 << NUMSIDB) - 1.
    public var streamIDMask: UInt16 { UInt16(truncatingIfNeeded: (1 << streamIDBits) - 1) }
    /// IDR2.IAS: the intermediate physical address size.
    public var inputAddressBits: Int { Self.addressBits(idr2 & 0xF) }
    /// IDR2.OAS: the physical address size.
    public var outputAddressBits: Int { Self.addressBits((idr2 >> 4) & 0xF) }
    /// IDR2.UBS: the upstream bus (virtual address) size.
    public var upstreamBusBits: Int { Self.addressBits((idr2 >> 8) & 0xF) }
    public var supportsVMID16: Bool { idr2 & (1 << 15) != 0 }

    /// `arm_smmu_id_size_to_bits`: 0→32, 1→36, 2→40, 3→42, 4→44, anything else→48.
    static func addressBits(_ field: UInt32) -> Int {
        switch field {
        case 0: 32
        case 1: 36
        case 2: 40
        case 3: 42
        case 4: 44
        default: 48
        }
    }

    /// How many elements of `descriptor`'s array this configuration implements.
    public func implementedCount(_ descriptor: RegisterDescriptor) -> Int {
        switch descriptor.indexing {
        case .none: 1
        case .streamMatchGroup: min(numStreamMatchGroups, descriptor.count)
        case .contextBank: descriptor.space == .contextBank
            ? numContextBanks : min(numContextBanks, descriptor.count)
        }
    }

    /// Page number of a register space (context bank `index` for context-bank registers).
    func page(of space: RegisterSpace, index: Int) -> Int {
        switch space {
        case .gr0: 0
        case .gr1: 1
        case .contextBank: numPage + index
        }
    }

    /// Window offset of a register, from the register table.
    public func offset(of name: RegisterName, index: Int = 0) -> UInt64 {
        let d = RegisterMap.descriptor(name)
        let page = UInt64(page(of: d.space, index: d.space == .contextBank ? index : 0))
        let element = d.space == .contextBank ? 0 : UInt64(index) * UInt64(d.stride)
        return page << UInt64(pageShift) + UInt64(d.offset) + element
    }
}
