// Typed views of register fields (bit positions: ARM SMMUv2 architecture, chapters 9 and 10 of the ARM
// System MMU Architecture Specification v2; names as Linux's arm-smmu.h). The register table (RegisterMap)
// owns widths, resets and writable masks; these name the fields, for the model's own stream matching,
// context decoding and fault recording and for the hypervisor's policy, so each is written once.
// Every view is a wrapper around the raw bits with inlinable accessors: no cost over a shift and a mask.

/// sCR0 fields the hypervisor forces or emulates, and the model honours.
public struct SCR0: Equatable, Sendable {
    public var raw: UInt32
    @inlinable public init(raw: UInt32) { self.raw = raw }
    @inlinable public init(_ value: UInt64) { raw = UInt32(truncatingIfNeeded: value) }
    public static let clientPD: UInt32 = 1 << 0
    public static let gfre: UInt32 = 1 << 1
    public static let gfie: UInt32 = 1 << 2
    public static let exidEnable: UInt32 = 1 << 3
    public static let gcfgfre: UInt32 = 1 << 4
    public static let gcfgfie: UInt32 = 1 << 5
    public static let usfcfg: UInt32 = 1 << 10
    public static let smcfcfg: UInt32 = 1 << 21
    public static let vmid16en: UInt32 = 1 << 31

    /// CLIENTPD: the SMMU is disabled and every transaction bypasses.
    @inlinable public var clientPD: Bool { raw & Self.clientPD != 0 }
    /// USFCFG: a stream no SMR matches faults (otherwise it bypasses).
    @inlinable public var unmatchedStreamsFault: Bool { raw & Self.usfcfg != 0 }
    /// GFIE: global faults raise the global fault interrupt.
    @inlinable public var globalFaultInterrupt: Bool { raw & Self.gfie != 0 }
    /// VMID16EN: context banks take their VMID from CBA2R.VMID16.
    @inlinable public var vmid16: Bool { raw & Self.vmid16en != 0 }
}

/// SMR(n): VALID, MASK, ID. The streams an SMR can match depend on the implemented width.
public struct SMR: Equatable, Sendable {
    public var raw: UInt32
    @inlinable public init(raw: UInt32) { self.raw = raw }
    @inlinable public init(_ value: UInt64) { raw = UInt32(truncatingIfNeeded: value) }
    public init(id: UInt16, mask: UInt16, valid: Bool) {
        raw = UInt32(id) | UInt32(mask) << 16 | (valid ? 1 << 31 : 0)
    }
    @inlinable public var valid: Bool { raw & (1 << 31) != 0 }
    @inlinable public var id: UInt16 { UInt16(truncatingIfNeeded: raw) & 0x7FFF }
    @inlinable public var mask: UInt16 { UInt16(truncatingIfNeeded: raw >> 16) & 0x7FFF }

    /// G2's formula: SMR (id, mask) matches stream s iff `(s ^ id) & ~mask & idmask == 0`.
    @inlinable public func matches(_ stream: StreamID, idMask: UInt16) -> Bool {
        valid && (stream.rawValue ^ id) & ~mask & idMask == 0
    }
}

/// S2CR(n): TYPE, CBNDX and the attribute overrides (other fields pass through).
public struct S2CR: Equatable, Sendable {
    public enum Kind: UInt32, Sendable { case translate = 0, bypass = 1, fault = 2, reserved = 3 }
    /// PRIVCFG (25:24) and INSTCFG (27:26): keep the transaction's attribute, or force it clear
    /// (unprivileged, data) or set (privileged, instruction).
    public enum AttributeOverride: UInt32, Sendable { case incoming = 0, reserved = 1, clear = 2, set = 3 }
    public var raw: UInt32
    @inlinable public init(raw: UInt32) { self.raw = raw }
    @inlinable public init(_ value: UInt64) { raw = UInt32(truncatingIfNeeded: value) }
    public init(kind: Kind, contextBank: Int = 0) { raw = kind.rawValue << 16 | UInt32(contextBank & 0xFF) }
    @inlinable public var kind: Kind { Kind(rawValue: (raw >> 16) & 3)! }
    @inlinable public var contextBank: Int { Int(raw & 0xFF) }
    /// PRIVCFG: the privileged attribute.
    @inlinable public var privilege: AttributeOverride { AttributeOverride(rawValue: (raw >> 24) & 3)! }
    /// INSTCFG: the instruction-fetch attribute.
    @inlinable public var instruction: AttributeOverride { AttributeOverride(rawValue: (raw >> 26) & 3)! }
    /// The same routing with TYPE replaced.
    public func with(kind: Kind) -> S2CR { S2CR(raw: raw & ~(3 << 16) | kind.rawValue << 16) }
}

/// CBAR(n): TYPE, the nested stage-2 bank (type 3) and the VMID. TYPE's cases are Linux's CBAR_TYPE_*.
public struct CBAR: Equatable, Sendable {
    public enum Kind: UInt32, Sendable {
        /// Stage 2 only (CBAR_TYPE_S2_TRANS).
        case s2Translate = 0
        /// Stage 1 with stage 2 bypassed (CBAR_TYPE_S1_TRANS_S2_BYPASS).
        case s1TranslateS2Bypass = 1
        /// Stage 1 with stage 2 faulting (CBAR_TYPE_S1_TRANS_S2_FAULT).
        case s1TranslateS2Fault = 2
        /// Stage 1 nested over the stage 2 of bank CBNDX (CBAR_TYPE_S1_TRANS_S2_TRANS).
        case nested = 3
    }
    public var raw: UInt32
    @inlinable public init(raw: UInt32) { self.raw = raw }
    @inlinable public init(_ value: UInt64) { raw = UInt32(truncatingIfNeeded: value) }
    @inlinable public var kind: Kind { Kind(rawValue: (raw >> 16) & 3)! }
    /// For a nested context, the index of the stage-2 context bank (bits 15:8).
    @inlinable public var stage2ContextBank: Int { Int((raw >> 8) & 0xFF) }
    @inlinable public var vmid: UInt8 { UInt8(truncatingIfNeeded: raw) }
    public func with(vmid: UInt8) -> CBAR { CBAR(raw: raw & ~0xFF | UInt32(vmid)) }
}

/// CBA2R(n): VA64 (AArch64 descriptors) and the 16-bit VMID used under sCR0.VMID16EN.
public struct CBA2R: Equatable, Sendable {
    public var raw: UInt32
    @inlinable public init(raw: UInt32) { self.raw = raw }
    @inlinable public init(_ value: UInt64) { raw = UInt32(truncatingIfNeeded: value) }
    public static let va64: UInt32 = 1 << 0
    @inlinable public var aarch64: Bool { raw & Self.va64 != 0 }
    @inlinable public var vmid16: UInt16 { UInt16(truncatingIfNeeded: raw >> 16) }
}

/// SCTLR(n): M (the bank translates) and CFIE (context faults raise its interrupt).
public struct SCTLR: Equatable, Sendable {
    public var raw: UInt32
    @inlinable public init(raw: UInt32) { self.raw = raw }
    @inlinable public init(_ value: UInt64) { raw = UInt32(truncatingIfNeeded: value) }
    @inlinable public var enabled: Bool { raw & (1 << 0) != 0 }
    @inlinable public var faultInterrupt: Bool { raw & (1 << 6) != 0 }
}

/// TCR(n) in its long-descriptor (AArch64) stage-1 format: TTBCR in the SMMUv2 spec, Linux's ARM_SMMU_TCR_*.
public struct TCR: Equatable, Sendable {
    public var raw: UInt32
    @inlinable public init(_ value: UInt64) { raw = UInt32(truncatingIfNeeded: value) }
    /// T0SZ or T1SZ: the size offset of the TTBR0 (lower) or TTBR1 (upper) region.
    @inlinable public func sizeOffset(upper: Bool) -> Int { Int(upper ? (raw >> 16) & 0x3F : raw & 0x3F) }
    /// EPD0 or EPD1: walks through that TTBR are disabled.
    @inlinable public func walksDisabled(upper: Bool) -> Bool { raw & (upper ? 1 << 23 : 1 << 7) != 0 }
    /// TG0 or TG1 as a granule shift (the two fields encode the sizes differently).
    @inlinable public func granuleShift(upper: Bool) -> Int {
        upper ? Self.tg1Shift[Int((raw >> 30) & 3)] : Self.tg0Shift[Int((raw >> 14) & 3)]
    }
    /// A1: the ASID comes from TTBR1 (otherwise TTBR0).
    @inlinable public var asidFromTTBR1: Bool { raw & (1 << 22) != 0 }
    /// TG0: 0 = 4K, 1 = 64K, 2 = 16K (3 reserved: 4K).
    public static let tg0Shift = [12, 16, 14, 12]
    /// TG1: 1 = 16K, 2 = 4K, 3 = 64K (0 reserved: 4K).
    public static let tg1Shift = [12, 14, 12, 16]
}

/// TCR(n) of a stage-2 bank: VTCR's fields (T0SZ, SL0, TG0, PS).
public struct VTCR: Equatable, Sendable {
    public var raw: UInt32
    @inlinable public init(_ value: UInt64) { raw = UInt32(truncatingIfNeeded: value) }
    @inlinable public var sizeOffset: Int { Int(raw & 0x3F) }
    @inlinable public var startLevelField: Int { Int((raw >> 6) & 3) }
    @inlinable public var granuleShift: Int { TCR.tg0Shift[Int((raw >> 14) & 3)] }
    /// PS: the output (physical) address size field, bits 18:16.
    @inlinable public var physicalSize: UInt64 { UInt64((raw >> 16) & 7) }
}

/// TCR2(n): PASIZE (stage-1 output size) and AS (16-bit ASIDs).
public struct TCR2: Equatable, Sendable {
    public var raw: UInt32
    @inlinable public init(_ value: UInt64) { raw = UInt32(truncatingIfNeeded: value) }
    @inlinable public var physicalSize: UInt64 { UInt64(raw & 7) }
    @inlinable public var wideASID: Bool { raw & (1 << 4) != 0 }
}

/// TTBR0/TTBR1(n) in the long-descriptor format: ASID (63:48) and the table base address.
public struct TTBR: Equatable, Sendable {
    public var raw: UInt64
    @inlinable public init(_ value: UInt64) { raw = value }
    @inlinable public func asid(wide: Bool) -> UInt16 { UInt16(truncatingIfNeeded: (raw >> 48) & (wide ? 0xFFFF : 0xFF)) }
    @inlinable public var tableBase: UInt64 { raw & 0x0000_FFFF_FFFF_FFFE }
}

/// The operand of a TLB invalidation by address (TLBIVA(L), TLBIVAA(L): ASID 63:48 and VA[55:12] in 43:0;
/// TLBIIPAS2(L): IPA[47:12] in 35:0), or by ASID or VMID (the low bits).
public struct TLBIOperand: Equatable, Sendable {
    public var raw: UInt64
    @inlinable public init(_ value: UInt64) { raw = value }
    @inlinable public var asid: UInt16 { UInt16(truncatingIfNeeded: raw >> 48) }
    @inlinable public var address: UInt64 { (raw & 0xFFF_FFFF_FFFF) << 12 }
    @inlinable public var intermediateAddress: UInt64 { (raw & 0xF_FFFF_FFFF) << 12 }
    @inlinable public var lowASID: UInt16 { UInt16(truncatingIfNeeded: raw) }
    @inlinable public var vmid: UInt16 { UInt16(truncatingIfNeeded: raw) }
}

/// ID register fields a hypervisor edits to describe the SMMU it lets the host see.
public enum IDR0 {
    /// NUMSMRG: stream-match register groups.
    public static let numSMRG: UInt32 = 0xFF
    /// EXIDS: extended (16-bit) stream IDs.
    public static let exids: UInt32 = 1 << 8
    /// ATOSNS: address translation operations not supported.
    public static let atosns: UInt32 = 1 << 26
}

public enum IDR1 {
    /// NUMCB: context banks.
    public static let numCB: UInt32 = 0xFF
    /// NUMS2CB (23:16): context banks that support stage 2.
    public static let numS2CB: UInt32 = 0xFF << 16
    public static let numS2CBShift: UInt32 = 16
}

public enum IDR2 {
    /// VMID16: 16-bit VMIDs.
    public static let vmid16: UInt32 = 1 << 15
}

/// The fault status registers, the one definition of their bits: sGFSR (global) and FSR (per context bank),
/// both write-1-to-clear and restored by sGFSRRESTORE and FSRRESTORE.
public enum FaultStatus: Sendable, Hashable {
    case global, context

    /// sGFSR fault bits: MULTI 31, UUT 8, PF 7, EF 6, CAF 5, UCIF 4, UCBF 3, SMCF 2, USF 1, ICF 0.
    public static let globalFaultBits: UInt32 = 0x8000_01FF
    /// FSR fault bits: MULTI 31, SS 30, UUT 8, ASF 7, TLBLKF 6, TLBMCF 5, EF 4, PF 3, AFF 2, TF 1.
    public static let contextFaultBits: UInt32 = 0xC000_01FE
    /// MULTI, in both: a second fault arrived while one was recorded.
    public static let multi: UInt32 = 1 << 31

    /// sGFSR bits the model raises.
    public static let icf: UInt32 = 1 << 0     // invalid context (S2CR CBNDX beyond NUMCB)
    public static let usf: UInt32 = 1 << 1     // unidentified stream
    public static let smcf: UInt32 = 1 << 2    // stream match conflict
    /// FSR bits the model raises.
    public static let tf: UInt32 = 1 << 1      // translation
    public static let aff: UInt32 = 1 << 2     // access flag
    public static let pf: UInt32 = 1 << 3      // permission
    public static let ef: UInt32 = 1 << 4      // external
    public static let asf: UInt32 = 1 << 7     // address size

    /// The register holding this status.
    @inlinable public var register: RegisterName {
        switch self {
        case .global: .sGFSR
        case .context: .FSR
        }
    }

    /// Its fault bits (what W1C and RESTORE may change).
    @inlinable public var bits: UInt32 {
        switch self {
        case .global: Self.globalFaultBits
        case .context: Self.contextFaultBits
        }
    }
}
