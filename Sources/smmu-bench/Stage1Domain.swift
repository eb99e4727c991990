import SMMUModel

/// One stage-1 DMA domain as Linux's arm-smmu driver sets it up: AArch64 4K page tables in host RAM,
/// context bank 0 written by `arm_smmu_write_context_bank()`, and one stream routed to it by
/// `arm_smmu_master_alloc_smes()`. Used in process and over the socket, so both measure the same walk.
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

    /// The register writes (physical address, value, width) that attach the domain on one window.
    struct Write {
        var address: UInt64
        var value: UInt64
        var width: AccessWidth
    }

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

    /// The writes, in the driver's order, for the window at `base`.
    func attachWrites(base: UInt64, configuration c: MMU500Configuration) -> [Write] {
        let asid = UInt64(Self.bank)
        func w(_ name: RegisterName, _ index: Int, _ value: UInt64, _ width: AccessWidth = .word) -> Write {
            Write(address: base + c.offset(of: name, index: index), value: value, width: width)
        }
        let b = Self.bank
        return [
            w(.CBA2R, b, 0x1),                       // VA64
            w(.CBAR, b, 0x0001_F300),                // stage 1, bypass-free, IRPTNDX 0
            w(.TCR2, b, 0x0003_8015),                // PASIZE 48 bits, AS
            w(.TCR, b, UInt64(tables.tcr)),
            w(.TTBR0, b, asid << 48 | tables.root, .doubleword),
            w(.TTBR1, b, asid << 48, .doubleword),
            w(.MAIR0, b, 0xF404_FF44),
            w(.MAIR1, b, 0),
            w(.SCTLR, b, 0x1067),                    // M, TRE, AFE, CFRE, CFIE, ASIDPNE
            w(.S2CR, Self.smr, 0x0002_0000),         // FAULT while the SMR changes
            w(.SMR, Self.smr, 1 << 31 | UInt64(Self.stream)),
            w(.S2CR, Self.smr, UInt64(b)),           // TRANS to the bank
        ]
    }
}
