/// Speculative translations in bulk (protocol v1.1's DMA_PREFETCH probes up to hundreds of neighbouring pages per
/// request): inside a run (`speculating`), a stage-1 bank's probe that misses the TLB decodes its level-3
/// descriptor in the last-level table the run already found, instead of walking from the TTBR. The answer is
/// the one `translate(bank:...)` gives (the same checks in the same order: the descriptor fetch through the
/// filter, validity, AF, permissions, address size, the output's filter); anything unusual (a block, a fault
/// other than an invalid descriptor, a refused descriptor read) returns nil and the caller walks, so the rare
/// cases keep one implementation. The only difference: the result is not inserted into the TLB (a prefetch
/// may fill it, it need not).
extension MMU500 {
    func translateInLeafTable(bank: Int, stream: StreamID, iova: UInt64, access: DMAAccess) -> Translation? {
        let key = WalkCache.key(bank: bank, iova: iova)
        let walker = TableWalker(memory: memory, filter: filter, stream: stream, cache: walkCache)
        let region: WalkCache.LeafTable
        if let known = walkCache.leafTable(key: key) {
            region = known
        } else {
            var found = WalkCache.LeafTable(table: 0, allowed: [], outputBits: 0)
            if case .success(let params) = stage1Parameters(bank, iova: iova, nextStageBits: configuration.outputAddressBits),
               params.inputBits >= 22,
               let t = walker.leafTable(params, input: iova & ((1 << UInt64(params.inputBits)) - 1)) {
                found = WalkCache.LeafTable(table: t.table, allowed: t.allowed, outputBits: params.outputBits)
            }
            walkCache.keep(found, key: key)
            region = found
        }
        guard region.table != 0,
              case .success(let d) = walker.fetch(region.table + ((iova >> 12) & 511) * 8, level: 3) else { return nil }
        guard d & 1 != 0 else {
            return fail(bank, stream, iova, access, WalkFault(kind: .translation, level: 3, duringWalk: false))
        }
        let output = StageParameters.addressField(d, lowBit: 12)
        let permissions = region.allowed.intersection(TableWalker.stage1Permissions(d))
        guard d & 2 != 0, output >> UInt64(region.outputBits) == 0, d & (1 << 10) != 0, permissions.permits(access),
              output >> UInt64(configuration.outputAddressBits) == 0 else { return nil }
        return finish(bank: bank, stream: stream, iova: iova, access: access, physical: output | iova & 0xFFF,
                      permissions: permissions, level: 3, ipa: nil, tlbHit: false, mappingShift: 12, reachShift: 12)
    }
}

extension MMU500 {
    /// Inside a run (`speculating`): how many of the `limit` pages from `iova` on (upwards, or downwards from
    /// `iova` itself) a probe by `stream` would certainly answer with a fault, counted in the last-level table the
    /// run already found for `iova`'s 2 MiB: each has an invalid descriptor (bit 0 clear, read through the filter
    /// as a walk reads it) and no TLB entry (which a probe would use first). 0 when it cannot tell (no table
    /// known, a stream that is not translated by a plain stage-1 bank). Lets DMA_PREFETCH skip holes at the
    /// cost of a descriptor load each instead of a probe each; the pages it counts give no record either way.
    public func certainHoles(stream: StreamID, iova: UInt64, down: Bool, limit: Int) -> Int {
        guard walkCache.isActive(for: stream), limit > 0, !SCR0(values[sCR0Slot]).clientPD else { return 0 }
        let match = matchStream(stream.rawValue)
        guard match >= 0 else { return 0 }
        let s2cr = S2CR(values[s2crSlot + Int(match)])
        guard s2cr.kind == .translate, s2cr.contextBank < numContextBanks else { return 0 }
        let bank = s2cr.contextBank
        let ctx = context(bank)
        guard ctx.type == .s1TranslateS2Bypass, ctx.enabled, ctx.aarch64,
              let region = walkCache.leafTable(key: WalkCache.key(bank: bank, iova: iova)), region.table != 0 else { return 0 }
        let walker = TableWalker(memory: memory, filter: filter, stream: stream, cache: walkCache)
        var index = Int((iova >> 12) & 511)
        var count = 0
        while count < limit, index >= 0, index < 512 {
            guard case .success(let d) = walker.fetch(region.table + UInt64(index) * 8, level: 3), d & 1 == 0,
                  tlb.lookup(bank: bank, vmid: ctx.vmid, asid: ctx.asid, vaPage: (iova >> 12) &+ UInt64(bitPattern: Int64(down ? -count : count))) == nil
            else { break }
            count += 1
            index += down ? -1 : 1
        }
        return count
    }
}
