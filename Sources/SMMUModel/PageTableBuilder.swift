/// Builds AArch64 long-descriptor translation tables in simulated physical memory, the way
/// Linux's io-pgtable-arm does: stage 1 or stage 2, 4K/16K/64K granules, page and block
/// mappings, unmap. The hypervisor builds its stage-2 tables with it; tests build DMA tables.
public final class PageTableBuilder {
    public enum Stage: Sendable, Equatable { case stage1, stage2 }

    public enum Granule: Int, Sendable, CaseIterable {
        case size4K = 12, size16K = 14, size64K = 16
        public var shift: Int { rawValue }
        public var bytes: UInt64 { 1 << UInt64(rawValue) }
        /// TCR.TG0 / VTCR.TG0 encoding.
        public var tg0: UInt32 {
            switch self {
            case .size4K: 0
            case .size64K: 1
            case .size16K: 2
            }
        }
        /// TCR.TG1 encoding.
        public var tg1: UInt32 {
            switch self {
            case .size16K: 1
            case .size4K: 2
            case .size64K: 3
            }
        }
    }

    /// Leaf attributes. Stage 1 uses `writable`/`user`/`executeNever`/`privilegedExecuteNever`/
    /// `nonGlobal`; stage 2 uses `readable`/`writable`/`executeNever`.
    public struct Attributes: Sendable, Equatable {
        public var readable = true
        public var writable = true
        /// Stage 1: AP[1], unprivileged access allowed (io-pgtable sets it unless IOMMU_PRIV).
        public var user = true
        /// Stage 1: UXN; stage 2: XN.
        public var executeNever = false
        /// Stage 1: PXN.
        public var privilegedExecuteNever = false
        /// Stage 1: nG (io-pgtable sets it).
        public var nonGlobal = true
        /// AF; a clear flag makes the SMMU take an access-flag fault.
        public var accessFlag = true
        /// Stage 1: MAIR index (io-pgtable: 0 non-cacheable, 1 cacheable, 2 device).
        public var attributeIndex: UInt64 = 1

        public init(readable: Bool = true, writable: Bool = true, user: Bool = true, executeNever: Bool = false,
                    privilegedExecuteNever: Bool = false, nonGlobal: Bool = true, accessFlag: Bool = true) {
            self.readable = readable
            self.writable = writable
            self.user = user
            self.executeNever = executeNever
            self.privilegedExecuteNever = privilegedExecuteNever
            self.nonGlobal = nonGlobal
            self.accessFlag = accessFlag
        }

        public static let readWrite = Attributes()
        public static let readOnly = Attributes(writable: false)
    }

    public enum BuilderError: Error, Sendable, Equatable {
        case outOfTableMemory
        /// The address or size is not aligned to the mapping size.
        case misaligned(UInt64)
        /// No page or block of this size at this granule (or the level it needs is not walked).
        case unsupportedSize(UInt64)
        /// A block mapping already covers the range, where a table is needed.
        case blockInTheWay(UInt64)
        case notMapped(UInt64)
        case memoryWriteFailed(UInt64)
        case invalidParameters
    }

    public let memory: PhysicalMemory
    public let stage: Stage
    public let granule: Granule
    public let inputBits: Int
    public let outputBits: Int
    public let startLevel: Int
    /// Physical address of the start-level table(s): TTBR0 / VTTBR.
    public let root: UInt64
    private var next: UInt64
    private let poolEnd: UInt64

    /// Tables are carved from `tablePool` (granule-aligned). For stage 2, `startLevel` may be
    /// deeper than the natural one: the start-level tables are then concatenated (up to 16).
    public init(memory: PhysicalMemory, stage: Stage, granule: Granule = .size4K, inputBits: Int = 48,
                outputBits: Int = 48, tablePool: Range<UInt64>, startLevel: Int? = nil) throws(BuilderError) {
        self.memory = memory
        self.stage = stage
        self.granule = granule
        self.inputBits = inputBits
        self.outputBits = outputBits
        let natural = StageParameters.startLevel(inputBits: inputBits, granuleShift: granule.shift)
        let start = startLevel ?? natural
        self.startLevel = start
        guard (1...48).contains(inputBits), (1...48).contains(outputBits),
              (0...3).contains(start), start >= natural, stage == .stage2 || start == natural else {
            throw .invalidParameters
        }
        let rootIndexBits = inputBits - (granule.shift + (3 - start) * (granule.shift - 3))
        guard rootIndexBits >= 1, rootIndexBits <= granule.shift - 3 + (stage == .stage2 ? 4 : 0) else {
            throw .invalidParameters
        }
        let rootBytes = max(granule.bytes, UInt64(8) << UInt64(rootIndexBits))
        let first = (tablePool.lowerBound + rootBytes - 1) / rootBytes * rootBytes
        guard first + rootBytes <= tablePool.upperBound else { throw .outOfTableMemory }
        self.root = first
        self.next = first + rootBytes
        self.poolEnd = tablePool.upperBound
        try zero(first, bytes: rootBytes)
    }

    // MARK: Register values

    /// Stage-1 TCR as Linux writes it for TTBR0 only (T0SZ, TG0, SH0 outer-shareable, EPD1):
    /// 4K and 48-bit input gives 0x00802010.
    public var tcr: UInt32 {
        UInt32(64 - inputBits) | granule.tg0 << 14 | 2 << 12 | 1 << 23
    }

    /// Stage-2 VTCR: RES1, PS, TG0, SH0, SL0, T0SZ.
    public var vtcr: UInt32 {
        1 << 31 | Self.psField(outputBits) << 16 | granule.tg0 << 14 | 2 << 12 | sl0 << 6 | UInt32(64 - inputBits)
    }

    /// VTCR.SL0 for the start level.
    public var sl0: UInt32 {
        UInt32(granule == .size4K ? 2 - startLevel : 3 - startLevel)
    }

    /// TCR2.PASIZE / VTCR.PS encoding of an address size.
    public static func psField(_ bits: Int) -> UInt32 {
        switch bits {
        case ...32: 0
        case ...36: 1
        case ...40: 2
        case ...42: 3
        case ...44: 4
        default: 5
        }
    }

    // MARK: Mapping

    private func shift(_ level: Int) -> Int { granule.shift + (3 - level) * (granule.shift - 3) }

    private func index(_ va: UInt64, _ level: Int) -> UInt64 {
        let bits = level == startLevel ? inputBits - shift(level) : granule.shift - 3
        return (va >> UInt64(shift(level))) & ((1 << UInt64(bits)) - 1)
    }

    private func zero(_ base: UInt64, bytes: UInt64) throws(BuilderError) {
        var a = base
        while a < base + bytes {
            guard memory.write64(0, at: a) else { throw .memoryWriteFailed(a) }
            a += 8
        }
    }

    private func allocateTable() throws(BuilderError) -> UInt64 {
        guard next + granule.bytes <= poolEnd else { throw .outOfTableMemory }
        let t = next
        next += granule.bytes
        try zero(t, bytes: granule.bytes)
        return t
    }

    /// The level whose mapping size is `size`, if a page or block of that size exists.
    private func leafLevel(for size: UInt64) throws(BuilderError) -> Int {
        for level in startLevel...3 where UInt64(1) << UInt64(shift(level)) == size {
            let blockOK = granule == .size4K ? (level == 1 || level == 2) : level == 2
            if level == 3 || blockOK { return level }
        }
        throw .unsupportedSize(size)
    }

    /// The leaf descriptor bits (without address and type).
    private func leafAttributes(_ a: Attributes) -> UInt64 {
        var d: UInt64 = 3 << 8                      // SH = inner shareable
        if a.accessFlag { d |= 1 << 10 }
        switch stage {
        case .stage1:
            d |= (a.attributeIndex & 7) << 2
            if !a.writable { d |= 1 << 7 }
            if a.user { d |= 1 << 6 }
            if a.nonGlobal { d |= 1 << 11 }
            if a.privilegedExecuteNever { d |= 1 << 53 }
            if a.executeNever { d |= 1 << 54 }
        case .stage2:
            d |= 0xF << 2                           // MemAttr: normal write-back
            if a.readable { d |= 1 << 6 }
            if a.writable { d |= 1 << 7 }
            if a.executeNever { d |= 1 << 54 }
        }
        return d
    }

    /// Address of the descriptor for `va` at `level`, creating tables on the way when `create`.
    private func descriptorAddress(_ va: UInt64, level: Int, create: Bool) throws(BuilderError) -> UInt64 {
        var table = root
        for l in startLevel..<level {
            let address = table + index(va, l) * 8
            let d = memory.read64(at: address) ?? 0
            if d & 3 == 3 {
                table = StageParameters.addressField(d, lowBit: granule.shift)
            } else if d & 1 != 0 {
                throw .blockInTheWay(va)
            } else {
                guard create else { throw .notMapped(va) }
                let t = try allocateTable()
                guard memory.write64(t | 3, at: address) else { throw .memoryWriteFailed(address) }
                table = t
            }
        }
        return table + index(va, level) * 8
    }

    /// Maps [va, va + size) to [pa, pa + size) with one page or block descriptor.
    public func map(_ va: UInt64, to pa: UInt64, size: UInt64, attributes: Attributes = .readWrite) throws(BuilderError) {
        let level = try leafLevel(for: size)
        guard va % size == 0, pa % size == 0 else { throw .misaligned(va % size == 0 ? pa : va) }
        guard inputBits >= 64 || va >> UInt64(inputBits) == 0, pa >> UInt64(outputBits) == 0 else {
            throw .invalidParameters
        }
        let address = try descriptorAddress(va, level: level, create: true)
        let type: UInt64 = level == 3 ? 3 : 1
        guard memory.write64(pa | leafAttributes(attributes) | type, at: address) else {
            throw .memoryWriteFailed(address)
        }
    }

    /// Maps a range with pages of the granule.
    public func mapRange(_ va: UInt64, to pa: UInt64, size: UInt64, attributes: Attributes = .readWrite) throws(BuilderError) {
        var offset: UInt64 = 0
        while offset < size {
            try map(va + offset, to: pa + offset, size: granule.bytes, attributes: attributes)
            offset += granule.bytes
        }
    }

    /// Removes the page or block mapping of `size` at `va` (the descriptor becomes invalid).
    public func unmap(_ va: UInt64, size: UInt64) throws(BuilderError) {
        let level = try leafLevel(for: size)
        let address = try descriptorAddress(va, level: level, create: false)
        guard memory.write64(0, at: address) else { throw .memoryWriteFailed(address) }
    }

    /// The raw leaf descriptor mapping `va` and its level, by a software walk.
    public func leaf(for va: UInt64) -> (descriptor: UInt64, level: Int)? {
        var table = root
        for level in startLevel...3 {
            guard let d = memory.read64(at: table + index(va, level) * 8), d & 1 != 0 else { return nil }
            if level < 3 && d & 2 != 0 {
                table = StageParameters.addressField(d, lowBit: granule.shift)
                continue
            }
            return (d, level)
        }
        return nil
    }

    /// The output address `va` maps to, by a software walk (no permission checks).
    public func lookup(_ va: UInt64) -> UInt64? {
        guard let (d, level) = leaf(for: va) else { return nil }
        let s = UInt64(shift(level))
        return StageParameters.addressField(d, lowBit: Int(s)) | (va & ((1 << s) - 1))
    }
}
