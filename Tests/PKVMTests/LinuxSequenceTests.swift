import Testing
@testable import PKVM
import SMMUModel

/// The Linux arm-smmu driver's sequences (ArmSMMUDriver) through the trap handler on the
/// Tegra234 niso1 pair (NVIDIA 2-instance impl: writes to both windows, reads from window 0).
@Suite struct LinuxSequenceTests {
    @Test func probeSeesTheHostVisibleCounts() {
        let m = Machine()
        let p = m.driver(0, 1).probe()
        #expect(p.numContextBanks == 120 && p.numMappingGroups == 120)
        #expect(p.pageShift == 16 && p.numPage == 128)
        #expect(p.streamIDMask == 0x7FFF)
        #expect(p.numS2ContextBanks <= 120)
    }

    @Test func resetAndSMRMaskTestSucceedOnBothInstances() {
        let m = Machine()
        let d = m.driver(0, 1)
        let scr0 = d.reset()
        #expect(scr0 == 0x0020_1C36)
        for w in [0, 1] {
            #expect(d.read(.sCR0, window: w).value == UInt64(scr0), "window \(w) reads back what Linux wrote")
            let physical = m.physical(w).peek(.sCR0)
            #expect(physical & 1 == 0 && physical & (1 << 10) != 0, "translation on, unmatched streams fault")
        }
        let (streamIDMask, smrMaskMask) = d.testSMRMasks()
        #expect(streamIDMask == 0x7FFF && smrMaskMask == 0x7FFF)
        #expect(d.r32(.SMR, 0) == 0x7FFF_0000, "left holding MASK with VALID clear")
        #expect(m.audit.events.isEmpty)
    }

    /// Attach a stage-1 domain (CBAR 0x0001F300 ...), route SID 0x0E with Tegra's mask 0x7F80,
    /// DMA through io-pgtable-like tables in host RAM, unmap + TLBIVAL + sync, then the fault and its W1C.
    @Test func attachMapUnmapAndFault() throws {
        let m = Machine()
        let d = m.driver(0, 1)
        d.reset()
        _ = d.testSMRMasks()
        let bank = d.probe().numS2ContextBanks
        let tables = m.tables()
        let iova: UInt64 = 0x1000_0000
        try tables.map4K(iova, to: hostData)
        try tables.map4K(iova + 0x1000, to: hostData + 0x5000)
        d.attachStage1(bank: bank, ttbr0: tables.root)
        d.route(smr: 0, stream: 0x0E, mask: 0x7F80, toBank: bank)
        for w in [0, 1] {
            #expect(m.physical(w).peek(.SMR, index: 0) == 0xFF80_000E)
            #expect(m.physical(w).peek(.S2CR, index: 0) == UInt64(bank))
            #expect(d.read(.CBAR, bank, window: w).value == 0x0001_F300, "CBAR reads back as written")
            #expect(d.read(.TTBR0, bank, width: .doubleword, window: w).value == tables.root)
            for stream: UInt32 in [0x0E, 0x0E | 0x80, 0x0E | 0x7F80] {
                #expect(m.hv.dma(window: w, stream: stream, iova: iova + 0x10, access: .write).physicalAddress == hostData + 0x10)
                #expect(m.hv.dma(window: w, stream: stream, iova: iova + 0x1008, access: .read).physicalAddress == hostData + 0x5008)
            }
        }
        // Unmap: the stale entry lives until TLBIVAL + sync reach the physical bank.
        try tables.unmap(iova, size: 4096)
        #expect(m.hv.dma(window: 0, stream: 0x0E, iova: iova, access: .write).physicalAddress == hostData, "TLB hit")
        d.invalidate(iova: iova, bank: bank)
        #expect(m.hv.interruptLines(window: 0)[1 + bank] == false)
        let quiet = m.hv.interruptLines(window: 0)
        #expect(!m.hv.interruptLines(window: 0, differFrom: quiet), "the TLBI and sync changed no line")
        #expect(m.hv.dma(window: 0, stream: 0x0E, iova: iova + 0x24, access: .write).fault == .translation)
        #expect(m.hv.interruptLines(window: 0, differFrom: quiet), "the fault raised one")
        #expect(!m.hv.interruptLines(window: 0, differFrom: m.hv.interruptLines(window: 0)))
        #expect(m.hv.interruptLines(window: 0, differFrom: Array(quiet.dropLast())), "another line count differs")
        #expect(m.hv.dma(window: 0, stream: 0x0E, iova: iova + 0x1000, access: .read).physicalAddress == hostData + 0x5000,
                "the other page stays mapped")
        // The context fault, as arm_smmu_context_fault sees it.
        #expect(m.hv.interruptLines(window: 0)[1 + bank], "the host's context interrupt is raised")
        let fault = d.contextFault(bank: bank)
        #expect(fault?.far == iova + 0x24)
        #expect((fault?.fsr ?? 0) & 0x2 != 0, "FSR.TF")
        #expect((fault?.fsynr0 ?? 0) & 0x10 != 0, "FSYNR0.WNR: a write")
        #expect(fault?.cbfrsynra == 0x0E)
        #expect(d.r32(.FSR, bank) == 0, "W1C cleared the virtual FSR")
        #expect(m.physical(0).peek(.FSR, index: bank) == 0, "and the physical one")
        #expect(!m.hv.interruptLines(window: 0)[1 + bank])
        // Release: S2CR FAULT, SMR without VALID; the stream then faults at the S2CR... no: unmatched.
        d.w32(.S2CR, 0, 0x0002_0000)
        d.w32(.SMR, 0, 0x7F80_000E)
        d.w32(.SCTLR, bank, 0)
        #expect(m.hv.dma(window: 0, stream: 0x0E, iova: iova + 0x1000, access: .read).fault == .unidentifiedStream)
        #expect(m.audit.events.isEmpty, "nothing Linux does is refused")
    }

    /// An unmatched host stream: sGFSR.USF and sGFSYNR1 for arm_smmu_global_fault; W1C; MULTI on a second.
    @Test func globalFaultOfAnUnknownHostStream() {
        let m = Machine()
        let d = m.driver(0, 1)
        d.reset()
        #expect(m.hv.dma(window: 0, stream: 0x55, iova: hostData, access: .write).fault == .unidentifiedStream)
        #expect(m.hv.interruptLines(window: 0)[0])
        #expect(m.hv.dma(window: 0, stream: 0x56, iova: hostData, access: .read).fault == .unidentifiedStream)
        let g = d.globalFault()
        #expect((g?.gfsr ?? 0) & 0x2 != 0, "USF")
        #expect((g?.gfsr ?? 0) & 0x8000_0000 != 0, "MULTI: a second fault while one was pending")
        #expect((g?.gfsynr1 ?? 0) & 0xFFFF == 0x55, "the first stream is reported")
        #expect(d.r32(.sGFSR) == 0)
        #expect(!m.hv.interruptLines(window: 0)[0])
        #expect(m.audit.events.isEmpty)
    }
}
