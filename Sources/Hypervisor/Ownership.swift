import SMMUModel

/// The hypervisor's source of truth for who owns what: stream IDs per logical SMMU and every page of
/// memory. The host owns every stream and all of its RAM unless a hypercall or the config says otherwise.
public final class Ownership {
    public static let pageSize: UInt64 = 4096

    /// Non-host stream owners per logical SMMU; absent means the host.
    private var streamOwners: [[UInt16: Owner]]
    /// Per host-RAM region, one owner code per page: 0 host, n the VM with handle n.
    private var regions: [(range: PhysicalRange, owners: [UInt32])]
    public let hypervisorRAM: PhysicalRange
    public let hostDMARanges: [PhysicalRange]
    /// Pages of hypervisor RAM that hold a VM's stage-2 tables: the only hypervisor pages a walk for
    /// that VM's streams may read.
    private var tablePages: [VMHandle: Set<UInt64>] = [:]

    init(policy: HypervisorPolicy) {
        streamOwners = Array(repeating: [:], count: policy.topology.smmus.count)
        for (smmu, streams) in policy.hypervisorStreams where smmu < streamOwners.count {
            for s in streams { streamOwners[smmu][s.rawValue] = .hypervisor }
        }
        regions = policy.hostRAM.map { ($0, Array(repeating: 0, count: Int($0.size / Self.pageSize))) }
        hypervisorRAM = policy.hypervisorRAM
        hostDMARanges = policy.hostDMARanges
    }

    // MARK: Streams

    public func owner(ofStream stream: StreamID, smmu: Int) -> Owner {
        streamOwners[smmu][stream.rawValue] ?? .host
    }

    /// Streams of a logical SMMU that are not the host's, in order.
    public func foreignStreams(smmu: Int) -> [(stream: StreamID, owner: Owner)] {
        streamOwners[smmu].sorted { $0.key < $1.key }.map { (StreamID($0.key), $0.value) }
    }

    func setOwner(ofStream stream: StreamID, smmu: Int, to owner: Owner) {
        streamOwners[smmu][stream.rawValue] = owner == .host ? nil : owner
    }

    // MARK: Pages

    /// The owner of the page holding `address`, or nil when no RAM is there.
    public func owner(ofAddress address: UInt64) -> Owner? {
        for r in regions where r.range.contains(address) {
            let code = r.owners[Int((address - r.range.base) / Self.pageSize)]
            return code == 0 ? .host : .vm(VMHandle(rawValue: code))
        }
        return hypervisorRAM.contains(address) ? .hypervisor : nil
    }

    /// True when every page of `range` lies in RAM and belongs to `owner`.
    public func owns(_ owner: Owner, _ range: PhysicalRange) -> Bool {
        guard range.size > 0, range.base <= UInt64.max - range.size else { return false }
        var page = range.base & ~(Self.pageSize - 1)
        while page < range.end {
            if self.owner(ofAddress: page) != owner { return false }
            page += Self.pageSize
        }
        return true
    }

    /// True when `range` lies entirely in RAM the daemon models (host RAM or hypervisor RAM).
    public func isRAM(_ range: PhysicalRange) -> Bool {
        guard range.size > 0, range.base <= UInt64.max - range.size else { return false }
        var page = range.base & ~(Self.pageSize - 1)
        while page < range.end {
            if owner(ofAddress: page) == nil { return false }
            page += Self.pageSize
        }
        return true
    }

    func isHostRAM(_ range: PhysicalRange) -> Bool { regions.contains { $0.range.contains(range) } }

    /// Moves the pages of `range` (inside host RAM) to `owner` (host or a VM).
    func setOwner(of range: PhysicalRange, to owner: Owner) {
        let code: UInt32
        switch owner {
        case .host: code = 0
        case .vm(let vm): code = vm.rawValue
        case .hypervisor: preconditionFailure("hypervisor pages are its own RAM, never taken from the host")
        }
        for i in regions.indices where regions[i].range.contains(range) {
            let first = Int((range.base - regions[i].range.base) / Self.pageSize)
            for p in first..<(first + Int(range.size / Self.pageSize)) { regions[i].owners[p] = code }
        }
    }

    /// Every page a VM owns, ascending.
    func pages(of vm: VMHandle) -> [UInt64] {
        var out: [UInt64] = []
        for r in regions {
            for (i, code) in r.owners.enumerated() where code == vm.rawValue {
                out.append(r.range.base + UInt64(i) * Self.pageSize)
            }
        }
        return out
    }

    func setTablePages(_ pages: Set<UInt64>, of vm: VMHandle) { tablePages[vm] = pages.isEmpty ? nil : pages }

    // MARK: The owners' stage-2

    /// Whether a memory access the SMMU makes for a stream of `owner` may proceed: the owner's stage-2.
    ///
    /// Host streams reach host pages and the configured DMA ranges (MSI doorbells); a VM's streams reach
    /// its donated pages, and its walks read its stage-2 tables in hypervisor RAM; the hypervisor's
    /// own streams reach nothing (it does no DMA of its own in this model).
    func permits(_ streamOwner: Owner, address: UInt64, kind: MemoryAccessKind) -> Bool {
        switch streamOwner {
        case .host:
            if owner(ofAddress: address) == .host { return true }
            if case .data = kind { return hostDMARanges.contains { $0.contains(address) } }
            return false
        case .vm(let vm):
            switch owner(ofAddress: address) {
            case .vm(vm)?: return true
            case .hypervisor?:
                return kind == .tableWalk && tablePages[vm]?.contains(address & ~(Self.pageSize - 1)) == true
            default: return false
            }
        case .hypervisor:
            return false
        }
    }
}

/// The downstream filter one instance's transactions pass: the stage-2 of each stream's owner.
/// It is keyed by the stream, which the host cannot change, so no host programming can widen it.
final class OwnerStage2Filter: DownstreamFilter {
    private let ownership: Ownership
    private let smmu: Int

    init(ownership: Ownership, smmu: Int) {
        self.ownership = ownership
        self.smmu = smmu
    }

    func permits(stream: StreamID, address: UInt64, kind: MemoryAccessKind) -> Bool {
        ownership.permits(ownership.owner(ofStream: stream, smmu: smmu), address: address, kind: kind)
    }
}
