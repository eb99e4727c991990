import PKVM
import SMMUModel
import WireProtocol

/// What the daemon serves: the hypervisor a configuration describes, over its memory, and the dispatcher that
/// answers requests for it, with denials going to the journal. Lives on the server queue. Built by `make`, the
/// one place a configuration becomes a running hypervisor.
public struct DaemonCore {
    public let hypervisor: Hypervisor
    public let dispatcher: Dispatcher

    /// Why a configuration that decoded and validated still cannot be built.
    public enum BuildError: Error, CustomStringConvertible {
        case unknownSMMU(name: String, topology: DaemonConfiguration.TopologyPreset, have: [String])
        case memory(MemoryMap.MemoryMapError)
        case policy(HypervisorPolicy.Problem)

        public var description: String {
            switch self {
            case .unknownSMMU(let name, let topology, let have):
                "hypervisor.hypervisor_streams: no SMMU named \"\(name)\" in topology \(topology.rawValue) (have \(have.joined(separator: ", ")))"
            case .memory(let e): "memory: \(e)"
            case .policy(let p): "hypervisor: \(p)"
            }
        }
    }

    /// The hypervisor at reset, its memory (host RAM and hypervisor RAM, zeroed and lazily allocated) and the
    /// dispatcher that serves it. STATS reads the sink's counters through the dispatcher.
    /// `ramFiles`: back RAM with these files (restart mode's `RAMFiles`, one per region) instead of anonymous memory.
    public static func make(_ c: DaemonConfiguration, audit: JournalAuditSink,
                            ramFiles: [Int32]? = nil) throws(BuildError) -> DaemonCore {
        let policy = try policy(c)
        let memory = try memory(policy, files: ramFiles)
        let hypervisor: Hypervisor
        do {
            hypervisor = try Hypervisor(policy: policy, memory: memory, audit: JournalAuditAdapter(sink: audit))
        } catch {
            throw .policy(error)
        }
        return DaemonCore(hypervisor: hypervisor, configuration: c, audit: audit)
    }

    /// What `make` builds, in the state a hypervisor image recorded (docs/state-image.md): the restart path's
    /// counterpart of `make`, over the same configuration. `sharedMemory` and `epochFloor` are
    /// `Hypervisor.restore`'s; the daemon layer's image is applied to the returned dispatcher afterwards.
    /// `ramFiles`: the RAM files the image's process used, holding RAM as it was (for an image without RAM).
    public static func restore(
        _ c: DaemonConfiguration, audit: JournalAuditSink, image: HypervisorStateImage, epochFloor: UInt64 = 0,
        ramFiles: [Int32]? = nil,
        sharedMemory: (HypervisorStateImage.SharedMappingImage) throws(StateImageError) -> SharedMemoryAttachment
    ) throws(StateImageError) -> DaemonCore {
        let policy: HypervisorPolicy
        let memory: MemoryMap
        do {
            policy = try Self.policy(c)
            memory = try Self.memory(policy, files: ramFiles)
        } catch {
            throw .configurationMismatch(reason: "the configuration cannot be built: \(error)")
        }
        let hypervisor = try Hypervisor.restore(policy: policy, memory: memory, audit: JournalAuditAdapter(sink: audit),
                                                image: image, epochFloor: epochFloor, sharedMemory: sharedMemory)
        return DaemonCore(hypervisor: hypervisor, configuration: c, audit: audit)
    }

    private init(hypervisor: Hypervisor, configuration c: DaemonConfiguration, audit: JournalAuditSink) {
        self.hypervisor = hypervisor
        dispatcher = Dispatcher(hypervisor: hypervisor, roles: c.roles)
        dispatcher.auditCounters = { [audit] in audit.counters.statisticsObject }
    }

    /// Host RAM and hypervisor RAM, zeroed and lazily allocated; or, with `files` (one per region, in this order),
    /// the files' contents mapped shared.
    static func memory(_ policy: HypervisorPolicy, files: [Int32]? = nil) throws(BuildError) -> MemoryMap {
        let memory = MemoryMap()
        do {
            for (i, r) in (policy.hostRAM + [policy.hypervisorRAM]).enumerated() {
                if let files {
                    try memory.addRegion(base: r.base, size: r.size, file: files[i])
                } else {
                    try memory.addRegion(base: r.base, size: r.size)
                }
            }
        } catch {
            throw .memory(error)
        }
        return memory
    }

    /// What the configuration tells the hypervisor.
    public static func policy(_ c: DaemonConfiguration) throws(BuildError) -> HypervisorPolicy {
        var topology = c.topology.topology
        topology.memoryController = c.memoryControllerConfiguration(default: topology.memoryController)
        var streams: [Int: [StreamID]] = [:]
        for entry in c.hypervisor.hypervisorStreams {
            guard let i = topology.smmus.firstIndex(where: { $0.name == entry.smmu }) else {
                throw .unknownSMMU(name: entry.smmu, topology: c.topology, have: topology.smmus.map(\.name))
            }
            streams[i, default: []] += entry.streams.map { StreamID($0) }
        }
        let range = { (r: DaemonConfiguration.MemoryRange) in PhysicalRange(base: r.base, size: r.size) }
        return HypervisorPolicy(
            topology: topology,
            hostRAM: c.memory.hostRAM.map(range),
            hypervisorRAM: range(c.memory.hypervisorRAM),
            hostDMARanges: c.memory.hostDMARanges.map(range),
            reservedContextBanks: c.hypervisor.reservedContextBanks,
            reservedSMRs: c.hypervisor.reservedSMRs,
            hypervisorStreams: streams,
            hostFinalizes: c.finalization.mode == .host)
    }
}

extension DaemonConfiguration.TopologyPreset {
    /// The machine each preset names.
    public var topology: Topology {
        switch self {
        case .tegra234: .tegra234
        case .generic4k: .generic4K(base: 0x2B40_0000)
        case .qemuVirt: .qemuVirt
        }
    }
}

extension JournalAuditSink.Counters {
    /// STATS' "audit" object.
    public var statisticsObject: [String: Int] {
        ["denials": Int(denials), "written": Int(written), "coalesced": Int(coalesced), "summaries": Int(summaries),
         "stderr_fallback": Int(stderrFallback), "lost": Int(lost), "awaiting_summary": Int(awaitingSummary)]
    }
}

/// Maps the hypervisor's audit events to journal records (one per denial, G7), with the daemon's MESSAGE_IDs.
final class JournalAuditAdapter: AuditSink {
    let sink: JournalAuditSink
    init(sink: JournalAuditSink) { self.sink = sink }

    func record(_ event: AuditEvent) {
        sink.record(AuditRecord(
            rule: event.rule.rawValue, messageID: AuditMessageIDs.id(of: event.rule), message: event.rule.summary,
            client: event.client.name, pid: event.client.pid, uid: event.client.uid,
            window: event.window ?? "", register: event.register ?? "", offset: event.offset,
            value: event.value, width: event.width, streams: event.streams))
    }
}
