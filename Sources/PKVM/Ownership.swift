import SMMUModel

/// The hypervisor's source of truth for who owns what: stream IDs per logical SMMU and every page of
/// memory. The host owns every stream and all of its RAM unless a hypercall or the config says otherwise.
///
/// Every path that touches memory asks this one table (docs/hypervisor-model.md, "Memory"): MEM_READ,
/// MEM_WRITE and MEM_MAP, each DMA output and each table-walk descriptor (through `OwnerStage2Filter`),
/// VM_DONATE and its live-table scan, and the scrub of VM_DESTROY. Besides the owner, each host page
/// records whether a client's shared file backs it (MEM_MAP): such a page stays the host's, because the
/// host reaches it through its own file descriptor whatever the daemon decides.
public final class Ownership {
    public static let pageSize: UInt64 = 4096
    /// Bit of a page's code: the page is backed by a host client's shared file (MEM_MAP).
    static let sharedBit: UInt32 = 1 << 31
    /// VM handles stay below the shared bit.
    public static let maxVMHandle: UInt32 = sharedBit - 1

    /// Non-host stream owners per logical SMMU; absent means the host.
    var streamOwners: [[UInt16: Owner]]
    /// Per host-RAM region, one code per page: 0 host, n the VM with handle n; `sharedBit` set on a host
    /// page a client's file backs.
    var regions: [(range: PhysicalRange, owners: [UInt32])]
    public let hypervisorRAM: PhysicalRange
    public let hostDMARanges: [PhysicalRange]
    /// Pages each VM owns, by handle (the count of its code in `regions`).
    var vmPageCounts: [UInt32: Int] = [:]
    /// Pages of hypervisor RAM that hold a VM's stage-2 tables: the only hypervisor pages a walk for
    /// that VM's streams may read.
    var tablePages: [VMHandle: Set<UInt64>] = [:]
    /// Advanced by every change below (who owns a stream or a page, which pages a client's file backs): each
    /// can change what a stream's DMA reaches, so no translation cached before it may be used after it.
    var epoch: TranslationEpoch?

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
        epoch?.advance()
        streamOwners[smmu][stream.rawValue] = owner == .host ? nil : owner
    }

    // MARK: Pages

    /// The owner of the page holding `address`, or nil when no RAM is there.
    public func owner(ofAddress address: UInt64) -> Owner? {
        for r in regions where r.range.contains(address) {
            let code = r.owners[Int((address - r.range.base) / Self.pageSize)] & ~Self.sharedBit
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

    /// Calls `body` with the page codes of each part of `range` that lies in a host-RAM region (a range may span
    /// adjacent regions), in address order, to read or change them.
    private func forEachCodes(of range: PhysicalRange, _ body: (inout ArraySlice<UInt32>) -> Void) {
        guard range.size > 0, range.base <= UInt64.max - range.size else { return }
        for i in regions.indices where regions[i].range.overlaps(range) {
            let r = regions[i].range
            let start = max(r.base, range.base & ~(Self.pageSize - 1))
            let end = min(r.end, range.end)
            let first = Int((start - r.base) / Self.pageSize)
            let count = Int((end - start + Self.pageSize - 1) / Self.pageSize)
            body(&regions[i].owners[first..<(first + count)])
        }
    }

    /// Moves the pages of `range` (inside host RAM) to `owner` (host or a VM). A shared page stays the
    /// host's: callers refuse to move one first (`isShared`), and this keeps the table consistent if not.
    func setOwner(of range: PhysicalRange, to owner: Owner) {
        let code: UInt32
        switch owner {
        case .host: code = 0
        case .vm(let vm): code = vm.rawValue
        case .hypervisor: preconditionFailure("hypervisor pages are its own RAM, never taken from the host")
        }
        epoch?.advance()
        forEachCodes(of: range) { codes in
            for p in codes.indices where codes[p] & Self.sharedBit == 0 && codes[p] != code {
                if codes[p] != 0 { vmPageCounts[codes[p], default: 0] -= 1 }
                if code != 0 { vmPageCounts[code, default: 0] += 1 }
                codes[p] = code
            }
        }
        vmPageCounts = vmPageCounts.filter { $0.value != 0 }
    }

    /// True when some page of `range` (inside host RAM) is backed by a client's shared file.
    public func isShared(_ range: PhysicalRange) -> Bool {
        var shared = false
        forEachCodes(of: range) { codes in shared = shared || codes.contains { $0 & Self.sharedBit != 0 } }
        return shared
    }

    /// Marks the host pages of `range` as backed by a client's shared file (MEM_MAP) or not any more.
    func setShared(_ range: PhysicalRange, _ shared: Bool) {
        epoch?.advance()
        forEachCodes(of: range) { codes in
            for p in codes.indices { codes[p] = shared ? codes[p] | Self.sharedBit : codes[p] & ~Self.sharedBit }
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

    /// How many pages a VM owns (kept as pages change hands: VM_DONATE asks on every call).
    func pageCount(of vm: VMHandle) -> Int { vmPageCounts[vm.rawValue] ?? 0 }

    func setTablePages(_ pages: Set<UInt64>, of vm: VMHandle) {
        epoch?.advance()
        tablePages[vm] = pages.isEmpty ? nil : pages
    }

    // MARK: The owners' stage-2

    /// Whether a memory access the SMMU makes for a stream of `owner` may proceed: the owner's stage-2.
    ///
    /// Host streams reach host pages and the configured DMA ranges (MSI doorbells); a VM's streams reach
    /// its donated pages, and its walks read its stage-2 tables in hypervisor RAM; the hypervisor's
    /// own streams reach nothing (it does no DMA of its own in this model).
    func permits(_ streamOwner: Owner, address: UInt64, kind: MemoryAccessKind) -> Bool {
        switch streamOwner {
        case .host:
            switch owner(ofAddress: address) {
            case .host?: return true
            case nil:
                // The DMA ranges are outside all RAM (the config refuses an overlap); checked here too, so that
                // no range can ever reach a page that has an owner.
                if case .data = kind { return hostDMARanges.contains { $0.contains(address) } }
                return false
            default: return false
            }
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
