/// Fault recording, where the MMU-500 records faults: sGFSR/sGFSYNRn/sGFAR for global faults,
/// FSR/FAR/FSYNR0/IPAFAR and GR1 CBFRSYNRA for context faults. A second fault while the status
/// still holds one sets MULTI and keeps the first syndrome, as the architecture says.

extension MMU500 {
    /// sGFSR bits the model raises.
    enum GlobalFault: UInt64 {
        case icf = 0x1     // invalid context (S2CR CBNDX beyond NUMCB)
        case usf = 0x2     // unidentified stream
        case smcf = 0x4    // stream match conflict
    }

    /// FSR bit positions.
    enum FSRBit {
        static let tf: UInt64 = 1 << 1
        static let aff: UInt64 = 1 << 2
        static let pf: UInt64 = 1 << 3
        static let ef: UInt64 = 1 << 4
        static let asf: UInt64 = 1 << 7
        static let multi: UInt64 = 1 << 31
    }

    func recordGlobalFault(_ fault: GlobalFault, stream: StreamID, iova: UInt64, access: DMAAccess) {
        guard let s = slot(.sGFSR, 0) else { return }
        if values[s] & (RegisterMap.sGFSRBits & ~(1 << 31)) != 0 {
            values[s] |= 1 << 31
            return
        }
        values[s] |= fault.rawValue
        var syndrome: UInt64 = 0
        if access.isWrite { syndrome |= 1 << 1 }
        if access.contains(.privileged) { syndrome |= 1 << 2 }
        if access.contains(.instructionFetch) { syndrome |= 1 << 3 }
        poke(.sGFSYNR0, syndrome)
        poke(.sGFSYNR1, UInt64(stream.rawValue))
        poke(.sGFSYNR2, 0)
        poke(.sGFAR, iova)
    }

    /// The FSR bit for a walk fault. A refused access reads as a translation fault.
    static func fsrBit(for f: WalkFault) -> UInt64 {
        switch f.kind {
        case .accessFlag: FSRBit.aff
        case .permission: FSRBit.pf
        case .addressSize: FSRBit.asf
        case .translation where f.externalAbort: FSRBit.ef
        default: FSRBit.tf
        }
    }

    func recordContextFault(bank: Int, fault f: WalkFault, stream: StreamID, iova: UInt64, access: DMAAccess) {
        guard let s = slot(.FSR, bank) else { return }
        if values[s] & (RegisterMap.fsrBits & ~FSRBit.multi) != 0 {
            values[s] |= FSRBit.multi
            return
        }
        values[s] |= Self.fsrBit(for: f)
        var syndrome = UInt64(f.level & 3)                                   // PLVL
        if access.isWrite { syndrome |= 1 << 4 }                              // WNR
        if access.contains(.privileged) { syndrome |= 1 << 5 }                // PNU
        if access.contains(.instructionFetch) { syndrome |= 1 << 6 }          // IND
        if f.duringWalk && f.kind == .ownership { syndrome |= 1 << 10 }       // PTWF
        poke(.FSYNR0, index: bank, syndrome)
        poke(.FAR, index: bank, iova)
        poke(.IPAFAR, index: bank, f.ipa ?? 0)
        poke(.CBFRSYNRA, index: bank, UInt64(stream.rawValue))
    }
}
