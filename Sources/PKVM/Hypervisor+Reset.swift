import SMMUModel

extension Hypervisor {
    /// The hypervisor's state at one moment, with no VM and no client memory: what `restore` puts back. RAM is not
    /// in it: it goes back to zeros, as built.
    ///
    /// For fuzzers, where one hypervisor serves many inputs that must stay independent: each input starts from a
    /// copy (built, or built and finalized) instead of building the SMMU models again and redoing finalization.
    public struct Checkpoint {
        fileprivate let lifecycle: Lifecycle
        fileprivate let pages: HypervisorPages
        fileprivate let nextVM: UInt32
        fileprivate let statistics: HypervisorStatistics
        fileprivate let ownership: Ownership.State
        fileprivate let instances: [InstanceState]
        fileprivate let memoryController: (registers: MemoryController.Registers, hostLocked: [Bool])?
    }

    fileprivate struct InstanceState {
        let physical: [UInt64]
        let virtual: [UInt64]
        let reservedSMRUse: [Int: HostedInstance.ReservedSMRUse]
        let reservedContextBankUse: [Int: VMHandle]
    }

    /// The state now; nil while a VM or client memory (MEM_MAP) exists: they hold pages, streams and files a copy
    /// could not give back.
    public func checkpoint() -> Checkpoint? {
        guard vms.isEmpty, sharedMappings.isEmpty else { return nil }
        return Checkpoint(
            lifecycle: lifecycleMachine, pages: pages, nextVM: nextVM, statistics: statistics, ownership: ownership.state,
            instances: instances.map {
                InstanceState(physical: $0.physical.registerImage, virtual: $0.virtual.registerImage,
                              reservedSMRUse: $0.reservedSMRUse, reservedContextBankUse: $0.reservedContextBankUse)
            },
            memoryController: memoryController.map { ($0.mc.registers, $0.hostLocked) })
    }

    /// Puts the hypervisor back as it was at `checkpoint` (taken of this hypervisor): lifecycle, ownership, both
    /// register files of every instance with empty TLBs, reservations, the memory controller, the page allocator,
    /// counters; no VMs; RAM zeroed. Client memory must have been unmapped first (its connection closed): returns
    /// false, and changes nothing, while any is still mapped. The audit sink is the caller's.
    @discardableResult
    public func restore(_ checkpoint: Checkpoint) -> Bool {
        guard memory.replacedRanges.isEmpty, sharedMappings.isEmpty else { return false }
        lifecycleMachine = checkpoint.lifecycle
        pages = checkpoint.pages
        vms = [:]
        nextVM = checkpoint.nextVM
        statistics = checkpoint.statistics
        ownership.state = checkpoint.ownership
        for (instance, saved) in zip(instances, checkpoint.instances) {
            instance.physical.reset(to: saved.physical)
            instance.virtual.reset(to: saved.virtual)
            instance.reservedSMRUse = saved.reservedSMRUse
            instance.reservedContextBankUse = saved.reservedContextBankUse
        }
        if let mc = memoryController, let saved = checkpoint.memoryController {
            mc.mc.restore(saved.registers)
            mc.hostLocked = saved.hostLocked
        }
        memory.zeroWrittenPages()
        return true
    }
}
