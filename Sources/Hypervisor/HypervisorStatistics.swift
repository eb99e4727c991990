import SMMUModel

/// Counters the hypervisor keeps; STATS and the daemon's STATUS= line read them.
public struct HypervisorStatistics: Sendable, Equatable {
    public var denialsByRule: [TrapRule: Int] = [:]
    public var faultsByKind: [DMAFault: Int] = [:]
    public var deferred = 0
    public var dmaTranslations = 0
    public var hostReads = 0
    public var hostWrites = 0

    public var denials: Int { denialsByRule.values.reduce(0, +) }
}
