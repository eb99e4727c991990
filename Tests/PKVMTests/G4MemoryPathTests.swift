import Testing
@testable import PKVM
import SMMUModel

/// G3/G4 on every memory path: one page-ownership table under MEM_MAP, donation, table walks and the live
/// table scan. Each attack comes from a red-team finding and is tried from more than one angle.
@Suite struct G4MemoryPathTests {
    let hostStream: UInt16 = 0x20

    // MARK: MEM_MAP and donation

    @Test func mapOverDonatedPagesIsDeniedAndTheVMsBytesStay() {
        let m = Machine()
        let vm = m.protectedVM(stream: 0x15, pages: 2)
        m.vmWrites([0xC0, 0xFF, 0xEE], at: vmData + 0x1000)
        // Exactly the VM's pages, a range that starts in host memory and ends in them, and one that starts in them.
        for (base, size) in [(vmData, UInt64(0x2000)), (vmData - 0x1000, UInt64(0x2000)), (vmData + 0x1000, UInt64(0x2000))] {
            let (result, _) = m.mapShared(at: base, size: size, inode: 100 + base)
            expectDenied(result, .mapNotHostOwned)
        }
        #expect(m.memory.readBytes(at: vmData + 0x1000, count: 3) == [0xC0, 0xFF, 0xEE])
        #expect(m.hv.sharedRanges.isEmpty)
        #expect(m.hv.ownership.pages(of: vm).count == 2)
        // The hypervisor's own memory is no host RAM at all.
        #expect(m.mapShared(at: hypervisorRAM.base, inode: 5).result.deniedEvent == nil)
        #expect(m.mapShared(at: hypervisorRAM.base, inode: 5).result.value == nil)
    }

    @Test func donatingSharedPagesIsDeniedUntilTheClientLetsGo() {
        let m = Machine()
        let vm = m.hv.vmCreate(client: m.client).value!
        let (mapped, file) = m.mapShared(at: hostData, size: 0x3000, inode: 7)
        #expect(mapped.value != nil)
        file.storeBytes(of: 0xAB, toByteOffset: 0x1000, as: UInt8.self)
        #expect(m.hv.memRead(address: hostData + 0x1000, length: 1, client: m.client).value == [0xAB],
                "the daemon sees the client's file")
        // One shared page in the middle, at either end, or the whole mapping: all refused.
        for (base, size) in [(hostData + 0x1000, UInt64(0x1000)), (hostData - 0x1000, UInt64(0x2000)),
                             (hostData + 0x2000, UInt64(0x2000)), (hostData, UInt64(0x3000))] {
            expectDenied(m.hv.vmDonate(vm, range: PhysicalRange(base: base, size: size), client: m.client),
                         .donateSharedMemory)
        }
        #expect(m.hv.ownership.pages(of: vm).isEmpty)
        // The client hangs up: the pages are the daemon's own again, zeroed, and may be donated.
        m.hv.unmapHostMemory(base: hostData)
        #expect(m.hv.memRead(address: hostData + 0x1000, length: 1, client: m.client).value == [0])
        #expect(m.hv.vmDonate(vm, range: PhysicalRange(base: hostData, size: 0x3000), client: m.client).value != nil)
        file.storeBytes(of: 0xCD, toByteOffset: 0x1000, as: UInt8.self)
        #expect(m.memory.readBytes(at: hostData + 0x1000, count: 1) == [0], "the client's file no longer backs it")
    }

    @Test func oneFilePageIsNeverRAMAtTwoAddresses() {
        let m = Machine()
        #expect(m.mapShared(at: hostData, size: 0x4000, inode: 3, offset: 0x10000).result.value != nil)
        // The same bytes, a range overlapping them from below or above, and a page inside: all aliases.
        for (offset, size) in [(UInt64(0x10000), UInt64(0x4000)), (0xF000, 0x2000), (0x13000, 0x2000), (0x12000, 0x1000)] {
            expectDenied(m.mapShared(at: hostData + 0x10_0000, size: size, inode: 3, offset: offset).result, .mapAlias)
        }
        // Other bytes of the same file, or the same offset of another file, are fine.
        #expect(m.mapShared(at: hostData + 0x10_0000, size: 0x1000, inode: 3, offset: 0x14000).result.value != nil)
        #expect(m.mapShared(at: hostData + 0x20_0000, size: 0x4000, inode: 4, offset: 0x10000).result.value != nil)
        // A range already backed cannot be backed twice, even by another file.
        #expect(m.mapShared(at: hostData + 0x1000, size: 0x1000, inode: 8).result.value == nil)
        #expect(m.hv.sharedRanges.map(\.base) == [hostData, hostData + 0x10_0000, hostData + 0x20_0000])
    }

    @Test func clientMappingsAreBoundedSoEveryAccessStaysCheap() {
        let m = Machine()
        for i in 0..<UInt64(Hypervisor.maxSharedMappings) {
            #expect(m.mapShared(at: hostData + i * 0x1000, inode: 1000 + i).result.value != nil)
        }
        let over = m.mapShared(at: hostData + 0x10_0000, inode: 5000).result
        #expect(over.value == nil && over.deniedEvent == nil, "INVALID past the bound: \(over.summary)")
        m.hv.unmapHostMemory(base: hostData)
        #expect(m.mapShared(at: hostData + 0x10_0000, inode: 5000).result.value != nil, "room again once one is gone")
    }

    @Test func aliasThenDonateCannotReachTheVMsPage() {
        // The red team's sequence: map one file page at two addresses, donate one, use the other.
        let m = Machine()
        let vm = m.hv.vmCreate(client: m.client).value!
        #expect(m.mapShared(at: hostData, inode: 11).result.value != nil)
        expectDenied(m.mapShared(at: hostData + 0x8000, inode: 11).result, .mapAlias)
        expectDenied(m.hv.vmDonate(vm, range: PhysicalRange(base: hostData, size: 0x1000), client: m.client),
                     .donateSharedMemory)
        #expect(m.hv.ownership.owner(ofAddress: hostData) == .host)
        #expect(m.hv.ownership.owner(ofAddress: hostData + 0x8000) == .host)
        #expect(InvariantChecker(m.hv).check().isEmpty)
    }

    // MARK: Table walks read whole, aligned descriptors

    /// A host table whose TTBR has bits 11:1 set, one page below a VM page: the walk must read the aligned
    /// descriptor the ARM ARM defines, never 8 bytes that straddle into the VM's page.
    @Test func misalignedTTBRNeverReadsAVMPage() throws {
        let m = Machine()
        let d = m.driver()
        d.reset()
        _ = m.protectedVM(stream: 0x15, base: vmData, pages: 1)
        let table = vmData - 0x1000   // the host page below the VM's
        d.route(smr: 0, stream: hostStream, toBank: 0)
        var outcomes: [String] = []
        for ttbr in [table + 0xFFC, table + 0xFF8, table + 0x802, table + 1] {
            for vmBytes: UInt64 in [0, 0x0000_0000_8800_0003, 0xFFFF_FFFF_FFFF_FFFF] {
                m.vmWrites((0..<8).map { UInt8(truncatingIfNeeded: vmBytes >> ($0 * 8)) }, at: vmData)
                #expect(m.memory.write64(0, at: table), "the aligned root's first descriptor: invalid")
                m.memory.writeBytes([0x03, 0, 0, 0], at: table + 0xFFC)   // half a "table" descriptor, host-written
                d.attachStage1(bank: 0, ttbr0: ttbr)
                let result = m.hv.dma(window: 0, stream: UInt32(hostStream), iova: 0, access: .read)
                outcomes.append("\(result) FSR=\(d.r32(.FSR, 0))")
                d.w32(.FSR, 0, d.r32(.FSR, 0))
            }
        }
        #expect(Set(outcomes).count == 1, "the outcome never depends on the VM's bytes or the TTBR's low bits: \(Set(outcomes))")
        #expect(outcomes.first?.hasPrefix("fault(translation)") == true, "the aligned descriptor is invalid")
    }

    @Test func misalignedVTTBRAndUnalignedReadsStayInThePage() {
        let m = Machine()
        let d = m.driver()
        d.reset()
        _ = m.protectedVM(stream: 0x15, base: vmData, pages: 1)
        let table = vmData - 0x1000
        m.vmWrites([UInt8](repeating: 0xFF, count: 8), at: vmData)
        _ = m.memory.write64(0, at: table)
        _ = m.memory.writeBytes([0x03, 0, 0, 0], at: table + 0xFFC)
        // A host stage-2 bank (VTCR: 4K granule, SL0 = 1, 40-bit IPA: two concatenated level-1 tables, 8 KiB).
        d.attachStage2(bank: 1, vttbr: table - 0x1000 + 0x1FFC, vtcr: 0x8000_3558, vmid: 2)
        d.route(smr: 0, stream: hostStream, toBank: 1)
        let result = m.hv.dma(window: 0, stream: UInt32(hostStream), iova: 0x1000, access: .read)
        #expect(result.fault == .translation, "the walk read the aligned (invalid) first descriptor: \(result)")
        // The memory map itself refuses what no bus would do: an 8-byte read or write that is not 8-aligned.
        #expect(m.memory.read64(at: table + 0xFFC) == nil)
        #expect(m.memory.write64(1, at: vmData - 4) == false)
        #expect(m.memory.readBytes(at: vmData, count: 8) == [UInt8](repeating: 0xFF, count: 8))
    }

    // MARK: The live-table scan reads what the host may read, within a budget

    @Test func donationsAnswerDoesNotDependOnAVMPagesContents() throws {
        let m = Machine()
        let d = m.driver()
        d.reset()
        let vmPage = vmData
        _ = m.protectedVM(stream: 0x15, base: vmPage, pages: 1)
        let root = hostTablePool.lowerBound + 0x80_0000
        let target = hostData + 0x5000   // a host page the VM's bytes name as a table
        // The host's root points (as a table) at the VM's page; the host's walk can never read it.
        _ = m.memory.write64(vmPage | 0b11, at: root)
        d.attachStage1(bank: 2, ttbr0: root)
        var answers: [Bool] = []
        for vmDescriptor: UInt64 in [0, target | 0b11] {
            m.vmWrites((0..<8).map { UInt8(truncatingIfNeeded: vmDescriptor >> ($0 * 8)) }, at: vmPage)
            let found = try #require(m.hv.hostPageTablePages())
            answers.append(found.pages.contains(target))
            #expect(!found.pages.contains(vmPage + 0x1000) && found.pages.contains(root))
        }
        #expect(answers == [false, false], "what the VM wrote in its page changes nothing the host can learn")
        let other = m.hv.vmCreate(client: m.client).value!
        #expect(m.hv.vmDonate(other, range: PhysicalRange(base: target, size: 0x1000), client: m.client).value != nil)
    }

    /// The red team's stall: every host bank of all five instances pointing into one shared tree of ~2,000
    /// table pages. Shared tables are read once per donation, so the scan stays far inside its budget (the
    /// benchmark's "worst VM_DONATE" row gives its time).
    @Test func everyHostBankOverOneSharedTreeIsScannedOnce() throws {
        let m = Machine()
        let base: UInt64 = 0x8400_0000
        let root = base, l1 = base + 0x1000
        _ = m.memory.write64(l1 | 0b11, at: root)
        var tables: UInt64 = 2
        for i in 0..<UInt64(4) {
            let l2 = base + (2 + i) * 0x1000
            _ = m.memory.write64(l2 | 0b11, at: l1 + i * 8)
            for j in 0..<UInt64(500) {
                _ = m.memory.write64((base + 0x10_0000 + (i * 500 + j) * 0x1000) | 0b11, at: l2 + j * 8)
            }
            tables += 1 + 500
        }
        for w in m.hv.instances.indices {
            let d = m.driver(w)
            for bank in 0..<m.hv.instances[w].hostContextBanks { d.attachStage1(bank: bank, ttbr0: root) }
        }
        let found = try #require(m.hv.hostPageTablePages())
        #expect(found.pages.count == Int(tables))
        #expect(found.work < 4 * Int(tables), "\(found.work) units of work for \(tables) shared table pages")
        let vm = m.hv.vmCreate(client: m.client).value!
        #expect(m.hv.vmDonate(vm, range: PhysicalRange(base: vmData, size: 0x1000), client: m.client).value != nil)
        expectDenied(m.hv.vmDonate(vm, range: PhysicalRange(base: base + 0x10_0000 + 0x7000, size: 0x1000),
                                   client: m.client), .donateLivePageTable)
    }

    @Test func aVMOwnsAtMost64MiB() {
        let m = Machine()
        let vm = m.hv.vmCreate(client: m.client).value!
        let pages = Hypervisor.maxDonationPages
        #expect(m.hv.vmDonate(vm, range: PhysicalRange(base: hostRAM.base + 0x800_0000, size: (pages + 1) * 4096),
                              client: m.client).value == nil)
        #expect(m.hv.vmDonate(vm, range: PhysicalRange(base: hostRAM.base + 0x800_0000, size: pages * 4096),
                              client: m.client).value != nil)
        #expect(m.hv.ownership.pageCount(of: vm) == Int(pages))
        // One page more, in another call, is past what one VM may own (its teardown stays short, G8).
        let more = hostRAM.base + 0x100_0000
        #expect(m.hv.vmDonate(vm, range: PhysicalRange(base: more, size: 4096), client: m.client).value == nil)
        #expect(m.hv.ownership.owner(ofAddress: more) == .host)
    }

    /// A DMA range over host RAM would let a host stream keep reaching a page after its donation: no policy
    /// with one is accepted, and the owners' stage-2 never lets a DMA range reach a page that has an owner.
    @Test func dmaRangesOverRAMAreRefusedAndNeverReachOwnedPages() {
        for overlap in [PhysicalRange(base: vmData, size: 0x1000), PhysicalRange(base: hypervisorRAM.base, size: 0x1000),
                        PhysicalRange(base: hostRAM.end - 0x1000, size: 0x2000)] {
            let policy = HypervisorPolicy(topology: .tegra234, hostRAM: [hostRAM], hypervisorRAM: hypervisorRAM,
                                          hostDMARanges: [overlap])
            #expect(throws: HypervisorPolicy.Problem.self) { try policy.validate() }
        }
        let m = Machine(hostDMARanges: [PhysicalRange(base: 0x0F40_0000, size: 0x1000)])
        _ = m.protectedVM(stream: 0x15)
        #expect(m.hv.ownership.permits(.host, address: 0x0F40_0000, kind: .data(write: true)))
        #expect(!m.hv.ownership.permits(.host, address: vmData, kind: .data(write: true)))
    }

    /// Host RAM in two adjacent ranges: a donation or a mapping across the seam moves (or marks) every page, on
    /// both sides, as one inside a range does.
    @Test func aRangeAcrossAdjacentRAMRangesIsOneRange() throws {
        let low = PhysicalRange(base: 0x8000_0000, size: 0x10_0000), high = PhysicalRange(base: 0x8010_0000, size: 0x10_0000)
        let memory = try MemoryMap(regions: [(low.base, low.size), (high.base, high.size), (hypervisorRAM.base, hypervisorRAM.size)])
        let hv = try Hypervisor(policy: HypervisorPolicy(topology: .tegra234, hostRAM: [low, high], hypervisorRAM: hypervisorRAM),
                                memory: memory, audit: CollectingAuditSink())
        #expect(hv.finalize())
        let client = ClientIdentity(name: "seam")
        let vm = try #require(hv.vmCreate(client: client).value)
        let seam = PhysicalRange(base: high.base - 0x2000, size: 0x4000)
        #expect(hv.vmDonate(vm, range: seam, client: client).value != nil)
        for page in stride(from: seam.base, to: seam.end, by: 0x1000) { #expect(hv.ownership.owner(ofAddress: page) == .vm(vm)) }
        #expect(hv.ownership.pageCount(of: vm) == 4)
        #expect(hv.vmDestroy(vm, client: client).value != nil)
        #expect(hv.ownership.owns(.host, seam))
        hv.ownership.setShared(PhysicalRange(base: high.base, size: 0x1000), true)
        #expect(hv.ownership.isShared(seam), "the shared page is on the far side of the seam")
        let other = try #require(hv.vmCreate(client: client).value)
        expectDenied(hv.vmDonate(other, range: seam, client: client), .donateSharedMemory)
    }

    @Test func vmHandlesWrapWithoutReusingALiveOne() {
        let m = Machine()
        let first = m.hv.vmCreate(client: m.client).value!
        m.hv.nextVM = Ownership.maxVMHandle
        let last = m.hv.vmCreate(client: m.client).value!
        #expect(last.rawValue == Ownership.maxVMHandle)
        let wrapped = m.hv.vmCreate(client: m.client).value!
        #expect(wrapped != first && wrapped.rawValue == first.rawValue + 1, "wrapped past the live vm\(first.rawValue)")
    }
}
