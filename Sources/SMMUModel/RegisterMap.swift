/// The MMU-500 register map: the one table that names every register, where it lives, how wide it
/// is, what it resets to and which bits a write may change. Decoding, reads, writes, `registers()`
/// and `MMU500Configuration.offset(of:index:)` are all driven by `RegisterMap.all`.
///
/// Offsets: ARM SMMUv2 architecture as used by Linux `arm-smmu.h`; registers Linux never touches
/// (sGFAR, sGFSRRESTORE, FSRRESTORE, IPAFAR, TLBIVAA, TLBIALL, TLBIVAAL, ATS1PW/UR/UW) from the
/// HiSilicon MMU-500 header and the Xilinx QEMU model (reference §1).

/// ARM register names. Context-bank registers are indexed by context bank. The raw value is the register's
/// position in `RegisterMap.all` (a test checks the order), so finding a descriptor is an array index, not a
/// hash of the name on every access; `"\(name)"` is the ARM name.
public enum RegisterName: Int, CaseIterable, Sendable {
    // GR0
    case sCR0, sCR1, sACR
    case IDR0, IDR1, IDR2, IDR3, IDR4, IDR5, IDR6, IDR7
    case sGFAR, sGFSR, sGFSRRESTORE, sGFSYNR0, sGFSYNR1, sGFSYNR2
    case STLBIALL, TLBIVMID, TLBIALLNSNH, TLBIALLH, sTLBGSYNC, sTLBGSTATUS
    case SMR, S2CR
    // GR1
    case CBAR, CBFRSYNRA, CBA2R
    // Context bank
    case SCTLR, ACTLR, RESUME, TCR2, TTBR0, TTBR1, TCR, CONTEXTIDR, MAIR0, MAIR1, PAR
    case FSR, FSRRESTORE, FAR, FSYNR0, FSYNR1, IPAFAR
    case TLBIVA, TLBIVAA, TLBIASID, TLBIALL, TLBIVAL, TLBIVAAL, TLBIIPAS2, TLBIIPAS2L
    case TLBSYNC, TLBSTATUS
    case ATS1PR, ATS1PW, ATS1UR, ATS1UW, ATSR
}

/// Which register page a register lives in.
public enum RegisterSpace: Sendable, Hashable {
    case gr0, gr1, contextBank
}

public enum RegisterAccess: Sendable, Hashable {
    case readWrite, readOnly, writeOnly, writeOneToClear
}

/// What an array register's index counts, so the implemented length comes from the configuration.
public enum RegisterIndexing: Sendable, Hashable {
    /// A single register.
    case none
    /// One per stream-match group (SMR, S2CR): IDR0.NUMSMRG implemented.
    case streamMatchGroup
    /// One per context bank (GR1 arrays and every context-bank register): IDR1.NUMCB implemented.
    case contextBank
}

public struct RegisterDescriptor: Sendable, Hashable {
    public let name: RegisterName
    public let space: RegisterSpace
    /// Byte offset within the GR0/GR1 page or the context-bank page.
    public let offset: UInt32
    /// Natural width; 64-bit registers also take two 32-bit halves.
    public let width: AccessWidth
    /// 1, or the maximum array length in the table (GR0/GR1 arrays: 128).
    public let count: Int
    /// 4 for the GR0/GR1 arrays, 0 otherwise (context banks are selected by page).
    public let stride: UInt32
    public let access: RegisterAccess
    /// Reset value (ID registers: replaced by the configuration's values).
    public let reset: UInt64
    /// Bits a write may change (W1C: bits a 1 clears).
    public let writableMask: UInt64
    /// What the index counts.
    public let indexing: RegisterIndexing

    init(_ name: RegisterName, _ space: RegisterSpace, _ offset: UInt32, _ width: AccessWidth = .word,
         _ access: RegisterAccess = .readWrite, reset: UInt64 = 0, mask: UInt64? = nil,
         array indexing: RegisterIndexing = .none) {
        self.name = name
        self.space = space
        self.offset = offset
        self.width = width
        self.access = access
        self.reset = reset
        self.writableMask = mask ?? width.mask
        self.indexing = indexing
        let isGlobalArray = space != .contextBank && indexing != .none
        self.count = isGlobalArray ? RegisterMap.maximumArrayLength : 1
        self.stride = isGlobalArray ? 4 : 0
    }
}

public enum RegisterMap {
    /// SMMUv2 architectural maximum for SMR/S2CR/CBAR/... arrays that fit the GR pages.
    public static let maximumArrayLength = 128

    /// sGFSR fault bits (W1C): MULTI 31, UUT 8, PF 7, EF 6, CAF 5, UCIF 4, UCBF 3, SMCF 2, USF 1, ICF 0.
    static let sGFSRBits: UInt64 = 0x8000_01FF
    /// FSR fault bits (W1C): MULTI 31, SS 30, UUT 8, ASF 7, TLBLKF 6, TLBMCF 5, EF 4, PF 3, AFF 2, TF 1.
    static let fsrBits: UInt64 = 0xC000_01FE

    /// Every register, in `RegisterName.allCases` order.
    public static let all: [RegisterDescriptor] = [
        // GR0 (page 0)
        .init(.sCR0, .gr0, 0x000, reset: 0x0020_0001),
        .init(.sCR1, .gr0, 0x004, .word, .readOnly, reset: 0x0201_3010),
        .init(.sACR, .gr0, 0x010, reset: 0x0400_0004),
        .init(.IDR0, .gr0, 0x020, .word, .readOnly),
        .init(.IDR1, .gr0, 0x024, .word, .readOnly),
        .init(.IDR2, .gr0, 0x028, .word, .readOnly),
        .init(.IDR3, .gr0, 0x02C, .word, .readOnly),
        .init(.IDR4, .gr0, 0x030, .word, .readOnly),
        .init(.IDR5, .gr0, 0x034, .word, .readOnly),
        .init(.IDR6, .gr0, 0x038, .word, .readOnly),
        .init(.IDR7, .gr0, 0x03C, .word, .readOnly),
        .init(.sGFAR, .gr0, 0x040, .doubleword, .readOnly),
        .init(.sGFSR, .gr0, 0x048, .word, .writeOneToClear, mask: sGFSRBits),
        .init(.sGFSRRESTORE, .gr0, 0x04C, .word, .writeOnly, mask: sGFSRBits),
        .init(.sGFSYNR0, .gr0, 0x050, .word, .readOnly),
        .init(.sGFSYNR1, .gr0, 0x054, .word, .readOnly),
        .init(.sGFSYNR2, .gr0, 0x058, .word, .readOnly),
        .init(.STLBIALL, .gr0, 0x060, .word, .writeOnly),
        .init(.TLBIVMID, .gr0, 0x064, .word, .writeOnly),
        .init(.TLBIALLNSNH, .gr0, 0x068, .word, .writeOnly),
        .init(.TLBIALLH, .gr0, 0x06C, .word, .writeOnly),
        .init(.sTLBGSYNC, .gr0, 0x070, .word, .writeOnly),
        .init(.sTLBGSTATUS, .gr0, 0x074, .word, .readOnly),
        // VALID 31, MASK 30:16, ID 14:0 (15-bit stream IDs).
        .init(.SMR, .gr0, 0x800, mask: 0xFFFF_7FFF, array: .streamMatchGroup),
        // Every field but EXIDVALID (bit 10, EXIDS not implemented); reset TYPE = FAULT.
        .init(.S2CR, .gr0, 0xC00, reset: 0x0002_0000, mask: 0x3FFF_FBFF, array: .streamMatchGroup),
        // GR1 (page 1). CBAR: IRPTNDX (31:24) is read-only on SMMUv2; reset TYPE = S1_TRANS_S2_FAULT.
        .init(.CBAR, .gr1, 0x000, reset: 0x0002_0000, mask: 0x00FF_FFFF, array: .contextBank),
        .init(.CBFRSYNRA, .gr1, 0x400, mask: 0x0000_FFFF, array: .contextBank),
        // VMID16 31:16, MONC 1, VA64 0.
        .init(.CBA2R, .gr1, 0x800, mask: 0xFFFF_0003, array: .contextBank),
        // Context bank page
        .init(.SCTLR, .contextBank, 0x000, array: .contextBank),
        .init(.ACTLR, .contextBank, 0x004, reset: 0x3, array: .contextBank),
        .init(.RESUME, .contextBank, 0x008, .word, .writeOnly, mask: 0x1, array: .contextBank),
        .init(.TCR2, .contextBank, 0x010, array: .contextBank),
        .init(.TTBR0, .contextBank, 0x020, .doubleword, array: .contextBank),
        .init(.TTBR1, .contextBank, 0x028, .doubleword, array: .contextBank),
        .init(.TCR, .contextBank, 0x030, array: .contextBank),
        .init(.CONTEXTIDR, .contextBank, 0x034, array: .contextBank),
        .init(.MAIR0, .contextBank, 0x038, array: .contextBank),
        .init(.MAIR1, .contextBank, 0x03C, array: .contextBank),
        .init(.PAR, .contextBank, 0x050, .doubleword, .readOnly, array: .contextBank),
        .init(.FSR, .contextBank, 0x058, .word, .writeOneToClear, mask: fsrBits, array: .contextBank),
        .init(.FSRRESTORE, .contextBank, 0x05C, .word, .writeOnly, mask: fsrBits, array: .contextBank),
        .init(.FAR, .contextBank, 0x060, .doubleword, array: .contextBank),
        .init(.FSYNR0, .contextBank, 0x068, array: .contextBank),
        .init(.FSYNR1, .contextBank, 0x06C, array: .contextBank),
        .init(.IPAFAR, .contextBank, 0x070, .doubleword, array: .contextBank),
        .init(.TLBIVA, .contextBank, 0x600, .doubleword, .writeOnly, array: .contextBank),
        .init(.TLBIVAA, .contextBank, 0x608, .doubleword, .writeOnly, array: .contextBank),
        .init(.TLBIASID, .contextBank, 0x610, .word, .writeOnly, array: .contextBank),
        .init(.TLBIALL, .contextBank, 0x618, .word, .writeOnly, array: .contextBank),
        .init(.TLBIVAL, .contextBank, 0x620, .doubleword, .writeOnly, array: .contextBank),
        .init(.TLBIVAAL, .contextBank, 0x628, .doubleword, .writeOnly, array: .contextBank),
        .init(.TLBIIPAS2, .contextBank, 0x630, .doubleword, .writeOnly, array: .contextBank),
        .init(.TLBIIPAS2L, .contextBank, 0x638, .doubleword, .writeOnly, array: .contextBank),
        .init(.TLBSYNC, .contextBank, 0x7F0, .word, .writeOnly, array: .contextBank),
        .init(.TLBSTATUS, .contextBank, 0x7F4, .word, .readOnly, array: .contextBank),
        .init(.ATS1PR, .contextBank, 0x800, .doubleword, .writeOnly, array: .contextBank),
        .init(.ATS1PW, .contextBank, 0x808, .doubleword, .writeOnly, array: .contextBank),
        .init(.ATS1UR, .contextBank, 0x810, .doubleword, .writeOnly, array: .contextBank),
        .init(.ATS1UW, .contextBank, 0x818, .doubleword, .writeOnly, array: .contextBank),
        .init(.ATSR, .contextBank, 0x8F0, .word, .readOnly, array: .contextBank),
    ]

    public static func descriptor(_ name: RegisterName) -> RegisterDescriptor {
        all[ordinal(name)]
    }

    /// Position of a register in `all` (and in the register file's slot table).
    @inline(__always) static func ordinal(_ name: RegisterName) -> Int { name.rawValue }
}
