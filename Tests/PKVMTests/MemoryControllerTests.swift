import Testing
@testable import PKVM
import SMMUModel

/// The Tegra234 memory controller's stream-ID window (issue 13): every client x every attack is DENIED, audited once
/// and changes nothing; Linux's own sequence is accepted with no denial; DMA on behalf of a client lands where the
/// owner of its stream intends; VM_ASSIGN_STREAM takes a stream's clients and VM_DESTROY gives them back, last.
@Suite struct MemoryControllerTests {
    static let mc = MemoryControllerConfiguration.tegra234
    /// A stream no MC client has as its own, given to a VM on every logical SMMU.
    static let vmStream: UInt16 = 0x60
    /// A stream the configuration gives the hypervisor on every logical SMMU.
    static let hypervisorStream: UInt16 = 0x61
    /// A host stream no client has as its own.
    static let hostStream: UInt16 = 0x50

    /// A finalized Tegra234 hypervisor with room for a VM per client stream (24 reserved SMRs per instance).
    final class Harness {
        let memory: MemoryMap
        let audit = CollectingAuditSink()
        let hv: Hypervisor
        let client = ClientIdentity(name: "mc-test", pid: 77, uid: 1000)

        init(finalized: Bool = true, passthroughIsHost: Bool = false) {
            memory = try! MemoryMap(regions: [(hostRAM.base, hostRAM.size), (hypervisorRAM.base, hypervisorRAM.size)])
            var topology = Topology.tegra234
            topology.memoryController?.passthroughIsHost = passthroughIsHost
            let streams = Dictionary(uniqueKeysWithValues: topology.smmus.indices.map { ($0, [StreamID(MemoryControllerTests.hypervisorStream)]) })
            let policy = HypervisorPolicy(topology: topology, hostRAM: [hostRAM], hypervisorRAM: hypervisorRAM,
                                          reservedSMRs: 24, hypervisorStreams: streams)
            hv = try! Hypervisor(policy: policy, memory: memory, audit: audit)
            if finalized { #expect(hv.finalize()) }
        }

        var hmc: HostedMemoryController { hv.memoryController! }

        func smmu(_ name: String) -> Int { hv.policy.topology.smmus.firstIndex { $0.name == name }! }
        func window(of smmu: String) -> Int { hv.policy.topology.smmus[self.smmu(smmu)].windows[0] }

        func write(_ register: MemoryControllerRegister, _ value: UInt64) -> Outcome<Int?> {
            hv.hostWrite(address: hmc.address(of: register)!, value: value, width: .word, client: client)
        }
        func read(_ register: MemoryControllerRegister) -> UInt64? {
            hv.hostRead(address: hmc.address(of: register)!, width: .word, client: client).value
        }

        /// What a refused write must leave as it was: the MC's registers, the host's locks, stream ownership.
        struct State: Equatable {
            var overrides: [UInt32], securities: [UInt32], locks: [Bool], bypass: UInt32
            var owners: [Owner]
        }
        func state() -> State {
            let m = hmc
            return State(overrides: m.mc.overrides, securities: m.mc.securities, locks: m.hostLocked, bypass: m.mc.bypassConfig,
                         owners: m.configuration.clients.indices.map { hv.owner(ofMemoryClient: $0, in: m) })
        }

        /// Linux's `tegra186_mc_client_sid_override()` for client n and stream `sid`; returns the statuses of its writes.
        func linuxOverride(_ n: Int, sid: UInt8) -> [Outcome<Int?>] {
            var results: [Outcome<Int?>] = []
            let security = UInt32(read(.security(n))!)
            if security & MemoryController.Security.override == 0 {
                if security & MemoryController.Security.writeDisabled != 0 { return [] }
                results.append(write(.security(n), UInt64(security | MemoryController.Security.override)))
            }
            if UInt32(read(.override(n))!) & 0xFF != UInt32(sid) { results.append(write(.override(n), UInt64(sid))) }
            return results
        }
    }

    @Test func theTableIsLinuxs() {
        #expect(Self.mc.clients.count == 82)
        #expect(Self.mc.clients.first?.name == "hdar" && Self.mc.clients.first?.overrideOffset == 0x0A8)
        #expect(Self.mc.clients.last?.name == "nvjpg1swr" && Self.mc.clients.last?.securityOffset == 0x924)
        #expect(Set(Self.mc.clients.map(\.name)).count == 82 && Set(Self.mc.clients.map(\.id)).count == 82)
        let sdmmc = Self.mc.clients[Self.mc.client(named: "sdmmcrab")!]
        #expect(sdmmc.id == 0x63 && sdmmc.sid == 0x02 && sdmmc.smmu == "niso1" && sdmmc.overrideOffset == 0x318)
    }

    @Test func beforeFinalizationEveryAccessIsDeferred() {
        let h = Harness(finalized: false)
        let a = h.hmc.address(of: .override(0))!
        guard case .deferred = h.hv.hostRead(address: a, width: .word, client: h.client) else { Issue.record("read"); return }
        guard case .deferred = h.hv.hostWrite(address: a, value: 0x7F, width: .word, client: h.client) else { Issue.record("write"); return }
        #expect(h.hmc.mc.overrides[0] == 0x03)
    }

    @Test func resetValuesAndAccessShapes() {
        let h = Harness()
        for n in Self.mc.clients.indices {
            #expect(h.read(.override(n)) == UInt64(Self.mc.clients[n].sid))
            #expect(h.read(.security(n)) == 0x100)
        }
        #expect(h.read(.bypassConfig) == 0x8000_0002)
        // Reserved offsets: zero, writes ignored; 64-bit or misaligned accesses: BAD_ACCESS; past the window: BAD_ADDRESS.
        #expect(h.hv.hostRead(address: Self.mc.sidBase + 0x4, width: .word, client: h.client).value == 0)
        #expect(h.hv.hostWrite(address: Self.mc.sidBase + 0x4, value: 1, width: .word, client: h.client).value != nil)
        #expect(h.hv.hostRead(address: Self.mc.sidBase + 0x4, width: .word, client: h.client).value == 0)
        guard case .badAccess = h.hv.hostRead(address: Self.mc.sidBase + 0x318, width: .doubleword, client: h.client),
              case .badAccess = h.hv.hostWrite(address: Self.mc.sidBase + 0x31A, value: 0, width: .word, client: h.client),
              case .badAddress = h.hv.hostRead(address: Self.mc.broadcastBase + 0x1_0000, width: .word, client: h.client) else {
            Issue.record("access shapes"); return
        }
        // MC_INTMASK, which Linux's MC probe writes, reads back.
        #expect(h.write(.interruptMask, 0xFF00).value != nil && h.read(.interruptMask) == 0xFF00)
        #expect(h.audit.events.isEmpty)
    }

    @Test("Linux's sequence (probe_device and resume) is accepted on every host client with no denial")
    func linuxSequenceIsAccepted() {
        let h = Harness()
        for n in Self.mc.clients.indices {
            // probe_device with the device's iommus stream, then resume with the table's stream.
            for sid in [Self.hostStream, UInt16(Self.mc.clients[n].sid)] {
                for r in h.linuxOverride(n, sid: UInt8(sid)) { #expect(r.value != nil, "\(Self.mc.clients[n].name): \(r)") }
                #expect(h.hmc.mc.route(ofClient: n) == .stream(StreamID(sid)))
            }
            // A client the firmware left without the override: Linux sets bit 8 first (its WARN case).
            #expect(h.hmc.mc.securities[n] == 0x100)
        }
        // And with the override off, as guest-kernel.md saw on RAM: security write then override write.
        #expect(h.write(.security(0), 0).value != nil)
        #expect(h.linuxOverride(0, sid: 0x03).allSatisfy { $0.value != nil })
        #expect(h.audit.events.isEmpty && h.hv.statistics.denials == 0)
        #expect(h.hv.memoryControllerViolations().isEmpty)
    }

    /// One attack on one client: the write, the rule it must break, the streams the record names.
    struct Attack {
        var name: String
        var register: MemoryControllerRegister
        var value: UInt64
        var rule: TrapRule
        var streams: [UInt16]
    }

    static func hostClientAttacks(_ n: Int) -> [Attack] {
        [
            Attack(name: "point its own engine at a VM's stream", register: .override(n), value: UInt64(vmStream),
                   rule: .mcOverrideForeignStream, streams: [vmStream]),
            Attack(name: "write the passthrough stream ID", register: .override(n), value: 0x7F,
                   rule: .mcOverridePassthrough, streams: [0x7F]),
            Attack(name: "point at a hypervisor stream", register: .override(n), value: UInt64(hypervisorStream),
                   rule: .mcOverrideForeignStream, streams: [hypervisorStream]),
            Attack(name: "bits above the stream ID do not hide a VM's stream", register: .override(n),
                   value: 0xFFFF_FF00 | UInt64(vmStream), rule: .mcOverrideForeignStream, streams: [vmStream]),
            Attack(name: "write the bypass configuration", register: .bypassConfig, value: 0x8000_0000,
                   rule: .mcBypassConfig, streams: []),
        ]
    }

    static func vmClientAttacks(_ n: Int) -> [Attack] {
        let own = UInt16(mc.clients[n].sid)
        return [
            Attack(name: "point a VM's engine at a host stream", register: .override(n), value: UInt64(hostStream),
                   rule: .mcForeignClient, streams: [own]),
            Attack(name: "rewrite a VM's override with its own value", register: .override(n), value: UInt64(own),
                   rule: .mcForeignClient, streams: [own]),
            Attack(name: "clear bit 8 (the engine's own ID)", register: .security(n), value: 0,
                   rule: .mcForeignClient, streams: [own]),
            Attack(name: "set bit 16 (lock the hypervisor out)", register: .security(n), value: 0x1_0100,
                   rule: .mcForeignClient, streams: [own]),
            Attack(name: "point a VM's engine at the passthrough ID", register: .override(n), value: 0x7F,
                   rule: .mcForeignClient, streams: [own]),
        ]
    }

    func run(_ attack: Attack, client n: Int, on h: Harness) {
        let label = "\(Self.mc.clients[n].name): \(attack.name)"
        let before = h.state()
        let events = h.audit.events.count
        guard let event = h.write(attack.register, attack.value).deniedEvent else { Issue.record("\(label): not DENIED"); return }
        #expect(event.rule == attack.rule, "\(label)")
        #expect(event.streams == attack.streams, "\(label)")
        #expect(event.register == h.hmc.name(of: attack.register) && event.value == attack.value && event.width == 4, "\(label)")
        #expect(event.client == h.client)
        #expect(h.audit.events.count == events + 1 && h.audit.events.last == event, "\(label): one record")
        #expect(h.state() == before, "\(label): something changed")
    }

    @Test("every client x every attack: DENIED, one record, nothing changed, the client still routes to its owner")
    func attackMatrix() throws {
        let h = Harness()
        let vm = try #require(h.hv.vmCreate(client: h.client).value)
        #expect(h.hv.vmDonate(vm, range: PhysicalRange(base: vmData, size: 4096), client: h.client).value != nil)
        for name in ["niso0", "niso1", "iso"] {
            #expect(h.hv.vmAssignStream(vm, window: h.window(of: name), stream: UInt32(Self.vmStream), client: h.client).value != nil)
        }
        // Host clients.
        for n in Self.mc.clients.indices {
            for attack in Self.hostClientAttacks(n) { run(attack, client: n, on: h) }
            #expect(h.hmc.mc.route(ofClient: n) == .stream(StreamID(UInt16(Self.mc.clients[n].sid))))
        }
        #expect(h.hv.memoryControllerViolations().isEmpty)
        // Every client's stream is a VM's now: the hypervisor programs them, the host may write none of them.
        var assigned: Set<String> = []
        for c in Self.mc.clients where assigned.insert("\(c.smmu):\(c.sid)").inserted {
            let r = h.hv.vmAssignStream(vm, window: h.window(of: c.smmu), stream: UInt32(c.sid), client: h.client)
            #expect(r.value != nil, "assign \(c.smmu):\(c.sid): \(r.summary)")
        }
        for n in Self.mc.clients.indices {
            #expect(h.hv.owner(ofMemoryClient: n, in: h.hmc) == .vm(vm))
            for attack in Self.vmClientAttacks(n) + Self.hostClientAttacks(n).map({ a in
                var a = a   // the same writes on a VM's client: refused because the client is not the host's
                if a.rule != .mcBypassConfig { a.rule = .mcForeignClient; a.streams = [UInt16(Self.mc.clients[n].sid)] }
                return a
            }) {
                run(attack, client: n, on: h)
            }
            #expect(h.hmc.mc.route(ofClient: n) == .stream(StreamID(UInt16(Self.mc.clients[n].sid))))
        }
        #expect(h.hv.memoryControllerViolations().isEmpty)
        #expect(InvariantChecker(h.hv).check().isEmpty)
        #expect(h.hv.statistics.denials == h.audit.events.count)
        #expect(h.audit.events.count == Self.mc.clients.count * (5 + 10))
    }

    @Test("a DMA through a client the host tried to re-point lands where the stream's owner intends")
    func dmaAfterARefusedRepoint() throws {
        let h = Harness()
        let vm = try #require(h.hv.vmCreate(client: h.client).value)
        #expect(h.hv.vmDonate(vm, range: PhysicalRange(base: vmData, size: 4096), client: h.client).value != nil)
        let sdmmcrab = try #require(Self.mc.client(named: "sdmmcrab"))
        let niso1 = h.window(of: "niso1")
        // The host first points SDMMC4 elsewhere (its own, allowed), then hands the stream to the VM.
        #expect(h.write(.override(sdmmcrab), 0x05).value != nil)
        #expect(h.write(.security(sdmmcrab), 0x1_0100).value != nil)   // and "locks" it in its view
        #expect(h.read(.security(sdmmcrab)) == 0x1_0100)
        #expect(h.hv.vmAssignStream(vm, window: niso1, stream: 0x02, client: h.client).value != nil)
        #expect(h.hmc.mc.route(ofClient: sdmmcrab) == .stream(StreamID(0x02)) && h.read(.security(sdmmcrab)) == 0x100)
        expectDenied(h.write(.override(sdmmcrab), 0x05), .mcForeignClient)
        let r = try h.hv.memoryControllerDMA(client: 0x63, iova: vmData, access: .write).get()
        #expect(r.route == .smmu(window: niso1, stream: StreamID(0x02)))
        #expect(r.result == .ok(vmData))
        // A host client the host tried to point at the VM's stream still lands in host memory (bypass: host RAM).
        let pcie1r = try #require(Self.mc.client(named: "pcie1r"))
        expectDenied(h.write(.override(pcie1r), 0x02), .mcOverrideForeignStream)
        let host = try h.hv.memoryControllerDMA(client: 0xDA, iova: hostData, access: .read).get()
        #expect(host.route == .smmu(window: niso1, stream: StreamID(0x05)))
        if case .fault(let f) = host.result { #expect(f != .ownership) }   // no host context: faults, never reaches the VM
        #expect(try h.hv.memoryControllerDMA(client: 0xDA, iova: vmData, access: .read).get().result != .ok(vmData))
        #expect(h.hv.memoryControllerDMA(client: 0x9999, iova: 0, access: .read) == .failure(DMAInvalid(reason: "no memory client 0x9999")))
    }

    @Test("host clients: clearing bit 8 or setting bit 16 is theirs to do; the lock is the host's view only")
    func hostOwnedSecurityWrites() throws {
        let h = Harness()
        let n = try #require(Self.mc.client(named: "vicsrd"))
        #expect(h.write(.override(n), UInt64(Self.hostStream)).value != nil)
        #expect(h.hmc.mc.route(ofClient: n) == .stream(StreamID(Self.hostStream)))
        #expect(h.write(.security(n), 0).value != nil)   // the engine's own ID: vic's stream, the host's
        #expect(h.hmc.mc.route(ofClient: n) == .stream(StreamID(0x34)))
        // Turning the override back on checks the stream it would name.
        #expect(h.write(.security(n), 0x100).value != nil)
        #expect(h.write(.security(n), 0x1_0100).value != nil)
        #expect(h.read(.security(n)) == 0x1_0100 && h.hmc.mc.securities[n] == 0x100)
        #expect(h.write(.override(n), 0x34).value != nil && h.read(.override(n)) == UInt64(Self.hostStream))   // ignored
        #expect(h.audit.events.isEmpty)
        // A stale override naming a stream that became a VM's cannot be turned on.
        let m = try #require(Self.mc.client(named: "vicswr"))
        #expect(h.write(.security(m), 0).value != nil && h.write(.override(m), 0x29).value != nil)
        let vm = try #require(h.hv.vmCreate(client: h.client).value)
        #expect(h.hv.vmAssignStream(vm, window: h.window(of: "niso1"), stream: 0x29, client: h.client).value != nil)
        expectDenied(h.write(.security(m), 0x100), .mcOverrideForeignStream)
        #expect(h.hmc.mc.route(ofClient: m) == .stream(StreamID(0x34)))
    }

    @Test("VM_ASSIGN_STREAM is refused while another host client routes to the stream")
    func assignmentWaitsForReroutedClients() throws {
        let h = Harness()
        let vm = try #require(h.hv.vmCreate(client: h.client).value)
        let pcie1r = try #require(Self.mc.client(named: "pcie1r"))
        let niso1 = h.window(of: "niso1")
        #expect(h.write(.override(pcie1r), 0x06).value != nil)   // pcie2's stream, the host's
        let event = expectDenied(h.hv.vmAssignStream(vm, window: niso1, stream: 0x06, client: h.client), .assignStreamMCRouted)
        #expect(event?.streams == [0x06])
        #expect(h.hv.ownership.owner(ofStream: StreamID(0x06), smmu: h.smmu("niso1")) == .host)
        #expect(h.write(.override(pcie1r), 0x05).value != nil)
        #expect(h.hv.vmAssignStream(vm, window: niso1, stream: 0x06, client: h.client).value != nil)
    }

    @Test("VM_DESTROY gives the clients back last, pointed at their own streams, now the host's")
    func teardownOrder() throws {
        let h = Harness()
        let vm = try #require(h.hv.vmCreate(client: h.client).value)
        #expect(h.hv.vmDonate(vm, range: PhysicalRange(base: vmData, size: 4096), client: h.client).value != nil)
        #expect(h.hv.vmAssignStream(vm, window: h.window(of: "niso0"), stream: 0x02, client: h.client).value != nil)   // APE: 4 clients
        let steps = try #require(h.hv.vmDestroy(vm, client: h.client).value)
        #expect(steps == [.quiesceStreams(1), .invalidateTLB, .scrubPages(1), .returnPages, .returnStreams(1), .returnMemoryClients(4)])
        let apedmar = try #require(Self.mc.client(named: "apedmar"))
        #expect(h.hv.owner(ofMemoryClient: apedmar, in: h.hmc) == .host)
        #expect(h.read(.override(apedmar)) == 0x02 && h.read(.security(apedmar)) == 0x100)
        #expect(h.write(.override(apedmar), UInt64(Self.hostStream)).value != nil)
        #expect(h.hv.memoryControllerViolations().isEmpty && h.audit.events.isEmpty)
    }

    @Test("the passthrough ID: refused by default; a host route where configured, held to the host's memory")
    func passthrough() throws {
        let h = Harness(passthroughIsHost: true)
        let n = try #require(Self.mc.client(named: "pcie0r"))
        #expect(h.write(.override(n), 0x7F).value != nil)
        let r = try h.hv.memoryControllerDMA(client: 0xD8, iova: hostData, access: .read).get()
        #expect(r.route == .aroundSMMU && r.result == .ok(hostData))
        let vm = try #require(h.hv.vmCreate(client: h.client).value)
        #expect(h.hv.vmDonate(vm, range: PhysicalRange(base: vmData, size: 4096), client: h.client).value != nil)
        #expect(try h.hv.memoryControllerDMA(client: 0xD8, iova: vmData, access: .read).get().result == .fault(.ownership))
        #expect(h.hv.memoryControllerViolations().isEmpty)
    }

    @Test func dumpShowsTheClientsThatMoved() throws {
        let h = Harness()
        let n = try #require(Self.mc.client(named: "bpmpr"))
        #expect(h.write(.override(n), UInt64(Self.hostStream)).value != nil)
        let state = try #require(h.hv.snapshot().memoryController)
        #expect(state.client_count == 82 && state.bypass_config == "0x80000002")
        // The hypervisor stream 0x61 is no client's own; only bpmpr moved.
        #expect(state.clients.map(\.name) == ["bpmpr"] && state.clients.first?.route == "niso1:0x50")
    }

    @Test func aBadTableIsRefused() {
        var t = Topology.tegra234
        t.memoryController?.clients.append(.init(name: "dup", id: 0x999, smmu: "niso1", sid: 0x02, override: 0x318))
        let policy = HypervisorPolicy(topology: t, hostRAM: [hostRAM], hypervisorRAM: hypervisorRAM)
        #expect(throws: HypervisorPolicy.Problem.self) {
            _ = try Hypervisor(policy: policy, memory: try! MemoryMap(regions: [(hostRAM.base, hostRAM.size)]), audit: CollectingAuditSink())
        }
    }
}
