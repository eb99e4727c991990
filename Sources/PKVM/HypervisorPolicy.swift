import SMMUModel

/// What the configuration tells the hypervisor: the machine, the memory, what it keeps for itself.
public struct HypervisorPolicy: Sendable {
    /// The SMMU instances and how they group into logical SMMUs.
    public var topology: Topology
    /// The host's RAM. Everything else is not the host's to touch.
    public var hostRAM: [PhysicalRange]
    /// EL2's own memory: VMs' stage-2 tables live here. Never the host's, never a VM's.
    public var hypervisorRAM: PhysicalRange
    /// Extra ranges host streams may reach by DMA (an MSI doorbell such as the GICv2m frame), not host CPU memory.
    public var hostDMARanges: [PhysicalRange]
    /// Context banks the hypervisor keeps per instance (the highest indices), hidden from the host.
    public var reservedContextBanks: Int
    /// SMR/S2CR pairs the hypervisor keeps per instance (the highest indices), hidden from the host.
    public var reservedSMRs: Int
    /// Streams the hypervisor keeps, per logical SMMU index.
    public var hypervisorStreams: [Int: [StreamID]]
    /// The host's own pKVM finalization (PROT_FINALIZE) is what finalizes: a guest kernel's `finalize_pkvm()`
    /// under QEMU. When false the host may not finalize (a timer or the operator does).
    public var hostFinalizes: Bool

    public init(
        topology: Topology,
        hostRAM: [PhysicalRange],
        hypervisorRAM: PhysicalRange,
        hostDMARanges: [PhysicalRange] = [],
        reservedContextBanks: Int = 8,
        reservedSMRs: Int = 8,
        hypervisorStreams: [Int: [StreamID]] = [:],
        hostFinalizes: Bool = false
    ) {
        self.topology = topology
        self.hostRAM = hostRAM
        self.hypervisorRAM = hypervisorRAM
        self.hostDMARanges = hostDMARanges
        self.reservedContextBanks = reservedContextBanks
        self.reservedSMRs = reservedSMRs
        self.hypervisorStreams = hypervisorStreams
        self.hostFinalizes = hostFinalizes
    }

    /// Why a policy cannot run on its topology.
    public enum Problem: Error, Equatable, CustomStringConvertible {
        case reservationTooLarge(window: String, what: String, reserved: Int, implemented: Int)
        case overlappingMemory(String)
        case unalignedRange(String)
        case unknownStream(smmu: Int, stream: StreamID)
        /// The topology's memory controller does not fit it (Hypervisor+MemoryController.swift says why).
        case invalidMemoryController(String)

        public var description: String {
            switch self {
            case .reservationTooLarge(let w, let what, let r, let i):
                "window \(w): reserving \(r) \(what) leaves the host none of \(i)"
            case .overlappingMemory(let s): "memory ranges overlap: \(s)"
            case .unalignedRange(let s): "range not 4 KiB aligned: \(s)"
            case .unknownStream(let smmu, let s): "logical SMMU \(smmu) has no stream \(s)"
            case .invalidMemoryController(let s): "memory controller: \(s)"
            }
        }
    }

    /// Checks what the type cannot: reservations fit, memory ranges are aligned and disjoint.
    public func validate() throws(Problem) {
        for window in topology.windows {
            let c = window.configuration
            if reservedContextBanks < 0 || reservedContextBanks >= c.numContextBanks {
                throw .reservationTooLarge(window: window.name, what: "context banks",
                                           reserved: reservedContextBanks, implemented: c.numContextBanks)
            }
            if reservedSMRs < 0 || reservedSMRs >= c.numStreamMatchGroups {
                throw .reservationTooLarge(window: window.name, what: "SMRs",
                                           reserved: reservedSMRs, implemented: c.numStreamMatchGroups)
            }
        }
        let all = hostRAM + [hypervisorRAM]
        for r in all + hostDMARanges where r.base % 4096 != 0 || r.size % 4096 != 0 || r.size == 0 {
            throw .unalignedRange("0x\(String(r.base, radix: 16))+0x\(String(r.size, radix: 16))")
        }
        // RAM ranges are disjoint, and DMA ranges lie outside all RAM: a page has one owner, and no DMA range can
        // keep a host stream on a page after it was donated (G4).
        for (i, a) in all.enumerated() {
            for b in all[(i + 1)...] + hostDMARanges where a.overlaps(b) {
                throw .overlappingMemory("0x\(String(a.base, radix: 16)) and 0x\(String(b.base, radix: 16))")
            }
        }
    }
}
