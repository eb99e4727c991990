/// AArch64 long-descriptor table walks (VMSAv8-64, 4K/16K/64K granules, 48-bit addresses) for
/// stage 1 and stage 2, as an SMMU context bank performs them.

/// How a walk failed, and where.
struct WalkFault: Error, Equatable {
    var kind: DMAFault
    var level: Int
    /// The fault happened while reading a descriptor (FSYNR0.PTWF for refusals).
    var duringWalk: Bool
    /// A stage-2 fault: the IPA that faulted (IPAFAR).
    var ipa: UInt64?
    /// No memory answered a descriptor read (FSR.EF rather than TF).
    var externalAbort = false
}

/// A successful walk's leaf.
struct WalkLeaf {
    var output: UInt64
    var permissions: TLB.Permissions
    var level: Int
    /// log2 of the mapping's size.
    var leafShift: Int
    /// Stage-1 nG (bit 11): the entry belongs to one ASID.
    var nonGlobal: Bool
}

/// The parameters of one stage's walk, decoded from TCR/VTCR, TCR2 and TTBRn.
struct StageParameters: Equatable {
    var stage2: Bool
    var tableBase: UInt64
    /// 12, 14 or 16.
    var granuleShift: Int
    var startLevel: Int
    var inputBits: Int
    var outputBits: Int

    var stride: Int { granuleShift - 3 }

    /// Lowest input address bit a level's index uses.
    func shift(_ level: Int) -> Int { granuleShift + (3 - level) * stride }

    /// Bits the start level indexes (more than `stride` when stage-2 tables are concatenated).
    var startIndexBits: Int { inputBits - shift(startLevel) }

    /// The same parameters with the TTBR's base address as the walk uses it: bits 63:48 and the bits below
    /// the start table's size are RES0 (ARM ARM D8.2, "Translation table base address alignment"; SMMUv2 §17.4
    /// TTBRn), and this model treats them as zero. Every descriptor address is then 8-byte aligned, so a
    /// descriptor never straddles two pages and the ownership check of its address covers all 8 bytes.
    func withAlignedTableBase() -> StageParameters {
        var p = self
        let bits = max(3, min(startIndexBits + 3, 48))   // a start table of 2^bits bytes, at least one descriptor
        let alignment = UInt64(1) << UInt64(max(bits, 6))   // and never below 64 bytes (BADDR[5:0] are RES0)
        p.tableBase = tableBase & 0x0000_FFFF_FFFF_FFFF & ~(alignment - 1)
        return p
    }

    /// Natural start level for an input size: 4 - ceil((inputBits - g) / (g - 3)).
    static func startLevel(inputBits: Int, granuleShift g: Int) -> Int {
        4 - (inputBits - g + (g - 3) - 1) / (g - 3)
    }

    /// Whether a block descriptor may appear at `level` (48-bit output, no LPA).
    func blockAllowed(at level: Int) -> Bool {
        granuleShift == 12 ? (level == 1 || level == 2) : level == 2
    }

    /// The address bits of a descriptor down to `lowBit` (output addresses are 48-bit).
    static func addressField(_ descriptor: UInt64, lowBit: Int) -> UInt64 {
        descriptor & 0x0000_FFFF_FFFF_FFFF & ~((1 << UInt64(lowBit)) - 1)
    }

    /// PASIZE / VTCR.PS encoding: 0→32, 1→36, 2→40, 3→42, 4→44, 5→48, 6→52 (capped at 48 here).
    static func physicalAddressBits(_ field: UInt64) -> Int {
        [32, 36, 40, 42, 44, 48, 48, 48][Int(field & 7)]
    }
}

/// Reads descriptors for one transaction, through the downstream filter.
struct TableWalker {
    let memory: PhysicalMemory
    let filter: DownstreamFilter?
    let stream: StreamID
    /// Table descriptors already read (and checked through the filter) in this run of speculative walks.
    var cache: WalkCache? = nil

    /// Walks `params` for `input`. `tableAddress` maps each descriptor address before it is read
    /// (stage 2 under a nested stage 1); it returns the physical address or a fault.
    func walk(_ params: StageParameters, input: UInt64,
              tableAddress: ((UInt64) -> Result<UInt64, WalkFault>)? = nil) -> Result<WalkLeaf, WalkFault> {
        let level0 = params.startLevel
        func fault(_ kind: DMAFault, _ level: Int, walk: Bool = false, abort: Bool = false) -> Result<WalkLeaf, WalkFault> {
            .failure(WalkFault(kind: kind, level: level, duringWalk: walk,
                               ipa: params.stage2 ? input : nil, externalAbort: abort))
        }
        guard (0...3).contains(level0), params.startIndexBits >= 1,
              params.startIndexBits <= params.stride + (params.stage2 ? 4 : 0) else {
            return fault(.translation, max(0, min(level0, 3)))
        }
        guard params.inputBits >= 64 || input >> UInt64(params.inputBits) == 0 else {
            return fault(.translation, level0)
        }
        var table = params.tableBase
        var allowed = TLB.Permissions.all
        for level in level0...3 {
            let shift = params.shift(level)
            let bits = level == level0 ? params.startIndexBits : params.stride
            let index = (input >> UInt64(shift)) & ((1 << UInt64(bits)) - 1)
            var address = table + index * 8
            if let tableAddress {
                switch tableAddress(address) {
                case .success(let pa): address = pa
                case .failure(let f): return .failure(f)
                }
            }
            // Aligned by construction (`withAlignedTableBase`, granule-aligned next-level tables, stage-2 outputs
            // that keep the IPA's low bits); masking again keeps the 8 bytes read inside the page checked.
            address &= ~7
            let descriptor: UInt64
            switch fetch(address, level: level) {
            case .success(let d): descriptor = d
            case .failure(.ownership): return fault(.ownership, level, walk: true)
            case .failure: return fault(.translation, level, walk: true, abort: true)
            }
            guard descriptor & 1 != 0 else { return fault(.translation, level) }
            let isTable = descriptor & 2 != 0
            if level < 3 && isTable {
                let next = StageParameters.addressField(descriptor, lowBit: params.granuleShift)
                guard next >> UInt64(params.outputBits) == 0 else { return fault(.addressSize, level) }
                if !params.stage2 { allowed.formIntersection(Self.tablePermissions(descriptor)) }
                table = next
                continue
            }
            // A block (levels 1 and 2, by granule) or a page (level 3, bits[1:0] = 0b11).
            guard level == 3 ? isTable : params.blockAllowed(at: level) else {
                return fault(.translation, level)
            }
            let output = StageParameters.addressField(descriptor, lowBit: shift)
            guard output >> UInt64(params.outputBits) == 0 else { return fault(.addressSize, level) }
            guard descriptor & (1 << 10) != 0 else { return fault(.accessFlag, level) }
            let leafPermissions = params.stage2 ? Self.stage2Permissions(descriptor) : Self.stage1Permissions(descriptor)
            return .success(WalkLeaf(output: output | (input & ((1 << UInt64(shift)) - 1)),
                                     permissions: allowed.intersection(leafPermissions),
                                     level: level, leafShift: shift,
                                     nonGlobal: !params.stage2 && descriptor & (1 << 11) != 0))
        }
        return fault(.translation, 3)
    }

    enum FetchFailure: Error { case ownership, abort }

    /// The descriptor at `address` (8-byte aligned): from the run's walk cache, or read through the filter.
    @inline(__always)
    func fetch(_ address: UInt64, level: Int) -> Result<UInt64, FetchFailure> {
        if let cached = cache?.descriptor(at: address, level: level) { return .success(cached) }
        if let filter, !filter.permits(stream: stream, address: address, kind: .tableWalk) { return .failure(.ownership) }
        guard let d = memory.read64(at: address) else { return .failure(.abort) }
        if level < 3 && d & 3 == 3 { cache?.keep(d, at: address, level: level) }
        return .success(d)
    }

    /// Where a stage-1 walk of `input` (4 KiB granule) ends above its leaf, for a run of probes that decodes leaves
    /// directly (`translateInLeafTable`, `MMU500.probeLeafRun`).
    enum LeafTableWalk {
        /// The last-level table, and the permissions its table descriptors allow.
        case table(UInt64, allowed: TLB.Permissions)
        /// An invalid descriptor above level 3: `walk` answers a translation fault for every input it covers.
        case hole
        /// Anything else (a block, another fault, a refused or unbacked descriptor read): the caller walks.
        case walk
    }

    /// Where a stage-1 walk of `input` ends above level 3, exactly as `walk` gets there.
    func leafTable(_ params: StageParameters, input: UInt64) -> LeafTableWalk {
        let level0 = params.startLevel
        guard !params.stage2, params.granuleShift == 12, (0...2).contains(level0), params.startIndexBits >= 1,
              params.startIndexBits <= params.stride, params.inputBits < 64, input >> UInt64(params.inputBits) == 0
        else { return .walk }
        var table = params.tableBase
        var allowed = TLB.Permissions.all
        for level in level0...2 {
            let bits = level == level0 ? params.startIndexBits : params.stride
            let index = (input >> UInt64(params.shift(level))) & ((1 << UInt64(bits)) - 1)
            guard case .success(let d) = fetch((table + index * 8) & ~7, level: level) else { return .walk }
            guard d & 1 != 0 else { return .hole }
            guard d & 2 != 0 else { return .walk }
            let next = StageParameters.addressField(d, lowBit: params.granuleShift)
            guard next >> UInt64(params.outputBits) == 0 else { return .walk }
            allowed.formIntersection(Self.tablePermissions(d))
            table = next
        }
        return .table(table, allowed: allowed)
    }

    /// Stage-1 leaf: AP[2:1] (bits 7:6), PXN (53), UXN (54); EL0-writable implies PXN.
    static func stage1Permissions(_ d: UInt64) -> TLB.Permissions {
        let readOnly = d & (1 << 7) != 0
        let user = d & (1 << 6) != 0
        var p: TLB.Permissions = [.privilegedRead, .privilegedExecute]
        if !readOnly { p.insert(.privilegedWrite) }
        if user {
            p.insert(.userRead)
            p.insert(.userExecute)
            if !readOnly { p.insert(.userWrite) }
        }
        if d & (1 << 53) != 0 || p.contains(.userWrite) { p.remove(.privilegedExecute) }
        if d & (1 << 54) != 0 { p.remove(.userExecute) }
        return p
    }

    /// Stage-1 table descriptor limits: APTable (62:61), UXNTable (60), PXNTable (59).
    static func tablePermissions(_ d: UInt64) -> TLB.Permissions {
        var p = TLB.Permissions.all
        if d & (1 << 62) != 0 { p.subtract([.privilegedWrite, .userWrite]) }
        if d & (1 << 61) != 0 { p.subtract([.userRead, .userWrite, .userExecute]) }
        if d & (1 << 60) != 0 { p.remove(.userExecute) }
        if d & (1 << 59) != 0 { p.remove(.privilegedExecute) }
        return p
    }

    /// Stage-2 leaf: S2AP (bit 6 read, bit 7 write), XN (54); the same for every privilege.
    static func stage2Permissions(_ d: UInt64) -> TLB.Permissions {
        var p = TLB.Permissions()
        if d & (1 << 6) != 0 { p.formUnion([.privilegedRead, .userRead]) }
        if d & (1 << 7) != 0 { p.formUnion([.privilegedWrite, .userWrite]) }
        if d & (1 << 54) == 0 { p.formUnion([.privilegedExecute, .userExecute]) }
        return p
    }
}
