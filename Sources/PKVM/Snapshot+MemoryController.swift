import SMMUModel

extension HypervisorSnapshot {
    /// DUMP's view of the memory controller: its windows, the bypass configuration, and the clients that are not as
    /// the boot firmware left them or not the host's (at most `limit`, the rest counted). Already in DUMP's words
    /// (hex strings), unlike the rest of the snapshot: it is presentation-only, and nothing compares its parts.
    public struct MemoryControllerState: Encodable, Sendable, Equatable {
        public struct Client: Encodable, Sendable, Equatable {
            public var name: String
            public var id: String
            public var smmu: String
            public var sid: String
            public var owner: String
            public var override: String
            /// As the host reads it (its write-disable bit included).
            public var security: String
            /// Where its DMA goes now: "smmu:stream" or "around the SMMUs".
            public var route: String
        }
        public var sid_base: String
        public var broadcast_base: String
        public var bypass_config: String
        public var passthrough_is_host: Bool
        public var client_count: Int
        public var clients: [Client]
        public var clients_omitted: Int
    }
}

extension Hypervisor {
    func memoryControllerSnapshot(limit: Int = 128) -> HypervisorSnapshot.MemoryControllerState? {
        guard let mc = memoryController else { return nil }
        let hex = { (v: UInt64) in "0x" + String(v, radix: 16) }
        var clients: [HypervisorSnapshot.MemoryControllerState.Client] = []
        var omitted = 0
        for (n, c) in mc.configuration.clients.enumerated() {
            let owner = owner(ofMemoryClient: n, in: mc)
            let security = mc.hostView(.security(n))
            let override = mc.mc.read(.override(n))
            guard owner != .host || override != UInt32(c.sid) || security != MemoryController.Security.override else { continue }
            guard clients.count < limit else { omitted += 1; continue }
            let route: String
            switch mc.mc.route(ofClient: n) {
            case .aroundSMMU: route = "around the SMMUs"
            case .stream(let s): route = "\(c.smmu):\(s)"
            }
            clients.append(.init(name: c.name, id: hex(UInt64(c.id)), smmu: c.smmu, sid: hex(UInt64(c.sid)),
                                 owner: owner.description, override: hex(UInt64(override)), security: hex(UInt64(security)),
                                 route: route))
        }
        return .init(sid_base: hex(mc.configuration.sidBase), broadcast_base: hex(mc.configuration.broadcastBase),
                     bypass_config: hex(UInt64(mc.mc.bypassConfig)), passthrough_is_host: mc.configuration.passthroughIsHost,
                     client_count: mc.configuration.clients.count, clients: clients, clients_omitted: omitted)
    }
}
