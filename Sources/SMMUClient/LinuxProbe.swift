import ArmSMMUDriver
import WireProtocol

/// Plays Linux's arm-smmu probe against each window the daemon lists, as the host kernel would at boot:
/// `arm_smmu_device_cfg_probe()`, `arm_smmu_rmr_install_bypass_smr()`, `arm_smmu_device_reset()` and
/// `arm_smmu_test_smr_masks()`. The sequences are `ArmSMMUDriver`'s, in Linux's offsets, through
/// ``SMMURegisterPort``: this is an independent host driver, so it meets the daemon's register table only on
/// the wire.
public struct LinuxProbe {
    /// Kernel options that change what the probe writes.
    public struct Options: Sendable {
        /// `CONFIG_ARM_SMMU_DISABLE_BYPASS_BY_DEFAULT` (default y): S2CRs FAULT, sCR0.USFCFG set.
        public var disableBypass = true
        /// Writes are posted, as a CPU's MMIO stores are: sent without waiting, with the next read (or the end of
        /// the window) collecting their answers in order, so a refused write is still reported at its own step.
        /// A device answers a read only after every earlier access, so the values read are the same either way.
        /// Off: one round trip per access.
        public var postedWrites = true
        public init(disableBypass: Bool = true, postedWrites: Bool = true) {
            self.disableBypass = disableBypass
            self.postedWrites = postedWrites
        }
    }

    /// What the probe of one window found.
    public struct WindowReport: Sendable {
        public var index: Int
        public var window: WindowRecord
        public var configuration: ArmSMMUConfiguration
        /// sCR0 as read by the RMR step, and the value the reset finally wrote.
        public var initialSCR0: UInt32, finalSCR0: UInt32
        /// sCR0 read back after the reset.
        public var readBackSCR0: UInt32
        /// The SMR mask test's results (Linux's `streamid_mask` and `smr_mask_mask`).
        public var streamIDMask: UInt32, smrMaskMask: UInt32
        /// Whether the global TLB sync completed (sTLBGSTATUS.GSACTIVE read 0).
        public var syncCompleted: Bool
        public var reads: Int, writes: Int
        /// Everything Linux prints for this SMMU, in order.
        public var lines: [String]
        /// The device name Linux would use, e.g. "8000000.iommu".
        public var deviceName: String { String(window.base, radix: 16) + ".iommu" }
    }

    /// Why the probe stopped.
    public enum Failure: Error, Hashable, Sendable, CustomStringConvertible {
        /// pKVM not finalized: Linux's probe returns -EPROBE_DEFER.
        case deferred
        /// cfg_probe's -ENODEV.
        case noDevice(window: Int, ArmSMMUConfiguration.ProbeFailure)
        /// An access the daemon refused (Linux cannot see refusals; the test driver reports them).
        case access(window: Int, step: String, address: UInt64, status: Status)
        case client(SMMUClientError)

        public var description: String {
            switch self {
            case .deferred: "probe deferred (-EPROBE_DEFER): pKVM is not finalized"
            case .noDevice(let w, let f): "window \(w): -ENODEV: \(f)"
            case .access(let w, let step, let a, let s):
                "window \(w): \(step) at 0x\(String(a, radix: 16)) answered \(s)"
            case .client(let e): "\(e)"
            }
        }
    }

    public let client: SMMUClient
    public var options: Options

    public init(client: SMMUClient, options: Options = Options()) {
        self.client = client
        self.options = options
    }

    /// Probes every window in order. Throws ``Failure/deferred`` if the first read is DEFERRED.
    public func run(windows: [WindowRecord]) throws(Failure) -> [WindowReport] {
        var reports: [WindowReport] = []
        for (i, w) in windows.enumerated() { reports.append(try probe(window: w, index: i)) }
        return reports
    }

    /// Probes one window: cfg_probe, RMR, reset, sCR0 read back (a check of the test driver's, not Linux's),
    /// SMR mask test. Each window is one instance (Linux's generic MMIO).
    public func probe(window: WindowRecord, index: Int) throws(Failure) -> WindowReport {
        let port = SMMURegisterPort(client: client, window: window, index: index, posted: options.postedWrites)
        let smmu: ArmSMMU<SMMURegisterPort>
        switch try ArmSMMU.cfgProbe([port], mappedSize: window.size, options: .init(disableBypass: options.disableBypass)) {
        case .success(let s): smmu = s
        case .failure(let f): throw .noDevice(window: index, f)
        }
        port.channel.configuration = smmu.configuration
        var lines = smmu.configuration.lines
        let initialSCR0 = try smmu.rmrInstallBypassSMR()
        let reset = try smmu.deviceReset()
        if !reset.syncCompleted { lines.append("TLB sync timed out -- SMMU may be deadlocked") }
        let readBack = try port.read32(ARM_SMMU.GR0.sCR0)
        var streamIDMask = smmu.configuration.streamIDMask, smrMaskMask: UInt32 = 0
        if let masks = try smmu.testSMRMasks() {
            (streamIDMask, smrMaskMask) = masks
            lines.append("\tstreamid mask 0x\(String(streamIDMask, radix: 16)), smr mask 0x\(String(smrMaskMask, radix: 16))")
        }
        try port.complete()
        return WindowReport(
            index: index, window: window, configuration: smmu.configuration, initialSCR0: initialSCR0,
            finalSCR0: reset.sCR0, readBackSCR0: readBack, streamIDMask: streamIDMask, smrMaskMask: smrMaskMask,
            syncCompleted: reset.syncCompleted, reads: port.channel.reads, writes: port.channel.writes, lines: lines)
    }
}
