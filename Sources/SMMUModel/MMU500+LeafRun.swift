/// Speculative translations in bulk (protocol v1.1's DMA_PREFETCH probes up to hundreds of neighbouring pages per
/// request): inside a run (`speculating`), a stage-1 bank's probe that misses the TLB decodes its level-3
/// descriptor in the last-level table the run already found, instead of walking from the TTBR. The answer is
/// the one `translate(bank:...)` gives (the same checks in the same order: the descriptor fetch through the
/// filter, validity, AF, permissions, address size, the output's filter); anything unusual (a block, a fault
/// other than an invalid descriptor, a refused descriptor read) returns nil and the caller walks, so the rare
/// cases keep one implementation. The only difference: the result is not inserted into the TLB (a prefetch
/// may fill it, it need not).
extension MMU500 {
    /// The last-level table a stage-1 bank's walk of `iova` reaches, found once per 2 MiB in a run (the walk cache
    /// keeps it); `table` 0 when the walk ends above level 3 (a block, a fault).
    private func leafRegion(bank: Int, iova: UInt64, walker: TableWalker) -> WalkCache.LeafTable {
        let key = WalkCache.key(bank: bank, iova: iova)
        if let known = walkCache.leafTable(key: key) { return known }
        var found = WalkCache.LeafTable(table: 0, allowed: [], outputBits: 0)
        if case .success(let params) = stage1Parameters(bank, iova: iova, nextStageBits: configuration.outputAddressBits),
           params.inputBits >= 22 {
            switch walker.leafTable(params, input: iova & ((1 << UInt64(params.inputBits)) - 1)) {
            case .table(let table, let allowed):
                found = WalkCache.LeafTable(table: table, allowed: allowed, outputBits: params.outputBits)
            case .hole:
                found.hole = true
            case .walk:
                break
            }
        }
        walkCache.keep(found, key: key)
        return found
    }

    /// True when a level-3 descriptor is one `translateInLeafTable` answers itself (a page the access may use);
    /// anything else sends the probe to the walker.
    @inline(__always)
    private func isPlainLeaf(_ d: UInt64, region: WalkCache.LeafTable, access: DMAAccess) -> Bool {
        let output = StageParameters.addressField(d, lowBit: 12)
        return d & 2 != 0 && output >> UInt64(region.outputBits) == 0 && d & (1 << 10) != 0
            && region.allowed.intersection(TableWalker.stage1Permissions(d)).permits(access)
            && output >> UInt64(configuration.outputAddressBits) == 0
    }

    func translateInLeafTable(bank: Int, stream: StreamID, iova: UInt64, access: DMAAccess) -> Translation? {
        let walker = TableWalker(memory: memory, filter: filter, stream: stream, cache: walkCache)
        let region = leafRegion(bank: bank, iova: iova, walker: walker)
        guard region.table != 0,
              case .success(let d) = walker.fetch(region.table + ((iova >> 12) & 511) * 8, level: 3) else { return nil }
        guard d & 1 != 0 else {
            return fail(bank, stream, iova, access, WalkFault(kind: .translation, level: 3, duringWalk: false))
        }
        guard isPlainLeaf(d, region: region, access: access) else { return nil }
        let output = StageParameters.addressField(d, lowBit: 12)
        let permissions = region.allowed.intersection(TableWalker.stage1Permissions(d))
        return finish(bank: bank, stream: stream, iova: iova, access: access, physical: output | iova & 0xFFF,
                      permissions: permissions, level: 3, ipa: nil, tlbHit: false, mappingShift: 12, reachShift: 12)
    }
}

extension MMU500 {
    /// Inside a run for `stream`: the plain stage-1 bank (stage 2 bypassed, enabled, AArch64) that translates it,
    /// the only kind whose leaves a run decodes itself; nil for anything else (then each page is probed).
    private func runBank(_ stream: StreamID) -> (bank: Int, context: ContextState, s2cr: S2CR)? {
        guard walkCache.isActive(for: stream), !SCR0(values[sCR0Slot]).clientPD else { return nil }
        let match = matchStream(stream.rawValue)
        guard match >= 0 else { return nil }
        let s2cr = S2CR(values[s2crSlot + Int(match)])
        guard s2cr.kind == .translate, s2cr.contextBank < numContextBanks else { return nil }
        let ctx = context(s2cr.contextBank)
        guard ctx.type == .s1TranslateS2Bypass, ctx.enabled, ctx.aarch64 else { return nil }
        return (s2cr.contextBank, ctx, s2cr)
    }
}

extension MMU500 {
    /// Inside a run (`speculating`): the probes of up to `limit` consecutive pages from `iova`'s page (upwards, or
    /// downwards from it) that lie in its last-level table, answered together: `each(page, translation)` gets, in
    /// order, what `probe(stream:iova:access:)` answers for each page (the page's first byte; `tlbHit` aside, as for
    /// `translateInLeafTable`) and returns false to stop. Returns how many pages it answered: 0 when it cannot
    /// answer the first (a stream that is not translated by a plain stage-1 bank, no table known, a descriptor the
    /// walker must read), and the caller probes that page. Why: DMA_PREFETCH probes up to a thousand pages per
    /// request; here the stream match, the bank, the table's filter check and the backing memory are looked up once
    /// per table instead of once per page. The checks per page are `translate`'s, in its order: the TLB, then the
    /// descriptor, then `finish`. A run stops before a page whose descriptor is not a plain leaf or an invalid one.
    public func probeLeafRun(stream: StreamID, iova: UInt64, access incoming: DMAAccess, down: Bool, limit: Int,
                             _ each: (_ page: UInt64, _ translation: Translation) -> Bool) -> Int {
        guard limit > 0, let (bank, ctx, s2cr) = runBank(stream) else { return 0 }
        let access = Self.override(incoming, s2cr: s2cr)
        let first = iova & ~0xFFF
        let walker = TableWalker(memory: memory, filter: filter, stream: stream, cache: walkCache)
        let region = leafRegion(bank: bank, iova: first, walker: walker)
        let index = Int((first >> 12) & 511)
        let count = min(limit, down ? index + 1 : 512 - index)
        let low = down ? index - count + 1 : index
        recordsFaults[0] = false
        defer { recordsFaults[0] = true }
        guard region.hole || region.table != 0 else { return 0 }
        // One check for the table: every descriptor of a 4 KiB table lies in one page, and the filter decides by page.
        if !region.hole, let filter, !filter.permits(stream: stream, address: region.table, kind: .tableWalk) { return 0 }
        return withUnsafeTemporaryAllocation(of: UInt64.self, capacity: count) { buffer -> Int in
            guard let words = buffer.baseAddress else { return 0 }
            if region.hole {
                // No table below an invalid descriptor: each page faults as an invalid leaf would, unless the TLB holds it.
                words.update(repeating: 0, count: count)
            } else if !memory.read64Run(at: region.table + UInt64(low) * 8, count: count, into: words) {
                return 0
            }
            var answered = 0
            while answered < count {
                let page = down ? first &- UInt64(answered) << 12 : first &+ UInt64(answered) << 12
                let d = words[down ? count - 1 - answered : answered]
                // A descriptor the walker must read stops the run before its TLB lookup: the caller's probe makes it.
                guard d & 1 == 0 || isPlainLeaf(d, region: region, access: access) else { break }
                let t: Translation
                if let e = tlb.lookup(bank: bank, vmid: ctx.vmid, asid: ctx.asid, vaPage: page >> 12) {
                    t = finishHit(e, bank: bank, stream: stream, iova: page, access: access)
                } else if d & 1 == 0 {
                    t = fail(bank, stream, page, access, WalkFault(kind: .translation, level: 3, duringWalk: false))
                } else {
                    t = finish(bank: bank, stream: stream, iova: page, access: access,
                               physical: StageParameters.addressField(d, lowBit: 12),
                               permissions: region.allowed.intersection(TableWalker.stage1Permissions(d)), level: 3,
                               ipa: nil, tlbHit: false, mappingShift: 12, reachShift: 12)
                }
                answered += 1
                if !each(page, t) { break }
            }
            return answered
        }
    }
}
