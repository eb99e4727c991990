import SMMUModel

/// EL2's own page allocator over the hypervisor RAM: VMs' stage-2 tables come from here.
/// Pages are zeroed when handed out and when given back.
struct HypervisorPages {
    let range: PhysicalRange
    /// Free pages; the last is handed out first.
    var free: [UInt64]

    init(range: PhysicalRange) {
        self.range = range
        free = stride(from: range.end - Ownership.pageSize, through: range.base, by: -Int(Ownership.pageSize)).map { $0 }
    }

    var available: Int { free.count }

    mutating func allocate(zeroing memory: MemoryMap) -> UInt64? {
        guard let page = free.popLast() else { return nil }
        _ = memory.zero(at: page, count: Int(Ownership.pageSize))
        return page
    }

    mutating func release(_ page: UInt64, zeroing memory: MemoryMap) {
        precondition(range.contains(page), "page 0x\(String(page, radix: 16)) is not hypervisor RAM")
        _ = memory.zero(at: page, count: Int(Ownership.pageSize))
        free.append(page)
    }
}
