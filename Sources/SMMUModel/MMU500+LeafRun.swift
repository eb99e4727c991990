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
