import SMMUModel

// Typed views of the fields the policy reads (bit positions: reference §2, ARM SMMUv2).
// The register table in SMMUModel owns widths, resets and writable masks; these only name fields.

/// sCR0 fields the hypervisor forces or emulates.
struct SCR0: Equatable {
    var raw: UInt32
    static let clientPD: UInt32 = 1 << 0
    static let gfre: UInt32 = 1 << 1
    static let gfie: UInt32 = 1 << 2
    static let exidEnable: UInt32 = 1 << 3
    static let gcfgfre: UInt32 = 1 << 4
    static let gcfgfie: UInt32 = 1 << 5
    static let usfcfg: UInt32 = 1 << 10
    static let smcfcfg: UInt32 = 1 << 21
    static let vmid16en: UInt32 = 1 << 31

    var clientPD: Bool { raw & Self.clientPD != 0 }
    var unmatchedStreamsFault: Bool { raw & Self.usfcfg != 0 }
}

/// SMR(n): VALID, MASK, ID. The streams an SMR can match depend on the implemented width.
struct SMR: Equatable {
    var raw: UInt32
    init(raw: UInt32) { self.raw = raw }
    init(id: UInt16, mask: UInt16, valid: Bool) {
        raw = UInt32(id) | UInt32(mask) << 16 | (valid ? 1 << 31 : 0)
    }
    var valid: Bool { raw & (1 << 31) != 0 }
    var id: UInt16 { UInt16(truncatingIfNeeded: raw) & 0x7FFF }
    var mask: UInt16 { UInt16(truncatingIfNeeded: raw >> 16) & 0x7FFF }

    /// G2's formula: SMR (id, mask) matches stream s iff `(s ^ id) & ~mask & idmask == 0`.
    func matches(_ stream: StreamID, idMask: UInt16) -> Bool {
        valid && (stream.rawValue ^ id) & ~mask & idMask == 0
    }
}

/// S2CR(n): TYPE and CBNDX (other fields pass through).
struct S2CR: Equatable {
    enum Kind: UInt32 { case translate = 0, bypass = 1, fault = 2, reserved = 3 }
    var raw: UInt32
    init(raw: UInt32) { self.raw = raw }
    init(kind: Kind, contextBank: Int = 0) { raw = kind.rawValue << 16 | UInt32(contextBank & 0xFF) }
    var kind: Kind { Kind(rawValue: (raw >> 16) & 3)! }
    var contextBank: Int { Int(raw & 0xFF) }
}

/// CBAR(n): TYPE, the nested stage-2 bank (type 3) and the VMID.
struct CBAR: Equatable {
    enum Kind: UInt32 { case stage2 = 0, stage1Bypass = 1, stage1Fault = 2, nested = 3 }
    var raw: UInt32
    init(raw: UInt32) { self.raw = raw }
    var kind: Kind { Kind(rawValue: (raw >> 16) & 3)! }
    /// For a nested context, the index of the stage-2 context bank (bits 15:8).
    var stage2ContextBank: Int { Int((raw >> 8) & 0xFF) }
    var vmid: UInt8 { UInt8(truncatingIfNeeded: raw) }
    func with(vmid: UInt8) -> CBAR { CBAR(raw: raw & ~0xFF | UInt32(vmid)) }
}

/// Fault bits of the context bank FSR and the global sGFSR that count as "a fault is pending".
enum FaultStatus {
    static let contextFaultBits: UInt32 = 0xC000_01FE
    static let globalFaultBits: UInt32 = 0x8000_01FF
    static let multi: UInt32 = 1 << 31
}
