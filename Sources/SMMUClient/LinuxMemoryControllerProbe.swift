import WireProtocol

/// The Tegra memory controller's part of a device's IOMMU probe, as Linux plays it: `tegra186_mc_probe_device()`
/// calls `tegra186_mc_client_sid_override()` for each MC client the device's `interconnects` name, with the
/// device's stream ID (`iommus`, bits 7:0). Like `LinuxProbe`, an independent host driver: the offsets come from the
/// caller's copy of Linux's client table, never from the daemon.
public enum LinuxMemoryControllerProbe {
    /// `MC_SID_STREAMID_SECURITY_OVERRIDE`, `MC_SID_STREAMID_SECURITY_WRITE_ACCESS_DISABLED`,
    /// `MC_SID_STREAMID_OVERRIDE_MASK`.
    static let securityOverride: UInt64 = 1 << 8, writeAccessDisabled: UInt64 = 1 << 16, overrideMask: UInt64 = 0xFF

    /// One client as Linux's table has it: its registers' physical addresses (sid window base + offset).
    public struct Client: Sendable, Equatable {
        public var name: String
        public var override: UInt64
        public var security: UInt64
        public init(name: String, override: UInt64, security: UInt64) {
            self.name = name
            self.override = override
            self.security = security
        }
    }

    /// What the sequence did for one client: the writes it made ("security", "override"), and whether Linux's
    /// `WARN_ON` (override found off) would have fired.
    public struct Outcome: Sendable, Equatable {
        public var client: String
        public var writes: [String]
        public var warned: Bool
        public var locked: Bool
    }

    /// `tegra186_mc_client_sid_override()`: read security; when the override is off, stop if the client is locked,
    /// else set bit 8 (Linux WARNs first); read the override; write the stream ID when it differs.
    public static func overrideStreamID(_ client: Client, sid: UInt8, via smmu: SMMUClient) throws(SMMUClientError) -> Outcome {
        var outcome = Outcome(client: client.name, writes: [], warned: false, locked: false)
        let security = try smmu.read(address: client.security)
        if security & securityOverride == 0 {
            if security & writeAccessDisabled != 0 {
                outcome.locked = true
                return outcome
            }
            outcome.warned = true
            try smmu.write(address: client.security, value: security | securityOverride)
            outcome.writes.append("security")
        }
        let old = try smmu.read(address: client.override) & overrideMask
        if old != UInt64(sid) {
            try smmu.write(address: client.override, value: UInt64(sid))
            outcome.writes.append("override")
        }
        return outcome
    }
}

extension SMMUClient {
    /// MC_DMA: one access by memory-controller client `client`, through the stream its override produces.
    public func mcDMA(client: UInt32, iova: UInt64, flags: DMAFlags = []) throws(SMMUClientError) -> MCDMAResult {
        let frame = try call(.mcDMA(MCDMARequest(client: client, iova: iova, flags: flags)))
        guard frame.status == .ok || frame.status == .fault else { throw .status(frame.status ?? .malformed) }
        do {
            return try frame.payload.withBytes { p throws(WireError) in try MCDMAResult.decode(p) }
        } catch {
            throw .protocolViolation(error.description)
        }
    }
}
