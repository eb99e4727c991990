import SMMUModel

/// A protected VM's stage-2: AArch64, 4 KiB granule, 48-bit IPA, start level 0, tables in hypervisor
/// RAM. Each donated page is mapped at an IPA equal to its physical address (protocol VM_DONATE).
struct VMStage2 {
    /// VTCR as written to the VM's context bank TCR: T0SZ 16, SL0 2 (level 0), inner/outer WB,
    /// inner shareable, TG0 4 KiB, PS 48-bit, bit 31 RES1.
    static let vtcr: UInt32 = 0x8000_0000 | 5 << 16 | 0 << 14 | 3 << 12 | 1 << 10 | 1 << 8 | 2 << 6 | 16

    let root: UInt64
    /// Every table page, root included: the only hypervisor pages the VM's walks may read.
    private(set) var tablePages: Set<UInt64>

    /// A stage-2 as a state image recorded it (checked by the restore).
    init(root: UInt64, tablePages: Set<UInt64>) {
        self.root = root
        self.tablePages = tablePages
    }

    init?(pages: inout HypervisorPages, memory: MemoryMap) {
        guard let root = pages.allocate(zeroing: memory) else { return nil }
        self.root = root
        tablePages = [root]
    }

    private static let tableDescriptor: UInt64 = 0b11
    /// Level-3 page: valid page, MemAttr normal WB (0xF), S2AP read/write, SH inner, AF.
    private static let pageAttributes: UInt64 = 0b11 | 0xF << 2 | 0b11 << 6 | 0b11 << 8 | 1 << 10
    private static let addressMask: UInt64 = 0x0000_FFFF_FFFF_F000

    /// Maps `page` at IPA = PA. Returns false when hypervisor RAM ran out of table pages.
    mutating func map(_ page: UInt64, pages: inout HypervisorPages, memory: MemoryMap) -> Bool {
        var table = root
        for level in 0..<3 {
            let slot = table + ((page >> UInt64(39 - 9 * level)) & 0x1FF) * 8
            let d = memory.read64(at: slot) ?? 0
            if d & 0b11 == Self.tableDescriptor {
                table = d & Self.addressMask
            } else {
                guard let next = pages.allocate(zeroing: memory) else { return false }
                tablePages.insert(next)
                memory.write64(next | Self.tableDescriptor, at: slot)
                table = next
            }
        }
        memory.write64(page & Self.addressMask | Self.pageAttributes, at: table + ((page >> 12) & 0x1FF) * 8)
        return true
    }

    /// Gives every table page back to the hypervisor, zeroed, in address order: the free list (and so every later
    /// allocation) is a function of the state alone, not of a set's iteration order, so a restored hypervisor
    /// allocates as the original would.
    func release(pages: inout HypervisorPages, memory: MemoryMap) {
        for page in tablePages.sorted() { pages.release(page, zeroing: memory) }
    }
}

/// What the hypervisor knows about one protected VM.
struct VirtualMachine {
    let handle: VMHandle
    var stage2: VMStage2
    /// Streams assigned to the VM, per logical SMMU.
    var streams: [(smmu: Int, stream: StreamID)] = []
    /// The reserved context bank serving the VM in each logical SMMU (same index in each instance).
    var contextBanks: [Int: Int] = [:]
}
