/// Fault recording, where the MMU-500 records faults: sGFSR/sGFSYNRn/sGFAR for global faults,
/// FSR/FAR/FSYNR0/IPAFAR and GR1 CBFRSYNRA for context faults. A second fault while the status
/// still holds one sets MULTI and keeps the first syndrome, as the architecture says.

extension MMU500 {
    /// Records a global fault: `fault` is one of `FaultStatus.icf`, `.usf`, `.smcf`.
    func recordGlobalFault(_ fault: UInt32, stream: StreamID, iova: UInt64, access: DMAAccess) {
        guard recordsFaults[0], let s = slot(.sGFSR, 0) else { return }
        if values[s] & UInt64(FaultStatus.globalFaultBits & ~FaultStatus.multi) != 0 {
            values[s] |= UInt64(FaultStatus.multi)
            return
        }
        values[s] |= UInt64(fault)
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
    static func fsrBit(for f: WalkFault) -> UInt32 {
        switch f.kind {
        case .accessFlag: FaultStatus.aff
        case .permission: FaultStatus.pf
        case .addressSize: FaultStatus.asf
        case .translation: f.externalAbort ? FaultStatus.ef : FaultStatus.tf
        case .ownership: FaultStatus.tf
        case .unidentifiedStream, .streamFault, .multipleMatch: FaultStatus.tf   // not walk faults: never recorded here
        }
    }

    func recordContextFault(bank: Int, fault f: WalkFault, stream: StreamID, iova: UInt64, access: DMAAccess) {
        guard recordsFaults[0], let s = slot(.FSR, bank) else { return }
        if values[s] & UInt64(FaultStatus.contextFaultBits & ~FaultStatus.multi) != 0 {
            values[s] |= UInt64(FaultStatus.multi)
            return
        }
        values[s] |= UInt64(Self.fsrBit(for: f))
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
