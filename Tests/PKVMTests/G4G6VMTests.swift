import Testing
@testable import PKVM
import SMMUModel

/// G4 (VM DMA stays in VM memory), VM_DONATE's rules, host TLB maintenance, and G6 (clean teardown).
@Suite struct G4G6VMTests {
    @Test func vmStreamReachesOnlyItsDonatedPages() {
        let m = Machine()
        let d = m.driver()
        d.reset()
        let vm1 = m.protectedVM(stream: 0x15, pages: 2)
        let vm2 = m.protectedVM(stream: 0x16, base: vmData + 0x10_0000)
        for w in [0, 1] {
            #expect(m.hv.dma(window: w, stream: 0x15, iova: vmData + 0x1234, access: .write).physicalAddress == vmData + 0x1234)
            #expect(m.hv.dma(window: w, stream: 0x16, iova: vmData + 0x10_0008, access: .read).physicalAddress == vmData + 0x10_0008)
            for (stream, iova) in [(UInt32(0x15), vmData + 0x2000), (0x15, vmData + 0x10_0000), (0x15, hostData),
                                   (0x16, vmData), (0x15, m.hv.vms[vm1]!.stage2.root), (0x16, m.hv.vms[vm2]!.stage2.root)] {
                #expect(m.hv.dma(window: w, stream: stream, iova: iova, access: .write).physicalAddress == nil,
                        "stream 0x\(String(stream, radix: 16)) reached 0x\(String(iova, radix: 16)) on window \(w)")
            }
        }
        // The other logical SMMUs do not route 0x15 anywhere.
        #expect(m.hv.dma(window: 3, stream: 0x15, iova: vmData, access: .read).physicalAddress == nil)
    }

    /// Reserved SMRs (8 per instance) run out: INVALID, and nothing half-done.
    @Test func reservedResourcesRunningOutChangesNothing() {
        let m = Machine()
        let vm = m.protectedVM(stream: 0x100)
        for s: UInt32 in 0x101...0x107 { #expect(m.hv.vmAssignStream(vm, window: 0, stream: s, client: m.client).value != nil) }
        let before = m.state()
        guard case .invalid = m.hv.vmAssignStream(vm, window: 1, stream: 0x108, client: m.client) else {
            Issue.record("a ninth stream got a reserved SMR"); return
        }
        #expect(m.state() == before)
        #expect(m.hv.ownership.owner(ofStream: StreamID(0x108), smmu: 0) == .host)
        // Eight VMs use the eight reserved banks of iso; a ninth VM gets none and nothing changes.
        for i in 0..<7 { _ = m.protectedVM(stream: 0x200 + UInt32(i), window: 2, base: vmData + 0x10_0000 * UInt64(i + 1)) }
        #expect(m.hv.vmAssignStream(vm, window: 2, stream: 0x2FF, client: m.client).value != nil)
        let ninth = m.hv.vmCreate(client: m.client).value!
        let state = m.state()
        guard case .invalid = m.hv.vmAssignStream(ninth, window: 2, stream: 0x300, client: m.client) else {
            Issue.record("a ninth VM got a context bank"); return
        }
        #expect(m.state() == state)
        #expect(m.hv.ownership.owner(ofStream: StreamID(0x300), smmu: 1) == .host)
        #expect(m.audit.events.isEmpty)
    }

    // MARK: VM_DONATE

    @Test func donatingAPageInUseAsAHostPageTableIsDenied() throws {
        let m = Machine()
        let d = m.driver(0, 1)
        d.reset()
        let s1 = m.tables()
        try s1.map4K(0x1000, to: hostData)
        try s1.map4K(0x80_0000_0000, to: hostData + 0x1000)
        d.attachStage1(bank: 5, ttbr0: s1.root)
        d.route(smr: 0, stream: 0x20, toBank: 5)
        let vm = m.hv.vmCreate(client: m.client).value!
        // Every table of the live context (root to level 3): the pages of the pool the builder wrote.
        let tablePages = stride(from: hostTablePool.lowerBound, to: hostTablePool.lowerBound + 0x10_0000, by: 4096)
            .filter { page in (0..<512).contains { m.memory.read64(at: page + UInt64($0) * 8) != 0 } }
        #expect(tablePages.contains(s1.root))
        #expect(tablePages.count == 7, "root, two L1, two L2 and two L3 tables")
        for table in tablePages {
            let before = m.state()
            let events = m.audit.events.count
            let e = expectDenied(m.hv.vmDonate(vm, range: PhysicalRange(base: table, size: 4096), client: m.client),
                                 .donateLivePageTable)
            #expect(e?.offset == table && e?.value == 4096 && e?.client == m.client)
            #expect(m.audit.events.count == events + 1)
            #expect(m.state() == before)
            #expect(m.hv.ownership.owner(ofAddress: table) == .host)
        }
        expectDenied(m.hv.vmDonate(vm, range: PhysicalRange(base: hostTablePool.lowerBound, size: 0x10_0000),
                                   client: m.client), .donateLivePageTable)
        #expect(m.hv.ownership.owner(ofAddress: hostTablePool.lowerBound + 0xF_F000) == .host, "no partial donation")
        #expect(m.hv.dma(window: 0, stream: 0x20, iova: 0x1000, access: .read).physicalAddress == hostData)
        // Once the host disables the context the tables are no longer live: donation is allowed.
        d.w32(.SCTLR, 5, 0)
        #expect(m.hv.vmDonate(vm, range: PhysicalRange(base: s1.root, size: 4096), client: m.client).value != nil)
    }

    /// A host whose tables span more pages than the hypervisor will scan gets donations refused (the
    /// scan stays short for the other clients, G8) until it disables the bank.
    @Test func tooManyHostTablePagesRefuseEveryDonation() throws {
        let m = Machine()
        let d = m.driver()
        d.reset()
        // Hand-made 4K tables: root -> one L1 -> 512 distinct L2 tables, each read whole (512 descriptors): more
        // reads than the scan's budget, whatever lies below.
        let base: UInt64 = 0x8400_0000
        let root = base, l1 = base + 0x1000
        let table: UInt64 = 0b11
        m.memory.write64(l1 | table, at: root)
        for i in 0..<UInt64(512) { m.memory.write64((base + 0x2000 + i * 0x1000) | table, at: l1 + i * 8) }
        d.attachStage1(bank: 3, ttbr0: root)
        let vm = m.hv.vmCreate(client: m.client).value!
        let unrelated = PhysicalRange(base: vmData, size: 4096)
        expectDenied(m.hv.vmDonate(vm, range: unrelated, client: m.client), .donateLivePageTable)
        d.w32(.SCTLR, 3, 0)
        #expect(m.hv.vmDonate(vm, range: unrelated, client: m.client).value != nil)
    }

    /// A 64 KiB-granule table spans sixteen 4 KiB pages, and TTBR1 tables are live too (EPD1 clear).
    @Test func donatingAnyPageOf64KOrTTBR1TablesIsDenied() throws {
        let m = Machine()
        let d = m.driver()
        d.reset()
        let big = try PageTableBuilder(memory: m.memory, stage: .stage1, granule: .size64K, inputBits: 42,
                                       tablePool: 0x8300_0000..<0x8310_0000)
        try big.map(0x1_0000, to: hostData, size: 0x1_0000, attributes: .linuxReadWrite)
        d.attachStage1(bank: 6, ttbr0: big.root, tcr: big.tcr)
        let high = m.tables()
        // TTBR1: T1SZ 16, TG1 4K (2 << 30), EPD1 clear; TTBR0 disabled (EPD0).
        let tcr: UInt32 = 2 << 30 | 16 << 16 | 1 << 7
        d.attachStage1(bank: 7, ttbr0: 0, tcr: tcr)
        d.w64(.TTBR1, 7, 7 << 48 | high.root)
        let vm = m.hv.vmCreate(client: m.client).value!
        for page in [big.root, big.root + 0x1000, big.root + 0xF000, high.root] {
            expectDenied(m.hv.vmDonate(vm, range: PhysicalRange(base: page, size: 4096), client: m.client), .donateLivePageTable)
        }
        #expect(m.hv.vmDonate(vm, range: PhysicalRange(base: big.root + 0x1_0000 * 8, size: 4096), client: m.client).value != nil)
    }

    /// A nested context's stage-1 tables are addressed by IPA: the live pages are where the host's
    /// stage-2 puts them, not at the IPA. Donating the real page must be refused too.
    @Test func donatingANestedStage1TableAtItsPhysicalAddressIsDenied() throws {
        let m = Machine()
        let d = m.driver()
        d.reset()
        let ipa: UInt64 = 0x4000_0000
        let pages: [UInt64] = (0..<4).map { 0x8400_0000 + UInt64($0) * 0x3000 }   // L0..L3, not at their IPAs
        let s2 = m.tables(.stage2)
        for (k, pa) in pages.enumerated() { try s2.map4K(ipa + UInt64(k) * 0x1000, to: pa) }
        try s2.map4K(ipa + 0x10_0000, to: hostData)
        // VA 0x1000: L0[0] -> L1[0] -> L2[0] -> L3[1] = IPA of the data page.
        for k in 0..<3 { #expect(m.memory.write64(ipa + UInt64(k + 1) * 0x1000 | 0b11, at: pages[k])) }
        #expect(m.memory.write64((ipa + 0x10_0000) | 0x747, at: pages[3] + 8))
        d.attachStage2(bank: 2, vttbr: s2.root, vtcr: s2.vtcr, vmid: 2)
        d.attachStage1(bank: 3, ttbr0: ipa)
        d.w32(.CBAR, 3, 3 << 16 | 2 << 8)
        d.route(smr: 0, stream: 0x22, toBank: 3)
        #expect(m.hv.dma(window: 0, stream: 0x22, iova: 0x1008, access: .read).physicalAddress == hostData + 8)
        let vm = m.hv.vmCreate(client: m.client).value!
        for pa in pages {
            expectDenied(m.hv.vmDonate(vm, range: PhysicalRange(base: pa, size: 4096), client: m.client),
                         .donateLivePageTable)
        }
        // Whatever the donation did, the host's walk never reads a page it lost.
        let lost = pages.contains { m.hv.ownership.owner(ofAddress: $0) != .host }
        let result = m.hv.dma(window: 0, stream: 0x22, iova: 0x1008, access: .read)
        #expect(lost ? result.fault == .ownership : result.physicalAddress == hostData + 8)
    }

    @Test func donatingWhatTheHostDoesNotOwnIsDeniedOrInvalid() {
        let m = Machine()
        let vm = m.protectedVM(stream: 0x15)
        let other = m.hv.vmCreate(client: m.client).value!
        expectDenied(m.hv.vmDonate(other, range: PhysicalRange(base: vmData, size: 4096), client: m.client), .donateNotHostOwned)
        expectDenied(m.hv.vmDonate(other, range: PhysicalRange(base: vmData - 4096, size: 8192), client: m.client), .donateNotHostOwned)
        expectDenied(m.hv.vmDonate(other, range: PhysicalRange(base: hypervisorRAM.base, size: 4096), client: m.client), .donateNotHostOwned)
        #expect(m.hv.ownership.owner(ofAddress: vmData - 4096) == .host)
        #expect(m.hv.ownership.owner(ofAddress: vmData) == .vm(vm))
        #expect(m.audit.events.count == 3)
        for range in [PhysicalRange(base: vmData + 0x10_0800, size: 4096), PhysicalRange(base: vmData + 0x10_0000, size: 100),
                      PhysicalRange(base: 0x1000, size: 4096), PhysicalRange(base: .max & ~0xFFF, size: 0x2000),
                      PhysicalRange(base: hostRAM.end - 4096, size: 8192), PhysicalRange(base: vmData + 0x10_0000, size: 0)] {
            guard case .invalid = m.hv.vmDonate(other, range: range, client: m.client) else {
                Issue.record("donation of 0x\(String(range.base, radix: 16))+0x\(String(range.size, radix: 16)) not INVALID")
                continue
            }
        }
        guard case .invalid = m.hv.vmDonate(VMHandle(rawValue: 99), range: PhysicalRange(base: hostData, size: 4096), client: m.client) else {
            Issue.record("unknown VM"); return
        }
        #expect(m.audit.events.count == 3)
    }

    // MARK: Host TLB maintenance

    /// A VM translation cached before stays a TLB hit after every host invalidation; host entries go.
    @Test func hostTLBMaintenanceLeavesVMEntriesInPlace() throws {
        let m = Machine()
        let d = m.driver()
        d.reset()
        let vm = m.protectedVM(stream: 0x15)
        let s1 = m.tables()
        try s1.map4K(0x1000, to: hostData)
        d.attachStage1(bank: 0, ttbr0: s1.root)
        d.route(smr: 0, stream: 0x20, toBank: 0)
        let tlb = { m.physical(0).tlbStatistics }
        func vmHits() -> Bool {
            let h = tlb().hits
            #expect(m.hv.dma(window: 0, stream: 0x15, iova: vmData, access: .read).physicalAddress == vmData)
            return tlb().hits == h + 1
        }
        func hostHits() -> Bool {
            let h = tlb().hits
            #expect(m.hv.dma(window: 0, stream: 0x20, iova: 0x1000, access: .read).physicalAddress == hostData)
            return tlb().hits == h + 1
        }
        _ = vmHits()
        _ = hostHits()
        #expect(vmHits() && hostHits(), "both cached")
        let vmBank = m.contextBank(of: vm, window: 0)!
        let vmVMID = UInt32(m.physical(0).peek(.CBAR, index: vmBank) & 0xFF)
        let attacks: [(String, () -> Void)] = [
            ("TLBIALLNSNH", { d.w32(.TLBIALLNSNH, 0xFFFF_FFFF) }),
            ("TLBIVMID(physical VMID of the VM's bank)", { d.w32(.TLBIVMID, vmVMID) }),
            ("TLBIVMID(all values)", { for v: UInt32 in 0...255 { d.w32(.TLBIVMID, v) } }),
            ("STLBIALL", { d.w32(.STLBIALL, 0) }),
            ("TLBIALLH", { d.w32(.TLBIALLH, 0) }),
            ("TLBIALL on every host bank", { for b in 0..<120 { d.w32(.TLBIALL, b, 0) } }),
            ("TLBIVA/TLBIIPAS2 of the VM's page on every host bank", {
                for b in 0..<120 { d.w64(.TLBIVAA, b, vmData >> 12); d.w64(.TLBIIPAS2, b, vmData >> 12) }
            }),
        ]
        for (name, attack) in attacks {
            attack()
            d.sync()
            #expect(vmHits(), "\(name) invalidated the VM's entry")
        }
        // The host's own entries do go with TLBIALLNSNH (after the attacks above, re-cached first).
        _ = hostHits()
        #expect(hostHits())
        d.w32(.TLBIALLNSNH, 0xFFFF_FFFF)
        d.sync()
        #expect(!hostHits(), "TLBIALLNSNH left the host's entry")
        #expect(vmHits())
        #expect(m.audit.events.isEmpty)
    }

    // MARK: VM_DESTROY (G6)

    @Test func destroyRunsInOrderAndScrubs() {
        let m = Machine()
        let d = m.driver()
        d.reset()
        let vm = m.protectedVM(stream: 0x15, pages: 3)
        #expect(m.hv.vmAssignStream(vm, window: 3, stream: 0x30, client: m.client).value != nil)
        m.vmWrites([0xAA, 0xBB, 0xCC], at: vmData + 0x2FF0)
        _ = m.hv.dma(window: 0, stream: 0x15, iova: vmData, access: .read)   // cached
        let freeBefore = m.hv.pages.available
        let steps = m.hv.vmDestroy(vm, client: m.client).value
        #expect(steps == [.quiesceStreams(2), .invalidateTLB, .scrubPages(3), .returnPages, .returnStreams(2)])
        #expect(m.hv.pages.available > freeBefore, "stage-2 table pages given back")
        for page in stride(from: vmData, to: vmData + 0x3000, by: 4096) {
            #expect(m.hv.ownership.owner(ofAddress: page) == .host)
            #expect(m.hv.memRead(address: page, length: 4096, client: m.client).value == [UInt8](repeating: 0, count: 4096))
        }
        #expect(m.hv.ownership.owner(ofStream: StreamID(0x15), smmu: 0) == .host)
        #expect(m.hv.ownership.owner(ofStream: StreamID(0x30), smmu: 2) == .host)
        // The stream, now the host's and unmatched, faults; nothing of the VM's mapping is left.
        for w in [0, 1] {
            #expect(m.hv.dma(window: w, stream: 0x15, iova: vmData, access: .read).fault == .unidentifiedStream)
        }
        #expect(m.physical(0).tlbEntryCount == 0 || m.hv.dma(window: 0, stream: 0x15, iova: vmData, access: .read).physicalAddress == nil)
        // The host may route it again, and reaches the scrubbed pages as its own.
        d.bypass(smr: 0, stream: 0x15)
        #expect(m.hv.dma(window: 0, stream: 0x15, iova: vmData + 0x2FF0, access: .read).physicalAddress == vmData + 0x2FF0)
        #expect(m.memory.readBytes(at: vmData + 0x2FF0, count: 3) == [0, 0, 0])
        guard case .invalid = m.hv.vmDestroy(vm, client: m.client) else { Issue.record("destroyed twice"); return }
        guard case .invalid = m.hv.vmAssignStream(vm, window: 0, stream: 0x16, client: m.client) else {
            Issue.record("assignment to a destroyed VM"); return
        }
    }

    /// The physical routing after VM_DESTROY: the reserved SMR no longer matches, the reserved bank
    /// is disabled and no TLB entry of its VMID survives.
    @Test func destroyLeavesNoRoutingOrTLBEntries() {
        let m = Machine()
        let vm = m.protectedVM(stream: 0x15)
        let bank = m.contextBank(of: vm, window: 0)!
        _ = m.hv.dma(window: 0, stream: 0x15, iova: vmData, access: .read)
        #expect(m.physical(0).tlbEntryCount > 0)
        _ = m.hv.vmDestroy(vm, client: m.client)
        #expect(m.physical(0).tlbEntryCount == 0)
        #expect(m.physical(0).peek(.SCTLR, index: bank) & 1 == 0)
        for w in [0, 1] {
            for slot in m.hv.instances[w].reservedSMRs {
                let smr = m.physical(w).peek(.SMR, index: slot)
                #expect(smr & (1 << 31) == 0 || smr & 0x7FFF != 0x15, "reserved SMR \(slot) still matches 0x15")
            }
        }
    }

    /// Nothing leaks across many VM lifetimes: hypervisor RAM (4 MiB) would run out otherwise.
    @Test func manyVMLifetimesDoNotExhaustHypervisorRAM() {
        let m = Machine()
        let free = m.hv.pages.available
        for i in 0..<40 {   // any leaked page breaks the equality below
            let vm = m.protectedVM(stream: 0x15, base: vmData + UInt64(i % 7) * 0x10_0000, pages: 2)
            #expect(m.hv.vmDestroy(vm, client: m.client).value != nil)
        }
        #expect(m.hv.pages.available == free)
        #expect(m.audit.events.isEmpty)
    }
}
