import Testing
@testable import PKVM
import SMMUModel

/// The host's virtual SMMU: read-back, W1C, VMIDs the hypervisor's, the host's TLB maintenance by VMID.
@Suite struct VirtualSMMUTests {
    @Test func readBackIsTheHostsWhilePhysicalVMIDsAreTheHypervisors() {
        let m = Machine()
        let d = m.driver()
        d.w32(.CBAR, 7, 0x0000_0005)                 // S2_TRANS, VMID 5
        d.w32(.CBAR, 8, 0x0000_0005)                 // the same VMID on another bank
        #expect(d.r32(.CBAR, 7) == 5 && d.r32(.CBAR, 8) == 5)
        let v7 = m.physical(0).peek(.CBAR, index: 7) & 0xFF, v8 = m.physical(0).peek(.CBAR, index: 8) & 0xFF
        #expect(v7 != v8, "host banks never share a physical VMID")
        let vm = m.protectedVM(stream: 0x15)
        let vmVMID = m.physical(0).peek(.CBAR, index: m.contextBank(of: vm, window: 0)!) & 0xFF
        for n in 0..<120 { #expect(m.physical(0).peek(.CBAR, index: n) & 0xFF != vmVMID) }
        // 64-bit registers by halves.
        d.w32(.TTBR0, 7, 0x1234_5000)
        _ = d.write(.TTBR0, 7, 0x0000_0055, window: nil)
        let high = m.hv.hostWrite(address: d.address(.TTBR0, 7) + 4, value: 0xAB, width: .word, client: m.client)
        #expect(high.value != nil)
        #expect(d.r64(.TTBR0, 7) == 0x0000_00AB_0000_0055)
        #expect(m.physical(0).peek(.TTBR0, index: 7) == 0x0000_00AB_0000_0055)
    }

    @Test func faultRegistersAreWriteOneToClear() throws {
        let m = Machine()
        let d = m.driver()
        d.reset()
        let tables = m.tables()
        try tables.map4K(0x1000, to: hostData)
        d.attachStage1(bank: 2, ttbr0: tables.root)
        d.route(smr: 0, stream: 0x20, toBank: 2)
        #expect(m.hv.dma(window: 0, stream: 0x20, iova: 0x9000, access: .read).fault == .translation)
        let fsr = d.r32(.FSR, 2)
        #expect(fsr & 0x2 != 0)
        d.w32(.FSR, 2, 0)
        #expect(d.r32(.FSR, 2) == fsr, "writing 0 clears nothing")
        d.w32(.FSR, 2, 0xFFFF_FFFF & ~0x2)
        #expect(d.r32(.FSR, 2) & 0x2 != 0, "a bit written 0 stays")
        d.w32(.FSR, 2, 0x2)
        #expect(d.r32(.FSR, 2) & 0x2 == 0)
        #expect(d.r64(.FAR, 2) == 0x9000, "FAR is not W1C")
        // sGFSR likewise.
        #expect(m.hv.dma(window: 0, stream: 0x66, iova: 0, access: .read).fault == .unidentifiedStream)
        d.w32(.sGFSR, 0)
        #expect(d.r32(.sGFSR) & 0x2 != 0)
        d.w32(.sGFSR, 0x2)
        #expect(d.r32(.sGFSR) & 0x2 == 0)
    }

    /// The host's TLBIVMID names the VMID the host wrote; the hypervisor rewrites it to the bank's real one.
    @Test func hostTLBIVMIDInvalidatesItsOwnStage2Context() throws {
        let m = Machine()
        let d = m.driver()
        d.reset()
        let s2 = m.tables(.stage2)
        try s2.map4K(0x1000, to: hostData)
        d.attachStage2(bank: 4, vttbr: s2.root, vtcr: s2.vtcr, vmid: 9)
        d.route(smr: 0, stream: 0x20, toBank: 4)
        let hits = { m.physical(0).tlbStatistics.hits }
        _ = m.hv.dma(window: 0, stream: 0x20, iova: 0x1000, access: .read)
        var h = hits()
        _ = m.hv.dma(window: 0, stream: 0x20, iova: 0x1000, access: .read)
        #expect(hits() == h + 1)
        d.w32(.TLBIVMID, 8)                           // another VMID: the entry stays
        d.sync()
        h = hits()
        _ = m.hv.dma(window: 0, stream: 0x20, iova: 0x1000, access: .read)
        #expect(hits() == h + 1)
        d.w32(.TLBIVMID, 9)
        d.sync()
        h = hits()
        #expect(m.hv.dma(window: 0, stream: 0x20, iova: 0x1000, access: .read).physicalAddress == hostData)
        #expect(hits() == h, "TLBIVMID(9) left the host's entry")
    }

    /// A fault in a VM's bank raises nothing the host sees, even with the host's interrupts enabled.
    @Test func vmFaultsNeverReachTheHost() {
        let m = Machine()
        let d = m.driver(0, 1)
        d.reset()
        _ = m.protectedVM(stream: 0x15)
        let before = (0..<2).map { m.virtual($0).registers().map(\.value) }
        for iova: UInt64 in [0, hostData, 0xFFFF_FFFF_F000, hypervisorRAM.base] {
            #expect(m.hv.dma(window: 0, stream: 0x15, iova: iova, access: .write).physicalAddress == nil)
            #expect(m.hv.dma(window: 1, stream: 0x15, iova: iova, access: .read).physicalAddress == nil)
        }
        for w in [0, 1] {
            #expect(m.hv.interruptLines(window: w).allSatisfy { !$0 })
            #expect(m.virtual(w).registers().map(\.value) == before[w], "the host's view changed")
        }
        #expect(d.globalFault() == nil)
    }
}
