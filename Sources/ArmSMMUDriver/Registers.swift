/// The registers and fields the Linux arm-smmu driver uses, with Linux's names and offsets
/// (drivers/iommu/arm/arm-smmu/arm-smmu.h, Linux 6.1). `ARM_SMMU.GR0.sCR0` is `ARM_SMMU_GR0_sCR0`,
/// `ARM_SMMU.sCR0.CLIENTPD` is `ARM_SMMU_sCR0_CLIENTPD`, and so on.
///
/// This is the driver's own knowledge of the hardware, kept apart from the emulator's register table on
/// purpose: a test that drives the emulator through these offsets checks the emulator's decode against Linux's.
/// Offsets are within their page: GR0 is page 0, GR1 page 1, context bank n page `numpage + n`
/// (`ArmSMMUConfiguration.offset(page:)`).
public enum ARM_SMMU {
    /// Global register space 0 (page 0).
    public enum GR0 {
        public static let sCR0: UInt64 = 0x000
        public static let sACR: UInt64 = 0x010
        public static let ID0: UInt64 = 0x020
        public static let ID1: UInt64 = 0x024
        public static let ID2: UInt64 = 0x028
        public static let ID7: UInt64 = 0x03C
        public static let sGFSR: UInt64 = 0x048
        public static let sGFSYNR0: UInt64 = 0x050
        public static let sGFSYNR1: UInt64 = 0x054
        public static let sGFSYNR2: UInt64 = 0x058
        public static let TLBIVMID: UInt64 = 0x064
        public static let TLBIALLNSNH: UInt64 = 0x068
        public static let TLBIALLH: UInt64 = 0x06C
        public static let sTLBGSYNC: UInt64 = 0x070
        public static let sTLBGSTATUS: UInt64 = 0x074
        public static func SMR(_ n: Int) -> UInt64 { 0x800 + 4 * UInt64(n) }
        public static func S2CR(_ n: Int) -> UInt64 { 0xC00 + 4 * UInt64(n) }
    }

    /// Global register space 1 (page 1).
    public enum GR1 {
        public static func CBAR(_ n: Int) -> UInt64 { 0x000 + 4 * UInt64(n) }
        public static func CBFRSYNRA(_ n: Int) -> UInt64 { 0x400 + 4 * UInt64(n) }
        public static func CBA2R(_ n: Int) -> UInt64 { 0x800 + 4 * UInt64(n) }
    }

    /// A context bank's page.
    public enum CB {
        public static let SCTLR: UInt64 = 0x000
        public static let ACTLR: UInt64 = 0x004
        public static let RESUME: UInt64 = 0x008
        public static let TCR2: UInt64 = 0x010
        public static let TTBR0: UInt64 = 0x020
        public static let TTBR1: UInt64 = 0x028
        public static let TCR: UInt64 = 0x030
        public static let CONTEXTIDR: UInt64 = 0x034
        public static let S1_MAIR0: UInt64 = 0x038
        public static let S1_MAIR1: UInt64 = 0x03C
        public static let PAR: UInt64 = 0x050
        public static let FSR: UInt64 = 0x058
        public static let FAR: UInt64 = 0x060
        public static let FSYNR0: UInt64 = 0x068
        public static let S1_TLBIVA: UInt64 = 0x600
        public static let S1_TLBIASID: UInt64 = 0x610
        public static let S1_TLBIVAL: UInt64 = 0x620
        public static let S2_TLBIIPAS2: UInt64 = 0x630
        public static let S2_TLBIIPAS2L: UInt64 = 0x638
        public static let TLBSYNC: UInt64 = 0x7F0
        public static let TLBSTATUS: UInt64 = 0x7F4
    }

    public enum sCR0 {
        public static let CLIENTPD: UInt32 = 1 << 0
        public static let GFRE: UInt32 = 1 << 1
        public static let GFIE: UInt32 = 1 << 2
        public static let EXIDENABLE: UInt32 = 1 << 3
        public static let GCFGFRE: UInt32 = 1 << 4
        public static let GCFGFIE: UInt32 = 1 << 5
        public static let USFCFG: UInt32 = 1 << 10
        public static let VMIDPNE: UInt32 = 1 << 11
        public static let PTM: UInt32 = 1 << 12
        public static let FB: UInt32 = 1 << 13
        public static let BSU: UInt32 = 3 << 14
        public static let VMID16EN: UInt32 = 1 << 31
    }

    /// `ARM_SMMU_sTLBGSTATUS_GSACTIVE`, also the context bank's TLBSTATUS.SACTIVE.
    public static let sTLBGSTATUS_GSACTIVE: UInt32 = 1 << 0
    /// `ARM_SMMU_sGFSR_USF`.
    public static let sGFSR_USF: UInt32 = 1 << 1

    /// SMR: `ID` 15:0, `MASK` 31:16, `VALID` 31 (without EXIDS).
    public enum SMR {
        public static let VALID: UInt32 = 1 << 31
        public static func ID(_ id: UInt32) -> UInt32 { id & 0xFFFF }
        public static func MASK(_ mask: UInt32) -> UInt32 { (mask & 0xFFFF) << 16 }
        public static func getID(_ reg: UInt32) -> UInt32 { reg & 0xFFFF }
        public static func getMASK(_ reg: UInt32) -> UInt32 { reg >> 16 }
    }

    /// S2CR: `CBNDX` 7:0, `EXIDVALID` 10, `TYPE` 17:16, `PRIVCFG` 25:24.
    public enum S2CR {
        public static let EXIDVALID: UInt32 = 1 << 10
        /// `enum arm_smmu_s2cr_type`.
        public enum TYPE: UInt32, Sendable { case TRANS = 0, BYPASS = 1, FAULT = 2 }
        public static func value(type: TYPE, cbndx: Int, privcfg: UInt32 = 0) -> UInt32 {
            type.rawValue << 16 | UInt32(cbndx & 0xFF) | (privcfg & 3) << 24
        }
    }

    /// CBAR: `VMID` 7:0, `S1_BPSHCFG` 9:8, `S1_MEMATTR` 15:12, `TYPE` 17:16, `IRPTNDX` 31:24.
    public enum CBAR {
        /// `enum arm_smmu_cbar_type`.
        public enum TYPE: UInt32, Sendable {
            case S2_TRANS = 0, S1_TRANS_S2_BYPASS = 1, S1_TRANS_S2_FAULT = 2, S1_TRANS_S2_TRANS = 3
        }
        public static func type(_ t: TYPE) -> UInt32 { t.rawValue << 16 }
        /// `ARM_SMMU_CBAR_S1_BPSHCFG_NSH` in BPSHCFG.
        public static let S1_BPSHCFG_NSH: UInt32 = 3 << 8
        /// `ARM_SMMU_CBAR_S1_MEMATTR_WB` in MEMATTR.
        public static let S1_MEMATTR_WB: UInt32 = 0xF << 12
        public static func VMID(_ vmid: UInt16) -> UInt32 { UInt32(vmid & 0xFF) }
    }

    /// CBA2R: `VA64` 0, `VMID16` 31:16.
    public enum CBA2R {
        public static let VA64: UInt32 = 1 << 0
        public static func VMID16(_ vmid: UInt16) -> UInt32 { UInt32(vmid) << 16 }
    }

    public enum SCTLR {
        public static let M: UInt32 = 1 << 0
        public static let TRE: UInt32 = 1 << 1
        public static let AFE: UInt32 = 1 << 2
        public static let CFRE: UInt32 = 1 << 5
        public static let CFIE: UInt32 = 1 << 6
        public static let S1_ASIDPNE: UInt32 = 1 << 12
    }

    /// TCR2: `PASIZE` 3:0, `AS` 4, `SEP` 17:15 (`SEP_UPSTREAM` = 7).
    public enum TCR2 {
        public static func PASIZE(_ ips: UInt32) -> UInt32 { ips & 0xF }
        public static let AS: UInt32 = 1 << 4
        public static let SEP_UPSTREAM: UInt32 = 7 << 15
    }

    /// `ARM_SMMU_TTBRn_ASID`: 63:48.
    public static func TTBRn_ASID(_ asid: UInt16) -> UInt64 { UInt64(asid) << 48 }

    /// FSR bits; `FSR_FAULT` is every fault bit (`ARM_SMMU_FSR_FAULT`, 0xC00001FE).
    public enum FSR {
        public static let MULTI: UInt32 = 1 << 31
        public static let SS: UInt32 = 1 << 30
        public static let UUT: UInt32 = 1 << 8
        public static let ASF: UInt32 = 1 << 7
        public static let TLBLKF: UInt32 = 1 << 6
        public static let TLBMCF: UInt32 = 1 << 5
        public static let EF: UInt32 = 1 << 4
        public static let PF: UInt32 = 1 << 3
        public static let AFF: UInt32 = 1 << 2
        public static let TF: UInt32 = 1 << 1
        public static let IGN: UInt32 = AFF | ASF | TLBMCF | TLBLKF
        public static let FAULT: UInt32 = MULTI | SS | UUT | EF | PF | TF | IGN
    }

    /// `ARM_SMMU_FSYNR0_WNR`.
    public static let FSYNR0_WNR: UInt32 = 1 << 4

    /// io-pgtable-arm's MAIR for stage 1: attr0 non-cacheable, attr1 write-back, attr2 device, attr3
    /// inner non-cacheable outer write-back (`ARM_LPAE_MAIR_ATTR_*`).
    public static let LPAE_MAIR0: UInt32 = 0xF404_FF44
}
