import Testing

import ArmSMMUDriver

@Suite struct ArmSMMUConfigurationTests {
    @Test("Tegra234's ID registers give exactly the lines the Jetson Orin boot log shows")
    func tegra234() throws {
        let cfg = try ArmSMMUConfiguration(idr0: 0x7C00_1E80, idr1: 0xE000_0080, idr2: 0x0000_5555, mappedSize: 0x100_0000)
        #expect(cfg.lines == [
            "probing hardware configuration...",
            "SMMUv2 with:",
            "\tstage 1 translation",
            "\tstage 2 translation",
            "\tnested translation",
            "\tstream matching with 128 register groups",
            "\t128 context banks (0 stage-2 only)",
            "\tSupported page sizes: 0x61311000",
            "\tStage-1: 48-bit VA -> 48-bit IPA",
            "\tStage-2: 48-bit IPA -> 48-bit PA",
        ])
        #expect(cfg.pageShift == 16 && cfg.numPage == 128 && cfg.streamIDMask == 0x7FFF)
        #expect(!cfg.translationOps && !cfg.extendedIDs && !cfg.vmid16)
        #expect(cfg.numMappingGroups == 128 && cfg.numContextBanks == 128)
    }

    @Test("the host's view after reservations reports its own counts")
    func hostView() throws {
        let cfg = try ArmSMMUConfiguration(idr0: 0x7C00_1E78, idr1: 0xE000_0078, idr2: 0x0000_5555, mappedSize: 0x100_0000)
        #expect(cfg.lines.contains("\tstream matching with 120 register groups"))
        #expect(cfg.lines.contains("\t120 context banks (0 stage-2 only)"))
        #expect(cfg.numMappingGroups == 120 && cfg.numContextBanks == 120)
    }

    @Test("the Xilinx MMU-500 model: 4 KiB pages, 16 pages, 48 SMRs, 16 banks, AArch32 formats")
    func xilinx() throws {
        let cfg = try ArmSMMUConfiguration(idr0: 0xFC01_3E30, idr1: 0x3000_0F10, idr2: 0x0000_5555, mappedSize: 0x20000)
        #expect(cfg.pageShift == 12 && cfg.numPage == 16 && cfg.numMappingGroups == 48 && cfg.numContextBanks == 16)
        #expect(cfg.aarch32L && cfg.aarch32S && cfg.pageSizeBitmap == 0x6131_1000)
        #expect(!cfg.lines.contains { $0.contains("differs") })
    }

    @Test("address translation ops, a 16-bit VMID, EXIDS and a size mismatch are derived and printed")
    func features() throws {
        // S1TS without ATOSNS; EXIDS; PTFS_NO_AARCH32; IDR2: VMID16, 16K only, IAS 40, OAS 44, UBS 36.
        let cfg = try ArmSMMUConfiguration(idr0: 0x4A00_0110, idr1: 0x1000_0008, idr2: 0x0000_A142, mappedSize: 0x100_0000)
        #expect(cfg.translationOps && cfg.extendedIDs && cfg.vmid16 && cfg.streamIDMask == 0xFFFF)
        #expect(!cfg.aarch32L && !cfg.aarch32S && cfg.pageSizeBitmap == 0x0200_4000)
        #expect(cfg.lines.contains("\taddress translation ops"))
        #expect(cfg.lines.contains("\tStage-1: 36-bit VA -> 40-bit IPA"))
        #expect(!cfg.lines.contains { $0.hasPrefix("\tStage-2") })
        #expect(cfg.lines.contains("SMMU address space size (0x8000) differs from mapped region size (0x1000000)!"))
        #expect(cfg.lines.contains("\tSupported page sizes: 0x02004000"))
    }

    @Test("cfg_probe's -ENODEV cases")
    func failures() {
        #expect(throws: ArmSMMUConfiguration.ProbeFailure.noTranslationSupport) {
            try ArmSMMUConfiguration(idr0: 0x0800_0080, idr1: 0xE000_0080, idr2: 0x5555, mappedSize: 0x100_0000)
        }
        #expect(throws: ArmSMMUConfiguration.ProbeFailure.streamMatchingWithoutSMRs) {
            try ArmSMMUConfiguration(idr0: 0x7C00_1E00, idr1: 0xE000_0080, idr2: 0x5555, mappedSize: 0x100_0000)
        }
        #expect(throws: ArmSMMUConfiguration.ProbeFailure.impossibleS2ContextBanks(s2: 9, total: 8)) {
            try ArmSMMUConfiguration(idr0: 0x7C00_1E80, idr1: 0xE009_0008, idr2: 0x5555, mappedSize: 0x100_0000)
        }
    }
}
