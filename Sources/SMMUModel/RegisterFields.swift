// Typed views of register fields (bit positions: ARM SMMUv2, Linux arm-smmu.h). The register table
// (RegisterMap) owns widths, resets and writable masks; these name the fields, for the model's own
// stream matching and context decoding and for the hypervisor's policy, so they are written once.

/// sCR0 fields the hypervisor forces or emulates.
public struct SCR0: Equatable, Sendable {
    public var raw: UInt32
    public init(raw: UInt32) { self.raw = raw }
    public static let clientPD: UInt32 = 1 << 0
    public static let gfre: UInt32 = 1 << 1
    public static let gfie: UInt32 = 1 << 2
    public static let exidEnable: UInt32 = 1 << 3
    public static let gcfgfre: UInt32 = 1 << 4
    public static let gcfgfie: UInt32 = 1 << 5
    public static let usfcfg: UInt32 = 1 << 10
    public static let smcfcfg: UInt32 = 1 << 21
    public static let vmid16en: UInt32 = 1 << 31

    public var clientPD: Bool { raw & Self.clientPD != 0 }
    public var unmatchedStreamsFault: Bool { raw & Self.usfcfg != 0 }
}

/// SMR(n): VALID, MASK, ID. The streams an SMR can match depend on the implemented width.
public struct SMR: Equatable, Sendable {
    public var raw: UInt32
    public init(raw: UInt32) { self.raw = raw }
    public init(id: UInt16, mask: UInt16, valid: Bool) {
        raw = UInt32(id) | UInt32(mask) << 16 | (valid ? 1 << 31 : 0)
    }
    public var valid: Bool { raw & (1 << 31) != 0 }
    public var id: UInt16 { UInt16(truncatingIfNeeded: raw) & 0x7FFF }
    public var mask: UInt16 { UInt16(truncatingIfNeeded: raw >> 16) & 0x7FFF }

    /// G2's formula: SMR (id, mask) matches stream s iff `(s ^ id) & ~mask & idmask == 0`.
    public func matches(_ stream: StreamID, idMask: UInt16) -> Bool {
        valid && (stream.rawValue ^ id) & ~mask & idMask == 0
    }
}

/// S2CR(n): TYPE and CBNDX (other fields pass through).
public struct S2CR: Equatable, Sendable {
    public enum Kind: UInt32, Sendable { case translate = 0, bypass = 1, fault = 2, reserved = 3 }
    public var raw: UInt32
    public init(raw: UInt32) { self.raw = raw }
    public init(kind: Kind, contextBank: Int = 0) { raw = kind.rawValue << 16 | UInt32(contextBank & 0xFF) }
    public var kind: Kind { Kind(rawValue: (raw >> 16) & 3)! }
    public var contextBank: Int { Int(raw & 0xFF) }
}

/// CBAR(n): TYPE, the nested stage-2 bank (type 3) and the VMID.
public struct CBAR: Equatable, Sendable {
    public enum Kind: UInt32, Sendable { case stage2 = 0, stage1Bypass = 1, stage1Fault = 2, nested = 3 }
    public var raw: UInt32
    public init(raw: UInt32) { self.raw = raw }
    public var kind: Kind { Kind(rawValue: (raw >> 16) & 3)! }
    /// For a nested context, the index of the stage-2 context bank (bits 15:8).
    public var stage2ContextBank: Int { Int((raw >> 8) & 0xFF) }
    public var vmid: UInt8 { UInt8(truncatingIfNeeded: raw) }
    public func with(vmid: UInt8) -> CBAR { CBAR(raw: raw & ~0xFF | UInt32(vmid)) }
}

/// Fault bits of the context bank FSR and the global sGFSR that count as "a fault is pending".
public enum FaultStatus {
    public static let contextFaultBits: UInt32 = 0xC000_01FE
    public static let globalFaultBits: UInt32 = 0x8000_01FF
    public static let multi: UInt32 = 1 << 31
}
