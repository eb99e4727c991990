import SMMUModel

extension Hypervisor {
    /// Puts the hypervisor back as `init` left it, without building the SMMU models again: not
    /// finalized, both register files of every instance at reset with empty TLBs, no VMs (each live one
    /// torn down as VM_DESTROY does, which gives its pages and streams back to the host), no
    /// reservations in use, the hypervisor's page allocator full, RAM zeroed, counters at zero.
    ///
    /// For fuzzers, where one hypervisor serves many inputs that must stay independent. Client memory
    /// (MEM_MAP) must have been unmapped first (its connection closed): returns false, and changes
    /// nothing, while any is still mapped. The audit sink is the caller's.
    @discardableResult
    public func resetToInitialState() -> Bool {
        guard memory.replacedRanges.isEmpty else { return false }
        let client = ClientIdentity(name: "reset")
        for vm in vms.keys.sorted(by: { $0.rawValue < $1.rawValue }) { _ = vmDestroy(vm, client: client) }
        lifecycleMachine = Lifecycle()
        pages = HypervisorPages(range: policy.hypervisorRAM)
        vms = [:]
        nextVM = 1
        statistics = HypervisorStatistics()
        for instance in instances {
            instance.physical.reset()
            instance.virtual.reset()
            instance.reservedSMRUse = [:]
            instance.reservedContextBankUse = [:]
        }
        memoryController?.reset()
        for r in memory.ramRegions { _ = memory.zero(at: r.base, count: Int(r.size)) }
        return true
    }
}
