/// Which memory context banks' translation tables occupy, from the same walk parameters the translation
/// uses. The hypervisor asks before it gives a page away (VM_DONATE): a page a live bank walks as a table
/// must not change hands.
///
/// One scan spans every bank it is asked about, so tables that banks share are read once, and it stops at a
/// fixed amount of work however the tables are built: the hypervisor answers every request in bounded time.

/// What a table scan has found so far, and what it may still do.
public struct TablePageScan {
    /// The 4 KiB pages holding tables, found so far.
    public private(set) var pages = Set<UInt64>()
    /// Descriptor reads and table pages left before the scan gives up.
    public private(set) var budget: Int
    /// Work done so far (descriptors read plus table pages recorded), for tests and the benchmark.
    public private(set) var work = 0
    /// Only descriptors at addresses this accepts are read; the others are treated as invalid. The hypervisor
    /// passes the owner's stage-2, so the scan reads no more than the owner's own walks could.
    let readable: (UInt64) -> Bool
    /// (table, level, granule, stage-2 context) already visited, across banks.
    fileprivate var visited = Set<VisitKey>()

    public init(budget: Int, readable: @escaping (UInt64) -> Bool = { _ in true }) {
        self.budget = budget
        self.readable = readable
    }

    fileprivate mutating func spend() -> Bool {
        budget -= 1
        work += 1
        return budget >= 0
    }

    fileprivate mutating func record(_ page: UInt64) -> Bool {
        guard pages.insert(page).inserted else { return true }
        return spend()
    }
}

fileprivate struct VisitKey: Hashable {
    var table: UInt64
    var level: Int
    var granuleShift: Int
    /// The stage-2 table base a nested stage 1 is translated through (0 for a stage of its own).
    var stage2Base: UInt64
}

extension MMU500 {
    /// Adds the pages holding the tables `bank` walks: stage 1 through TTBR0 and TTBR1 as TCR enables them,
    /// stage 2 for S2 and nested banks (a nested stage 1's table addresses are IPAs, located through its
    /// stage 2). Table descriptors are followed, leaves are not. False once the scan's budget is spent.
    public func collectTablePages(bank: Int, into scan: inout TablePageScan) -> Bool {
        guard bank >= 0, bank < configuration.numContextBanks else { return true }
        let c = context(bank)
        var stage2: StageParameters?
        switch c.type {
        case .s2Translate:
            return collect(stage2Parameters(bank), translate: nil, stage2Base: 0, into: &scan)
        case .nested:
            guard c.s2Bank < configuration.numContextBanks else { return true }
            stage2 = stage2Parameters(c.s2Bank)
            guard collect(stage2!, translate: nil, stage2Base: 0, into: &scan) else { return false }
        case .s1TranslateS2Bypass, .s1TranslateS2Fault:
            break
        }
        let readable = scan.readable
        let walker = TableWalker(memory: ScanMemory(memory: memory, readable: readable), filter: nil, stream: StreamID(0))
        let translate: ((UInt64) -> UInt64?)? = stage2.map { s2 in
            { ipa in try? walker.walk(s2, input: ipa).get().output }
        }
        // TTBR0 (the lowest address) and TTBR1 (the highest) by the bank's own range selection.
        for iova: UInt64 in [0, .max] {
            guard case .success(let s1) = stage1Parameters(bank, iova: iova, nextStageBits: configuration.outputAddressBits)
            else { continue }
            guard collect(s1, translate: translate, stage2Base: stage2.map { $0.tableBase | 1 } ?? 0, into: &scan)
            else { return false }
        }
        return true
    }

    /// Adds the pages of one stage's tables; false once the budget is spent.
    private func collect(_ p: StageParameters, translate: ((UInt64) -> UInt64?)?, stage2Base: UInt64,
                         into scan: inout TablePageScan) -> Bool {
        guard (0...3).contains(p.startLevel), p.startIndexBits >= 1, p.startIndexBits <= p.stride + 4 else { return true }
        var work: [(table: UInt64, level: Int)] = []
        func visit(_ table: UInt64, _ level: Int) {
            let key = VisitKey(table: table, level: level, granuleShift: p.granuleShift, stage2Base: stage2Base)
            if scan.visited.insert(key).inserted { work.append((table, level)) }
        }
        visit(p.tableBase, p.startLevel)
        while let (table, level) = work.popLast() {
            let entries = UInt64(1) << UInt64(level == p.startLevel ? p.startIndexBits : p.stride)
            // The table's bytes, page by page, where the walk reads them.
            var offset: UInt64 = 0
            while offset < entries * 8 {
                if let pa = translate.map({ $0(table + offset) }) ?? (table + offset) {
                    guard scan.record(pa & ~(MemoryMap.pageSize - 1)) else { return false }
                }
                offset += MemoryMap.pageSize
            }
            guard level < 3 else { continue }
            for i in 0..<entries {
                guard scan.spend() else { return false }
                guard let address = translate.map({ $0(table + i * 8) }) ?? (table + i * 8),
                      scan.readable(address), let d = memory.read64(at: address), d & 0b11 == 0b11 else { continue }
                visit(StageParameters.addressField(d, lowBit: p.granuleShift), level + 1)
            }
        }
        return true
    }
}

/// The memory a scan's nested translation reads: the scan's predicate first.
private final class ScanMemory: PhysicalMemory {
    let memory: PhysicalMemory
    let readable: (UInt64) -> Bool
    init(memory: PhysicalMemory, readable: @escaping (UInt64) -> Bool) {
        self.memory = memory
        self.readable = readable
    }
    func read64(at address: UInt64) -> UInt64? { readable(address) ? memory.read64(at: address) : nil }
    func write64(_ value: UInt64, at address: UInt64) -> Bool { false }
}
