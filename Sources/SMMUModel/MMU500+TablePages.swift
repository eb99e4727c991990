/// Which memory a context bank's translation tables occupy, from the same walk parameters the
/// translation uses. The hypervisor asks before it gives a page away (VM_DONATE): a page a live
/// bank walks as a table must not change hands.
extension MMU500 {
    /// The 4 KiB pages holding the tables `bank` walks: stage 1 through TTBR0 and TTBR1 as TCR enables
    /// them, stage 2 for S2 and nested banks (a nested stage 1's table addresses are IPAs, located
    /// through its stage 2). Table descriptors are followed, leaves are not. Each (table, level) is
    /// visited once, so cyclic or shared tables cost one visit. Returns nil past `limit` pages.
    public func tablePages(bank: Int, limit: Int) -> Set<UInt64>? {
        guard bank >= 0, bank < configuration.numContextBanks else { return [] }
        let c = context(bank)
        var found = Set<UInt64>()
        var visited = Set<UInt64>()
        var stage2: StageParameters?
        switch c.type {
        case .s2Translate:
            return collect(stage2Parameters(bank), translate: nil, into: &found, visited: &visited, limit: limit)
                ? found : nil
        case .nested:
            guard c.s2Bank < configuration.numContextBanks else { return [] }
            stage2 = stage2Parameters(c.s2Bank)
            guard collect(stage2!, translate: nil, into: &found, visited: &visited, limit: limit) else { return nil }
        case .s1TranslateS2Bypass, .s1TranslateS2Fault:
            break
        }
        let walker = TableWalker(memory: memory, filter: nil, stream: StreamID(0))
        let translate: ((UInt64) -> UInt64?)? = stage2.map { s2 in
            { ipa in try? walker.walk(s2, input: ipa).get().output }
        }
        // TTBR0 (the lowest address) and TTBR1 (the highest) by the bank's own range selection.
        for iova: UInt64 in [0, .max] {
            guard case .success(let s1) = stage1Parameters(bank, iova: iova, nextStageBits: configuration.outputAddressBits)
            else { continue }
            guard collect(s1, translate: translate, into: &found, visited: &visited, limit: limit) else { return nil }
        }
        return found
    }

    /// Adds the pages of one stage's tables; false once more than `limit` pages are found.
    private func collect(_ p: StageParameters, translate: ((UInt64) -> UInt64?)?, into found: inout Set<UInt64>,
                         visited: inout Set<UInt64>, limit: Int) -> Bool {
        guard (0...3).contains(p.startLevel), p.startIndexBits >= 1 else { return true }
        var work: [(table: UInt64, level: Int)] = [(p.tableBase, p.startLevel)]
        while let (table, level) = work.popLast() {
            let entries = UInt64(1) << UInt64(level == p.startLevel ? p.startIndexBits : p.stride)
            // The table's bytes, page by page, where the walk reads them.
            var offset: UInt64 = 0
            while offset < max(entries * 8, 1) {
                guard let pa = translate.map({ $0(table + offset) }) ?? (table + offset) else { break }
                found.insert(pa & ~(MemoryMap.pageSize - 1))
                if found.count > limit { return false }
                offset += MemoryMap.pageSize
            }
            guard level < 3 else { continue }
            for i in 0..<entries {
                guard let address = translate.map({ $0(table + i * 8) }) ?? (table + i * 8),
                      let d = memory.read64(at: address), d & 0b11 == 0b11 else { continue }
                let next = StageParameters.addressField(d, lowBit: p.granuleShift)
                if visited.insert(next | UInt64(level + 1) << 60).inserted { work.append((next, level + 1)) }
            }
        }
        return true
    }
}
