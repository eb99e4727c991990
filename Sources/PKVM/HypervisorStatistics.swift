import SMMUModel

/// Counters the hypervisor keeps; STATS and the daemon's STATUS= line read them.
///
/// DMA counters are kept per owner of the stream, because STATS shows a host only what is its own: the
/// translations and faults of a protected VM's streams (or the hypervisor's) would tell it what the VM's
/// devices are doing.
public struct HypervisorStatistics: Sendable, Equatable {
    /// Translations and faults of the streams of one kind of owner.
    public struct DMACounters: Sendable, Equatable {
        public var translations = 0
        public var faultsByKind: [DMAFault: Int] = [:]
    }

    public var denialsByRule: [TrapRule: Int] = [:]
    public var deferred = 0
    /// DMA by host streams.
    public var hostDMA = DMACounters()
    /// DMA by streams the host does not own: protected VMs' and the hypervisor's.
    public var foreignDMA = DMACounters()
    public var hostReads = 0
    public var hostWrites = 0
    /// Host accesses to the memory controller's windows, and DMAs issued by MC client (MC_DMA).
    public var memoryControllerReads = 0
    public var memoryControllerWrites = 0
    public var memoryControllerDMA = 0

    public var denials: Int { denialsByRule.values.reduce(0, +) }
    /// Every translation, whoever owns the stream (the admin's view).
    public var dmaTranslations: Int { hostDMA.translations + foreignDMA.translations }
    /// Every fault, whoever owns the stream (the admin's view).
    public var faultsByKind: [DMAFault: Int] { hostDMA.faultsByKind.merging(foreignDMA.faultsByKind, uniquingKeysWith: +) }

    /// One translation by a stream of `owner`, with its fault if it faulted.
    mutating func countDMA(owner: Owner, fault: DMAFault?) {
        if owner == .host { Self.count(&hostDMA, fault) } else { Self.count(&foreignDMA, fault) }
    }

    private static func count(_ counters: inout DMACounters, _ fault: DMAFault?) {
        counters.translations += 1
        if let fault { counters.faultsByKind[fault, default: 0] += 1 }
    }
}
