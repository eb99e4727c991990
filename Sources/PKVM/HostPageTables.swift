import SMMUModel

/// The pages the host's live SMMU configuration uses as translation tables, so that VM_DONATE can
/// refuse them. Live: an enabled (SCTLR.M) host bank of some instance. Where a bank's tables are is
/// the model's to say (`MMU500.collectTablePages`), from the same walk parameters its translation uses.
extension Hypervisor {
    /// The scan's work limit, in descriptor reads plus table pages: about 5 ms here (the benchmark's worst
    /// VM_DONATE row). Tables that banks share
    /// are read once, so this is ample for what Linux's io-pgtable builds (a few pages per domain); a host
    /// that builds more gets its donations refused, and one host's hypercall cannot stall the server's other
    /// clients (G8), however its tables are shaped.
    static let tableScanBudget = 1 << 17

    /// The host's live table pages, or nil when finding them all would take more than `tableScanBudget`.
    /// Only host pages are read: the scan sees what the host's own walks may see and nothing of a VM's.
    func hostPageTablePages() -> (pages: Set<UInt64>, work: Int)? {
        let ownership = self.ownership
        var scan = TablePageScan(budget: Self.tableScanBudget) { ownership.owner(ofAddress: $0) == .host }
        for instance in instances {
            for n in 0..<instance.hostContextBanks where instance.physical.peek(.SCTLR, index: n) & 1 != 0 {
                guard instance.physical.collectTablePages(bank: n, into: &scan) else { return nil }
            }
        }
        return (scan.pages, scan.work)
    }
}
