import SMMUModel

/// The whole state as DUMP shows it: lifecycle, ownership, and per window the host's view beside
/// what the hypervisor programmed. Registers still at their reset value on both sides are left out.
public struct HypervisorSnapshot: Encodable, Sendable {
    public struct Register: Encodable, Sendable {
        public var register: String
        public var index: Int
        public var offset: String
        /// What the host reads ("hidden" for the hypervisor's own banks and SMRs).
        public var virtual: String
        public var physical: String
    }
    public struct WindowState: Encodable, Sendable {
        public var index: Int
        public var name: String
        public var smmu: String
        public var base: String
        public var host_context_banks: Int
        public var host_smrs: Int
        public var tlb_hits: Int
        public var tlb_misses: Int
        public var registers: [Register]
    }
    public struct StreamState: Encodable, Sendable {
        public var smmu: String
        public var stream: String
        public var owner: String
    }
    public struct MemoryState: Encodable, Sendable {
        public var base: String
        public var size: String
        public var owner: String
    }
    public struct VMState: Encodable, Sendable {
        public var vm: UInt32
        public var pages: Int
        public var streams: [String]
        public var stage2_root: String
    }
    public var state: String
    public var windows: [WindowState]
    public var streams: [StreamState]
    public var memory: [MemoryState]
    public var vms: [VMState]
    /// VM ranges left out of `memory` past the snapshot's limit.
    public var memory_ranges_omitted: Int
}

private func hex(_ v: UInt64) -> String { "0x" + String(v, radix: 16) }

/// ARM names by table position, made once: interpolating an enum case reflects on it at every use.
private let registerNames = RegisterName.allCases.map { "\($0)" }

extension Hypervisor {
    public var tlbStatistics: [String: Int] {
        let all = instances.map { $0.physical.tlbStatistics }
        return ["hits": all.reduce(0) { $0 + $1.hits }, "misses": all.reduce(0) { $0 + $1.misses }]
    }

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
                registers.append(.init(register: registerNames[location.name.rawValue], index: location.index,
                                       offset: hex(instance.physical.configuration.offset(of: location.name, index: location.index)),
                                       virtual: v.map(hex) ?? "hidden", physical: hex(physical)))
            }
            let tlb = instance.physical.tlbStatistics
            return .init(index: instance.index, name: instance.window.name, smmu: policy.topology.smmus[instance.smmu].name,
                         base: hex(instance.window.base), host_context_banks: instance.hostContextBanks,
                         host_smrs: instance.hostSMRs, tlb_hits: tlb.hits, tlb_misses: tlb.misses, registers: registers)
        }
        var streams: [HypervisorSnapshot.StreamState] = []
        for (i, smmu) in policy.topology.smmus.enumerated() {
            for (s, owner) in ownership.foreignStreams(smmu: i) {
                streams.append(.init(smmu: smmu.name, stream: s.description, owner: owner.description))
            }
        }
        var memory = policy.hostRAM.map { HypervisorSnapshot.MemoryState(base: hex($0.base), size: hex($0.size), owner: "host") }
        memory.append(.init(base: hex(policy.hypervisorRAM.base), size: hex(policy.hypervisorRAM.size), owner: "hypervisor"))
        for r in policy.hostDMARanges { memory.append(.init(base: hex(r.base), size: hex(r.size), owner: "host (DMA only)")) }
        var listed = 0
        let vmStates = vms.values.sorted { $0.handle < $1.handle }.map { vm -> HypervisorSnapshot.VMState in
            let pages = ownership.pages(of: vm.handle)
            // Contiguous pages as one range, and at most `maxVMRanges` ranges in all: DUMP's work and size stay
            // bounded however the host scattered its donations (the VM's page count is always exact).
            for run in Self.runs(of: pages) {
                listed += 1
                if listed > maxVMRanges { break }
                memory.append(.init(base: hex(run.base), size: hex(run.size), owner: vm.handle.description))
            }
            return .init(vm: vm.handle.rawValue, pages: pages.count,
                         streams: vm.streams.map { "\(policy.topology.smmus[$0.smmu].name):\($0.stream)" },
                         stage2_root: hex(vm.stage2.root))
        }
        return HypervisorSnapshot(state: "\(lifecycle)", windows: windows, streams: streams, memory: memory, vms: vmStates,
                                  memory_ranges_omitted: max(0, listed - maxVMRanges))
    }
}
