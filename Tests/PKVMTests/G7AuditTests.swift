import Testing
@testable import PKVM
import SMMUModel

/// G7: every DENIED yields exactly one audit event with the right fields, counts in the statistics,
/// and changes nothing (registers of every instance, physical and virtual, TLBs, ownership).
@Suite struct G7AuditTests {
    struct Attack {
        var name: String
        var rule: TrapRule
        /// The event's expected (window, register, offset, value, width, streams); nil skips a field.
        var window: String?
        var register: String?
        var offset: UInt64?
        var value: UInt64?
        var width: Int?
        var streams: [UInt16] = []
        var run: (Machine) -> AuditEvent?
    }

    /// A host page a client's file (inode `sharedInode`) backs, in every attacked machine.
    static let sharedPage: UInt64 = hostData + 0x10_0000
    static let sharedInode: UInt64 = 9

    /// One attack per rule (and per shape of access), against a machine with one VM (stream 0x15 on
    /// niso1, bank and SMR reserved), a live host stage-1 context whose root is at `root`, and `sharedPage`
    /// backed by a client's file.
    static func attacks(vm: VMHandle, vmBank: Int, root: UInt64) -> [Attack] {
        func mmio(_ name: String, _ rule: TrapRule, window w: Int = 0, _ reg: RegisterName, _ index: Int,
                  _ value: UInt64, width: AccessWidth = .word, read: Bool = false, streams: [UInt16] = []) -> Attack {
            let c = Topology.tegra234.windows[w].configuration
            return Attack(name: name, rule: rule, window: Topology.tegra234.windows[w].name,
                          register: RegisterLocation(name: reg, index: index).description,
                          offset: c.offset(of: reg, index: index), value: read ? 0 : value, width: width.bytes,
                          streams: streams) { m in
                let d = m.driver(w)
                return read ? d.read(reg, index, width: width).deniedEvent
                            : d.write(reg, index, value, width: width).deniedEvent
            }
        }
        return [
            mmio("SMR naming the VM's stream", .smrForeignStream, .SMR, 0, 0x8000_0015, streams: [0x15]),
            mmio("SMR aliasing by mask, other instance", .smrForeignStream, window: 1, .SMR, 119, 0x800F_0010, streams: [0x15]),
            mmio("S2CR to a hidden bank", .s2crHiddenContextBank, .S2CR, 5, UInt64(vmBank)),
            mmio("nested CBAR over a hidden bank", .cbarHiddenContextBank, .CBAR, 5, UInt64(3 << 16 | vmBank << 8)),
            mmio("64-bit TTBR0 write to the VM's bank", .hiddenContextBank, .TTBR0, vmBank, 0xDEAD_BEEF_0000_1000,
                 width: .doubleword),
            mmio("SCTLR write to the last bank", .hiddenContextBank, .SCTLR, 127, 0),
            mmio("FAR read of the VM's bank", .hiddenContextBank, .FAR, vmBank, 0, width: .doubleword, read: true),
            mmio("CBAR read of the VM's bank", .hiddenContextBank, .CBAR, vmBank, 0, read: true),
            mmio("hidden SMR read", .hiddenStreamMatchGroup, .SMR, 120, 0, read: true),
            mmio("hidden S2CR write", .hiddenStreamMatchGroup, window: 1, .S2CR, 127, 0x0001_0000),
            Attack(name: "MEM_READ of the VM's page", rule: .hostMemoryAccess, window: nil, register: "MEM_READ",
                   offset: vmData, value: 0, width: 16) {
                $0.hv.memRead(address: vmData, length: 16, client: $0.client).deniedEvent
            },
            Attack(name: "MEM_WRITE of hypervisor RAM", rule: .hostMemoryAccess, window: nil, register: "MEM_WRITE",
                   offset: hypervisorRAM.base, value: 0, width: 2) {
                $0.hv.memWrite(address: hypervisorRAM.base, bytes: [1, 2], client: $0.client).deniedEvent
            },
            Attack(name: "MEM_MAP over a VM page", rule: .mapNotHostOwned, window: nil, register: "MEM_MAP",
                   offset: vmData, value: 4096, width: 0) {
                $0.mapShared(at: vmData, inode: 77).result.deniedEvent
            },
            Attack(name: "MEM_MAP of file bytes already mapped", rule: .mapAlias, window: nil, register: "MEM_MAP",
                   offset: sharedPage + 0x1000, value: 4096, width: 0) {
                $0.mapShared(at: sharedPage + 0x1000, inode: sharedInode).result.deniedEvent
            },
            Attack(name: "VM_DONATE of a shared page", rule: .donateSharedMemory, window: nil, register: nil,
                   offset: sharedPage, value: 4096, width: 0) {
                $0.hv.vmDonate(vm, range: PhysicalRange(base: sharedPage, size: 4096), client: $0.client).deniedEvent
            },
            Attack(name: "VM_DONATE of a VM page", rule: .donateNotHostOwned, window: nil, register: nil,
                   offset: vmData, value: 4096, width: 0) {
                $0.hv.vmDonate(vm, range: PhysicalRange(base: vmData, size: 4096), client: $0.client).deniedEvent
            },
            Attack(name: "VM_DONATE of a live host table", rule: .donateLivePageTable, window: nil, register: nil,
                   offset: root, value: 4096, width: 0) {
                $0.hv.vmDonate(vm, range: PhysicalRange(base: root, size: 4096), client: $0.client).deniedEvent
            },
            Attack(name: "VM_ASSIGN_STREAM of the VM's stream", rule: .assignForeignStream, window: "niso1b",
                   register: nil, offset: nil, value: 0x15, width: nil, streams: [0x15]) {
                $0.hv.vmAssignStream(vm, window: 1, stream: 0x15, client: $0.client).deniedEvent
            },
            Attack(name: "VM_ASSIGN_STREAM of a stream a host SMR matches", rule: .assignMatchedStream, window: "niso1a",
                   register: nil, offset: nil, value: 0x21, width: nil, streams: [0x21]) {
                $0.hv.vmAssignStream(vm, window: 0, stream: 0x21, client: $0.client).deniedEvent
            },
            Attack(name: "PROT_FINALIZE after finalization", rule: .finalizeRepeated, window: nil,
                   register: "PROT_FINALIZE", offset: 0, value: UInt64(LifecycleState.finalized.rawValue), width: 0) {
                $0.hv.hostFinalize(client: $0.client).deniedEvent
            },
        ] + memoryControllerAttacks(vm: vm)
    }

    @Test func everyDenialIsAuditedOnceAndChangesNothing() throws {
        // Host finalization granted, so a PROT_FINALIZE after finalization meets G1.finalize-repeated; its
        // twin G1.finalize-not-host needs a machine without the grant (G1HostFinalizationTests).
        let m = Machine(hostFinalizes: true)
        let d = m.driver(0, 1)
        d.reset()
        let vm = m.protectedVM(stream: 0x15)
        Self.prepareMemoryController(m, vm: vm)   // a VM-owned MC client and a re-pointed host one
        let tables = m.tables()
        try tables.map4K(0x1000, to: hostData)
        d.attachStage1(bank: 0, ttbr0: tables.root)
        d.route(smr: 0, stream: 0x20, mask: 0x1, toBank: 0)   // 0x20 and 0x21
        #expect(m.mapShared(at: Self.sharedPage, inode: Self.sharedInode).result.value != nil)
        let attacks = Self.attacks(vm: vm, vmBank: m.contextBank(of: vm, window: 0)!, root: tables.root)
        #expect(Set(attacks.map(\.rule)) == Set(TrapRule.allCases).subtracting([.finalizeNotHost]),
                "an attack for every rule")
        for attack in attacks {
            let before = m.state()
            let owners = [vmData, tables.root, hostData, hypervisorRAM.base].map { m.hv.ownership.owner(ofAddress: $0) }
            let streams = [0x15, 0x21].map { m.hv.ownership.owner(ofStream: StreamID($0), smmu: 0) }
            let memory = m.memory.readBytes(at: hypervisorRAM.base, count: 16)
            let events = m.audit.events.count
            let counted = m.hv.statistics.denialsByRule[attack.rule, default: 0]
            let event = attack.run(m)
            guard let event else { Issue.record("\(attack.name): not DENIED"); continue }
            #expect(m.audit.events.count == events + 1, "\(attack.name): one event")
            #expect(m.audit.events.last == event, "\(attack.name): the answer carries the audited event")
            #expect(m.hv.statistics.denialsByRule[attack.rule, default: 0] == counted + 1)
            #expect(event.rule == attack.rule, "\(attack.name)")
            #expect(event.client == m.client)
            #expect(event.window == attack.window, "\(attack.name)")
            if let r = attack.register { #expect(event.register == r, "\(attack.name)") }
            if let o = attack.offset { #expect(event.offset == o, "\(attack.name)") }
            if let v = attack.value { #expect(event.value == v, "\(attack.name)") }
            if let w = attack.width { #expect(event.width == w, "\(attack.name)") }
            #expect(event.streams == attack.streams, "\(attack.name)")
            #expect(m.differences(before, m.state()).isEmpty, "\(attack.name): \(m.differences(before, m.state()))")
            #expect(m.state() == before, "\(attack.name): TLB changed")
            #expect([vmData, tables.root, hostData, hypervisorRAM.base].map { m.hv.ownership.owner(ofAddress: $0) } == owners)
            #expect([0x15, 0x21].map { m.hv.ownership.owner(ofStream: StreamID($0), smmu: 0) } == streams)
            #expect(m.memory.readBytes(at: hypervisorRAM.base, count: 16) == memory)
        }
        #expect(m.hv.statistics.denials == m.audit.events.count)
        #expect(m.audit.events.count == attacks.count)
        // The VM and the host both still work.
        #expect(m.hv.dma(window: 0, stream: 0x15, iova: vmData, access: .read).physicalAddress == vmData)
        #expect(m.hv.dma(window: 1, stream: 0x21, iova: 0x1000, access: .read).physicalAddress == hostData)
    }

    /// Nothing a client sends crashes: out-of-range windows, streams, addresses and widths.
    @Test func hostileArgumentsAreAnsweredNotFatal() {
        let m = Machine()
        for address: UInt64 in [0, .max, .max - 3, 0x0800_0000 + 0x100_0000 - 4, 0x0800_0001, 0x0800_0004] {
            for width in AccessWidth.allCases {
                _ = m.hv.hostRead(address: address, width: width, client: m.client)
                _ = m.hv.hostWrite(address: address, value: .max, width: width, client: m.client)
            }
        }
        if case .badAddress = m.hv.hostRead(address: .max - 3, width: .doubleword, client: m.client) {} else {
            Issue.record("an access wrapping the address space")
        }
        if case .badAccess = m.hv.hostRead(address: 0x0800_0002, width: .word, client: m.client) {} else {
            Issue.record("a misaligned access")
        }
        if case .badAccess = m.hv.hostWrite(address: 0x0800_0800, value: 1, width: .doubleword, client: m.client) {} else {
            Issue.record("a 64-bit access to the 32-bit SMR[0]")
        }
        #expect(m.hv.dma(window: 99, stream: 0, iova: 0, access: .read) == .invalid("no window 99"))
        if case .invalid = m.hv.dma(window: 0, stream: 0x8000, iova: 0, access: .read) {} else { Issue.record("stream 0x8000") }
        if case .invalid = m.hv.dma(window: -1, stream: 0, iova: .max, access: .write) {} else { Issue.record("window -1") }
        _ = m.hv.dma(window: 0, stream: 0x7FFF, iova: .max, access: [.write, .privileged, .instructionFetch])
        guard case .invalid = m.hv.vmAssignStream(VMHandle(rawValue: 0), window: 0, stream: 1, client: m.client) else {
            Issue.record("VM 0"); return
        }
        let vm = m.hv.vmCreate(client: m.client).value!
        for (w, s) in [(99, UInt32(1)), (-1, 1), (0, 0x8000), (0, .max)] {
            guard case .invalid = m.hv.vmAssignStream(vm, window: w, stream: s, client: m.client) else {
                Issue.record("assign window \(w) stream \(s)"); continue
            }
        }
        _ = m.hv.memRead(address: .max, length: Int.max, client: m.client)
        if case .badAddress = m.hv.memRead(address: hostData, length: -1, client: m.client) {} else {
            Issue.record("a negative MEM_READ length")
        }
        #expect(m.hv.interruptLines(window: 99).isEmpty && m.hv.interruptLines(window: -1).isEmpty)
        #expect(m.audit.events.isEmpty)
    }
}
