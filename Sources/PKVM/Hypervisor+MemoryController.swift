import SMMUModel

/// The memory controller's stream-ID registers as the hypervisor holds them (Tegra186 and later).
///
/// The stream ID an MMU-500 sees for an MC client is whatever the client's override register says, so whoever
/// writes the MC re-points streams without touching an SMMU. The hypervisor owns the MC's `sid` and `broadcast`
/// windows as it owns the SMMUs: every host access traps here.
///
/// Ownership rule: a client belongs to whoever owns its own stream (`MemoryControllerClient.sid` on its SMMU), which
/// only the trusted configuration (hypervisor streams) and the hypercalls (VM_ASSIGN_STREAM, VM_DESTROY) change,
/// never the host. The host writes the registers of its own clients, each write checked so that every host client
/// routes only to a host stream; a VM's or the hypervisor's clients are programmed by the hypervisor alone
/// (their own stream, override on). One register file: what the host reads is what the MC does, except the
/// write-disable bit (security bit 16), which the host may set on its own clients but only in its view: the
/// hypervisor never locks itself out of a client it must re-point when the client's stream is assigned.
public final class HostedMemoryController {
    public let configuration: MemoryControllerConfiguration
    /// What the MC does (the physical registers).
    public let mc: MemoryController
    /// The logical SMMU of each client (an index into `Topology.smmus`).
    public let smmuOfClient: [Int]
    /// The host's write-disable bit per client (its view only).
    public internal(set) var hostLocked: [Bool]

    init(_ configuration: MemoryControllerConfiguration, topology: Topology) throws(HypervisorPolicy.Problem) {
        try Self.validate(configuration, topology: topology)
        self.configuration = configuration
        mc = MemoryController(configuration)
        smmuOfClient = configuration.clients.map { c in topology.smmus.firstIndex { $0.name == c.smmu }! }
        hostLocked = Array(repeating: false, count: configuration.clients.count)
    }

    /// What the type cannot say: clients name SMMUs of the topology, registers are distinct, aligned and inside
    /// the `sid` window, each client's own stream reaches an SMMU, and the MC windows overlap no SMMU window.
    static func validate(_ c: MemoryControllerConfiguration, topology: Topology) throws(HypervisorPolicy.Problem) {
        func fail(_ s: String) -> HypervisorPolicy.Problem { .invalidMemoryController(s) }
        typealias C = MemoryControllerConfiguration
        for w in c.windowBases {
            if w % C.windowSize != 0 { throw fail("window 0x\(String(w, radix: 16)) is not 64 KiB aligned") }
            if let smmu = topology.windows.first(where: { C.window(at: w, overlaps: $0.base, size: $0.size) }) {
                throw fail("window 0x\(String(w, radix: 16)) overlaps SMMU window \(smmu.name)")
            }
        }
        if C.window(at: c.sidBase, overlaps: c.broadcastBase, size: C.windowSize) {
            throw fail("the sid and broadcast windows overlap")
        }
        var offsets: Set<UInt32> = []
        var ids: Set<UInt16> = []
        var names: Set<String> = []
        for client in c.clients {
            guard topology.smmus.contains(where: { $0.name == client.smmu }) else {
                throw fail("client \(client.name): no SMMU named \"\(client.smmu)\" (have \(topology.smmus.map(\.name).joined(separator: ", ")))")
            }
            if client.sid == MemoryControllerConfiguration.passthroughSID {
                throw fail("client \(client.name): its own stream ID cannot be the passthrough ID 0x7f")
            }
            for o in [client.overrideOffset, client.securityOffset] {
                if o % 4 != 0 || UInt64(o) + 4 > MemoryControllerConfiguration.windowSize {
                    throw fail("client \(client.name): register offset 0x\(String(o, radix: 16)) is not an aligned offset in the 64 KiB window")
                }
                if !offsets.insert(o).inserted { throw fail("client \(client.name): register offset 0x\(String(o, radix: 16)) is used twice") }
            }
            if !ids.insert(client.id).inserted { throw fail("client \(client.name): client ID 0x\(String(client.id, radix: 16)) is used twice") }
            if !names.insert(client.name).inserted { throw fail("client name \(client.name) is used twice") }
        }
    }

    func reset() {
        mc.reset()
        hostLocked = Array(repeating: false, count: configuration.clients.count)
    }

    /// The client's own stream.
    func ownStream(_ n: Int) -> StreamID { StreamID(UInt16(configuration.clients[n].sid)) }

    /// What the host reads: the MC's registers, with its own write-disable bit in a security register.
    func hostView(_ register: MemoryControllerRegister) -> UInt32 {
        let value = mc.read(register)
        if case .security(let n) = register, hostLocked[n] { return value | MemoryController.Security.writeDisabled }
        return value
    }

    /// A register's name for the audit: "sdmmcrab.OVERRIDE", "sdmmcrab.SECURITY", "MC_SMMU_BYPASS_CONFIG".
    public func name(of register: MemoryControllerRegister) -> String {
        switch register {
        case .override(let n): configuration.clients[n].name + ".OVERRIDE"
        case .security(let n): configuration.clients[n].name + ".SECURITY"
        default: register.description
        }
    }

    /// The physical window address of a register (for DUMP and tests).
    public func address(of register: MemoryControllerRegister) -> UInt64? {
        switch register {
        case .override(let n): configuration.sidBase + UInt64(configuration.clients[n].overrideOffset)
        case .security(let n): configuration.sidBase + UInt64(configuration.clients[n].securityOffset)
        case .interruptStatus: configuration.broadcastBase + MemoryController.interruptStatusOffset
        case .interruptMask: configuration.broadcastBase + MemoryController.interruptMaskOffset
        case .bypassConfig: configuration.broadcastBase + MemoryController.Bypass.offset
        case .reserved: nil
        }
    }
}

/// Where an MC client's DMA went and what came of it.
public struct MemoryControllerDMAResult: Equatable {
    public enum Route: Sendable, Equatable {
        /// Translated by this instance (the logical SMMU's first) for this stream.
        case smmu(window: Int, stream: StreamID)
        /// Around every SMMU: the passthrough stream ID.
        case aroundSMMU
    }
    public var route: Route
    /// The physical address, or why not.
    public var result: Outcome<UInt64>
}

extension Hypervisor {
    /// Who owns MC client n: the owner of its own stream.
    func owner(ofMemoryClient n: Int, in mc: HostedMemoryController) -> Owner {
        ownership.owner(ofStream: mc.ownStream(n), smmu: mc.smmuOfClient[n])
    }

    // MARK: Host MMIO to the MC windows

    /// A host READ that fell in no SMMU window: the MC's, or BAD_ADDRESS.
    func memoryControllerRead(address: UInt64, width: AccessWidth, client: ClientIdentity) -> Outcome<UInt64> {
        guard let mc = memoryController, let (window, offset) = mc.mc.resolve(address: address, width: width) else {
            return .badAddress
        }
        statistics.memoryControllerReads += 1
        guard let register = mc.mc.decode(window: window, offset: offset, width: width) else { return .badAccess }
        return .ok(UInt64(mc.hostView(register)))
    }

    /// A host WRITE that fell in no SMMU window: checked against the ownership rule, then applied to the MC, or
    /// DENIED with nothing changed.
    func memoryControllerWrite(address: UInt64, value: UInt64, width: AccessWidth,
                               client: ClientIdentity) -> Outcome<Void> {
        guard let mc = memoryController, let (window, offset) = mc.mc.resolve(address: address, width: width) else {
            return .badAddress
        }
        statistics.memoryControllerWrites += 1
        guard let register = mc.mc.decode(window: window, offset: offset, width: width) else { return .badAccess }
        let raw = UInt32(truncatingIfNeeded: value)
        if let (rule, streams) = refusal(of: register, value: raw, in: mc) {
            return .denied(record(AuditEvent(rule: rule, client: client, window: "mc-\(window.rawValue)",
                                             register: mc.name(of: register), offset: offset, value: value,
                                             width: width.bytes, streams: streams)))
        }
        switch register {
        case .override(let n), .security(let n):
            // The host's write-disable bit is its view only; a client it locked ignores its later writes, as the
            // hardware would.
            guard !mc.hostLocked[n] else { return .ok(()) }
            if case .security = register {
                mc.hostLocked[n] = raw & MemoryController.Security.writeDisabled != 0
                mc.mc.store(register, raw & ~MemoryController.Security.writeDisabled)
            } else {
                mc.mc.store(register, raw)
            }
        case .interruptStatus, .interruptMask, .reserved, .bypassConfig:
            mc.mc.store(register, raw)
        }
        return .ok(())
    }

    /// The rule a host write to the MC breaks, with the streams concerned; nil when the write is safe.
    private func refusal(of register: MemoryControllerRegister, value: UInt32,
                         in mc: HostedMemoryController) -> (TrapRule, [UInt16])? {
        switch register {
        case .bypassConfig:
            return (.mcBypassConfig, [])
        case .interruptStatus, .interruptMask, .reserved:
            return nil
        case .override(let n):
            guard owner(ofMemoryClient: n, in: mc) == .host else { return (.mcForeignClient, [mc.ownStream(n).rawValue]) }
            // Checked whether or not the override is on now: turning it on later must not need a second look.
            return refusal(ofRouteTo: UInt8(truncatingIfNeeded: value & MemoryController.Override.mask), client: n, in: mc)
        case .security(let n):
            guard owner(ofMemoryClient: n, in: mc) == .host else { return (.mcForeignClient, [mc.ownStream(n).rawValue]) }
            // Override on: the override register's stream must be the host's. Off: the engine's own stream,
            // the client's, which is the host's (it owns the client).
            guard value & MemoryController.Security.override != 0 else { return nil }
            return refusal(ofRouteTo: UInt8(truncatingIfNeeded: mc.mc.read(.override(n))), client: n, in: mc)
        }
    }

    /// Whether a host client may carry this stream ID: a host stream of its SMMU, or the passthrough ID where the
    /// configuration makes it a host route.
    private func refusal(ofRouteTo sid: UInt8, client n: Int, in mc: HostedMemoryController) -> (TrapRule, [UInt16])? {
        switch mc.mc.route(of: sid) {
        case .aroundSMMU:
            return mc.configuration.passthroughIsHost ? nil : (.mcOverridePassthrough, [UInt16(sid)])
        case .stream(let s):
            return ownership.owner(ofStream: s, smmu: mc.smmuOfClient[n]) == .host ? nil : (.mcOverrideForeignStream, [s.rawValue])
        }
    }

    // MARK: Hypercalls

    /// VM_ASSIGN_STREAM's extra condition: no host client other than the stream's own routes to it now (its DMA
    /// would land in the VM's context). The host re-points such a client first.
    func memoryControllerBlocksAssignment(of stream: StreamID, smmu: Int) -> Bool {
        guard let mc = memoryController else { return false }
        for n in mc.configuration.clients.indices where mc.smmuOfClient[n] == smmu && mc.ownStream(n) != stream {
            if mc.mc.route(ofClient: n) == .stream(stream) { return true }
        }
        return false
    }

    /// After VM_ASSIGN_STREAM: the stream's own clients are the VM's now, and the hypervisor points them at it
    /// (override on, writes allowed), whatever the host had written. Returns how many.
    @discardableResult
    func takeMemoryClients(of stream: StreamID, smmu: Int) -> Int {
        guard let mc = memoryController else { return 0 }
        var taken = 0
        for n in mc.configuration.clients.indices where mc.smmuOfClient[n] == smmu && mc.ownStream(n) == stream {
            programClient(n, in: mc)
            taken += 1
        }
        return taken
    }

    /// The hypervisor's programming of a client it owns: its own stream, override on, writes allowed.
    private func programClient(_ n: Int, in mc: HostedMemoryController) {
        mc.hostLocked[n] = false
        mc.mc.store(.security(n), MemoryController.Security.override)
        mc.mc.store(.override(n), UInt32(mc.configuration.clients[n].sid))
    }

    /// How many MC clients carry one of these streams (the clients VM_DESTROY gives back with them).
    func memoryClientCount(of streams: [(smmu: Int, stream: StreamID)]) -> Int {
        guard let mc = memoryController else { return 0 }
        return mc.configuration.clients.indices.filter { n in
            streams.contains { $0.smmu == mc.smmuOfClient[n] && $0.stream == mc.ownStream(n) }
        }.count
    }

    /// At finalization: the MC as the boot firmware left it, and every hypervisor-owned client programmed.
    func takeOwnershipOfMemoryController() {
        guard let mc = memoryController else { return }
        mc.reset()
        for n in mc.configuration.clients.indices where owner(ofMemoryClient: n, in: mc) != .host { programClient(n, in: mc) }
    }

    // MARK: DMA on behalf of a client

    /// A DMA by MC client `id`: the stream its registers produce, translated by the first instance of its SMMU
    /// (the instances of a logical SMMU are programmed alike). The passthrough stream ID, where the bypass
    /// configuration routes it around the SMMUs, gives the raw address, held to the host's stage-2 (only a host
    /// client configured for passthrough can carry it; on silicon nothing would check it).
    public func memoryControllerDMA(client id: UInt32, iova: UInt64,
                                    access: DMAAccess) -> Result<MemoryControllerDMAResult, DMAInvalid> {
        guard let mc = memoryController else { return .failure(DMAInvalid(reason: "no memory controller")) }
        guard id <= UInt32(UInt16.max), let n = mc.configuration.client(id: UInt16(id)) else {
            return .failure(DMAInvalid(reason: "no memory client 0x\(String(id, radix: 16))"))
        }
        statistics.memoryControllerDMA += 1
        switch mc.mc.route(ofClient: n) {
        case .aroundSMMU:
            let owner = owner(ofMemoryClient: n, in: mc)
            let ok = ownership.permits(owner, address: iova, kind: .data(write: access.isWrite))
            statistics.countDMA(owner: owner, fault: ok ? nil : .ownership)
            return .success(.init(route: .aroundSMMU, result: ok ? .ok(iova) : .fault(.ownership)))
        case .stream(let s):
            let w = policy.topology.smmus[mc.smmuOfClient[n]].windows[0]
            return .success(.init(route: .smmu(window: w, stream: s), result: dma(window: w, stream: UInt32(s.rawValue), iova: iova, access: access)))
        }
    }

    // MARK: Invariants

    /// The MC's share of the invariants: every client routes to its owner's stream. A host client to a host stream
    /// (or around the SMMUs where the configuration allows the passthrough ID), a VM's or the hypervisor's client to
    /// its own stream with the override on; the MC never locks a client; the bypass configuration is the firmware's.
    public func memoryControllerViolations() -> [InvariantViolation] {
        guard let mc = memoryController, lifecycle != .notFinalized else { return [] }
        var out: [InvariantViolation] = []
        func fail(_ s: String) { out.append(InvariantViolation(window: "mc", what: s)) }
        if mc.mc.bypassConfig != MemoryController.Bypass.bootValue {
            fail("bypass configuration 0x\(String(mc.mc.bypassConfig, radix: 16)) is not the firmware's")
        }
        for (n, client) in mc.configuration.clients.enumerated() {
            let owner = owner(ofMemoryClient: n, in: mc)
            let route = mc.mc.route(ofClient: n)
            if mc.mc.securities[n] & MemoryController.Security.writeDisabled != 0 { fail("client \(client.name) is locked") }
            switch (owner, route) {
            case (.host, .aroundSMMU) where mc.configuration.passthroughIsHost: break
            case (.host, .stream(let s)) where ownership.owner(ofStream: s, smmu: mc.smmuOfClient[n]) == .host: break
            case (_, .stream(let s)) where owner != .host && s == mc.ownStream(n)
                && mc.mc.securities[n] & MemoryController.Security.override != 0: break
            default: fail("client \(client.name) of \(owner) routes to \(route)")
            }
        }
        return out
    }
}

/// A DMA request naming something that does not exist.
public struct DMAInvalid: Error, Sendable, Equatable {
    public var reason: String
}
