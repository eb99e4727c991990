import Testing
@testable import PKVM
import SMMUModel

/// G3: whatever the host programs, a host stream's DMA and every table walk for it reach host pages only.
@Suite struct G3DMATests {
    let vmStream: UInt32 = 0x15
    let hostStream: UInt16 = 0x20

    /// A finalized machine after Linux's reset, with a VM owning 8 pages at vmData and stream 0x15.
    func machine() -> (Machine, LinuxDriver, VMHandle) {
        let m = Machine()
        let d = m.driver()
        d.reset()
        let vm = m.protectedVM(stream: vmStream, pages: 8)
        return (m, d, vm)
    }

    func vmStage2Root(_ m: Machine, _ vm: VMHandle) -> UInt64 { m.hv.vms[vm]!.stage2.root }

    @Test func bypassThenDMAIntoVMMemoryFaults() {
        let (m, d, vm) = machine()
        d.bypass(smr: 0, stream: hostStream)
        #expect(m.hv.dma(window: 0, stream: UInt32(hostStream), iova: hostData, access: .write).physicalAddress == hostData,
                "bypass over host memory is emulated, not refused")
        for target in [vmData, vmData + 0x7FF8, vmStage2Root(m, vm), hypervisorRAM.base, hostRAM.end, 0x0800_0000] {
            #expect(m.hv.dma(window: 0, stream: UInt32(hostStream), iova: target, access: .write).fault == .ownership,
                    "bypass reached 0x\(String(target, radix: 16))")
        }
        #expect(m.audit.events.isEmpty, "safe settings are emulated, not denied")
    }

    @Test func clientPDThenDMAIntoVMMemoryFaults() {
        let (m, d, _) = machine()
        d.route(smr: 0, stream: hostStream, toBank: 0)
        d.w32(.sCR0, d.r32(.sCR0) | 1)
        #expect(d.r32(.sCR0) & 1 == 1, "CLIENTPD reads back")
        #expect(m.physical(0).peek(.sCR0) & 1 == 0, "the physical SMMU stays enabled")
        for stream in [UInt32(hostStream), 0x7ABC] {
            #expect(m.hv.dma(window: 0, stream: stream, iova: hostData, access: .write).physicalAddress == hostData)
            #expect(m.hv.dma(window: 0, stream: stream, iova: vmData, access: .write).fault == .ownership)
            #expect(m.hv.dma(window: 0, stream: stream, iova: hypervisorRAM.base, access: .read).fault == .ownership)
        }
        // The VM's stream is still translated by its own stage-2, not bypassed.
        #expect(m.hv.dma(window: 0, stream: vmStream, iova: vmData, access: .write).physicalAddress == vmData)
        #expect(m.hv.dma(window: 0, stream: vmStream, iova: hostData, access: .write).fault != nil)
        // Same through the other instance of the pair, whose sCR0 the host did not touch.
        #expect(m.hv.dma(window: 1, stream: vmStream, iova: hostData, access: .write).fault != nil)
    }

    @Test func usfcfgClearWithAnUnknownStreamStaysInHostMemory() {
        let m = Machine(hypervisorStreams: [0: [StreamID(0x7F0)]])
        let d = m.driver()
        d.reset()
        _ = m.protectedVM(stream: vmStream)
        d.w32(.sCR0, d.r32(.sCR0) & ~(1 << 10))
        let unknown: UInt32 = 0x7777
        #expect(m.hv.dma(window: 0, stream: unknown, iova: hostData + 0x40, access: .write).physicalAddress == hostData + 0x40)
        #expect(m.hv.dma(window: 0, stream: unknown, iova: vmData, access: .write).fault == .ownership)
        #expect(m.hv.dma(window: 0, stream: unknown, iova: hypervisorRAM.base, access: .read).fault == .ownership)
        // Foreign streams are never "unmatched": the VM's is translated, the hypervisor's faults.
        #expect(m.hv.dma(window: 0, stream: vmStream, iova: vmData, access: .read).physicalAddress == vmData)
        #expect(m.hv.dma(window: 0, stream: 0x7F0, iova: hostData, access: .read).fault != nil)
        #expect(m.hv.dma(window: 0, stream: 0x7F0, iova: hostData, access: .read).physicalAddress == nil)
    }

    /// The VM filled its own page with tables mapping IOVA 0x1000 to a host page; the host points a
    /// context bank at them. The walk itself must fault (it reads VM memory), whatever the tables say.
    @Test func hostContextWhosePageTablesLiveInVMMemoryFaults() throws {
        let (m, d, _) = machine()
        let vmTables = try PageTableBuilder(memory: m.memory, stage: .stage1, tablePool: vmData..<(vmData + 0x8000))
        try vmTables.map4K(0x1000, to: hostData)
        d.attachStage1(bank: 0, ttbr0: vmTables.root)
        d.route(smr: 0, stream: hostStream, toBank: 0)
        #expect(m.hv.dma(window: 0, stream: UInt32(hostStream), iova: 0x1000, access: .read).fault == .ownership)
        // The walk fault is the host's own: reported in its bank.
        let fault = d.contextFault(bank: 0)
        #expect(fault?.far == 0x1000)
        #expect(fault?.cbfrsynra == UInt32(hostStream))
    }

    /// Tables whose root is the VM's stage-2 root, in hypervisor RAM: the host's walk may not read it.
    @Test func hostContextWalkingHypervisorRAMFaults() {
        let (m, d, vm) = machine()
        d.attachStage1(bank: 1, ttbr0: vmStage2Root(m, vm))
        d.attachStage2(bank: 2, vttbr: vmStage2Root(m, vm), vtcr: VMStage2.vtcr, vmid: 3)
        d.route(smr: 0, stream: hostStream, toBank: 1)
        d.route(smr: 1, stream: 0x21, toBank: 2)
        // Through the VM's own stage-2 IPA = PA would map vmData: the walk must not happen at all.
        #expect(m.hv.dma(window: 0, stream: UInt32(hostStream), iova: vmData, access: .read).fault == .ownership)
        #expect(m.hv.dma(window: 0, stream: 0x21, iova: vmData, access: .read).fault == .ownership)
    }

    /// The MSI doorbell the config lets host devices reach: data only, never a table walk, never a VM's.
    @Test func msiDoorbellIsReachableForDataOnly() {
        let doorbell = PhysicalRange(base: 0x0F40_0000, size: 0x1000)
        let m = Machine(hostDMARanges: [doorbell])
        let d = m.driver()
        d.reset()
        _ = m.protectedVM(stream: vmStream)
        d.bypass(smr: 0, stream: hostStream)
        #expect(m.hv.dma(window: 0, stream: UInt32(hostStream), iova: doorbell.base + 0x40, access: .write).physicalAddress
                == doorbell.base + 0x40)
        #expect(m.hv.dma(window: 0, stream: UInt32(hostStream), iova: doorbell.end, access: .write).fault == .ownership)
        d.attachStage1(bank: 1, ttbr0: doorbell.base)
        d.route(smr: 1, stream: 0x21, toBank: 1)
        #expect(m.hv.dma(window: 0, stream: 0x21, iova: 0x1000, access: .read).fault == .ownership)
        #expect(m.hv.dma(window: 0, stream: vmStream, iova: doorbell.base, access: .write).physicalAddress == nil)
        if case .badAddress = m.hv.memRead(address: doorbell.base, length: 4, client: m.client) {} else {
            Issue.record("MEM_READ of the doorbell: it is not the host's RAM")
        }
    }

    @Test func hostStage2ContextMappingVMPagesFaults() throws {
        let (m, d, vm) = machine()
        let s2 = m.tables(.stage2)
        try s2.map4K(0x1000, to: vmData)
        try s2.map4K(0x2000, to: hostData)
        try s2.map(0x3000, to: vmStage2Root(m, vm), size: 4096)
        d.attachStage2(bank: 1, vttbr: s2.root, vtcr: s2.vtcr, vmid: 1)
        d.route(smr: 1, stream: 0x21, toBank: 1)
        #expect(m.hv.dma(window: 0, stream: 0x21, iova: 0x2000, access: .write).physicalAddress == hostData)
        #expect(m.hv.dma(window: 0, stream: 0x21, iova: 0x1000, access: .write).fault == .ownership)
        #expect(m.hv.dma(window: 0, stream: 0x21, iova: 0x3000, access: .read).fault == .ownership)
    }

    @Test func nestedHostContextOverAStage2MappingVMPagesFaults() throws {
        let (m, d, _) = machine()
        let s2 = m.tables(.stage2)
        let s1 = m.tables(.stage1)
        // The stage-1 tables must be reachable through stage 2: identity-map the table pool.
        try s2.mapRange(hostTablePool.lowerBound, to: hostTablePool.lowerBound, size: 0x40_0000)
        try s2.map4K(0x4000_0000, to: vmData)
        try s2.map4K(0x4000_1000, to: hostData)
        try s1.map4K(0x1000, to: 0x4000_0000)
        try s1.map4K(0x2000, to: 0x4000_1000)
        d.attachStage2(bank: 2, vttbr: s2.root, vtcr: s2.vtcr, vmid: 2)
        d.attachStage1(bank: 3, ttbr0: s1.root)
        d.w32(.CBAR, 3, 3 << 16 | 2 << 8)
        d.route(smr: 2, stream: 0x22, toBank: 3)
        #expect(m.hv.dma(window: 0, stream: 0x22, iova: 0x2000, access: .read).physicalAddress == hostData)
        #expect(m.hv.dma(window: 0, stream: 0x22, iova: 0x1000, access: .read).fault == .ownership)
    }

    @Test func hostStage1MappingForeignPagesFaults() throws {
        let (m, d, vm) = machine()
        let s1 = m.tables()
        try s1.map4K(0x1000, to: hostData)
        try s1.map4K(0x2000, to: vmData + 0x3000)
        try s1.map(0x3000, to: vmStage2Root(m, vm), size: 4096)
        try s1.map4K(0x4000, to: hypervisorRAM.end - 4096)
        try s1.map4K(0x5000, to: 0x1000_0000)   // the iso SMMU's registers
        d.attachStage1(bank: 0, ttbr0: s1.root)
        d.route(smr: 0, stream: hostStream, toBank: 0)
        #expect(m.hv.dma(window: 0, stream: UInt32(hostStream), iova: 0x1000, access: .write).physicalAddress == hostData)
        for iova: UInt64 in [0x2000, 0x3000, 0x4000, 0x5000] {
            #expect(m.hv.dma(window: 0, stream: UInt32(hostStream), iova: iova, access: .write).fault == .ownership,
                    "IOVA 0x\(String(iova, radix: 16))")
        }
    }

    /// A translation the host cached must not outlive the donation of its page.
    @Test func cachedHostTranslationDoesNotSurviveDonation() throws {
        let m = Machine()
        let d = m.driver()
        d.reset()
        let s1 = m.tables()
        let page = vmData + 0x10_0000
        try s1.map4K(0x1000, to: page)
        d.attachStage1(bank: 0, ttbr0: s1.root)
        d.route(smr: 0, stream: hostStream, toBank: 0)
        #expect(m.hv.dma(window: 0, stream: UInt32(hostStream), iova: 0x1000, access: .write).physicalAddress == page)
        #expect(m.hv.dma(window: 0, stream: UInt32(hostStream), iova: 0x1000, access: .write).physicalAddress == page)
        let vm = m.hv.vmCreate(client: m.client).value!
        #expect(m.hv.vmDonate(vm, range: PhysicalRange(base: page, size: 4096), client: m.client).value != nil)
        #expect(m.hv.dma(window: 0, stream: UInt32(hostStream), iova: 0x1000, access: .write).fault == .ownership)
        #expect(m.hv.dma(window: 1, stream: UInt32(hostStream), iova: 0x1000, access: .write).physicalAddress == nil)
    }

    /// A 2 MiB block of the host's covering a page it then donated: a walk for another page of the
    /// block may be cached, but never reaches the donated one.
    @Test func hostBlockMappingOverADonatedPageFaultsThere() throws {
        let m = Machine()
        let d = m.driver()
        d.reset()
        let block: UInt64 = 0x8C00_0000
        let s1 = m.tables()
        try s1.map(0x20_0000, to: block, size: 0x20_0000, attributes: .linuxReadWrite)
        d.attachStage1(bank: 0, ttbr0: s1.root)
        d.route(smr: 0, stream: hostStream, toBank: 0)
        let vm = m.hv.vmCreate(client: m.client).value!
        #expect(m.hv.vmDonate(vm, range: PhysicalRange(base: block + 0x5000, size: 4096), client: m.client).value != nil)
        for iova: UInt64 in [0x20_4000, 0x20_6000, 0x20_4FF8] {
            #expect(m.hv.dma(window: 0, stream: UInt32(hostStream), iova: iova, access: .write).physicalAddress == block + iova - 0x20_0000)
        }
        for _ in 0..<2 {
            #expect(m.hv.dma(window: 0, stream: UInt32(hostStream), iova: 0x20_5000, access: .write).fault == .ownership)
            #expect(m.hv.dma(window: 0, stream: UInt32(hostStream), iova: 0x20_5FF8, access: .read).fault == .ownership)
        }
    }

    // MARK: Host CPU memory (MEM_READ / MEM_WRITE) passes the host stage-2

    @Test func hostMemoryAccessOnlyReachesHostPages() {
        let (m, _, vm) = machine()
        let secret: [UInt8] = [0x5E, 0xC2, 0xE7, 0x01]
        m.vmWrites(secret, at: vmData + 0x100)
        #expect(m.hv.memWrite(address: hostData, bytes: [1, 2, 3], client: m.client).value != nil)
        #expect(m.hv.memRead(address: hostData, length: 3, client: m.client).value == [1, 2, 3])
        let before = m.audit.events.count
        let r = expectDenied(m.hv.memRead(address: vmData + 0x100, length: 4, client: m.client), .hostMemoryAccess)
        #expect(r?.offset == vmData + 0x100 && r?.width == 4 && r?.register == "MEM_READ")
        expectDenied(m.hv.memWrite(address: vmData + 0x100, bytes: [0, 0, 0, 0], client: m.client), .hostMemoryAccess)
        #expect(m.memory.readBytes(at: vmData + 0x100, count: 4) == secret, "a denied write changed VM memory")
        // Straddling the last host page and the first VM page.
        expectDenied(m.hv.memRead(address: vmData - 2, length: 4, client: m.client), .hostMemoryAccess)
        expectDenied(m.hv.memWrite(address: vmData - 2, bytes: [9, 9, 9, 9], client: m.client), .hostMemoryAccess)
        #expect(m.memory.readBytes(at: vmData - 2, count: 2) == [0, 0])
        // The VM's stage-2 tables in hypervisor RAM.
        expectDenied(m.hv.memRead(address: vmStage2Root(m, vm), length: 8, client: m.client), .hostMemoryAccess)
        #expect(m.audit.events.count == before + 5)
        // Not RAM at all, and lengths that wrap.
        if case .badAddress = m.hv.memRead(address: 0x1000, length: 4, client: m.client) {} else { Issue.record("MMIO read") }
        if case .badAddress = m.hv.memRead(address: .max - 1, length: 4, client: m.client) {} else { Issue.record("wrap") }
        if case .badAddress = m.hv.memWrite(address: hostRAM.end - 2, bytes: [1, 2, 3, 4], client: m.client) {} else {
            Issue.record("write past the end of RAM")
        }
    }
}
