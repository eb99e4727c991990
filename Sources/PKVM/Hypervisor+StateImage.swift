import SMMUModel

/// Client memory the caller attaches again on restore, for one MEM_MAP the image records: a mapping of the same
/// file bytes (`SharedMappingImage.file`), and what unmaps it when the daemon lets go.
public struct SharedMemoryAttachment {
    public var pointer: UnsafeMutableRawPointer
    public var release: () -> Void
    public init(pointer: UnsafeMutableRawPointer, release: @escaping () -> Void) {
        self.pointer = pointer
        self.release = release
    }
}

extension Hypervisor {
    /// The complete state now (docs/state-image.md). Pure: nothing changes, no counter or epoch moves.
    /// - Parameter includeMemory: false leaves RAM contents out (the image records the RAM regions in its
    ///   configuration only): the caller keeps RAM itself and passes the same memory map to `restore`.
    public func stateImage(includeMemory: Bool = true) -> HypervisorStateImage {
        typealias Image = HypervisorStateImage
        let instanceImages = instances.map { i in
            Image.InstanceImage(
                physical: i.physical.stateImage(), virtual: i.virtual.stateImage(),
                reservedSMRUse: i.reservedSMRUse.sorted { $0.key < $1.key }.map {
                    Image.ReservedSMR(slot: $0.key, stream: $0.value.stream, owner: $0.value.owner)
                },
                reservedContextBankUse: i.reservedContextBankUse.sorted { $0.key < $1.key }.map {
                    Image.ReservedBank(bank: $0.key, vm: $0.value)
                })
        }
        let mc = memoryController.map { c in
            Image.MemoryControllerImage(overrides: c.mc.overrides, securities: c.mc.securities,
                                        bypassConfig: c.mc.bypassConfig, interruptMask: c.mc.interruptMask,
                                        hostLocked: c.hostLocked)
        }
        let vmImages = vms.values.sorted { $0.handle < $1.handle }.map { vm in
            Image.VMImage(handle: vm.handle, stage2Root: vm.stage2.root, tablePages: vm.stage2.tablePages.sorted(),
                          streams: vm.streams.map { .init(smmu: $0.smmu, stream: $0.stream) },
                          contextBanks: vm.contextBanks.sorted { $0.key < $1.key }.map { .init(smmu: $0.key, bank: $0.value) })
        }
        var ram: [Image.MemoryPage]?
        if includeMemory {
            var pages: [Image.MemoryPage] = []
            memory.forEachNonZeroPage { address, bytes in pages.append(.init(address: address, bytes: Array(bytes))) }
            ram = pages
        }
        return Image(
            configuration: configuration, lifecycle: lifecycle,
            translationEpoch: translationEpoch.value, nextVM: nextVM, statistics: statistics,
            instances: instanceImages, memoryController: mc,
            streamOwners: ownership.streamOwners.map { owners in
                owners.sorted { $0.key < $1.key }.map { Image.StreamOwner(stream: StreamID($0.key), owner: $0.value) }
            },
            pageCodes: ownership.regions.map { Self.codeRuns($0.owners) },
            freeHypervisorPages: Self.pageRuns(pages.free), vms: vmImages,
            sharedMappings: sharedMappings.map { .init(range: $0.range, file: $0.file) }, memory: ram)
    }

    /// The configuration this hypervisor runs under, as a state image records it: the policy's, and the memory
    /// map's RAM regions now.
    public var configuration: ConfigurationFingerprint {
        let regions = memory.ramRegions.map { PhysicalRange(base: $0.base, size: $0.size) }
        if let c = fingerprintCache, c.regions == regions { return c.fingerprint }
        let f = ConfigurationFingerprint(policy: policy, memory: memory)
        fingerprintCache = (regions, f)
        return f
    }

    /// The image a restart checkpoint holds. RAM in files that outlive the process (restart mode's memfds,
    /// `MemoryMap.isFileBacked`) is left out: the image then records the RAM regions only, so its size and cost do
    /// not grow with what clients wrote into RAM (G8). Anonymous RAM is copied.
    public func checkpointImage() -> HypervisorStateImage {
        stateImage(includeMemory: !memory.isFileBacked)
    }

    static func codeRuns(_ codes: [UInt32]) -> [HypervisorStateImage.CodeRun] {
        var runs: [HypervisorStateImage.CodeRun] = []
        for code in codes {
            if let last = runs.last, last.code == code { runs[runs.count - 1].count += 1 } else {
                runs.append(.init(code: code, count: 1))
            }
        }
        return runs
    }

    static func pageRuns(_ pages: [UInt64]) -> [HypervisorStateImage.PageRun] {
        var runs: [HypervisorStateImage.PageRun] = []
        for page in pages {
            if var last = runs.last {
                let step = UInt64(last.count) * Ownership.pageSize
                if last.count == 1 && page &+ Ownership.pageSize == last.first { last.descending = true }
                let next = last.descending ? last.first &- step : last.first &+ step
                if page == next {
                    last.count += 1
                    runs[runs.count - 1] = last
                    continue
                }
            }
            runs.append(.init(first: page, count: 1, descending: false))
        }
        return runs
    }
}
