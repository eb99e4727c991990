import ArmSMMUDriver
import SMMUModel

/// One stage-1 DMA domain as Linux's arm-smmu driver sets it up: AArch64 4K page tables in host RAM,
/// context bank 0 written by `arm_smmu_write_context_bank()`, and one stream routed to it by
/// `arm_smmu_master_alloc_smes()`. Attached by `ArmSMMU` through any port: in process and over the socket, so
/// both measure the same walk.
struct Stage1Domain {
    static let stream: UInt16 = 0x20
    static let bank = 0
    static let smr = 0
    /// The page the hit rows translate again and again.
    static let hitIOVA: UInt64 = 0x10_0000
    /// The miss rows sweep `missPages` consecutive pages from here: eight times the IOTLB's 8192
    /// (hashed, direct-mapped) entries, so an entry is evicted long before the sweep comes back to it.
    /// They map onto `dataPages` host pages in turn.
    static let missIOVA: UInt64 = 0x4000_0000
    static let missPages = 65536
    static let dataPages = 256

    let tables: PageTableBuilder
    /// Where the tables live: [pool.lowerBound, tablesEnd) holds every table built.
    let pool: Range<UInt64>
    let dataBase: UInt64

    /// Builds the tables in `memory`: the hit page and the miss range map onto host pages from `dataBase`.
    init(memory: PhysicalMemory, tablePool: Range<UInt64>, dataBase: UInt64) throws(PageTableBuilder.BuilderError) {
        tables = try PageTableBuilder(memory: memory, stage: .stage1, tablePool: tablePool)
        pool = tablePool
        self.dataBase = dataBase
        try tables.map(Self.hitIOVA, to: dataBase, size: 4096)
        for page in 0..<UInt64(Self.missPages) {
            try tables.map(Self.missIOVA + page << 12, to: dataBase + (page % UInt64(Self.dataPages)) << 12, size: 4096)
        }
    }

    /// The physical address the hit page must translate to.
    var hitPhysical: UInt64 { dataBase }

    /// Linux's attach of the domain's one stream (probe_device, write_context_bank, install_s2crs).
    func attach<Port: RegisterPort>(_ smmu: ArmSMMU<Port>) throws(Port.Failure) {
        let bank = ArmSMMUContextBank.stage1(asid: UInt16(Self.bank), pageTable: tables.root, tcr: tables.tcr)
        try smmu.attach(bank: Self.bank, bank, streams: [(index: Self.smr, id: Self.stream, mask: 0)])
    }
}
