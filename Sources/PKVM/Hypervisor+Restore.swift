import SMMUModel

/// Rebuilding a hypervisor from a state image (docs/state-image.md, "Restore"). Everything the image says is
/// checked against the configuration and against itself before it is installed, and the invariant checker runs on
/// the result: an image that decodes but could not be a state of this daemon is refused as corrupt, never run.
extension Hypervisor {
    /// A hypervisor in the state of `image`, built over the same inputs `init` takes.
    /// - Parameters:
    ///   - memory: the RAM. With an image that includes memory, its own contents are replaced by the image's; with
    ///     one that does not, it must hold the RAM as it was when the image was taken (the caller kept it).
    ///   - epochFloor: the highest translation epoch any client may have seen (the value in the epoch pages it
    ///     kept): the epoch resumes strictly after both it and the image's, so no cached translation survives.
    ///   - sharedMemory: maps the file bytes of one recorded MEM_MAP again; throws
    ///     `sharedMemoryUnavailable` when it cannot.
    /// On failure nothing of the image stays attached to `memory` (its own contents are then unspecified).
    public static func restore(
        policy: HypervisorPolicy, memory: MemoryMap, audit: AuditSink, image: HypervisorStateImage,
        epochFloor: UInt64 = 0,
        sharedMemory: (HypervisorStateImage.SharedMappingImage) throws(StateImageError) -> SharedMemoryAttachment
            = noSharedMemory
    ) throws(StateImageError) -> Hypervisor {
        let h: Hypervisor
        do {
            h = try Hypervisor(policy: policy, memory: memory, audit: audit)
        } catch {
            throw .configurationMismatch(reason: "the configuration itself is invalid: \(error)")
        }
        try h.restore(image: image, epochFloor: epochFloor, sharedMemory: sharedMemory)
        return h
    }

    /// Puts this hypervisor in the state of `image`, in place: the same checks and result as the static `restore`
    /// on a new hypervisor over this one's `memory`, but the SMMU models, their TLB and stream-cache tables and the
    /// memory map's RAM are reused instead of built again (a fuzzer restores thousands of images into one instance).
    /// Everything the image holds replaces what this hypervisor holds; what it does not hold is as a new hypervisor
    /// has it. Client memory mapped now is let go first (its release runs), RAM is replaced when the image carries
    /// it and kept as it is when not. On failure the hypervisor holds no client memory and no particular state:
    /// restore it again (an image, or a `Checkpoint`) before it serves anything.
    public func restore(
        image: HypervisorStateImage, epochFloor: UInt64 = 0,
        sharedMemory: (HypervisorStateImage.SharedMappingImage) throws(StateImageError) -> SharedMemoryAttachment
            = noSharedMemory
    ) throws(StateImageError) {
        for m in sharedMappings { try? memory.restore(base: m.range.base) }
        sharedMappings = []
        if let why = image.configuration.difference(from: configuration) {
            throw .configurationMismatch(reason: why)
        }
        try install(image)
        var attached: [UInt64] = []
        do {
            for m in image.sharedMappings {
                let a = try sharedMemory(m)
                do {
                    try memory.replace(base: m.range.base, size: m.range.size, with: a.pointer, release: a.release)
                } catch {
                    a.release()
                    throw StateImageError.corrupt(reason: "client memory at 0x\(String(m.range.base, radix: 16)): \(error)")
                }
                attached.append(m.range.base)
            }
            sharedMappings = image.sharedMappings.map { SharedMapping(range: $0.range, file: $0.file) }
            if let v = InvariantChecker(self).check(sampleDMA: false).first {
                throw StateImageError.corrupt(reason: "the restored state breaks an invariant: \(v)")
            }
        } catch let error as StateImageError {
            for base in attached { try? memory.restore(base: base) }
            sharedMappings = []
            throw error
        } catch {
            preconditionFailure("only state-image errors are thrown here")
        }
        translationEpoch.resume(after: max(image.translationEpoch, epochFloor))
    }

    /// The default `sharedMemory` of `restore`: the caller has none to attach.
    public static func noSharedMemory(
        _ m: HypervisorStateImage.SharedMappingImage) throws(StateImageError) -> SharedMemoryAttachment {
        throw .sharedMemoryUnavailable(base: m.range.base, reason: "no client memory was provided")
    }

    /// Checks the image against this hypervisor's configuration and installs it, client memory aside.
    private func install(_ image: HypervisorStateImage) throws(StateImageError) {
        func corrupt(_ s: String) -> StateImageError { .corrupt(reason: s) }
        let smmus = policy.topology.smmus
        guard image.instances.count == instances.count, image.streamOwners.count == smmus.count,
              image.pageCodes.count == ownership.regions.count,
              (image.memoryController == nil) == (memoryController == nil) else {
            throw corrupt("the image's windows, SMMUs, RAM regions or memory controller do not match its configuration")
        }
        guard (1...Ownership.maxVMHandle).contains(image.nextVM) else { throw corrupt("next VM handle \(image.nextVM)") }
        let s = image.statistics
        guard ([s.deferred, s.hostReads, s.hostWrites, s.memoryControllerReads, s.memoryControllerWrites,
                s.memoryControllerDMA, s.hostDMA.translations, s.foreignDMA.translations]
                + Array(s.denialsByRule.values) + Array(s.hostDMA.faultsByKind.values)
                + Array(s.foreignDMA.faultsByKind.values)).allSatisfy({ $0 >= 0 }) else {
            throw corrupt("a negative statistic")
        }
        let vmTable = try checkedVMs(image)
        let free = try checkedFreePages(image, vms: vmTable)
        let (regions, counts) = try checkedPageCodes(image, vms: vmTable)
        let owners = try checkedStreamOwners(image, vms: vmTable)
        try checkSharedMappings(image, regions: regions)

        for (instance, i) in zip(instances, image.instances) {
            try installInstance(i, into: instance, vms: vmTable)
        }
        if let mc = memoryController, let m = image.memoryController {
            guard m.hostLocked.count == mc.configuration.clients.count else { throw corrupt("MC host locks per client") }
            if let why = mc.mc.restore(overrides: m.overrides, securities: m.securities, bypassConfig: m.bypassConfig,
                                       interruptMask: m.interruptMask) { throw corrupt(why) }
            mc.hostLocked = m.hostLocked
        }
        if let pages = image.memory {
            memory.zeroAll()
            for page in pages {
                guard page.address % Ownership.pageSize == 0, memory.writeBytes(page.bytes, at: page.address) else {
                    throw corrupt("RAM page 0x\(String(page.address, radix: 16)) is not a page of RAM")
                }
            }
        }
        ownership.streamOwners = owners
        ownership.regions = regions
        ownership.vmPageCounts = counts
        ownership.tablePages = vmTable.mapValues { $0.stage2.tablePages }
        pages.free = free
        vms = vmTable
        nextVM = image.nextVM
        statistics = image.statistics
        lifecycleMachine = Lifecycle(state: image.lifecycle)
    }

    /// The VMs, each with its stage-2 tables in hypervisor RAM, its streams and banks on SMMUs that exist.
    private func checkedVMs(_ image: HypervisorStateImage) throws(StateImageError) -> [VMHandle: VirtualMachine] {
        var table: [VMHandle: VirtualMachine] = [:]
        var tablePagesSeen = Set<UInt64>()
        var previous: UInt32 = 0
        for vm in image.vms {
            let name = vm.handle.description
            guard vm.handle.rawValue > previous, vm.handle.rawValue <= Ownership.maxVMHandle else {
                throw .corrupt(reason: "VM handles out of order or range at \(name)")
            }
            previous = vm.handle.rawValue
            for page in vm.tablePages {
                guard page % Ownership.pageSize == 0, policy.hypervisorRAM.contains(page),
                      tablePagesSeen.insert(page).inserted else {
                    throw .corrupt(reason: "\(name)'s table page 0x\(String(page, radix: 16)) is not its own hypervisor page")
                }
            }
            guard vm.tablePages.contains(vm.stage2Root) else { throw .corrupt(reason: "\(name)'s root is not a table page") }
            for a in vm.streams where !smmus(contain: a.smmu, stream: a.stream) {
                throw .corrupt(reason: "\(name)'s stream \(a.stream) on SMMU \(a.smmu)")
            }
            var banks: [Int: Int] = [:]
            for b in vm.contextBanks {
                guard smmus(contain: b.smmu, stream: nil), banks[b.smmu] == nil,
                      policy.topology.smmus[b.smmu].windows.allSatisfy({ instances[$0].reservedContextBanks.contains(b.bank) }) else {
                    throw .corrupt(reason: "\(name)'s context bank \(b.bank) on SMMU \(b.smmu)")
                }
                banks[b.smmu] = b.bank
            }
            table[vm.handle] = VirtualMachine(
                handle: vm.handle, stage2: VMStage2(root: vm.stage2Root, tablePages: Set(vm.tablePages)),
                streams: vm.streams.map { ($0.smmu, $0.stream) }, contextBanks: banks)
        }
        return table
    }

    /// Whether logical SMMU `smmu` exists and (when given) `stream` fits its stream-ID width.
    private func smmus(contain smmu: Int, stream: StreamID?) -> Bool {
        guard policy.topology.smmus.indices.contains(smmu) else { return false }
        guard let stream else { return true }
        return policy.topology.smmus[smmu].windows.allSatisfy { stream.rawValue <= instances[$0].idMask }
    }

    /// The free list: every hypervisor page is either free or one VM's table page, exactly once.
    private func checkedFreePages(_ image: HypervisorStateImage,
                                  vms: [VMHandle: VirtualMachine]) throws(StateImageError) -> [UInt64] {
        let ram = policy.hypervisorRAM
        let total = Int(ram.size / Ownership.pageSize)
        var free: [UInt64] = []
        free.reserveCapacity(total)
        for run in image.freeHypervisorPages {
            guard run.count >= 1, run.count <= total - free.count else { throw .corrupt(reason: "free page runs exceed hypervisor RAM") }
            for k in 0..<UInt64(run.count) {
                free.append(run.descending ? run.first &- k * Ownership.pageSize : run.first &+ k * Ownership.pageSize)
            }
        }
        // One flag per page of hypervisor RAM (the VMs' table pages are in it, each once: `checkedVMs`).
        var seen = [Bool](repeating: false, count: total)
        var count = 0
        for vm in vms.values {
            for page in vm.stage2.tablePages { seen[Int((page - ram.base) / Ownership.pageSize)] = true }
            count += vm.stage2.tablePages.count
        }
        for page in free {
            guard page % Ownership.pageSize == 0, ram.contains(page), !seen[Int((page - ram.base) / Ownership.pageSize)] else {
                throw .corrupt(reason: "free hypervisor page 0x\(String(page, radix: 16)) is not a free page of hypervisor RAM")
            }
            seen[Int((page - ram.base) / Ownership.pageSize)] = true
            count += 1
        }
        guard count == total else { throw .corrupt(reason: "\(total - count) hypervisor pages are neither free nor tables") }
        return free
    }

    /// The page table: one code per page of each region, naming the host or a live VM; a shared page is the host's.
    private func checkedPageCodes(_ image: HypervisorStateImage, vms: [VMHandle: VirtualMachine]) throws(StateImageError)
        -> (regions: [(range: PhysicalRange, owners: [UInt32])], counts: [UInt32: Int]) {
        var regions = ownership.regions
        var counts: [UInt32: Int] = [:]
        for (i, runs) in image.pageCodes.enumerated() {
            let pages = regions[i].owners.count
            var codes: [UInt32] = []
            codes.reserveCapacity(pages)
            for run in runs {
                guard run.count >= 1, run.count <= pages - codes.count else {
                    throw .corrupt(reason: "page codes of RAM region \(i) do not add up to its \(pages) pages")
                }
                let vm = run.code & ~Ownership.sharedBit
                guard vm == 0 || (run.code & Ownership.sharedBit == 0 && vms[VMHandle(rawValue: vm)] != nil) else {
                    throw .corrupt(reason: "page code 0x\(String(run.code, radix: 16)) names no live VM, or a shared VM page")
                }
                if vm != 0 { counts[vm, default: 0] += run.count }
                codes.append(contentsOf: repeatElement(run.code, count: run.count))
            }
            guard codes.count == pages else { throw .corrupt(reason: "page codes of RAM region \(i) cover \(codes.count) of \(pages) pages") }
            regions[i].owners = codes
        }
        return (regions, counts)
    }

    /// Stream owners: each VM's streams are exactly those it owns, and the configuration's hypervisor streams stay its.
    private func checkedStreamOwners(_ image: HypervisorStateImage,
                                     vms: [VMHandle: VirtualMachine]) throws(StateImageError) -> [[UInt16: Owner]] {
        var owners: [[UInt16: Owner]] = []
        var assigned = Set<String>()
        for vm in vms.values { for a in vm.streams { assigned.insert("\(vm.handle)/\(a.smmu)/\(a.stream)") } }
        var owned = Set<String>()
        for (smmu, list) in image.streamOwners.enumerated() {
            var table: [UInt16: Owner] = [:]
            for o in list {
                guard smmus(contain: smmu, stream: o.stream), o.owner != .host, table[o.stream.rawValue] == nil else {
                    throw .corrupt(reason: "owner of stream \(o.stream) on SMMU \(smmu)")
                }
                if case .vm(let vm) = o.owner {
                    guard vms[vm] != nil else { throw .corrupt(reason: "stream \(o.stream) of \(vm), which does not exist") }
                    owned.insert("\(vm)/\(smmu)/\(o.stream)")
                }
                table[o.stream.rawValue] = o.owner
            }
            for s in policy.hypervisorStreams[smmu] ?? [] where table[s.rawValue] != .hypervisor {
                throw .corrupt(reason: "the hypervisor's stream \(s) on SMMU \(smmu) is not its own")
            }
            owners.append(table)
        }
        guard assigned == owned else { throw .corrupt(reason: "VMs' stream lists and stream owners disagree") }
        return owners
    }

    /// MEM_MAPs: page-aligned ranges of host RAM, as many as allowed, that are exactly the pages marked shared.
    private func checkSharedMappings(_ image: HypervisorStateImage,
                                     regions: [(range: PhysicalRange, owners: [UInt32])]) throws(StateImageError) {
        guard image.sharedMappings.count <= Self.maxSharedMappings else { throw .corrupt(reason: "too many client mappings") }
        var shared = 0
        for r in regions { shared += r.owners.lazy.filter { $0 & Ownership.sharedBit != 0 }.count }
        var mapped = 0
        for m in image.sharedMappings {
            let r = m.range
            let region = regions.first { $0.range.contains(r) }
            guard r.size > 0, r.size == m.file.size, r.base % Ownership.pageSize == 0, r.size % Ownership.pageSize == 0,
                  m.file.offset % Ownership.pageSize == 0, let region else {
                throw .corrupt(reason: "client mapping at 0x\(String(r.base, radix: 16)) is not page-aligned host RAM")
            }
            let first = Int((r.base - region.range.base) / Ownership.pageSize)
            guard region.owners[first..<(first + Int(r.size / Ownership.pageSize))].allSatisfy({ $0 == Ownership.sharedBit }) else {
                throw .corrupt(reason: "client mapping at 0x\(String(r.base, radix: 16)) covers pages not marked shared")
            }
            mapped += Int(r.size / Ownership.pageSize)
        }
        guard mapped == shared else { throw .corrupt(reason: "\(shared) pages are marked shared, client mappings cover \(mapped)") }
    }

    private func installInstance(_ i: HypervisorStateImage.InstanceImage, into instance: HostedInstance,
                                 vms: [VMHandle: VirtualMachine]) throws(StateImageError) {
        let name = instance.window.name
        var smrUse: [Int: HostedInstance.ReservedSMRUse] = [:]
        for r in i.reservedSMRUse {
            guard instance.reservedSMRs.contains(r.slot), smrUse[r.slot] == nil, r.stream.rawValue <= instance.idMask else {
                throw .corrupt(reason: "\(name): reserved SMR \(r.slot)")
            }
            smrUse[r.slot] = .init(stream: r.stream, owner: r.owner)
        }
        var bankUse: [Int: VMHandle] = [:]
        for b in i.reservedContextBankUse {
            guard instance.reservedContextBanks.contains(b.bank), bankUse[b.bank] == nil,
                  vms[b.vm]?.contextBanks[instance.smmu] == b.bank else {
                throw .corrupt(reason: "\(name): reserved context bank \(b.bank) of \(b.vm)")
            }
            bankUse[b.bank] = b.vm
        }
        for vm in vms.values where vm.contextBanks[instance.smmu].map({ bankUse[$0] != vm.handle }) ?? false {
            throw .corrupt(reason: "\(name): \(vm.handle)'s context bank is not recorded as its")
        }
        if let why = instance.physical.restore(i.physical) { throw .corrupt(reason: "\(name) (physical): \(why)") }
        if let why = instance.virtual.restore(i.virtual) { throw .corrupt(reason: "\(name) (host view): \(why)") }
        instance.reservedSMRUse = smrUse
        instance.reservedContextBankUse = bankUse
    }
}
