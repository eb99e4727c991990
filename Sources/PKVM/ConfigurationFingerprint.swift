import SMMUModel

/// The configuration a state image was taken under, as readable lines ("window[0]", "name=niso1a base=0x8000000
/// ..."): the topology with each window's ID registers, the memory ranges, the reservations, the hypervisor's
/// streams, the memory controller's client table and the RAM regions of the memory map. A restore compares it line
/// by line and names the first difference.
public struct ConfigurationFingerprint: Sendable, Equatable {
    public struct Line: Sendable, Equatable {
        public var key: String
        public var value: String
    }

    public var lines: [Line]

    public init(lines: [Line]) { self.lines = lines }

    public init(policy: HypervisorPolicy, memory: MemoryMap) {
        var lines: [Line] = []
        func add(_ key: String, _ value: String) { lines.append(Line(key: key, value: value)) }
        func hex<T: BinaryInteger>(_ v: T) -> String { "0x" + String(v, radix: 16) }
        func range(_ r: PhysicalRange) -> String { "\(hex(r.base))+\(hex(r.size))" }
        let t = policy.topology
        for (i, w) in t.windows.enumerated() {
            let c = w.configuration
            add("window[\(i)]", "name=\(w.name) base=\(hex(w.base)) smmu=\(w.logicalSMMU) idr0=\(hex(c.idr0)) "
                + "idr1=\(hex(c.idr1)) idr2=\(hex(c.idr2)) idr7=\(hex(c.idr7))")
        }
        for (i, s) in t.smmus.enumerated() {
            add("smmu[\(i)]", "name=\(s.name) windows=\(s.windows) streamMatchMask=\(hex(s.streamMatchMask))")
        }
        add("hostRAM", policy.hostRAM.map(range).joined(separator: " "))
        add("hypervisorRAM", range(policy.hypervisorRAM))
        add("hostDMARanges", policy.hostDMARanges.map(range).joined(separator: " "))
        add("reservedContextBanks", "\(policy.reservedContextBanks)")
        add("reservedSMRs", "\(policy.reservedSMRs)")
        for (smmu, streams) in policy.hypervisorStreams.sorted(by: { $0.key < $1.key }) {
            add("hypervisorStreams[\(smmu)]", streams.map(\.description).joined(separator: " "))
        }
        if let mc = t.memoryController {
            add("memoryController", "sid=\(hex(mc.sidBase)) broadcast=\(hex(mc.broadcastBase)) "
                + "passthroughIsHost=\(mc.passthroughIsHost) clients=\(mc.clients.count)")
            for (i, c) in mc.clients.enumerated() {
                add("mcClient[\(i)]", "name=\(c.name) id=\(hex(c.id)) smmu=\(c.smmu) sid=\(hex(c.sid)) "
                    + "override=\(hex(c.overrideOffset)) security=\(hex(c.securityOffset))")
            }
        }
        add("memoryRegions", memory.ramRegions.map { range(PhysicalRange(base: $0.base, size: $0.size)) }
            .joined(separator: " "))
        self.lines = lines
    }

    /// The first difference from `other` (this image's configuration against the running one), or nil.
    public func difference(from other: ConfigurationFingerprint) -> String? {
        for (i, line) in lines.enumerated() {
            guard i < other.lines.count else { return "the image has \(line.key), the configuration does not" }
            let now = other.lines[i]
            if line != now {
                return line.key == now.key ? "\(line.key) was \"\(line.value)\", is \"\(now.value)\""
                    : "the image has \(line.key) where the configuration has \(now.key)"
            }
        }
        if other.lines.count > lines.count { return "the configuration has \(other.lines[lines.count].key), the image does not" }
        return nil
    }
}
