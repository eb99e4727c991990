import SMMUModel

/// One MMU-500 instance as the hypervisor holds it: the physical hardware it programs, and the
/// virtual register file the host reads and writes (the same register table, with synthesized IDs).
///
/// Index mapping is the identity for what the host sees: host context bank n is physical bank n and
/// host SMR n is physical SMR n. The hypervisor keeps the highest indices for itself. The instance decides
/// the host's accesses itself (`HostedInstance+Trap.swift`), against the hypervisor's `ownership`.
final class HostedInstance {
    let index: Int
    let window: Window
    /// Index of the logical SMMU (stream-ID namespace) this instance belongs to.
    let smmu: Int
    let physical: MMU500
    let virtual: MMU500
    /// Who owns each stream: what the host's SMRs may match (G2).
    let ownership: Ownership
    /// Context banks [0, hostContextBanks) are the host's; the rest are the hypervisor's.
    let hostContextBanks: Int
    /// SMR/S2CR pairs [0, hostSMRs) are the host's; the rest are the hypervisor's.
    let hostSMRs: Int
    /// What the hypervisor programmed into each reserved SMR slot (nil: free).
    var reservedSMRUse: [Int: ReservedSMRUse] = [:]
    /// Which VM each reserved context bank serves.
    var reservedContextBankUse: [Int: VMHandle] = [:]

    struct ReservedSMRUse: Equatable {
        var stream: StreamID
        var owner: Owner
    }

    init(index: Int, window: Window, policy: HypervisorPolicy, memory: PhysicalMemory, ownership: Ownership) {
        self.index = index
        self.ownership = ownership
        self.window = window
        self.smmu = window.logicalSMMU
        let c = window.configuration
        hostContextBanks = c.numContextBanks - policy.reservedContextBanks
        hostSMRs = c.numStreamMatchGroups - policy.reservedSMRs
        physical = MMU500(configuration: c, memory: memory,
                          filter: OwnerStage2Filter(ownership: ownership, smmu: window.logicalSMMU))
        virtual = MMU500(configuration: Self.hostView(of: c, policy: policy), memory: memory, filter: nil)
    }

    /// The ID registers the host sees: fewer context banks and SMRs (the reservations), and nothing
    /// the hypervisor will not honour: no ATOS (ATOSNS set), no extended stream IDs, no 16-bit VMIDs
    /// (the hypervisor assigns VMIDs).
    static func hostView(of c: MMU500Configuration, policy: HypervisorPolicy) -> MMU500Configuration {
        let numSMRG = UInt32(c.numStreamMatchGroups - policy.reservedSMRs)
        let numCB = UInt32(c.numContextBanks - policy.reservedContextBanks)
        let idr0 = c.idr0 & ~(IDR0.numSMRG | IDR0.exids) | numSMRG | IDR0.atosns
        let idr1 = c.idr1 & ~(IDR1.numCB | IDR1.numS2CB) | numCB
            | min(UInt32(c.numS2ContextBanks), numCB) << IDR1.numS2CBShift
        let idr2 = c.idr2 & ~IDR2.vmid16
        return MMU500Configuration(idr0: idr0, idr1: idr1, idr2: idr2, idr7: c.idr7)
    }

    /// The physical VMID of context bank n: unique per bank, so host and VMs never share one.
    func vmid(ofContextBank n: Int) -> UInt8 { UInt8(truncatingIfNeeded: n + 1) }

    var reservedContextBanks: Range<Int> { hostContextBanks..<window.configuration.numContextBanks }
    var reservedSMRs: Range<Int> { hostSMRs..<window.configuration.numStreamMatchGroups }

    var idMask: UInt16 { window.configuration.streamIDMask }

    /// Programs one physical register with a register write (writable masks, W1C and side effects all apply).
    func program(_ name: RegisterName, index: Int = 0, _ value: UInt64, width: AccessWidth = .word) {
        physical.write(RegisterLocation(name: name, index: index), value: value, width: width)
    }
}
