import SMMUModel

/// One step of VM_DESTROY, in the order they happen (G6).
public enum TeardownStep: Equatable, Sendable {
    /// The VM's streams now fault (their reserved S2CRs are FAULT); no new transaction reaches a page.
    case quiesceStreams(Int)
    /// The VM's context banks are disabled and their VMIDs invalidated and synced.
    case invalidateTLB
    /// The VM's pages are zeroed (the host never sees what it left).
    case scrubPages(Int)
    /// The pages, and the stage-2 tables' pages, are given back.
    case returnPages
    /// The streams are the host's again, last.
    case returnStreams(Int)
    /// With them, the memory-controller clients that carry them (only when there are some): still pointed at their
    /// own streams, now the host's. Never earlier: until the streams are back, the host cannot re-point the VM's
    /// engines (their DMA keeps landing in the VM's streams, which fault from step 1).
    case returnMemoryClients(Int)
}

extension Hypervisor {
    public func vmCreate(client: ClientIdentity) -> Outcome<VMHandle> {
        guard lifecycleMachine.servesHostAccesses else { return .deferred }
        guard let handle = freeVMHandle() else { return .invalid("every VM handle is in use") }
        guard let stage2 = VMStage2(pages: &pages, memory: memory) else {
            return .invalid("hypervisor RAM exhausted: no page for a stage-2 root")
        }
        nextVM = handle.rawValue == Ownership.maxVMHandle ? 1 : handle.rawValue + 1
        vms[handle] = VirtualMachine(handle: handle, stage2: stage2)
        ownership.setTablePages(stage2.tablePages, of: handle)
        return .ok(handle)
    }

    /// The next handle no live VM uses, from `nextVM` on, wrapping below the page table's shared bit.
    private func freeVMHandle() -> VMHandle? {
        guard vms.count < Int(Ownership.maxVMHandle) else { return nil }
        var candidate = nextVM
        while vms[VMHandle(rawValue: candidate)] != nil {
            candidate = candidate == Ownership.maxVMHandle ? 1 : candidate + 1
        }
        return VMHandle(rawValue: candidate)
    }

    /// Pages one VM may own (64 MiB), so one call may give them all: the stage-2 mapping of a donation and the
    /// scrub of VM_DESTROY (the kernel freeing every page the VM wrote) stay within a few milliseconds (G8).
    public static let maxDonationPages: UInt64 = 16_384

    /// Gives host pages to a VM. Refused (DENIED) when a page is not the host's, when a client's shared file
    /// backs it (MEM_MAP: the host would keep its own mapping of the VM's memory), or when the host's
    /// live SMMU configuration walks it as a page table: the host's walks would fault in the middle of
    /// its DMA (they cannot read a VM's page).
    public func vmDonate(_ vm: VMHandle, range: PhysicalRange, client: ClientIdentity) -> Outcome<Void> {
        guard lifecycleMachine.servesHostAccesses else { return .deferred }
        guard vms[vm] != nil else { return .invalid("no VM \(vm.rawValue)") }
        guard range.size > 0, range.base % Ownership.pageSize == 0, range.size % Ownership.pageSize == 0,
              range.base <= UInt64.max - range.size else {
            return .invalid("range 0x\(String(range.base, radix: 16))+0x\(String(range.size, radix: 16)) is not page-aligned")
        }
        guard range.size / Ownership.pageSize <= Self.maxDonationPages else {
            return .invalid("a VM owns at most \(Self.maxDonationPages) pages")
        }
        guard ownership.isRAM(range) else { return .invalid("range is not RAM") }
        guard UInt64(ownership.pageCount(of: vm)) + range.size / Ownership.pageSize <= Self.maxDonationPages else {
            return .invalid("a VM owns at most \(Self.maxDonationPages) pages")
        }
        let denial = { (rule: TrapRule) in
            Outcome<Void>.denied(self.record(AuditEvent(
                rule: rule, client: client, window: nil, register: "VM_DONATE(vm\(vm.rawValue))",
                offset: range.base, value: range.size, width: 0)))
        }
        guard ownership.owns(.host, range) else { return denial(.donateNotHostOwned) }
        guard !ownership.isShared(range) else { return denial(.donateSharedMemory) }
        // Tables too many to check within the budget count as live: refuse rather than guess.
        guard let tables = hostPageTablePages(), !tables.pages.contains(where: { range.contains($0) }) else {
            return denial(.donateLivePageTable)
        }

        ownership.setOwner(of: range, to: .vm(vm))
        var page = range.base
        while page < range.end {
            guard vms[vm]!.stage2.map(page, pages: &pages, memory: memory) else {
                ownership.setOwner(of: range, to: .host)
                return .invalid("hypervisor RAM exhausted while mapping the VM's stage-2")
            }
            page += Ownership.pageSize
        }
        ownership.setTablePages(vms[vm]!.stage2.tablePages, of: vm)
        // The host lost these pages: drop whatever the host's banks cached (pKVM's TLBI on donation).
        for instance in instances {
            for n in 0..<instance.hostContextBanks { instance.program(.TLBIVMID, UInt64(instance.vmid(ofContextBank: n))) }
            instance.program(.sTLBGSYNC, 0xFFFF_FFFF)
        }
        return .ok(())
    }

    /// Routes a host stream to a VM through a reserved SMR, S2CR and context bank holding the VM's
    /// stage-2, on every instance of the logical SMMU.
    public func vmAssignStream(_ vm: VMHandle, window w: Int, stream raw: UInt32,
                               client: ClientIdentity) -> Outcome<Void> {
        guard lifecycleMachine.servesHostAccesses else { return .deferred }
        guard vms[vm] != nil else { return .invalid("no VM \(vm.rawValue)") }
        guard instances.indices.contains(w) else { return .invalid("no window \(w)") }
        guard raw <= UInt32(instances[w].idMask) else { return .invalid("stream 0x\(String(raw, radix: 16)) out of range") }
        let stream = StreamID(UInt16(raw))
        let smmu = instances[w].smmu
        let members = policy.topology.smmus[smmu].windows.map { instances[$0] }
        let denial = { (rule: TrapRule) in
            Outcome<Void>.denied(self.record(AuditEvent(
                rule: rule, client: client, window: self.instances[w].window.name,
                register: "VM_ASSIGN_STREAM(vm\(vm.rawValue))", offset: 0, value: UInt64(raw), width: 0,
                streams: [stream.rawValue])))
        }
        guard ownership.owner(ofStream: stream, smmu: smmu) == .host else { return denial(.assignForeignStream) }
        for instance in members {
            for n in 0..<instance.hostSMRs
            where SMR(raw: UInt32(truncatingIfNeeded: instance.virtual.peek(.SMR, index: n))).matches(stream, idMask: instance.idMask) {
                return denial(.assignMatchedStream)
            }
        }
        if memoryControllerBlocksAssignment(of: stream, smmu: smmu) { return denial(.assignStreamMCRouted) }
        let reference = members[0]
        guard let slot = reference.reservedSMRs.first(where: { s in members.allSatisfy { $0.reservedSMRUse[s] == nil } }) else {
            return .invalid("no reserved SMR left on \(policy.topology.smmus[smmu].name)")
        }
        let bank: Int
        if let existing = vms[vm]!.contextBanks[smmu] {
            bank = existing
        } else {
            guard let free = reference.reservedContextBanks.first(where: { b in members.allSatisfy { $0.reservedContextBankUse[b] == nil } }) else {
                return .invalid("no reserved context bank left on \(policy.topology.smmus[smmu].name)")
            }
            bank = free
            for instance in members { programStage2Bank(bank, of: vms[vm]!, on: instance) }
            vms[vm]!.contextBanks[smmu] = bank
        }
        for instance in members {
            instance.reservedSMRUse[slot] = .init(stream: stream, owner: .vm(vm))
            instance.program(.S2CR, index: slot, UInt64(S2CR(kind: .translate, contextBank: bank).raw))
            instance.program(.SMR, index: slot, UInt64(SMR(id: stream.rawValue, mask: 0, valid: true).raw))
        }
        ownership.setOwner(ofStream: stream, smmu: smmu, to: .vm(vm))
        takeMemoryClients(of: stream, smmu: smmu)   // the stream's own MC clients: the hypervisor's to program now
        vms[vm]!.streams.append((smmu, stream))
        return .ok(())
    }

    /// A reserved bank as a stage-2 context over the VM's tables, in the order Linux programs one.
    private func programStage2Bank(_ n: Int, of vm: VirtualMachine, on instance: HostedInstance) {
        instance.reservedContextBankUse[n] = vm.handle
        instance.program(.CBA2R, index: n, 1)   // VA64
        instance.program(.CBAR, index: n, UInt64(UInt32(instance.vmid(ofContextBank: n))))   // S2_TRANS
        instance.program(.TCR, index: n, UInt64(VMStage2.vtcr))
        instance.program(.TTBR0, index: n, vm.stage2.root, width: .doubleword)
        instance.program(.FSR, index: n, UInt64(FaultStatus.contextFaultBits))
        instance.program(.SCTLR, index: n, 0x67)   // CFIE CFRE AFE TRE M
        instance.program(.TLBIVMID, UInt64(instance.vmid(ofContextBank: n)))
    }

    /// Ascending pages as ranges of contiguous pages.
    static func runs(of pages: [UInt64]) -> [PhysicalRange] {
        var out: [PhysicalRange] = []
        for page in pages {
            if let last = out.last, last.end == page { out[out.count - 1].size += Ownership.pageSize } else {
                out.append(PhysicalRange(base: page, size: Ownership.pageSize))
            }
        }
        return out
    }

    /// Tears a VM down in the order G6 requires; returns the steps as they ran.
    public func vmDestroy(_ vm: VMHandle, client: ClientIdentity) -> Outcome<[TeardownStep]> {
        guard lifecycleMachine.servesHostAccesses else { return .deferred }
        guard let machine = vms[vm] else { return .invalid("no VM \(vm.rawValue)") }
        var steps: [TeardownStep] = []
        let slots = { (instance: HostedInstance) in
            instance.reservedSMRs.filter { instance.reservedSMRUse[$0]?.owner == .vm(vm) }
        }
        // 1. Quiesce: the streams stay matched but fault.
        for instance in instances {
            for s in slots(instance) { instance.program(.S2CR, index: s, UInt64(S2CR(kind: .fault).raw)) }
        }
        steps.append(.quiesceStreams(machine.streams.count))
        // 2. Disable the VM's banks and invalidate their TLB entries.
        for instance in instances {
            for (n, owner) in instance.reservedContextBankUse where owner == vm {
                instance.program(.SCTLR, index: n, 0)
                instance.program(.TLBIVMID, UInt64(instance.vmid(ofContextBank: n)))
                instance.reservedContextBankUse[n] = nil
            }
            instance.program(.sTLBGSYNC, 0xFFFF_FFFF)
        }
        steps.append(.invalidateTLB)
        // 3. Scrub, then 4. give the pages back, a run of contiguous pages at a time.
        let owned = ownership.pages(of: vm)
        let runs = Self.runs(of: owned)
        for run in runs { _ = memory.zero(at: run.base, count: Int(run.size)) }
        steps.append(.scrubPages(owned.count))
        for run in runs { ownership.setOwner(of: run, to: .host) }
        ownership.setTablePages([], of: vm)
        machine.stage2.release(pages: &pages, memory: memory)
        steps.append(.returnPages)
        // 5. Last, the streams: reserved SMRs freed, streams the host's again.
        for instance in instances {
            for s in slots(instance) {
                instance.program(.SMR, index: s, 0)
                instance.reservedSMRUse[s] = nil
            }
        }
        for (smmu, stream) in machine.streams { ownership.setOwner(ofStream: stream, smmu: smmu, to: .host) }
        steps.append(.returnStreams(machine.streams.count))
        let clients = memoryClientCount(of: machine.streams)
        if clients > 0 { steps.append(.returnMemoryClients(clients)) }
        vms[vm] = nil
        return .ok(steps)
    }
}
