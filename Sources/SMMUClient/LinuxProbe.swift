import WireProtocol

/// Plays Linux's arm-smmu probe against each window the daemon lists: `arm_smmu_device_cfg_probe()`,
/// the IORT-RMR step, `arm_smmu_device_reset()` and `arm_smmu_test_smr_masks()`, with the register
/// accesses in Linux's order (shared/reference/linux-arm-smmu.md §3.0, §3a, §3b, §3b').
///
/// The offsets below are the driver's (arm-smmu.h), not the daemon's table: this is an independent
/// host driver, so the two meet only on the wire.
public struct LinuxProbe {
    /// Linux's register offsets (GR0 page, and context-bank page).
    enum Offset {
        static let sCR0: UInt64 = 0x000
        static let IDR0: UInt64 = 0x020, IDR1: UInt64 = 0x024, IDR2: UInt64 = 0x028
        static let sGFSR: UInt64 = 0x048
        static let TLBIALLNSNH: UInt64 = 0x068, TLBIALLH: UInt64 = 0x06C
        static let sTLBGSYNC: UInt64 = 0x070, sTLBGSTATUS: UInt64 = 0x074
        static func SMR(_ n: Int) -> UInt64 { 0x800 + 4 * UInt64(n) }
        static func S2CR(_ n: Int) -> UInt64 { 0xC00 + 4 * UInt64(n) }
        static let SCTLR: UInt64 = 0x000, FSR: UInt64 = 0x058
    }

    /// sCR0 bits the reset sets or clears.
    enum SCR0 {
        static let CLIENTPD: UInt32 = 1 << 0, GFRE: UInt32 = 1 << 1, GFIE: UInt32 = 1 << 2
        static let EXIDENABLE: UInt32 = 1 << 3, GCFGFRE: UInt32 = 1 << 4, GCFGFIE: UInt32 = 1 << 5
        static let USFCFG: UInt32 = 1 << 10, VMIDPNE: UInt32 = 1 << 11, PTM: UInt32 = 1 << 12
        static let FB: UInt32 = 1 << 13, BSU: UInt32 = 3 << 14, VMID16EN: UInt32 = 1 << 31
    }

    /// `ARM_SMMU_CB_FSR_FAULT`: every FSR fault bit, written at reset (W1C).
    public static let fsrFault: UInt32 = 0xC000_01FE
    /// `TLB_LOOP_TIMEOUT` / `TLB_SPIN_COUNT` bound the sync poll; we poll at most this many reads.
    static let syncPollLimit = 200

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

    /// Probes one window: cfg_probe, RMR, reset, SMR mask test.
    public func probe(window: WindowRecord, index: Int) throws(Failure) -> WindowReport {
        var io = Accessor(client: client, window: index, posted: options.postedWrites)
        let gr0 = window.base

        // §3a cfg_probe: IDR0, IDR1, IDR2 and nothing else.
        let idr0 = try io.read(gr0 + Offset.IDR0, "cfg_probe IDR0")
        let idr1 = try io.read(gr0 + Offset.IDR1, "cfg_probe IDR1")
        let idr2 = try io.read(gr0 + Offset.IDR2, "cfg_probe IDR2")
        let cfg: ArmSMMUConfiguration
        do { cfg = try ArmSMMUConfiguration(idr0: idr0, idr1: idr1, idr2: idr2, mappedSize: window.size) } catch {
            throw .noDevice(window: index, error)
        }
        var lines = cfg.lines
        func cb(_ n: Int) -> UInt64 { gr0 + (UInt64(cfg.numPage + n) << UInt64(cfg.pageShift)) }

        // §3.0 step 7: arm_smmu_rmr_install_bypass_smr(): sCR0 |= CLIENTPD (no RMRs on DT).
        let initialSCR0 = try io.read(gr0 + Offset.sCR0, "RMR sCR0 read")
        try io.write(gr0 + Offset.sCR0, initialSCR0 | SCR0.CLIENTPD, "RMR sCR0 write")

        // §3b arm_smmu_device_reset().
        let gfsr = try io.read(gr0 + Offset.sGFSR, "reset sGFSR read")
        try io.write(gr0 + Offset.sGFSR, gfsr, "reset sGFSR W1C")
        let s2crInit: UInt32 = options.disableBypass ? 0x0002_0000 : 0x0001_0000
        for i in 0..<cfg.numMappingGroups {
            try io.write(gr0 + Offset.S2CR(i), s2crInit, "reset S2CR(\(i))")
            if cfg.streamMatching { try io.write(gr0 + Offset.SMR(i), 0, "reset SMR(\(i))") }
        }
        for i in 0..<cfg.numContextBanks {
            try io.write(cb(i) + Offset.SCTLR, 0, "reset CB\(i) SCTLR")
            try io.write(cb(i) + Offset.FSR, Self.fsrFault, "reset CB\(i) FSR")
        }
        try io.write(gr0 + Offset.TLBIALLH, 0xFFFF_FFFF, "reset TLBIALLH")
        try io.write(gr0 + Offset.TLBIALLNSNH, 0xFFFF_FFFF, "reset TLBIALLNSNH")
        var scr0 = try io.read(gr0 + Offset.sCR0, "reset sCR0 read")
        scr0 |= SCR0.GFRE | SCR0.GFIE | SCR0.GCFGFRE | SCR0.GCFGFIE
        scr0 |= SCR0.VMIDPNE | SCR0.PTM
        scr0 &= ~SCR0.CLIENTPD
        if options.disableBypass { scr0 |= SCR0.USFCFG } else { scr0 &= ~SCR0.USFCFG }
        scr0 &= ~SCR0.FB
        scr0 &= ~SCR0.BSU
        if cfg.vmid16 { scr0 |= SCR0.VMID16EN }
        if cfg.extendedIDs { scr0 |= SCR0.EXIDENABLE }
        // arm_smmu_tlb_sync_global(): write sTLBGSYNC, poll sTLBGSTATUS.GSACTIVE.
        try io.write(gr0 + Offset.sTLBGSYNC, 0xFFFF_FFFF, "reset sTLBGSYNC")
        var synced = false
        for _ in 0..<Self.syncPollLimit where !synced {
            synced = try io.read(gr0 + Offset.sTLBGSTATUS, "reset sTLBGSTATUS poll") & 1 == 0
        }
        if !synced { lines.append("TLB sync timed out -- SMMU may be deadlocked") }
        try io.write(gr0 + Offset.sCR0, scr0, "reset sCR0 write")
        let readBack = try io.read(gr0 + Offset.sCR0, "sCR0 read-back")

        // §3b' arm_smmu_test_smr_masks(): first free SMR is 0 after reset.
        var streamIDMask = cfg.streamIDMask
        var smrMaskMask: UInt32 = 0
        if cfg.streamMatching {
            try io.write(gr0 + Offset.SMR(0), streamIDMask & 0xFFFF, "SMR mask test ID write")
            streamIDMask = try io.read(gr0 + Offset.SMR(0), "SMR mask test ID read") & 0xFFFF
            try io.write(gr0 + Offset.SMR(0), streamIDMask << 16, "SMR mask test MASK write")
            smrMaskMask = try io.read(gr0 + Offset.SMR(0), "SMR mask test MASK read") >> 16
            lines.append("\tstreamid mask 0x\(String(streamIDMask, radix: 16)), smr mask 0x\(String(smrMaskMask, radix: 16))")
        }
        try io.complete()
        return WindowReport(
            index: index, window: window, configuration: cfg, initialSCR0: initialSCR0, finalSCR0: scr0,
            readBackSCR0: readBack, streamIDMask: streamIDMask, smrMaskMask: smrMaskMask, syncCompleted: synced,
            reads: io.reads, writes: io.writes, lines: lines)
    }

    /// 32-bit register accesses with Linux's view of failure: DEFERRED defers the probe, other refusals stop it.
    struct Accessor {
        let client: SMMUClient
        let window: Int
        let posted: Bool
        var reads = 0, writes = 0
        /// Posted writes not yet answered, with the address and step each failure would name.
        private var pending: [(request: Request, address: UInt64, step: String)] = []

        init(client: SMMUClient, window: Int, posted: Bool) {
            self.client = client
            self.window = window
            self.posted = posted
        }

        mutating func read(_ address: UInt64, _ step: String) throws(Failure) -> UInt32 {
            reads += 1
            guard !pending.isEmpty else {
                do { return UInt32(truncatingIfNeeded: try client.read(address: address, width: 4)) } catch {
                    throw map(error, address, step)
                }
            }
            let frames = try flush(then: (Request.read(ReadRequest(address: address, width: 4)), address, step))
            do { return UInt32(truncatingIfNeeded: try SMMUClient.readValue(frames[frames.count - 1].payload)) } catch {
                throw .client(error)
            }
        }

        mutating func write(_ address: UInt64, _ value: UInt32, _ step: String) throws(Failure) {
            writes += 1
            let request = Request.write(WriteRequest(address: address, value: UInt64(value), width: 4))
            if posted {
                pending.append((request, address, step))
                if pending.count >= 512 { try complete() }  // keep a window's worth in flight, not unbounded
                return
            }
            do { try client.write(address: address, value: UInt64(value), width: 4) } catch {
                throw map(error, address, step)
            }
        }

        /// Collects the answers of every posted write (the end of a window, as a barrier would).
        mutating func complete() throws(Failure) {
            guard !pending.isEmpty else { return }
            _ = try flush(then: nil)
        }

        /// Sends the posted writes plus `last` in one pipeline; the first refused access is the failure.
        private mutating func flush(then last: (request: Request, address: UInt64, step: String)?) throws(Failure) -> [SMMUClient.Frame] {
            var batch = pending
            pending.removeAll(keepingCapacity: true)
            if let last { batch.append(last) }
            let frames: [SMMUClient.Frame]
            do { frames = try client.pipeline(batch.map(\.request)) } catch { throw map(error, batch[0].address, batch[0].step) }
            for (frame, access) in zip(frames, batch) where frame.status != .ok {
                throw map(.status(frame.status ?? .malformed), access.address, access.step)
            }
            return frames
        }

        func map(_ error: SMMUClientError, _ address: UInt64, _ step: String) -> Failure {
            switch error {
            case .status(.deferred): .deferred
            case .status(let s): .access(window: window, step: step, address: address, status: s)
            default: .client(error)
            }
        }
    }
}
