/// The MMU-500 register map: the one table that names every register, where it lives, how wide it
/// is, what it resets to and which bits a write may change. Decoding, reads, writes, `registers()`
/// and `MMU500Configuration.offset(of:index:)` are all driven by `RegisterMap.all`.
///
/// Offsets: ARM SMMUv2 architecture as used by Linux `arm-smmu.h`; registers Linux never touches
/// (sGFAR, sGFSRRESTORE, FSRRESTORE, IPAFAR, TLBIVAA, TLBIALL, TLBIVAAL, ATS1PW/UR/UW) from the
/// HiSilicon MMU-500 header and the Xilinx QEMU model (hw/misc/arm-smmu.c).

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

/// What a register resets to.
public enum RegisterReset: Sendable, Hashable, ExpressibleByIntegerLiteral {
    case value(UInt64)
    /// An ID register: the configuration's value (`MMU500Configuration.value(of:)`), not the table's.
    case identification(IdentificationRegister)

    public init(integerLiteral value: UInt64) { self = .value(value) }
}

/// The ID registers (SMMU_IDR0..7), whose values describe the implementation.
public enum IdentificationRegister: Sendable, Hashable {
    case idr0, idr1, idr2, idr3, idr4, idr5, idr6, idr7
}

/// What a write to a register does in the model beyond storing its value (and what a raw `poke` still does:
/// drop decoded state). `MMU500.store` interprets it; every case is handled there without a `default:`, so a
/// new case is a new question for the model. A read-only register's writes are ignored: its effect is `.none`.
public enum RegisterEffect: Sendable, Hashable {
    /// Stored, nothing else (syndrome and attribute registers, ACTLR, MAIR, CONTEXTIDR, RESUME: no
    /// transaction ever stalls in the model).
    case none
    /// sCR0: every decoded context depends on it (VMID16EN), and translation reads it per transaction.
    case globalConfiguration
    /// SMR: which group matches which stream; the stream-match cache is dropped.
    case streamMatch
    /// S2CR: a group's routing, read on every transaction (nothing is cached from it).
    case streamRouting
    /// CBAR, CBA2R, SCTLR, TCR, TCR2, TTBRn: the bank's decoded context (type, VMID, ASID) is dropped.
    case contextConfiguration
    /// sGFSRRESTORE, FSRRESTORE: the fault status register takes the written fault bits.
    case restore(FaultStatus)
    /// TLB maintenance of this scope (operand: `TLBIOperand`).
    case invalidateTLB(TLBInvalidation)
    /// sTLBGSYNC, TLBSYNC: completes at once (maintenance is synchronous), so the STATUS registers read 0.
    case sync
    /// ATS1PR/PW/UR/UW: latched only. Address translation operations are not implemented (the host's
    /// IDR0.ATOSNS is set).
    case addressTranslation
}

/// The scope of a TLB invalidation (ARM SMMUv2 spec, "TLB maintenance operations"; Linux's
/// arm_smmu_tlb_inv_* helpers issue them).
public enum TLBInvalidation: Sendable, Hashable {
    /// TLBIALLNSNH: every non-secure, non-hypervisor entry.
    case allNonSecure
    /// TLBIVMID: every entry of the VMID in the operand.
    case vmid
    /// TLBIALLH: hypervisor entries (the model makes none).
    case hypervisor
    /// STLBIALL: secure entries (the model makes none).
    case secure
    /// TLBIALL (a context bank's): every entry of the bank's VMID.
    case context
    /// TLBIASID: the bank's non-global entries of the operand's ASID.
    case asid
    /// TLBIVA(L): entries covering the VA for the operand's ASID. `lastLevel` (the L forms) may keep walk
    /// caches; the model invalidates the same entries for both.
    case address(lastLevel: Bool)
    /// TLBIVAA(L): entries covering the VA, any ASID.
    case addressAnyASID(lastLevel: Bool)
    /// TLBIIPAS2(L): entries whose stage-2 mapping covers the IPA.
    case intermediateAddress(lastLevel: Bool)
}

/// How a hypervisor that traps every host access to the SMMU (pKVM's model: the host's arm-smmu driver runs,
/// EL2 emulates it) lets the host touch a register. Whatever the class, the host reads and writes a virtual
/// register file first, and an index counted by `RegisterIndexing` that the hypervisor reserved for itself is
/// refused before anything (G5); this says what reaches the physical SMMU.
///
/// Why a hypervisor concept lives in the model's table: the row is where a register is added, and a column
/// without a default makes the author of the row answer this question before anything compiles. A separate
/// table in the Hypervisor module (an exhaustive switch over `RegisterName`) would also force an answer, but
/// would split one register's description in two files. The model never reads this column, and the classes
/// name no hypervisor type (no rule, no owner): the Hypervisor module maps `HostCheck` to its `TrapRule` and
/// `HostDerivation` to its programming, each with an exhaustive switch.
public enum HostAccess: Sendable, Hashable {
    /// Virtual only: the physical register is the hypervisor's own (global configuration it forces, fault
    /// views it fills, synthesized ID registers, TLB operations on entries the host cannot own, hidden ATOS).
    case virtualOnly
    /// Replayed on the same physical register: a host context bank's page (its TLB entries carry the bank's
    /// own hypervisor-assigned VMID, so maintenance there cannot reach a VM's) and the global TLB sync.
    case passThrough
    /// The physical register is recomputed from the host's virtual state and ownership.
    case derived(HostDerivation)
    /// The written value is checked before anything changes (refused: DENIED and audited), then derived.
    case checked(HostCheck, then: HostDerivation)
    /// TLB maintenance naming the host's VMIDs, rewritten to the hypervisor's VMIDs of the host's banks.
    case rewritten(HostRewrite)
}

/// The physical programming derived from the host's view of a register.
public enum HostDerivation: Sendable, Hashable, CaseIterable {
    /// sCR0: CLIENTPD and USFCFG emulated, fault reporting forced; every host SMR and S2CR is re-derived.
    case globalControl
    /// SMR(n): the host's value, invalid while the host has CLIENTPD set.
    case streamMatch
    /// S2CR(n): the host's value, the reserved TYPE made FAULT.
    case streamRouting
    /// CBAR(n): the host's type and attributes with the hypervisor's VMID for the bank.
    case contextVMID
    /// CBA2R(n): VA64 only (16-bit VMIDs are the hypervisor's).
    case contextFormat
}

/// What a written value must satisfy before a host write to a routing register is accepted (G2, G5).
public enum HostCheck: Sendable, Hashable, CaseIterable {
    /// SMR: a valid SMR matches no stream the host does not own, counting the mask.
    case smrMatchesOnlyHostStreams
    /// S2CR: TYPE = translate names one of the host's context banks.
    case s2crTranslatesToHostBank
    /// CBAR: a nested context's stage-2 bank is one of the host's.
    case cbarNestsOverHostBank
}

/// TLB maintenance the hypervisor rewrites.
public enum HostRewrite: Sendable, Hashable, CaseIterable {
    /// TLBIVMID: the host's VMID becomes the hypervisor's VMID of each host bank the host gave it.
    case vmidOfHostBanks
    /// TLBIALLNSNH: every host bank's VMID, never a VM's.
    case everyHostBank
}

/// One row of the register table: what a register is, what a write to it does, and how the host may touch it.
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
    /// Reset value (ID registers: the configuration's).
    public let reset: RegisterReset
    /// Bits a write may change (W1C: bits a 1 clears).
    public let writableMask: UInt64
    /// What the index counts.
    public let indexing: RegisterIndexing
    /// What a write does beyond storing its value.
    public let effect: RegisterEffect
    /// How a hypervisor trapping the host lets the host touch it.
    public let host: HostAccess

    init(_ name: RegisterName, _ space: RegisterSpace, _ offset: UInt32, _ width: AccessWidth = .word,
         _ access: RegisterAccess = .readWrite, reset: RegisterReset = 0, mask: UInt64? = nil,
         array indexing: RegisterIndexing = .none, effect: RegisterEffect, host: HostAccess) {
        self.name = name
        self.space = space
        self.offset = offset
        self.width = width
        self.access = access
        self.reset = reset
        self.writableMask = mask ?? width.mask
        self.indexing = indexing
        self.effect = effect
        self.host = host
        let isGlobalArray = space != .contextBank && indexing != .none
        self.count = isGlobalArray ? RegisterMap.maximumArrayLength : 1
        self.stride = isGlobalArray ? 4 : 0
    }
}

public enum RegisterMap {
    /// SMMUv2 architectural maximum for SMR/S2CR/CBAR/... arrays that fit the GR pages.
    public static let maximumArrayLength = 128

    private static let sGFSRBits = UInt64(FaultStatus.globalFaultBits)
    private static let fsrBits = UInt64(FaultStatus.contextFaultBits)

    /// Every register, in `RegisterName.allCases` order.
    public static let all: [RegisterDescriptor] = [
        // GR0 (page 0)
        .init(.sCR0, .gr0, 0x000, reset: 0x0020_0001, effect: .globalConfiguration, host: .derived(.globalControl)),
        .init(.sCR1, .gr0, 0x004, .word, .readOnly, reset: 0x0201_3010, effect: .none, host: .virtualOnly),
        .init(.sACR, .gr0, 0x010, reset: 0x0400_0004, effect: .none, host: .virtualOnly),
        .init(.IDR0, .gr0, 0x020, .word, .readOnly, reset: .identification(.idr0), effect: .none, host: .virtualOnly),
        .init(.IDR1, .gr0, 0x024, .word, .readOnly, reset: .identification(.idr1), effect: .none, host: .virtualOnly),
        .init(.IDR2, .gr0, 0x028, .word, .readOnly, reset: .identification(.idr2), effect: .none, host: .virtualOnly),
        .init(.IDR3, .gr0, 0x02C, .word, .readOnly, reset: .identification(.idr3), effect: .none, host: .virtualOnly),
        .init(.IDR4, .gr0, 0x030, .word, .readOnly, reset: .identification(.idr4), effect: .none, host: .virtualOnly),
        .init(.IDR5, .gr0, 0x034, .word, .readOnly, reset: .identification(.idr5), effect: .none, host: .virtualOnly),
        .init(.IDR6, .gr0, 0x038, .word, .readOnly, reset: .identification(.idr6), effect: .none, host: .virtualOnly),
        .init(.IDR7, .gr0, 0x03C, .word, .readOnly, reset: .identification(.idr7), effect: .none, host: .virtualOnly),
        .init(.sGFAR, .gr0, 0x040, .doubleword, .readOnly, effect: .none, host: .virtualOnly),
        .init(.sGFSR, .gr0, 0x048, .word, .writeOneToClear, mask: sGFSRBits, effect: .none, host: .virtualOnly),
        .init(.sGFSRRESTORE, .gr0, 0x04C, .word, .writeOnly, mask: sGFSRBits, effect: .restore(.global),
              host: .virtualOnly),
        .init(.sGFSYNR0, .gr0, 0x050, .word, .readOnly, effect: .none, host: .virtualOnly),
        .init(.sGFSYNR1, .gr0, 0x054, .word, .readOnly, effect: .none, host: .virtualOnly),
        .init(.sGFSYNR2, .gr0, 0x058, .word, .readOnly, effect: .none, host: .virtualOnly),
        .init(.STLBIALL, .gr0, 0x060, .word, .writeOnly, effect: .invalidateTLB(.secure), host: .virtualOnly),
        .init(.TLBIVMID, .gr0, 0x064, .word, .writeOnly, effect: .invalidateTLB(.vmid),
              host: .rewritten(.vmidOfHostBanks)),
        .init(.TLBIALLNSNH, .gr0, 0x068, .word, .writeOnly, effect: .invalidateTLB(.allNonSecure),
              host: .rewritten(.everyHostBank)),
        .init(.TLBIALLH, .gr0, 0x06C, .word, .writeOnly, effect: .invalidateTLB(.hypervisor), host: .virtualOnly),
        .init(.sTLBGSYNC, .gr0, 0x070, .word, .writeOnly, effect: .sync, host: .passThrough),
        .init(.sTLBGSTATUS, .gr0, 0x074, .word, .readOnly, effect: .none, host: .virtualOnly),
        // VALID 31, MASK 30:16, ID 14:0 (15-bit stream IDs).
        .init(.SMR, .gr0, 0x800, mask: 0xFFFF_7FFF, array: .streamMatchGroup, effect: .streamMatch,
              host: .checked(.smrMatchesOnlyHostStreams, then: .streamMatch)),
        // Every field but EXIDVALID (bit 10, EXIDS not implemented); reset TYPE = FAULT.
        .init(.S2CR, .gr0, 0xC00, reset: 0x0002_0000, mask: 0x3FFF_FBFF, array: .streamMatchGroup,
              effect: .streamRouting, host: .checked(.s2crTranslatesToHostBank, then: .streamRouting)),
        // GR1 (page 1). CBAR: IRPTNDX (31:24) is read-only on SMMUv2; reset TYPE = S1_TRANS_S2_FAULT.
        .init(.CBAR, .gr1, 0x000, reset: 0x0002_0000, mask: 0x00FF_FFFF, array: .contextBank,
              effect: .contextConfiguration, host: .checked(.cbarNestsOverHostBank, then: .contextVMID)),
        .init(.CBFRSYNRA, .gr1, 0x400, mask: 0x0000_FFFF, array: .contextBank, effect: .none, host: .virtualOnly),
        // VMID16 31:16, MONC 1, VA64 0.
        .init(.CBA2R, .gr1, 0x800, mask: 0xFFFF_0003, array: .contextBank, effect: .contextConfiguration,
              host: .derived(.contextFormat)),
        // Context bank page
        .init(.SCTLR, .contextBank, 0x000, array: .contextBank, effect: .contextConfiguration, host: .passThrough),
        .init(.ACTLR, .contextBank, 0x004, reset: 0x3, array: .contextBank, effect: .none, host: .passThrough),
        .init(.RESUME, .contextBank, 0x008, .word, .writeOnly, mask: 0x1, array: .contextBank, effect: .none,
              host: .passThrough),
        .init(.TCR2, .contextBank, 0x010, array: .contextBank, effect: .contextConfiguration, host: .passThrough),
        .init(.TTBR0, .contextBank, 0x020, .doubleword, array: .contextBank, effect: .contextConfiguration,
              host: .passThrough),
        .init(.TTBR1, .contextBank, 0x028, .doubleword, array: .contextBank, effect: .contextConfiguration,
              host: .passThrough),
        .init(.TCR, .contextBank, 0x030, array: .contextBank, effect: .contextConfiguration, host: .passThrough),
        .init(.CONTEXTIDR, .contextBank, 0x034, array: .contextBank, effect: .none, host: .passThrough),
        .init(.MAIR0, .contextBank, 0x038, array: .contextBank, effect: .none, host: .passThrough),
        .init(.MAIR1, .contextBank, 0x03C, array: .contextBank, effect: .none, host: .passThrough),
        .init(.PAR, .contextBank, 0x050, .doubleword, .readOnly, array: .contextBank, effect: .none,
              host: .virtualOnly),
        .init(.FSR, .contextBank, 0x058, .word, .writeOneToClear, mask: fsrBits, array: .contextBank, effect: .none,
              host: .passThrough),
        .init(.FSRRESTORE, .contextBank, 0x05C, .word, .writeOnly, mask: fsrBits, array: .contextBank,
              effect: .restore(.context), host: .passThrough),
        .init(.FAR, .contextBank, 0x060, .doubleword, array: .contextBank, effect: .none, host: .passThrough),
        .init(.FSYNR0, .contextBank, 0x068, array: .contextBank, effect: .none, host: .passThrough),
        .init(.FSYNR1, .contextBank, 0x06C, array: .contextBank, effect: .none, host: .passThrough),
        .init(.IPAFAR, .contextBank, 0x070, .doubleword, array: .contextBank, effect: .none, host: .passThrough),
        .init(.TLBIVA, .contextBank, 0x600, .doubleword, .writeOnly, array: .contextBank,
              effect: .invalidateTLB(.address(lastLevel: false)), host: .passThrough),
        .init(.TLBIVAA, .contextBank, 0x608, .doubleword, .writeOnly, array: .contextBank,
              effect: .invalidateTLB(.addressAnyASID(lastLevel: false)), host: .passThrough),
        .init(.TLBIASID, .contextBank, 0x610, .word, .writeOnly, array: .contextBank,
              effect: .invalidateTLB(.asid), host: .passThrough),
        .init(.TLBIALL, .contextBank, 0x618, .word, .writeOnly, array: .contextBank,
              effect: .invalidateTLB(.context), host: .passThrough),
        .init(.TLBIVAL, .contextBank, 0x620, .doubleword, .writeOnly, array: .contextBank,
              effect: .invalidateTLB(.address(lastLevel: true)), host: .passThrough),
        .init(.TLBIVAAL, .contextBank, 0x628, .doubleword, .writeOnly, array: .contextBank,
              effect: .invalidateTLB(.addressAnyASID(lastLevel: true)), host: .passThrough),
        .init(.TLBIIPAS2, .contextBank, 0x630, .doubleword, .writeOnly, array: .contextBank,
              effect: .invalidateTLB(.intermediateAddress(lastLevel: false)), host: .passThrough),
        .init(.TLBIIPAS2L, .contextBank, 0x638, .doubleword, .writeOnly, array: .contextBank,
              effect: .invalidateTLB(.intermediateAddress(lastLevel: true)), host: .passThrough),
        .init(.TLBSYNC, .contextBank, 0x7F0, .word, .writeOnly, array: .contextBank, effect: .sync,
              host: .passThrough),
        .init(.TLBSTATUS, .contextBank, 0x7F4, .word, .readOnly, array: .contextBank, effect: .none,
              host: .passThrough),
        // Address translation operations: hidden from the host (its IDR0.ATOSNS is set); writes latch virtually.
        .init(.ATS1PR, .contextBank, 0x800, .doubleword, .writeOnly, array: .contextBank,
              effect: .addressTranslation, host: .virtualOnly),
        .init(.ATS1PW, .contextBank, 0x808, .doubleword, .writeOnly, array: .contextBank,
              effect: .addressTranslation, host: .virtualOnly),
        .init(.ATS1UR, .contextBank, 0x810, .doubleword, .writeOnly, array: .contextBank,
              effect: .addressTranslation, host: .virtualOnly),
        .init(.ATS1UW, .contextBank, 0x818, .doubleword, .writeOnly, array: .contextBank,
              effect: .addressTranslation, host: .virtualOnly),
        .init(.ATSR, .contextBank, 0x8F0, .word, .readOnly, array: .contextBank, effect: .none, host: .virtualOnly),
    ]

    public static func descriptor(_ name: RegisterName) -> RegisterDescriptor {
        all[ordinal(name)]
    }

    /// Position of a register in `all` (and in the register file's slot table).
    @inline(__always) static func ordinal(_ name: RegisterName) -> Int { name.rawValue }
}
