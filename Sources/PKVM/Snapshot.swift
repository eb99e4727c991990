import SMMUModel

/// The whole state in the hypervisor's own terms: lifecycle, ownership, and per window the host's view beside
/// what the hypervisor programmed. Registers still at their reset value on both sides are left out. The daemon
/// formats it (DUMP's JSON); the fuzzers compare two of them.
public struct HypervisorSnapshot: Sendable, Equatable {
    public struct Register: Sendable, Equatable {
        public var location: RegisterLocation
        /// Offset in the window.
        public var offset: UInt64
        /// What the host reads; nil for the hypervisor's own banks and SMRs (hidden, G5).
        public var virtual: UInt64?
        public var physical: UInt64
    }
    public struct WindowState: Sendable, Equatable {
        public var index: Int
        public var name: String
        public var smmu: String
        public var base: UInt64
        public var hostContextBanks: Int
        public var hostSMRs: Int
        public var tlb: TLBStatistics
        public var registers: [Register]
    }
    /// A stream of a logical SMMU (by name) and who owns it.
    public struct StreamState: Sendable, Equatable {
        public var smmu: String
        public var stream: StreamID
        public var owner: Owner
    }
    /// Who a memory range is: RAM of an owner, or a range host streams may reach by DMA only.
    public enum MemoryUse: Sendable, Equatable {
        case owned(Owner)
        case hostDMAOnly
    }
    public struct MemoryState: Sendable, Equatable {
        public var range: PhysicalRange
        public var use: MemoryUse
    }
    public struct VMState: Sendable, Equatable {
        public var vm: VMHandle
        public var pages: Int
        /// The VM's streams, each on a logical SMMU (by name).
        public var streams: [StreamState]
        public var stage2Root: UInt64
    }
    public var state: LifecycleState
    public var windows: [WindowState]
    public var streams: [StreamState]
    public var memory: [MemoryState]
    public var vms: [VMState]
    /// VM ranges left out of `memory` past the snapshot's limit.
    public var memoryRangesOmitted: Int
    /// The memory controller's stream-ID registers, when the topology has one (Hypervisor+MemoryController.swift).
    public var memoryController: MemoryControllerState? = nil
}

/// IOTLB hits and misses (of one instance, or summed over all).
public struct TLBStatistics: Sendable, Equatable {
    public var hits: Int
    public var misses: Int
    public init(hits: Int = 0, misses: Int = 0) {
        self.hits = hits
        self.misses = misses
    }
}

extension Hypervisor {
    /// Every instance's IOTLB counters, summed.
    public var tlbStatistics: TLBStatistics {
        instances.reduce(into: TLBStatistics()) {
            let s = $1.physical.tlbStatistics
            $0.hits += s.hits
            $0.misses += s.misses
        }
    }

    /// The state now. VM memory is listed as ranges of contiguous pages, at most `maxVMRanges` of them.
    public func snapshot(maxVMRanges: Int = 256) -> HypervisorSnapshot {
        let windows = instances.map { instance -> HypervisorSnapshot.WindowState in
            var registers: [HypervisorSnapshot.Register] = []
            for (location, physical) in instance.physical.registers() {
                let d = RegisterMap.descriptor(location.name)
                let hidden = instance.hidden(location) != nil
                // Not hidden: the virtual model implements this element too (it differs only in the counts).
                let v = hidden ? nil : instance.virtual.peek(location.name, index: location.index)
                // An ID register's value is the configuration's, and the host's differs: always shown.
                let reset: UInt64?
                switch d.reset {
                case .value(let value): reset = value
                case .identification: reset = nil
                }
                if let reset, physical == reset, v == nil || v == reset { continue }
                registers.append(.init(location: location,
                                       offset: instance.physical.configuration.offset(of: location.name, index: location.index),
                                       virtual: v, physical: physical))
            }
            let tlb = instance.physical.tlbStatistics
            return .init(index: instance.index, name: instance.window.name, smmu: policy.topology.smmus[instance.smmu].name,
                         base: instance.window.base, hostContextBanks: instance.hostContextBanks,
                         hostSMRs: instance.hostSMRs, tlb: TLBStatistics(hits: tlb.hits, misses: tlb.misses),
                         registers: registers)
        }
        var streams: [HypervisorSnapshot.StreamState] = []
        for (i, smmu) in policy.topology.smmus.enumerated() {
            for (s, owner) in ownership.foreignStreams(smmu: i) {
                streams.append(.init(smmu: smmu.name, stream: s, owner: owner))
            }
        }
        var memory = policy.hostRAM.map { HypervisorSnapshot.MemoryState(range: $0, use: .owned(.host)) }
        memory.append(.init(range: policy.hypervisorRAM, use: .owned(.hypervisor)))
        for r in policy.hostDMARanges { memory.append(.init(range: r, use: .hostDMAOnly)) }
        var listed = 0
        let vmStates = vms.values.sorted { $0.handle < $1.handle }.map { vm -> HypervisorSnapshot.VMState in
            let pages = ownership.pages(of: vm.handle)
            // Contiguous pages as one range, and at most `maxVMRanges` ranges in all: DUMP's work and size stay
            // bounded however the host scattered its donations (the VM's page count is always exact).
            for run in Self.runs(of: pages) {
                listed += 1
                if listed <= maxVMRanges { memory.append(.init(range: run, use: .owned(.vm(vm.handle)))) }
            }
            return .init(vm: vm.handle, pages: pages.count,
                         streams: vm.streams.map {
                             .init(smmu: policy.topology.smmus[$0.smmu].name, stream: $0.stream, owner: .vm(vm.handle))
                         },
                         stage2Root: vm.stage2.root)
        }
        var snapshot = HypervisorSnapshot(state: lifecycle, windows: windows, streams: streams, memory: memory, vms: vmStates,
                                          memoryRangesOmitted: max(0, listed - maxVMRanges))
        snapshot.memoryController = memoryControllerSnapshot()
        return snapshot
    }
}
