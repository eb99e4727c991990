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
    }

    private func tableRoots(bank n: Int, in instance: HostedInstance) -> [TableRoot] {
        let cbar = CBAR(raw: UInt32(truncatingIfNeeded: instance.physical.peek(.CBAR, index: n)))
        let tcr = UInt32(truncatingIfNeeded: instance.physical.peek(.TCR, index: n))
        var roots: [TableRoot] = []
        switch cbar.kind {
        case .stage2:
            roots += stage2Root(tcr: tcr, ttbr: instance.physical.peek(.TTBR0, index: n))
        case .nested:
            let s2 = cbar.stage2ContextBank
            roots += stage2Root(tcr: UInt32(truncatingIfNeeded: instance.physical.peek(.TCR, index: s2)),
                                ttbr: instance.physical.peek(.TTBR0, index: s2))
            fallthrough
        case .stage1Bypass, .stage1Fault:
            // TTBR0: TG0 bits 15:14 (0 4K, 1 64K, 2 16K), T0SZ 5:0, EPD0 bit 7.
            if tcr & (1 << 7) == 0 {
                let shift = [12, 16, 14, 12][Int((tcr >> 14) & 3)]
                roots += stage1Root(ttbr: instance.physical.peek(.TTBR0, index: n), tsz: Int(tcr & 0x3F), shift: shift)
            }
            // TTBR1: TG1 bits 31:30 (1 16K, 2 4K, 3 64K), T1SZ 21:16, EPD1 bit 23.
            if tcr & (1 << 23) == 0 {
                let shift = [12, 14, 12, 16][Int((tcr >> 30) & 3)]
                roots += stage1Root(ttbr: instance.physical.peek(.TTBR1, index: n), tsz: Int((tcr >> 16) & 0x3F), shift: shift)
            }
        }
        return roots
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
        while let (table, level, count) = work.popLast(), found.count <= Self.tablePageLimit {
            for p in 0..<count {
                let base = table + UInt64(p) * granule
                var page = base
                while page < base + granule {   // a 16K/64K table spans several 4 KiB pages
                    found.insert(page)
                    page += Ownership.pageSize
                }
                guard level < 3 else { continue }
                for i in 0..<Int(granule / 8) {
                    guard let d = memory.read64(at: base + UInt64(i) * 8), d & 0b11 == 0b11 else { continue }
                    let next = d & 0x0000_FFFF_FFFF_F000 & ~(granule - 1)
                    if !found.contains(next) { work.append((next, level + 1, 1)) }
                }
            }
        }
    }
}
