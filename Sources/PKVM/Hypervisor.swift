import SMMUModel

/// The EL2 hypervisor of a pKVM machine together with the SMMUs it owns (layers 2 and 3).
///
/// Pure and single-threaded: the daemon owns one instance on one serial queue. Every entry point
/// returns what happened; audit events go to the sink as they occur (one per denial, G7).
public final class Hypervisor {
    public let policy: HypervisorPolicy
    public let memory: MemoryMap
    public let ownership: Ownership
    let bus: Bus
    let instances: [HostedInstance]
    let audit: AuditSink
    /// The memory controller's stream-ID registers, when the topology has one (Hypervisor+MemoryController.swift).
    public let memoryController: HostedMemoryController?
    var lifecycleMachine = Lifecycle()
    var pages: HypervisorPages
    var vms: [VMHandle: VirtualMachine] = [:]
    var nextVM: UInt32 = 1
    /// Client memory backing host pages (MEM_MAP), one entry per mapping.
    var sharedMappings: [SharedMapping] = []
    public internal(set) var statistics = HypervisorStatistics()
    /// Advances before any change that could alter a DMA translation takes effect (protocol v1.1's DMA_EPOCH):
    /// the physical SMMUs' relevant writes and resets, and every ownership change.
    public let translationEpoch = TranslationEpoch()
    /// `configuration`'s last value and the RAM regions it was computed for (it is a few dozen formatted lines,
    /// which every state image carries and every restore compares).
    var fingerprintCache: (regions: [PhysicalRange], fingerprint: ConfigurationFingerprint)?

    /// Builds the SMMUs at reset. The host may talk to them at once, and gets DEFERRED until `finalize`.
    public init(policy: HypervisorPolicy, memory: MemoryMap, audit: AuditSink) throws(HypervisorPolicy.Problem) {
        try policy.validate()
        self.policy = policy
        self.memory = memory
        self.audit = audit
        ownership = Ownership(policy: policy)
        bus = Bus(policy.topology)
        pages = HypervisorPages(range: policy.hypervisorRAM)
        var built: [HostedInstance] = []
        for (i, window) in policy.topology.windows.enumerated() {
            built.append(HostedInstance(index: i, window: window, policy: policy, memory: memory, ownership: ownership))
        }
        instances = built
        memoryController = try policy.topology.memoryController.map { c throws(HypervisorPolicy.Problem) in
            try HostedMemoryController(c, topology: policy.topology)
        }
        for (i, instance) in built.enumerated() {
            instance.physical.epoch = translationEpoch
            instance.physical.windowIndex = i
        }
        ownership.epoch = translationEpoch
        for (smmu, streams) in policy.hypervisorStreams {
            let needed = streams.count
            for w in policy.topology.smmus[smmu].windows where needed > instances[w].reservedSMRs.count {
                throw .reservationTooLarge(window: instances[w].window.name, what: "SMRs for hypervisor streams",
                                           reserved: instances[w].reservedSMRs.count, implemented: needed)
            }
        }
    }

    public var lifecycle: LifecycleState { lifecycleMachine.state }

    /// What HELLO reports per window: the host's view after the reservations.
    public struct WindowInfo: Sendable, Equatable {
        public var name: String
        public var base: UInt64
        public var size: UInt64
        public var pageSize: UInt32
        public var contextBanks: UInt16
        public var streamMatchGroups: UInt16
        public var smmu: String
    }

    public var windows: [WindowInfo] {
        instances.map {
            WindowInfo(name: $0.window.name, base: $0.window.base, size: $0.window.size,
                       pageSize: UInt32($0.window.configuration.pageSize),
                       contextBanks: UInt16($0.hostContextBanks), streamMatchGroups: UInt16($0.hostSMRs),
                       smmu: policy.topology.smmus[$0.smmu].name)
        }
    }

    // MARK: Lifecycle

    /// pKVM finalization: take the SMMUs and put them in the safe state, then trap every host access.
    /// Returns false when the hypervisor is already stopping.
    @discardableResult
    public func finalize() -> Bool {
        switch lifecycleMachine.finalize() {
        case .nothing: return true
        case .refuse: return false
        case .takeOwnership:
            takeOwnershipOfEverything()
            return true
        }
    }

    /// The host's own finalization (PROT_FINALIZE): what pKVM's `finalize_pkvm()` does on the machine, where it
    /// donates the SMMUs' MMIO to EL2. Once, before finalization, where the policy grants it; else DENIED and
    /// audited. `.invalid` when stopping.
    public func hostFinalize(client: ClientIdentity) -> Outcome<Void> {
        switch lifecycleMachine.hostFinalize(permitted: policy.hostFinalizes) {
        case .takeOwnership:
            takeOwnershipOfEverything()
            return .ok(())
        case .refuse(let rule):
            return .denied(record(AuditEvent(rule: rule, client: client, window: nil, register: "PROT_FINALIZE",
                                             offset: 0, value: UInt64(lifecycle.rawValue), width: 0)))
        case .stopping:
            return .invalid("the hypervisor is stopping")
        }
    }

    private func takeOwnershipOfEverything() {
        for instance in instances { takeOwnership(of: instance) }
        takeOwnershipOfMemoryController()
    }

    /// The safe state: the host's view starts at reset with translation on and unmatched streams
    /// faulting (CLIENTPD 0, USFCFG 1); stale faults are cleared; every hypervisor stream is matched
    /// by a reserved SMR routed to FAULT; the physical SMMU is derived from that view.
    private func takeOwnership(of instance: HostedInstance) {
        instance.physical.reset()
        instance.virtual.reset()
        let sCR0 = UInt32(truncatingIfNeeded: instance.virtual.peek(.sCR0))
        instance.virtual.poke(.sCR0, UInt64(sCR0 & ~SCR0.clientPD | SCR0.usfcfg))
        for n in 0..<instance.window.configuration.numContextBanks {
            instance.program(.SCTLR, index: n, 0)
            instance.program(.FSR, index: n, UInt64(FaultStatus.contextFaultBits))
        }
        for r in instance.reservedSMRs {
            instance.program(.S2CR, index: r, UInt64(S2CR(kind: .fault).raw))
            instance.program(.SMR, index: r, 0)
        }
        for (stream, owner) in ownership.foreignStreams(smmu: instance.smmu) where owner == .hypervisor {
            guard let slot = instance.reservedSMRs.first(where: { instance.reservedSMRUse[$0] == nil }) else { break }
            instance.reservedSMRUse[slot] = .init(stream: stream, owner: .hypervisor)
            instance.program(.SMR, index: slot, UInt64(SMR(id: stream.rawValue, mask: 0, valid: true).raw))
        }
        instance.program(.sGFSR, UInt64(FaultStatus.globalFaultBits))
        instance.program(.TLBIALLNSNH, 0xFFFF_FFFF)
        instance.program(.sTLBGSYNC, 0xFFFF_FFFF)
        instance.reconcileAll()
    }

    /// SIGTERM: no new work is taken from here on.
    public func beginStopping() { lifecycleMachine.stop() }

    // MARK: Host MMIO (READ / WRITE)

    /// The bus: resolves the address to an instance and an offset, and audits what the instance refuses.
    public func hostRead(address: UInt64, width: AccessWidth, client: ClientIdentity) -> Outcome<UInt64> {
        guard lifecycleMachine.servesHostAccesses else {
            statistics.deferred += 1
            return .deferred
        }
        guard let (w, offset) = bus.resolve(address: address, width: width) else {
            return memoryControllerRead(address: address, width: width, client: client)   // the MC's windows, or none
        }
        statistics.hostReads += 1
        switch instances[w].hostRead(offset: offset, width: width) {
        case .success(let v): return .ok(v)
        case .failure(.badAccess): return .badAccess
        case .failure(.refused(let refusal, let location)):
            return .denied(deny(refusal, location: location, instance: instances[w], offset: offset,
                                value: 0, width: width, client: client))
        }
    }

    /// As `hostRead`; an accepted write answers the window it reached, whose interrupt lines may have changed
    /// (the caller need not resolve the address again).
    /// An accepted write answers the SMMU window it reached (nil: the memory controller's, which drives no
    /// interrupt line the host sees).
    public func hostWrite(address: UInt64, value: UInt64, width: AccessWidth,
                          client: ClientIdentity) -> Outcome<Int?> {
        guard lifecycleMachine.servesHostAccesses else {
            statistics.deferred += 1
            return .deferred
        }
        guard let (w, offset) = bus.resolve(address: address, width: width) else {
            // The MC's windows, or none.
            return memoryControllerWrite(address: address, value: value, width: width, client: client).map { nil }
        }
        statistics.hostWrites += 1
        switch instances[w].hostWrite(offset: offset, value: value, width: width) {
        case .success: return .ok(w)
        case .failure(.badAccess): return .badAccess
        case .failure(.refused(let refusal, let location)):
            return .denied(deny(refusal, location: location, instance: instances[w], offset: offset,
                                value: value, width: width, client: client))
        }
    }

    private func deny(_ refusal: HostedInstance.Refusal, location: RegisterLocation, instance: HostedInstance,
                      offset: UInt64, value: UInt64, width: AccessWidth, client: ClientIdentity) -> AuditEvent {
        record(AuditEvent(rule: refusal.rule, client: client, window: instance.window.name,
                          register: location.description, offset: offset, value: value,
                          width: width.bytes, streams: refusal.streams.map(\.rawValue)))
    }

    /// Counts and audits one denial; returns the event for the caller's answer.
    @discardableResult
    func record(_ event: AuditEvent) -> AuditEvent {
        statistics.denialsByRule[event.rule, default: 0] += 1
        audit.record(event)
        return event
    }

    // MARK: Interrupt lines (EVENTS)

    /// The host's interrupt lines of one window, as the host's view raises them: line 0 is the global
    /// fault interrupt, line 1 + n context bank n's. Only host-visible state counts (no VM fault
    /// ever raises a host line).
    public func interruptLines(window w: Int) -> [Bool] {
        guard instances.indices.contains(w) else { return [] }   // no such window: no lines
        let instance = instances[w]
        var lines = [instance.virtual.globalInterruptAsserted]
        for n in 0..<instance.hostContextBanks { lines.append(instance.virtual.contextInterruptAsserted(bank: n)) }
        return lines
    }

    /// True when `interruptLines(window:)` would not equal `levels`, found without building it: EVENTS asks after
    /// every host WRITE, and most (TLB maintenance: one per unmapped page in strict mode) change no line.
    public func interruptLines(window w: Int, differFrom levels: [Bool]) -> Bool {
        guard instances.indices.contains(w) else { return !levels.isEmpty }
        let instance = instances[w]
        guard levels.count == 1 + instance.hostContextBanks,
              levels[0] == instance.virtual.globalInterruptAsserted else { return true }
        for n in 0..<instance.hostContextBanks where levels[1 + n] != instance.virtual.contextInterruptAsserted(bank: n) {
            return true
        }
        return false
    }
}
