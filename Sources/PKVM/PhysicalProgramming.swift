import SMMUModel

/// How the hypervisor turns the host's virtual registers into physical programming (G3).
///
/// Physical state is always a function of (virtual state, ownership): each `reconcile` recomputes the
/// physical registers a virtual write affects. How G3 is enforced:
/// - Every transaction of a host stream, and every table walk done for it, passes the downstream
///   filter (`OwnerStage2Filter`), the host's stage-2 in effect: host pages and configured DMA ranges
///   only. So host bypass, stage 1, stage 2 and nested are emulated as written: whatever the host's
///   tables say, what lies outside its memory faults with `ownership`.
/// - sCR0.CLIENTPD = 1 (the host disables its SMMU) is emulated without disabling the physical one:
///   the host's physical SMRs are written invalid and unmatched streams bypass, so host streams
///   bypass (over host memory) while every foreign stream stays matched by its reserved SMR.
/// - sCR0.USFCFG follows the host (unmatched host streams fault or bypass over host memory); foreign
///   streams are never unmatched, because the hypervisor holds a reserved SMR for each.
/// - VMIDs are the hypervisor's: physical bank n uses VMID n + 1 whatever the host wrote, and host
///   TLB maintenance by VMID is rewritten to the banks the host owns.
extension HostedInstance {
    /// Physical sCR0: CLIENTPD never set; global fault reporting on; USFCFG as the host's view asks
    /// (bypass when the host disabled its SMMU); SMCFCFG on; no EXIDS or VMID16 (hidden from the host).
    func physicalSCR0() -> UInt32 {
        let v = SCR0(virtual.peek(.sCR0))
        var p = v.raw & ~(SCR0.clientPD | SCR0.usfcfg | SCR0.exidEnable | SCR0.vmid16en)
        p |= SCR0.gfre | SCR0.gfie | SCR0.gcfgfre | SCR0.gcfgfie | SCR0.smcfcfg
        if !v.clientPD && v.unmatchedStreamsFault { p |= SCR0.usfcfg }
        return p
    }

    /// Physical SMR n for a host index: the host's value, or invalid while the host has CLIENTPD set.
    func physicalSMR(_ n: Int) -> UInt32 {
        SCR0(virtual.peek(.sCR0)).clientPD ? 0 : UInt32(truncatingIfNeeded: virtual.peek(.SMR, index: n))
    }

    /// Physical S2CR n for a host index: the host's value; the reserved TYPE 3 becomes FAULT.
    func physicalS2CR(_ n: Int) -> UInt32 {
        let s = S2CR(virtual.peek(.S2CR, index: n))
        return s.kind == .reserved ? s.with(kind: .fault).raw : s.raw
    }

    /// Physical CBAR n for a host bank: the host's type and attributes with the hypervisor's VMID.
    func physicalCBAR(_ n: Int) -> UInt32 {
        CBAR(virtual.peek(.CBAR, index: n)).with(vmid: vmid(ofContextBank: n)).raw
    }

    /// Physical CBA2R n: VA64 as the host asks; no 16-bit VMID (VMIDs are the hypervisor's).
    func physicalCBA2R(_ n: Int) -> UInt32 { CBA2R(virtual.peek(.CBA2R, index: n)).raw & CBA2R.va64 }

    /// Reprograms every physical register that derives from the host's view (finalization, sCR0).
    func reconcileAll() {
        for n in 0..<hostSMRs {
            program(.S2CR, index: n, UInt64(physicalS2CR(n)))
            program(.SMR, index: n, UInt64(physicalSMR(n)))
        }
        program(.sCR0, UInt64(physicalSCR0()))
    }

    /// After the host wrote `location`, brings the physical SMMU in line, as the register's row says
    /// (`RegisterDescriptor.host`). `value` and `width` are the host's access, replayed on the physical register
    /// where it is passed through: the access was decoded on the physical layout, so its location is the
    /// physical register's.
    func reconcile(after location: RegisterLocation, value: UInt64, width: AccessWidth) {
        switch RegisterMap.descriptor(location.name).host {
        case .virtualOnly:
            break
        case .passThrough:
            physical.write(location, value: value, width: width)
        case .derived(let derivation), .checked(_, then: let derivation):
            program(derivation, index: location.index)
        case .rewritten(let rewrite):
            rewriteTLBMaintenance(rewrite, value: value)
        }
    }

    /// Programs the physical register a derivation computes, for host index `n`.
    func program(_ derivation: HostDerivation, index n: Int) {
        switch derivation {
        case .globalControl: reconcileAll()
        case .streamMatch: program(.SMR, index: n, UInt64(physicalSMR(n)))
        case .streamRouting: program(.S2CR, index: n, UInt64(physicalS2CR(n)))
        case .contextVMID: program(.CBAR, index: n, UInt64(physicalCBAR(n)))
        case .contextFormat: program(.CBA2R, index: n, UInt64(physicalCBA2R(n)))
        }
    }

    /// Host TLB maintenance by VMID, on the hypervisor's VMIDs of the host's banks only.
    func rewriteTLBMaintenance(_ rewrite: HostRewrite, value: UInt64) {
        switch rewrite {
        case .vmidOfHostBanks:
            // The host names its own VMID; invalidate the banks the host gave that VMID, by their real VMIDs.
            let target = UInt8(truncatingIfNeeded: value)
            for n in 0..<hostContextBanks where CBAR(virtual.peek(.CBAR, index: n)).vmid == target {
                program(.TLBIVMID, UInt64(vmid(ofContextBank: n)))
            }
        case .everyHostBank:
            // "All non-secure non-hyp entries" of the host: every host bank's VMID, never a VM's.
            for n in 0..<hostContextBanks { program(.TLBIVMID, UInt64(vmid(ofContextBank: n))) }
        }
    }
}
