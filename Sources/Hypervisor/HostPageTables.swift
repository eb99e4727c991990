import SMMUModel

/// The pages the host's live SMMU configuration uses as translation tables, so that VM_DONATE can
/// refuse them. Live: an enabled (SCTLR.M) host bank of some instance. Where a bank's tables are is
/// the model's to say (`MMU500.tablePages`), from the same walk parameters its translation uses.
extension Hypervisor {
    /// A host that builds more table pages than this (16 MiB of tables, far beyond what Linux's
    /// io-pgtable builds for its devices) gets every donation refused: the scan stays short, so one
    /// host's hypercall cannot stall the other clients on the server queue (G8).
    static let tablePageLimit = 4_096

    /// The host's live table pages, or nil when there are more than `tablePageLimit`.
    func hostPageTablePages() -> Set<UInt64>? {
        var found = Set<UInt64>()
        for instance in instances {
            for n in 0..<instance.hostContextBanks where instance.physical.peek(.SCTLR, index: n) & 1 != 0 {
                guard let pages = instance.physical.tablePages(bank: n, limit: Self.tablePageLimit - found.count)
                else { return nil }
                found.formUnion(pages)
                if found.count > Self.tablePageLimit { return nil }
            }
        }
        return found
    }
}
