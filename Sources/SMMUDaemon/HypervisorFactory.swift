import Hypervisor
import SMMUModel
import WireProtocol

/// Builds the hypervisor and the request dispatcher a configuration describes.
public enum HypervisorFactory {
    public struct Problem: Error, CustomStringConvertible {
        public var description: String
    }

    public static func topology(_ t: DaemonConfiguration.Topology) -> Topology {
        switch t {
        case .tegra234: .tegra234
        case .generic4k: .generic4K(base: 0x2B40_0000)
        case .qemuVirt: .qemuVirt
        }
    }

    public static func policy(_ c: DaemonConfiguration) throws(Problem) -> HypervisorPolicy {
        var topology = topology(c.topology)
        topology.memoryController = c.memoryControllerConfiguration(default: topology.memoryController)
        var streams: [Int: [StreamID]] = [:]
        for entry in c.hypervisor.hypervisorStreams {
            guard let i = topology.smmus.firstIndex(where: { $0.name == entry.smmu }) else {
                throw Problem(description: "hypervisor.hypervisor_streams: no SMMU named \"\(entry.smmu)\" in topology \(c.topology.rawValue) (have \(topology.smmus.map(\.name).joined(separator: ", ")))")
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
            manualFinalization: c.finalization.mode == .manual)
    }

    /// The hypervisor at reset, its memory (host RAM and hypervisor RAM, zeroed and lazily
    /// allocated) and the dispatcher that serves it.
    public static func make(_ c: DaemonConfiguration, audit: AuditSink) throws(Problem) -> Dispatcher {
        let policy = try policy(c)
        let memory = MemoryMap()
        do {
            for r in policy.hostRAM + [policy.hypervisorRAM] { try memory.addRegion(base: r.base, size: r.size) }
        } catch {
            throw Problem(description: "memory: \(error)")
        }
        let hypervisor: Hypervisor
        do {
            hypervisor = try Hypervisor(policy: policy, memory: memory, audit: audit)
        } catch {
            throw Problem(description: "hypervisor: \(error)")
        }
        let allow = { (a: DaemonConfiguration.RoleAllowList) in (Set(a.uids), Set(a.gids)) }
        let (hu, hg) = allow(c.roles.host), (du, dg) = allow(c.roles.device), (au, ag) = allow(c.roles.admin)
        return Dispatcher(hypervisor: hypervisor,
                          roles: RoleAllowList(uids: [.host: hu, .device: du, .admin: au],
                                               gids: [.host: hg, .device: dg, .admin: ag]))
    }
}
