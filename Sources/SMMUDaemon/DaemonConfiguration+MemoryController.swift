import SMMUModel

// The `memory_controller` section: the Tegra memory controller's stream-ID windows and client table.
//
//   memory_controller:
//     enabled: true                  # false: no MC is modelled
//     sid_base: 0x02c00000           # the `sid` window (64 KiB)
//     broadcast_base: 0x02c10000     # the `broadcast` window (64 KiB; MC_SMMU_BYPASS_CONFIG at 0x1820)
//     passthrough_is_host: false     # may the host write the passthrough stream ID 0x7f (around the SMMUs)?
//     clients:                       # omitted: the topology's table (tegra234: Linux's tegra234_mc_clients[])
//       - { name: sdmmcrab, id: 0x63, smmu: niso1, sid: 0x02, override: 0x318 }   # security: override + 4
//
// Every key is optional where the topology has an MC (tegra234); elsewhere enabling one needs both bases and clients.

extension DaemonConfiguration {
    public struct MemoryController: Sendable, Equatable {
        public struct Client: Sendable, Equatable {
            public var name: String
            public var id: UInt64
            public var smmu: String
            public var sid: UInt64
            public var override: UInt64
            public var security: UInt64?
        }
        public var enabled: Bool
        public var sidBase: UInt64?
        public var broadcastBase: UInt64?
        public var passthroughIsHost: Bool
        public var clients: [Client]?
    }

    /// The topology's memory controller as this configuration has it (nil: none), for the hypervisor's policy.
    /// Call after `validate()`.
    public func memoryControllerConfiguration(default preset: MemoryControllerConfiguration?) -> MemoryControllerConfiguration? {
        guard let section = memoryController else { return preset }
        guard section.enabled else { return nil }
        let clients = section.clients.map { list in
            list.map { MemoryControllerClient(name: $0.name, id: UInt16($0.id), smmu: $0.smmu, sid: UInt8($0.sid),
                                              override: UInt32($0.override), security: $0.security.map { UInt32($0) }) }
        } ?? preset?.clients ?? []
        return MemoryControllerConfiguration(
            sidBase: section.sidBase ?? preset?.sidBase ?? 0, broadcastBase: section.broadcastBase ?? preset?.broadcastBase ?? 0,
            clients: clients, passthroughIsHost: section.passthroughIsHost)
    }

    /// Checks the section, naming the key: what must be there, value ranges, distinct names, IDs and offsets, SMMU
    /// names of the topology, windows clear of the SMMUs and of RAM.
    func validateMemoryController(topology: SMMUModel.Topology) throws(ConfigurationError) {
        guard let section = memoryController, section.enabled else { return }
        let preset = topology.memoryController
        let key = "memory_controller"
        if section.sidBase == nil && preset == nil { throw .invalid(key: key + ".sid_base", reason: "is required for topology \(self.topology.rawValue)") }
        if section.broadcastBase == nil && preset == nil { throw .invalid(key: key + ".broadcast_base", reason: "is required for topology \(self.topology.rawValue)") }
        if section.clients == nil && preset == nil { throw .invalid(key: key + ".clients", reason: "is required for topology \(self.topology.rawValue)") }
        guard let c = memoryControllerConfiguration(default: preset) else { return }
        typealias C = MemoryControllerConfiguration
        for (name, w) in zip(["sid_base", "broadcast_base"], c.windowBases) {
            if w % C.windowSize != 0 || w > 1 << 48 {
                throw .invalid(key: "\(key).\(name)", reason: "must be a multiple of 0x10000 below 2^48")
            }
            if let smmu = topology.windows.first(where: { C.window(at: w, overlaps: $0.base, size: $0.size) }) {
                throw .invalid(key: "\(key).\(name)", reason: "overlaps SMMU window \(smmu.name)")
            }
            for r in memory.hostRAM + [memory.hypervisorRAM] + memory.hostDMARanges where C.window(at: w, overlaps: r.base, size: r.size) {
                throw .invalid(key: "\(key).\(name)", reason: "overlaps memory at 0x\(String(r.base, radix: 16))")
            }
        }
        if C.window(at: c.sidBase, overlaps: c.broadcastBase, size: C.windowSize) {
            throw .invalid(key: key + ".broadcast_base", reason: "overlaps the sid window")
        }
        var seen: (names: Set<String>, ids: Set<UInt64>, offsets: Set<UInt64>) = ([], [], [])
        for (i, client) in (section.clients ?? []).enumerated() {
            let k = "\(key).clients[\(i)]"
            if client.name.isEmpty || !seen.names.insert(client.name).inserted { throw .invalid(key: k + ".name", reason: "must be a non-empty name no other client has") }
            if client.id > 0xFFFF || !seen.ids.insert(client.id).inserted { throw .invalid(key: k + ".id", reason: "must be a client ID up to 0xffff no other client has") }
            if !topology.smmus.contains(where: { $0.name == client.smmu }) {
                throw .invalid(key: k + ".smmu", reason: "no SMMU named \"\(client.smmu)\" (have \(topology.smmus.map(\.name).joined(separator: ", ")))")
            }
            if client.sid > 0xFF || client.sid == UInt64(MemoryControllerConfiguration.passthroughSID) {
                throw .invalid(key: k + ".sid", reason: "must be a stream ID up to 0xff other than the passthrough ID 0x7f")
            }
            for (name, o) in [("override", client.override), ("security", client.security ?? client.override + 4)] {
                if o % 4 != 0 || o + 4 > MemoryControllerConfiguration.windowSize || !seen.offsets.insert(o).inserted {
                    throw .invalid(key: "\(k).\(name)", reason: "must be a 4-byte aligned offset in the 64 KiB sid window that no other register has")
                }
            }
        }
    }
}

extension DaemonConfiguration.MemoryController: Decodable {
    enum Keys: String, CodingKey, CaseIterable { case enabled, sid_base, broadcast_base, passthrough_is_host, clients }

    public init(from decoder: any Decoder) throws {
        try decoder.rejectUnknownKeys(Keys.self)
        let c = try decoder.container(keyedBy: Keys.self)
        enabled = try c.decodeIfPresent(Bool.self, forKey: .enabled) ?? true
        sidBase = try c.decodeIfPresent(UInt64.self, forKey: .sid_base)
        broadcastBase = try c.decodeIfPresent(UInt64.self, forKey: .broadcast_base)
        passthroughIsHost = try c.decodeIfPresent(Bool.self, forKey: .passthrough_is_host) ?? false
        clients = try c.decodeIfPresent([Client].self, forKey: .clients)
    }
}

extension DaemonConfiguration.MemoryController.Client: Decodable {
    enum Keys: String, CodingKey, CaseIterable { case name, id, smmu, sid, override, security }

    public init(from decoder: any Decoder) throws {
        try decoder.rejectUnknownKeys(Keys.self)
        let c = try decoder.container(keyedBy: Keys.self)
        name = try c.decode(String.self, forKey: .name)
        id = try c.decode(UInt64.self, forKey: .id)
        smmu = try c.decode(String.self, forKey: .smmu)
        sid = try c.decode(UInt64.self, forKey: .sid)
        override = try c.decode(UInt64.self, forKey: .override)
        security = try c.decodeIfPresent(UInt64.self, forKey: .security)
    }
}
