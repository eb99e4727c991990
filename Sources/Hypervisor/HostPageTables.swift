import SMMUModel

/// Finds the pages the host's live SMMU configuration uses as translation tables, so that
/// VM_DONATE can refuse them. Live: an enabled (SCTLR.M) host bank of some instance.
///
/// The walk follows table descriptors only (leaves are not tables) and is bounded: a host that
/// builds more table pages than `limit` gets every donation refused rather than a slow hypercall.
extension Hypervisor {
    static let tablePageLimit = 65_536

    func hostPageTablePages() -> Set<UInt64> {
        var found = Set<UInt64>()
        for instance in instances {
            for n in 0..<instance.hostContextBanks
            where instance.physical.peek(.SCTLR, index: n) & 1 != 0 {
                for root in tableRoots(bank: n, in: instance) {
                    collect(root, into: &found)
                    if found.count > Self.tablePageLimit { return found.union([UInt64.max]) }
                }
            }
        }
        return found
    }

    /// One translation regime's root: where it starts and how it is shaped.
    struct TableRoot {
        var address: UInt64
        var pageShift: Int
        var startLevel: Int
        var rootPages: Int
        /// For the stage 1 of a nested bank: its table addresses are IPAs, translated by this stage 2.
        var stage2: TableRootBox?
    }

    /// Indirection so a root can hold the stage-2 root it is translated by.
    final class TableRootBox {
        let root: TableRoot
        init(_ root: TableRoot) { self.root = root }
    }

    private func tableRoots(bank n: Int, in instance: HostedInstance) -> [TableRoot] {
        let cbar = CBAR(raw: UInt32(truncatingIfNeeded: instance.physical.peek(.CBAR, index: n)))
        let tcr = UInt32(truncatingIfNeeded: instance.physical.peek(.TCR, index: n))
        var stage2: TableRoot?
        switch cbar.kind {
        case .stage2:
            return stage2Root(tcr: tcr, ttbr: instance.physical.peek(.TTBR0, index: n))
        case .nested:
            let s2 = cbar.stage2ContextBank
            stage2 = stage2Root(tcr: UInt32(truncatingIfNeeded: instance.physical.peek(.TCR, index: s2)),
                                ttbr: instance.physical.peek(.TTBR0, index: s2)).first
        case .stage1Bypass, .stage1Fault:
            break
        }
        var stage1: [TableRoot] = []
        // TTBR0: TG0 bits 15:14 (0 4K, 1 64K, 2 16K), T0SZ 5:0, EPD0 bit 7.
        if tcr & (1 << 7) == 0 {
            let shift = [12, 16, 14, 12][Int((tcr >> 14) & 3)]
            stage1 += stage1Root(ttbr: instance.physical.peek(.TTBR0, index: n), tsz: Int(tcr & 0x3F), shift: shift)
        }
        // TTBR1: TG1 bits 31:30 (1 16K, 2 4K, 3 64K), T1SZ 21:16, EPD1 bit 23.
        if tcr & (1 << 23) == 0 {
            let shift = [12, 14, 12, 16][Int((tcr >> 30) & 3)]
            stage1 += stage1Root(ttbr: instance.physical.peek(.TTBR1, index: n), tsz: Int((tcr >> 16) & 0x3F), shift: shift)
        }
        guard let stage2 else { return stage1 }
        // Nested: stage-1 table addresses are IPAs; the walk reads them where stage 2 puts them.
        let box = TableRootBox(stage2)
        return [stage2] + stage1.map { var r = $0; r.stage2 = box; return r }
    }

    private func stage1Root(ttbr: UInt64, tsz: Int, shift: Int) -> [TableRoot] {
        let inputBits = 64 - max(tsz, 16)
        let perLevel = shift - 3
        let levels = (inputBits - shift + perLevel - 1) / perLevel
        return [TableRoot(address: ttbr & 0x0000_FFFF_FFFF_F000, pageShift: shift, startLevel: max(0, 4 - levels), rootPages: 1)]
    }

    private func stage2Root(tcr: UInt32, ttbr: UInt64) -> [TableRoot] {
        let shift = [12, 16, 14, 12][Int((tcr >> 14) & 3)]
        let sl0 = Int((tcr >> 6) & 3)
        let start = shift == 12 ? 2 - sl0 : 3 - sl0
        let inputBits = 64 - max(Int(tcr & 0x3F), 16)
        let perLevel = shift - 3
        let resolvedBelow = shift + perLevel * (3 - max(start, 0))
        let rootEntries = 1 << max(0, inputBits - resolvedBelow)
        let pages = max(1, (rootEntries * 8) >> shift)
        return [TableRoot(address: ttbr & 0x0000_FFFF_FFFF_F000, pageShift: shift, startLevel: max(start, 0),
                          rootPages: min(pages, 16))]
    }

    private func collect(_ root: TableRoot, into found: inout Set<UInt64>) {
        let granule = UInt64(1) << UInt64(root.pageShift)
        var work: [(table: UInt64, level: Int, pages: Int)] = [(root.address, root.startLevel, root.rootPages)]
        // Each (table, level) once: a host's cyclic or shared tables cost one visit, not an explosion.
        var visited = Set<UInt64>()
        while let (table, level, count) = work.popLast(), found.count <= Self.tablePageLimit {
            for p in 0..<count {
                guard let base = physical(table + UInt64(p) * granule, through: root.stage2?.root) else { continue }
                var page = base
                while page < base + granule {   // a 16K/64K table spans several 4 KiB pages
                    found.insert(page)
                    page += Ownership.pageSize
                }
                guard level < 3 else { continue }
                for i in 0..<Int(granule / 8) {
                    guard let d = memory.read64(at: base + UInt64(i) * 8), d & 0b11 == 0b11 else { continue }
                    let next = d & 0x0000_FFFF_FFFF_F000 & ~(granule - 1)
                    if visited.insert(next | UInt64(level + 1) << 60).inserted { work.append((next, level + 1, 1)) }
                }
            }
        }
    }

    /// A stage-1 table address as the walk would read it: itself, or its IPA translated by `stage2`.
    private func physical(_ address: UInt64, through stage2: TableRoot?) -> UInt64? {
        guard let s2 = stage2 else { return address }
        let shift = UInt64(s2.pageShift)
        let perLevel = UInt64(s2.pageShift - 3)
        var table = s2.address
        var level = s2.startLevel
        var first = true
        while level <= 3 {
            let indexShift = shift + perLevel * UInt64(3 - level)
            var index = (address >> indexShift) & ((1 << perLevel) - 1)
            if first { index = (address >> indexShift) & UInt64(s2.rootPages << Int(perLevel) - 1) }   // concatenated roots
            first = false
            guard let d = memory.read64(at: table + index * 8), d & 1 == 1 else { return nil }
            let outputMask: UInt64 = 0x0000_FFFF_FFFF_F000
            if level == 3 || d & 0b10 == 0 {
                let blockMask = (UInt64(1) << indexShift) - 1
                return (d & outputMask & ~blockMask) | (address & blockMask)
            }
            table = d & outputMask
            level += 1
        }
        return nil
    }
}
