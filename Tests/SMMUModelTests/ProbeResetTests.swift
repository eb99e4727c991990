import Testing
@testable import SMMUModel

@Suite("Linux probe and reset (arm_smmu_device_cfg_probe, arm_smmu_device_reset, arm_smmu_test_smr_masks)")
struct ProbeResetTests {
    @Test func tegraProbeDerivesLinuxNumbers() {
        let d = Driver(smmu: MMU500(configuration: .tegra234, memory: MemoryMap()))
        let p = d.probe()
        #expect(p.pgshift == 16)
        #expect(p.numpage == 128)
        #expect(p.numCB == 128)
        #expect(p.numS2CB == 0)
        #expect(p.numSMRG == 128)
        #expect(p.streamIDMask == 0x7FFF)
        #expect(p.ipaSize == 48 && p.paSize == 48 && p.vaSize == 48)
        #expect(p.s1 && p.s2 && p.nested)
        // 2 x numpage pages of 64 KiB: the 16 MiB reg window (no size warning).
        #expect(2 * p.numpage << p.pgshift == 0x100_0000)
        let c = d.config
        #expect(c.pageShift == p.pgshift && c.numPage == p.numpage && c.numContextBanks == p.numCB)
        #expect(c.numStreamMatchGroups == p.numSMRG && c.windowSize == 0x100_0000)
        #expect(c.inputAddressBits == p.ipaSize && c.outputAddressBits == p.paSize && c.upstreamBusBits == p.vaSize)
        #expect(UInt32(c.streamIDMask) == p.streamIDMask && c.supportsVMID16 == p.vmid16)
    }

    @Test func genericProbeDerivesXilinxNumbers() {
        let d = Driver(smmu: MMU500(configuration: .generic4K, memory: MemoryMap()))
        let p = d.probe()
        #expect(p.pgshift == 12 && p.numpage == 16 && p.numCB == 16 && p.numSMRG == 48)
        #expect(2 * p.numpage << p.pgshift == 0x2_0000)
        #expect(d.config.windowSize == 0x2_0000 && d.config.numContextBanks == 16)
        #expect(d.config.numStreamMatchGroups == 48 && d.r32(.IDR7) == 0x21)
    }

    @Test func qemuVirtFitsSixteenMebibytes() {
        let c = MMU500Configuration.qemuVirt
        #expect(c.windowSize == 16 << 20 && c.pageShift == 16 && c.numContextBanks == 16)
        #expect(c.offset(of: .SCTLR, index: 15) == 0x80_0000 + 15 * 0x1_0000)
    }

    @Test(arguments: [MMU500Configuration.tegra234, .generic4K])
    func fullResetLeavesFaultStatusClearAndComputesSCR0(config: MMU500Configuration) {
        let smmu = MMU500(configuration: config, memory: MemoryMap())
        let d = Driver(smmu: smmu)
        // Dirty state first: faults latched everywhere, as a warm reboot might leave them.
        d.w32(.sGFSRRESTORE, 0x2)
        for i in 0..<config.numContextBanks { d.w32(.FSRRESTORE, i, 0x8000_0002) }
        #expect(smmu.globalInterruptAsserted == false)   // GFIE is not set yet
        d.reset()
        #expect(d.r32(.sCR0) == 0x0020_1C36)
        #expect(d.r32(.sGFSR) == 0)
        for i in 0..<config.numContextBanks {
            #expect(d.r32(.FSR, i) == 0)
            #expect(!smmu.contextInterruptAsserted(bank: i))
        }
        #expect(d.r32(.S2CR, 0) == 0x0002_0000)
        #expect(!smmu.globalInterruptAsserted)
    }

    @Test func smrMaskTestReadsBackFifteenBits() {
        let d = Driver(smmu: MMU500(configuration: .tegra234, memory: MemoryMap()))
        d.reset()
        let (streamIDMask, smrMaskMask) = d.testSMRMasks()
        #expect(streamIDMask == 0x7FFF)
        #expect(smrMaskMask == 0x7FFF)
        // Tegra's stream-match-mask 0x7f80 fits in what sticks.
        #expect(0x7F80 & ~smrMaskMask == 0)
        // The probe SMR is left invalid: it matches nothing, so stream 0 faults (USFCFG = 1).
        let t = d.smmu.translate(stream: StreamID(0), iova: 0x1000, access: .read)
        #expect(t.fault == .unidentifiedStream)
    }
}
