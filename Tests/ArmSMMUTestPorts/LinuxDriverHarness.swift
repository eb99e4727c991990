import ArmSMMUDriver

/// What the model's and the hypervisor's tests ask of the Linux driver, in their words: a conforming harness
/// gives the driver on its port (after cfg_probe) and says how a failed expectation is recorded; the
/// sequences are `ArmSMMU`'s.
public protocol LinuxDriverHarness {
    associatedtype Port: RegisterPort where Port.Failure == Never
    /// The driver after `arm_smmu_device_cfg_probe()`.
    var linux: ArmSMMU<Port> { get }
    func check(_ condition: Bool, _ what: String)
}

extension LinuxDriverHarness {
    /// What cfg_probe derived.
    public func probe() -> ArmSMMUConfiguration { linux.configuration }

    /// `arm_smmu_rmr_install_bypass_smr()` then `arm_smmu_device_reset()`; the sCR0 value written last.
    @discardableResult
    public func reset() -> UInt32 {
        let l = linux
        l.rmrInstallBypassSMR()
        let r = l.deviceReset()
        check(r.syncCompleted, "sTLBGSTATUS.GSACTIVE clear after sTLBGSYNC")
        return r.sCR0
    }

    /// `arm_smmu_test_smr_masks()`: (streamid_mask, smr_mask_mask).
    public func testSMRMasks(index: Int = 0) -> (UInt32, UInt32) {
        let masks = linux.testSMRMasks(index: index)
        check(masks != nil, "stream matching")
        return (masks?.streamIDMask ?? 0, masks?.smrMaskMask ?? 0)
    }

    /// `arm_smmu_write_context_bank()` for a stage-1 domain with ASID = the bank index.
    public func attachStage1(bank: Int, ttbr0: UInt64, tcr: UInt32 = 0x0080_2010) {
        linux.writeContextBank(bank, .stage1(asid: UInt16(bank), pageTable: ttbr0, tcr: tcr))
    }

    /// `arm_smmu_write_context_bank()` for a stage-2 domain.
    public func attachStage2(bank: Int, vttbr: UInt64, vtcr: UInt32, vmid: UInt16) {
        linux.writeContextBank(bank, .stage2(vmid: vmid, vttbr: vttbr, vtcr: vtcr))
    }

    /// The stream's entry at SMR `index`, translated by `bank`.
    public func route(smr index: Int, stream: UInt16, mask: UInt16 = 0, toBank bank: Int) {
        linux.attachStream(index, id: stream, mask: mask, to: ArmSMMUS2CR(type: .TRANS, cbndx: bank))
    }

    /// The identity domain: the stream's entry at SMR `index` bypasses.
    public func bypass(smr index: Int, stream: UInt16, mask: UInt16 = 0) {
        linux.attachStream(index, id: stream, mask: mask, to: ArmSMMUS2CR(type: .BYPASS))
    }

    /// `arm_smmu_tlb_sync_global()`.
    public func sync() { check(linux.tlbSyncGlobal(), "sTLBGSTATUS.GSACTIVE clear after sTLBGSYNC") }

    /// `arm_smmu_tlb_sync_context()`.
    public func contextSync(_ bank: Int) { check(linux.tlbSyncContext(bank), "TLBSTATUS.SACTIVE clear on bank \(bank)") }

    /// Unmap of one 4 KiB page of the stage-1 domain on `bank` (ASID = bank): TLBIVAL, context sync.
    public func invalidate(iova: UInt64, bank: Int) {
        check(linux.unmapPageS1(bank: bank, asid: UInt16(bank), iova: iova), "TLBSTATUS.SACTIVE clear on bank \(bank)")
    }

    /// The context interrupt of the domain on `bank`: what the handler read from that bank, if it had a fault.
    public func contextFault(bank: Int) -> ArmSMMUContextFault? { linux.contextFault(bank: bank).first { $0.bank == bank } }

    /// The global interrupt: what the handler read from the first instance with a fault.
    public func globalFault() -> ArmSMMUGlobalFault? { linux.globalFault().first }
}
