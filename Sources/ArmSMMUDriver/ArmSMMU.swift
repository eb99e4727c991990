/// The Linux arm-smmu driver's register sequences (drivers/iommu/arm/arm-smmu/arm-smmu.c and
/// arm-smmu-nvidia.c, Linux 6.1) for an SMMUv2 (MMU-500), over register ports. It is written once, for
/// every caller that plays the host's driver: the model's tests (the bare MMU-500 by offset), the
/// hypervisor's tests (through the trap handler), `SMMUClient.LinuxProbe` and `smmuctl probe` (over the
/// socket, writes posted) and the benchmark.
///
/// One port is Linux's generic MMIO. Two ports are the NVIDIA dual-instance implementation
/// (`nvidia_smmu_impl`, Tegra194/234): every write goes to each instance in turn, reads come from instance 0,
/// the TLB sync polls every instance, the reset clears each instance's sGFSR, and the fault handlers scan
/// every instance.
///
/// Only what the driver itself knows is used: the ID registers read by `cfgProbe`, Linux's offsets and bit
/// names (`ARM_SMMU`). The driver keeps no software copy of the stream map or the context banks; callers
/// say which SMR index and bank to use (Linux's `arm_smmu_find_sme` and `__arm_smmu_alloc_bitmap` choose
/// them). Contexts are AArch64 format (a 64-bit kernel), and the version is SMMUv2.
public struct ArmSMMU<Port: RegisterPort> {
    /// Kernel options that change what the driver writes.
    public struct Options: Hashable, Sendable {
        /// `arm-smmu.disable_bypass` (`CONFIG_ARM_SMMU_DISABLE_BYPASS_BY_DEFAULT`, default y): unmatched streams and
        /// streams without a domain fault (S2CR FAULT, sCR0.USFCFG set) instead of bypassing.
        public var disableBypass: Bool
        public init(disableBypass: Bool = true) { self.disableBypass = disableBypass }
    }

    /// `TLB_LOOP_TIMEOUT` doubling from 1 µs gives 20 rounds of `TLB_SPIN_COUNT` reads; the `udelay` between
    /// rounds is left to the port (a read costs a round trip already).
    public static var tlbSyncPolls: Int { 20 * 10 }

    public let instances: [Port]
    public let configuration: ArmSMMUConfiguration
    public let options: Options

    public init(instances: [Port], configuration: ArmSMMUConfiguration, options: Options = Options()) {
        precondition((1...2).contains(instances.count), "one instance, or the NVIDIA pair")
        self.instances = instances
        self.configuration = configuration
        self.options = options
    }

    /// `arm_smmu_device_cfg_probe()`: reads ID0, ID1 and ID2 (of instance 0) and derives the configuration,
    /// or Linux's -ENODEV.
    public static func cfgProbe(_ instances: [Port], mappedSize: UInt64? = nil, options: Options = Options())
        throws(Port.Failure) -> Result<ArmSMMU, ArmSMMUConfiguration.ProbeFailure>
    {
        let id0 = try instances[0].read32(ARM_SMMU.GR0.ID0)
        let id1 = try instances[0].read32(ARM_SMMU.GR0.ID1)
        let id2 = try instances[0].read32(ARM_SMMU.GR0.ID2)
        do {
            let c = try ArmSMMUConfiguration(idr0: id0, idr1: id1, idr2: id2, mappedSize: mappedSize)
            return .success(ArmSMMU(instances: instances, configuration: c, options: options))
        } catch { return .failure(error) }
    }

    var nvidia: Bool { instances.count > 1 }

    // MARK: Accessors (arm_smmu_readl / arm_smmu_writel and the NVIDIA read_reg / write_reg)

    func readl(_ offset: UInt64) throws(Port.Failure) -> UInt32 { try instances[0].read32(offset) }
    func readq(_ offset: UInt64) throws(Port.Failure) -> UInt64 { try instances[0].read64(offset) }
    func writel(_ offset: UInt64, _ value: UInt32) throws(Port.Failure) {
        for port in instances { try port.write32(offset, value) }
    }
    func writeq(_ offset: UInt64, _ value: UInt64) throws(Port.Failure) {
        for port in instances { try port.write64(offset, value) }
    }
    func cb(_ n: Int, _ register: UInt64) -> UInt64 { configuration.cb(n) + register }
    func gr1(_ register: UInt64) -> UInt64 { configuration.gr1 + register }

    // MARK: Probe and reset

    /// `arm_smmu_rmr_install_bypass_smr()` with no IORT RMRs (a device-tree system): sCR0.CLIENTPD set, so
    /// streams bypass until the reset. Returns sCR0 as read.
    @discardableResult
    public func rmrInstallBypassSMR() throws(Port.Failure) -> UInt32 {
        let reg = try readl(ARM_SMMU.GR0.sCR0)
        try writel(ARM_SMMU.GR0.sCR0, reg | ARM_SMMU.sCR0.CLIENTPD)
        return reg
    }

    /// What the reset wrote last, and whether its TLB sync completed.
    public struct Reset: Hashable, Sendable {
        /// The sCR0 value written last, the one that enables translation.
        public var sCR0: UInt32
        /// sTLBGSTATUS.GSACTIVE read 0 within the poll (else Linux prints "TLB sync timed out").
        public var syncCompleted: Bool
    }

    /// The S2CR every stream map entry starts with (`s2cr_init_val`): FAULT, or BYPASS without disable_bypass.
    public var initialS2CR: ArmSMMUS2CR { ArmSMMUS2CR(type: options.disableBypass ? .FAULT : .BYPASS) }

    /// `arm_smmu_device_reset()` at first probe (every stream map entry at its initial value, every context
    /// bank unassigned), with the NVIDIA pair's `nvidia_smmu_reset`.
    ///
    /// sCR0.EXIDENABLE is set when ID0.EXIDS is, and the SMRs are written only with stream matching (ID0.SMS),
    /// as Linux does.
    @discardableResult
    public func deviceReset() throws(Port.Failure) -> Reset {
        let gfsr = try readl(ARM_SMMU.GR0.sGFSR)
        try writel(ARM_SMMU.GR0.sGFSR, gfsr)
        for i in 0..<configuration.numMappingGroups { try writeSME(i, s2cr: initialS2CR, smr: ArmSMMUSMR()) }
        for i in 0..<configuration.numContextBanks {
            try writeContextBank(i, nil)
            try writel(cb(i, ARM_SMMU.CB.FSR), ARM_SMMU.FSR.FAULT)
        }
        // QCOM_DUMMY_VAL: any value invalidates; Linux writes -1 to avoid a store of XZR.
        try writel(ARM_SMMU.GR0.TLBIALLH, 0xFFFF_FFFF)
        try writel(ARM_SMMU.GR0.TLBIALLNSNH, 0xFFFF_FFFF)
        var reg = try readl(ARM_SMMU.GR0.sCR0)
        reg |= ARM_SMMU.sCR0.GFRE | ARM_SMMU.sCR0.GFIE | ARM_SMMU.sCR0.GCFGFRE | ARM_SMMU.sCR0.GCFGFIE
        reg |= ARM_SMMU.sCR0.VMIDPNE | ARM_SMMU.sCR0.PTM
        reg &= ~ARM_SMMU.sCR0.CLIENTPD
        if options.disableBypass { reg |= ARM_SMMU.sCR0.USFCFG } else { reg &= ~ARM_SMMU.sCR0.USFCFG }
        reg &= ~ARM_SMMU.sCR0.FB
        reg &= ~ARM_SMMU.sCR0.BSU
        if configuration.vmid16 { reg |= ARM_SMMU.sCR0.VMID16EN }
        if configuration.extendedIDs { reg |= ARM_SMMU.sCR0.EXIDENABLE }
        if nvidia {
            // nvidia_smmu_reset: each instance's own sGFSR, read and written back.
            for port in instances { try port.write32(ARM_SMMU.GR0.sGFSR, try port.read32(ARM_SMMU.GR0.sGFSR)) }
        }
        let synced = try tlbSyncGlobal()
        try writel(ARM_SMMU.GR0.sCR0, reg)
        return Reset(sCR0: reg, syncCompleted: synced)
    }

    /// `arm_smmu_test_smr_masks()` on the free SMR `index` (0 after the reset): the ID bits, then the MASK bits,
    /// that stick. Returns Linux's `streamid_mask` and `smr_mask_mask`, or nil without stream matching.
    public func testSMRMasks(index: Int = 0) throws(Port.Failure) -> (streamIDMask: UInt32, smrMaskMask: UInt32)? {
        guard configuration.streamMatching else { return nil }
        try writel(ARM_SMMU.GR0.SMR(index), ARM_SMMU.SMR.ID(configuration.streamIDMask))
        let streamIDMask = ARM_SMMU.SMR.getID(try readl(ARM_SMMU.GR0.SMR(index)))
        try writel(ARM_SMMU.GR0.SMR(index), ARM_SMMU.SMR.MASK(streamIDMask))
        let smrMaskMask = ARM_SMMU.SMR.getMASK(try readl(ARM_SMMU.GR0.SMR(index)))
        return (streamIDMask, smrMaskMask)
    }

    // MARK: Stream map entries

    /// `arm_smmu_write_s2cr()`: EXIDVALID stands in for SMR.VALID with extended stream IDs.
    public func writeS2CR(_ index: Int, _ s2cr: ArmSMMUS2CR, smr: ArmSMMUSMR) throws(Port.Failure) {
        var reg = ARM_SMMU.S2CR.value(type: s2cr.type, cbndx: s2cr.cbndx, privcfg: s2cr.privcfg)
        if configuration.extendedIDs && configuration.streamMatching && smr.valid { reg |= ARM_SMMU.S2CR.EXIDVALID }
        try writel(ARM_SMMU.GR0.S2CR(index), reg)
    }

    /// `arm_smmu_write_smr()`: VALID only without extended stream IDs.
    public func writeSMR(_ index: Int, _ smr: ArmSMMUSMR) throws(Port.Failure) {
        var reg = ARM_SMMU.SMR.ID(UInt32(smr.id)) | ARM_SMMU.SMR.MASK(UInt32(smr.mask))
        if !configuration.extendedIDs && smr.valid { reg |= ARM_SMMU.SMR.VALID }
        try writel(ARM_SMMU.GR0.SMR(index), reg)
    }

    /// `arm_smmu_write_sme()`: the S2CR first, then (with stream matching) the SMR.
    public func writeSME(_ index: Int, s2cr: ArmSMMUS2CR, smr: ArmSMMUSMR) throws(Port.Failure) {
        try writeS2CR(index, s2cr, smr: smr)
        if configuration.streamMatching { try writeSMR(index, smr) }
    }

    /// `arm_smmu_master_alloc_smes()` for a new entry at `index`: the initial S2CR, then the valid SMR.
    public func masterAllocSME(_ index: Int, id: UInt16, mask: UInt16 = 0) throws(Port.Failure) {
        try writeSME(index, s2cr: initialS2CR, smr: ArmSMMUSMR(id: id, mask: mask, valid: true))
    }

    /// `arm_smmu_master_install_s2crs()` for the entry at `index` (valid): its S2CR only.
    public func masterInstallS2CR(_ index: Int, _ s2cr: ArmSMMUS2CR) throws(Port.Failure) {
        try writeS2CR(index, s2cr, smr: ArmSMMUSMR(valid: true))
    }

    /// `arm_smmu_master_free_smes()` for the entry at `index`: the initial S2CR, the SMR without VALID.
    public func masterFreeSME(_ index: Int, id: UInt16, mask: UInt16 = 0) throws(Port.Failure) {
        try writeSME(index, s2cr: initialS2CR, smr: ArmSMMUSMR(id: id, mask: mask, valid: false))
    }

    // MARK: Context banks and domains

    /// `arm_smmu_write_context_bank()`: CBA2R, CBAR, TCR2 (stage 1), TCR (before the TTBRs: it governs
    /// ASID[15:8]), TTBR0, TTBR1 (stage 1), MAIR0/1 (stage 1), SCTLR. An unassigned bank (nil) only has SCTLR
    /// cleared.
    public func writeContextBank(_ index: Int, _ bank: ArmSMMUContextBank?) throws(Port.Failure) {
        guard let bank else {
            try writel(cb(index, ARM_SMMU.CB.SCTLR), 0)
            return
        }
        let stage1 = bank.stage1
        var reg = ARM_SMMU.CBA2R.VA64
        if configuration.vmid16 { reg |= ARM_SMMU.CBA2R.VMID16(bank.asidOrVMID) }
        try writel(gr1(ARM_SMMU.GR1.CBA2R(index)), reg)
        reg = ARM_SMMU.CBAR.type(bank.cbar)
        if stage1 {
            reg |= ARM_SMMU.CBAR.S1_BPSHCFG_NSH | ARM_SMMU.CBAR.S1_MEMATTR_WB
        } else if !configuration.vmid16 {
            reg |= ARM_SMMU.CBAR.VMID(bank.asidOrVMID)
        }
        try writel(gr1(ARM_SMMU.GR1.CBAR(index)), reg)
        if stage1 { try writel(cb(index, ARM_SMMU.CB.TCR2), bank.tcr2) }
        try writel(cb(index, ARM_SMMU.CB.TCR), bank.tcr)
        try writeq(cb(index, ARM_SMMU.CB.TTBR0), bank.ttbr0)
        if stage1 { try writeq(cb(index, ARM_SMMU.CB.TTBR1), bank.ttbr1) }
        if stage1 {
            try writel(cb(index, ARM_SMMU.CB.S1_MAIR0), bank.mair0)
            try writel(cb(index, ARM_SMMU.CB.S1_MAIR1), bank.mair1)
        }
        reg = ARM_SMMU.SCTLR.CFIE | ARM_SMMU.SCTLR.CFRE | ARM_SMMU.SCTLR.AFE | ARM_SMMU.SCTLR.TRE | ARM_SMMU.SCTLR.M
        if stage1 { reg |= ARM_SMMU.SCTLR.S1_ASIDPNE }
        try writel(cb(index, ARM_SMMU.CB.SCTLR), reg)
    }

    /// `arm_smmu_master_alloc_smes()` then `arm_smmu_master_install_s2crs()` for one stream map entry: the
    /// initial S2CR, the valid SMR, then `s2cr` (TRANS to a bank for a paging domain, BYPASS for the identity
    /// domain, FAULT for the blocked one).
    public func attachStream(_ index: Int, id: UInt16, mask: UInt16 = 0, to s2cr: ArmSMMUS2CR) throws(Port.Failure) {
        try masterAllocSME(index, id: id, mask: mask)
        try masterInstallS2CR(index, s2cr)
    }

    /// A device's first attach to a paging domain, in Linux's order: `arm_smmu_probe_device()` allocates the
    /// stream map entries (S2CR at its initial value, then the valid SMR), `arm_smmu_init_domain_context()`
    /// writes the context bank, and `arm_smmu_master_install_s2crs()` points the entries at it.
    public func attach(bank index: Int, _ bank: ArmSMMUContextBank, streams: [(index: Int, id: UInt16, mask: UInt16)])
        throws(Port.Failure)
    {
        for s in streams { try masterAllocSME(s.index, id: s.id, mask: s.mask) }
        try writeContextBank(index, bank)
        for s in streams { try masterInstallS2CR(s.index, ArmSMMUS2CR(type: .TRANS, cbndx: index)) }
    }

    // MARK: TLB maintenance

    /// `__arm_smmu_tlb_sync()` (generic: write -1) or `nvidia_smmu_tlb_sync()` (write 0 to every instance, poll
    /// the OR of every instance's status): the sync write, then status reads until the active bit is clear.
    func tlbSync(page: UInt64, sync: UInt64, status: UInt64) throws(Port.Failure) -> Bool {
        try writel(page + sync, nvidia ? 0 : 0xFFFF_FFFF)
        for _ in 0..<Self.tlbSyncPolls {
            var value: UInt32 = 0
            for port in instances[0..<(nvidia ? instances.count : 1)] { value |= try port.read32(page + status) }
            if value & ARM_SMMU.sTLBGSTATUS_GSACTIVE == 0 { return true }
        }
        return false
    }

    /// `arm_smmu_tlb_sync_global()`: sTLBGSYNC, then sTLBGSTATUS.
    public func tlbSyncGlobal() throws(Port.Failure) -> Bool {
        try tlbSync(page: 0, sync: ARM_SMMU.GR0.sTLBGSYNC, status: ARM_SMMU.GR0.sTLBGSTATUS)
    }

    /// `arm_smmu_tlb_sync_context()`: the bank's TLBSYNC, then its TLBSTATUS.
    public func tlbSyncContext(_ bank: Int) throws(Port.Failure) -> Bool {
        try tlbSync(page: configuration.cb(bank), sync: ARM_SMMU.CB.TLBSYNC, status: ARM_SMMU.CB.TLBSTATUS)
    }

    /// `arm_smmu_tlb_inv_context_s1()`: TLBIASID, then the context sync.
    public func tlbInvContextS1(bank: Int, asid: UInt16) throws(Port.Failure) -> Bool {
        try writel(cb(bank, ARM_SMMU.CB.S1_TLBIASID), UInt32(asid))
        return try tlbSyncContext(bank)
    }

    /// `arm_smmu_tlb_inv_range_s1()`: one TLBIVA (`leaf`: TLBIVAL) per granule of [iova, iova + size), no sync
    /// (`arm_smmu_tlb_add_page_s1` is one leaf page; `arm_smmu_tlb_inv_walk_s1` is the non-leaf range then the
    /// context sync).
    public func tlbInvRangeS1(bank: Int, asid: UInt16, iova: UInt64, size: UInt64, granule: UInt64 = 4096,
                              leaf: Bool) throws(Port.Failure) {
        let register = cb(bank, leaf ? ARM_SMMU.CB.S1_TLBIVAL : ARM_SMMU.CB.S1_TLBIVA)
        var operand = iova >> 12 | ARM_SMMU.TTBRn_ASID(asid)
        for _ in 0..<max(1, size / granule) {
            try writeq(register, operand)
            operand += granule >> 12
        }
    }

    /// An unmap of one page of a stage-1 domain: `arm_smmu_tlb_add_page_s1()` (TLBIVAL) then
    /// `arm_smmu_iotlb_sync()` (the context sync).
    public func unmapPageS1(bank: Int, asid: UInt16, iova: UInt64, granule: UInt64 = 4096) throws(Port.Failure) -> Bool {
        try tlbInvRangeS1(bank: bank, asid: asid, iova: iova, size: granule, granule: granule, leaf: true)
        return try tlbSyncContext(bank)
    }

    /// `arm_smmu_tlb_inv_context_s2()`: TLBIVMID, then the global sync.
    public func tlbInvContextS2(vmid: UInt16) throws(Port.Failure) -> Bool {
        try writel(ARM_SMMU.GR0.TLBIVMID, UInt32(vmid))
        return try tlbSyncGlobal()
    }

    /// `arm_smmu_tlb_inv_range_s2()`: one TLBIIPAS2 (`leaf`: TLBIIPAS2L) per granule, no sync.
    public func tlbInvRangeS2(bank: Int, ipa: UInt64, size: UInt64, granule: UInt64 = 4096, leaf: Bool)
        throws(Port.Failure)
    {
        let register = cb(bank, leaf ? ARM_SMMU.CB.S2_TLBIIPAS2L : ARM_SMMU.CB.S2_TLBIIPAS2)
        var operand = ipa >> 12
        for _ in 0..<max(1, size / granule) {
            try writeq(register, operand)
            operand += granule >> 12
        }
    }

    // MARK: Fault handlers

    /// The context interrupt of the domain on `bank`. Generic (`arm_smmu_context_fault`, Linux 6.1 order): FSR;
    /// nothing unless a fault bit is set; FSYNR0, FAR, CBFRSYNRA; FSR written back (W1C). The NVIDIA pair
    /// (`nvidia_smmu_context_fault`: the line is shared by every bank) does the same for every bank of every
    /// instance, each on its own instance.
    public func contextFault(bank: Int) throws(Port.Failure) -> [ArmSMMUContextFault] {
        guard nvidia else {
            return try contextFault(instance: 0, bank: bank).map { [$0] } ?? []
        }
        var faults: [ArmSMMUContextFault] = []
        for instance in instances.indices {
            for idx in 0..<configuration.numContextBanks {
                if let f = try contextFault(instance: instance, bank: idx) { faults.append(f) }
            }
        }
        return faults
    }

    func contextFault(instance: Int, bank: Int) throws(Port.Failure) -> ArmSMMUContextFault? {
        let port = instances[instance]
        let fsr = try port.read32(cb(bank, ARM_SMMU.CB.FSR))
        guard fsr & ARM_SMMU.FSR.FAULT != 0 else { return nil }
        let fsynr0 = try port.read32(cb(bank, ARM_SMMU.CB.FSYNR0))
        let far = try port.read64(cb(bank, ARM_SMMU.CB.FAR))
        let cbfrsynra = try port.read32(gr1(ARM_SMMU.GR1.CBFRSYNRA(bank)))
        try port.write32(cb(bank, ARM_SMMU.CB.FSR), fsr)
        return ArmSMMUContextFault(instance: instance, bank: bank, fsr: fsr, fsynr0: fsynr0, far: far, cbfrsynra: cbfrsynra)
    }

    /// The global fault interrupt. Generic (`arm_smmu_global_fault`): sGFSR and sGFSYNR0-2 all read, nothing
    /// if sGFSR is 0, else sGFSR written back (W1C). The NVIDIA pair (`nvidia_smmu_global_fault`) reads each
    /// instance's sGFSR first and the syndromes only if it is set.
    public func globalFault() throws(Port.Failure) -> [ArmSMMUGlobalFault] {
        var faults: [ArmSMMUGlobalFault] = []
        for (instance, port) in instances.enumerated() {
            let gfsr = try port.read32(ARM_SMMU.GR0.sGFSR)
            if nvidia && gfsr == 0 { continue }
            let f = ArmSMMUGlobalFault(
                instance: instance, gfsr: gfsr, gfsynr0: try port.read32(ARM_SMMU.GR0.sGFSYNR0),
                gfsynr1: try port.read32(ARM_SMMU.GR0.sGFSYNR1), gfsynr2: try port.read32(ARM_SMMU.GR0.sGFSYNR2))
            guard gfsr != 0 else { continue }
            try port.write32(ARM_SMMU.GR0.sGFSR, gfsr)
            faults.append(f)
        }
        return faults
    }
}

/// Linux's `struct arm_smmu_smr`.
public struct ArmSMMUSMR: Hashable, Sendable {
    public var id: UInt16
    public var mask: UInt16
    public var valid: Bool
    public init(id: UInt16 = 0, mask: UInt16 = 0, valid: Bool = false) {
        self.id = id
        self.mask = mask
        self.valid = valid
    }
}

/// Linux's `struct arm_smmu_s2cr` (the fields the driver writes).
public struct ArmSMMUS2CR: Hashable, Sendable {
    public var type: ARM_SMMU.S2CR.TYPE
    public var cbndx: Int
    /// `enum arm_smmu_s2cr_privcfg`: Linux always uses `S2CR_PRIVCFG_DEFAULT` (0).
    public var privcfg: UInt32
    public init(type: ARM_SMMU.S2CR.TYPE, cbndx: Int = 0, privcfg: UInt32 = 0) {
        self.type = type
        self.cbndx = cbndx
        self.privcfg = privcfg
    }
}

/// What `arm_smmu_init_context_bank()` computes for a bank (Linux's `struct arm_smmu_cb` with its `cfg`), from
/// the io-pgtable configuration.
public struct ArmSMMUContextBank: Hashable, Sendable {
    public var cbar: ARM_SMMU.CBAR.TYPE
    /// `cfg->asid` for stage 1, `cfg->vmid` for stage 2: one union in Linux, so with VMID16 a stage-1 bank's
    /// CBA2R.VMID16 receives the ASID.
    public var asidOrVMID: UInt16
    public var tcr: UInt32, tcr2: UInt32
    public var ttbr0: UInt64, ttbr1: UInt64
    public var mair0: UInt32, mair1: UInt32

    /// Every type but S2_TRANS is stage 1 to `arm_smmu_write_context_bank()`.
    public var stage1: Bool { cbar != .S2_TRANS }

    /// A stage-1 domain (CBAR S1_TRANS_S2_BYPASS): TTBR0 = `pageTable` tagged with the ASID, TTBR1 = the ASID
    /// alone (TTBR1 walks disabled by TCR.EPD1), TCR2 = PASIZE `ips` | AS | SEP_UPSTREAM, io-pgtable's MAIR.
    /// `tcr` is `arm_smmu_lpae_tcr()` of the tables (with EPD1). Linux uses ASID = the bank index.
    public static func stage1(asid: UInt16, pageTable: UInt64, tcr: UInt32, ips: UInt32 = 5) -> ArmSMMUContextBank {
        ArmSMMUContextBank(
            cbar: .S1_TRANS_S2_BYPASS, asidOrVMID: asid, tcr: tcr,
            tcr2: ARM_SMMU.TCR2.PASIZE(ips) | ARM_SMMU.TCR2.SEP_UPSTREAM | ARM_SMMU.TCR2.AS,
            ttbr0: pageTable | ARM_SMMU.TTBRn_ASID(asid), ttbr1: ARM_SMMU.TTBRn_ASID(asid),
            mair0: ARM_SMMU.LPAE_MAIR0, mair1: 0)
    }

    /// A stage-2 domain (CBAR S2_TRANS): TTBR0 = the VTTBR, TCR = `arm_smmu_lpae_vtcr()`. Linux uses VMID =
    /// the bank index + 1.
    public static func stage2(vmid: UInt16, vttbr: UInt64, vtcr: UInt32) -> ArmSMMUContextBank {
        ArmSMMUContextBank(cbar: .S2_TRANS, asidOrVMID: vmid, tcr: vtcr, tcr2: 0, ttbr0: vttbr, ttbr1: 0,
                           mair0: 0, mair1: 0)
    }

    /// A nested domain: `arm_smmu_init_domain_context()` gives ARM_SMMU_DOMAIN_NESTED a stage-2 context bank
    /// (the stage 1 is the guest's business), so this is ``stage2(vmid:vttbr:vtcr:)``.
    public static func nested(vmid: UInt16, vttbr: UInt64, vtcr: UInt32) -> ArmSMMUContextBank {
        stage2(vmid: vmid, vttbr: vttbr, vtcr: vtcr)
    }
}

/// What a context fault handler read from one bank.
public struct ArmSMMUContextFault: Hashable, Sendable {
    public var instance: Int, bank: Int
    public var fsr: UInt32, fsynr0: UInt32
    public var far: UInt64
    public var cbfrsynra: UInt32
    /// `FSYNR0.WNR`: Linux reports `IOMMU_FAULT_WRITE`.
    public var isWrite: Bool { fsynr0 & ARM_SMMU.FSYNR0_WNR != 0 }
}

/// What a global fault handler read from one instance.
public struct ArmSMMUGlobalFault: Hashable, Sendable {
    public var instance: Int
    public var gfsr: UInt32, gfsynr0: UInt32, gfsynr1: UInt32, gfsynr2: UInt32
    /// "Blocked unknown Stream ID": sGFSR.USF, the stream in the low 16 bits of sGFSYNR1.
    public var unknownStream: UInt16? { gfsr & ARM_SMMU.sGFSR_USF != 0 ? UInt16(truncatingIfNeeded: gfsynr1) : nil }
}
