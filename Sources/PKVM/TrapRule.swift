/// Every reason the hypervisor refuses something, each beside the guarantee it enforces.
///
/// The raw value is the audit's SMMU_RULE field (the daemon gives each a journal MESSAGE_ID, and
/// systemd/smmu-hypd.catalog explains each one). The guarantees are docs/hypervisor-model.md's.
public enum TrapRule: String, CaseIterable, Sendable, Codable {
    /// G2: a valid SMR must match only host streams, counting ID, MASK and the implemented width.
    case smrForeignStream = "G2.smr-foreign-stream"
    /// G2: an S2CR of type TRANS must name a context bank the host sees.
    case s2crHiddenContextBank = "G2.s2cr-hidden-context-bank"
    /// G2/G5: a nested CBAR must name a stage-2 context bank the host sees.
    case cbarHiddenContextBank = "G2.cbar-hidden-context-bank"
    /// G5: context banks the hypervisor keeps are neither readable nor writable by the host.
    case hiddenContextBank = "G5.hidden-context-bank"
    /// G5: SMR/S2CR pairs the hypervisor keeps are neither readable nor writable by the host.
    case hiddenStreamMatchGroup = "G5.hidden-smr"
    /// G3: host CPU accesses (MEM_READ/MEM_WRITE) pass the host stage-2: host pages only.
    case hostMemoryAccess = "G3.host-stage2"
    /// G4: only host-owned pages can be donated.
    case donateNotHostOwned = "G4.donate-not-host-owned"
    /// G4: a page the host's live SMMU configuration walks as a page table cannot be donated.
    case donateLivePageTable = "G4.donate-live-page-table"
    /// G4: only a host-owned stream can be assigned to a VM.
    case assignForeignStream = "G4.assign-foreign-stream"
    /// G4: a stream a valid host SMR still matches cannot be assigned (the host detaches it first).
    case assignMatchedStream = "G4.assign-stream-in-use"
    /// G4: pages a client's shared file backs (MEM_MAP) cannot be donated: the host keeps its own mapping.
    case donateSharedMemory = "G4.donate-shared-memory"
    /// G4: MEM_MAP may back only host-owned pages.
    case mapNotHostOwned = "G4.map-not-host-owned"
    /// G4: MEM_MAP may not show file bytes another mapping already shows (one file page, one address).
    case mapAlias = "G4.map-alias"
    // The Tegra memory controller's stream-ID window (Hypervisor+MemoryController.swift).
    /// G2: an MC override (or a security write turning one on) must name a stream the host owns.
    case mcOverrideForeignStream = "G2.mc-override-foreign-stream"
    /// G2: a client whose stream is a VM's or the hypervisor's is theirs to program: no host write to its registers.
    case mcForeignClient = "G2.mc-foreign-client"
    /// G3: the passthrough stream ID goes around every SMMU; the host may name it only where configured.
    case mcOverridePassthrough = "G3.mc-override-passthrough"
    /// G3: the MC's SMMU bypass configuration is the boot firmware's and the hypervisor's: no host write.
    case mcBypassConfig = "G3.mc-bypass-config"
    /// G4: a stream another host MC client's override routes to cannot be assigned (the host re-points it first).
    case assignStreamMCRouted = "G4.assign-stream-mc-routed"
    // Finalization by the host (PROT_FINALIZE, Hypervisor.hostFinalize).
    /// G1: the host finalizes only where the configuration says its finalization is the one that counts.
    case finalizeNotHost = "G1.finalize-not-host"
    /// G1: the host finalizes once, before finalization (pKVM answers a second call with -EPERM).
    case finalizeRepeated = "G1.finalize-repeated"

    /// The guarantees of docs/hypervisor-model.md this rule enforces, the first being the one its name carries.
    public var guarantees: [Guarantee] {
        switch self {
        case .smrForeignStream, .s2crHiddenContextBank: [.g2]
        case .cbarHiddenContextBank: [.g2, .g5]
        case .hiddenContextBank, .hiddenStreamMatchGroup: [.g5]
        case .hostMemoryAccess: [.g3]
        case .donateNotHostOwned, .donateLivePageTable, .assignForeignStream, .assignMatchedStream,
             .donateSharedMemory, .mapNotHostOwned, .mapAlias: [.g4]
        case .mcOverrideForeignStream, .mcForeignClient: [.g2]
        case .mcOverridePassthrough, .mcBypassConfig: [.g3]
        case .assignStreamMCRouted: [.g4]
        case .finalizeNotHost, .finalizeRepeated: [.g1]
        }
    }

    /// One sentence for the journal's MESSAGE and the catalog.
    public var summary: String {
        switch self {
        case .smrForeignStream: "SMR write would match a stream the host does not own"
        case .s2crHiddenContextBank: "S2CR write routes a stream to a context bank the host does not see"
        case .cbarHiddenContextBank: "CBAR write nests a context over a stage-2 bank the host does not see"
        case .hiddenContextBank: "access to a context bank the hypervisor keeps for itself"
        case .hiddenStreamMatchGroup: "access to an SMR/S2CR pair the hypervisor keeps for itself"
        case .hostMemoryAccess: "host memory access to a page the host does not own"
        case .donateNotHostOwned: "VM_DONATE of memory the host does not own"
        case .donateLivePageTable: "VM_DONATE of a page the host's SMMU configuration uses as a page table"
        case .assignForeignStream: "VM_ASSIGN_STREAM of a stream the host does not own"
        case .assignMatchedStream: "VM_ASSIGN_STREAM of a stream a valid host SMR still matches"
        case .donateSharedMemory: "VM_DONATE of pages a client's shared file backs (MEM_MAP)"
        case .mapNotHostOwned: "MEM_MAP over memory the host does not own"
        case .mapAlias: "MEM_MAP of file bytes another mapping already shows"
        case .mcOverrideForeignStream: "memory-controller stream-ID override naming a stream the host does not own"
        case .mcForeignClient: "write to the stream-ID registers of a memory client the host does not own"
        case .mcOverridePassthrough: "memory-controller override naming the passthrough stream ID, which bypasses the SMMUs"
        case .mcBypassConfig: "write to the memory controller's SMMU bypass configuration"
        case .assignStreamMCRouted: "VM_ASSIGN_STREAM of a stream a host memory client's override routes to"
        case .finalizeNotHost: "PROT_FINALIZE from the host where the configuration does not let the host finalize"
        case .finalizeRepeated: "PROT_FINALIZE from the host after finalization"
        }
    }
}

/// The guarantees of docs/hypervisor-model.md ("Guarantees"). G1's DEFERRED before finalization and G8 (bounded
/// work) are kept by construction; G1's rules refuse only a host finalization the configuration does not grant.
public enum Guarantee: String, CaseIterable, Sendable {
    /// No early access.
    case g1 = "G1"
    /// Streams stay with their owner.
    case g2 = "G2"
    /// Host DMA stays in host memory.
    case g3 = "G3"
    /// VM DMA stays in VM memory.
    case g4 = "G4"
    /// Hidden resources stay hidden.
    case g5 = "G5"
    /// Clean teardown.
    case g6 = "G6"
    /// Nothing refused goes unrecorded.
    case g7 = "G7"
    /// One bad client hurts nobody (bounded work and connections).
    case g8 = "G8"
}

/// One refused access, as the audit records it (G7). Produced once per DENIED.
public struct AuditEvent: Sendable, Equatable {
    public var rule: TrapRule
    public var client: ClientIdentity
    /// The window (instance) name, when the access was an MMIO access or named a window.
    public var window: String?
    /// The register in ARM terms with its index, e.g. "SMR[3]" or "CB[120].FAR".
    public var register: String?
    /// Window offset for MMIO; the physical address for memory and hypercalls.
    public var offset: UInt64
    public var value: UInt64
    public var width: Int
    /// The streams concerned (the foreign ones an SMR would match, the stream a hypercall named).
    public var streams: [UInt16]

    public init(rule: TrapRule, client: ClientIdentity, window: String?, register: String?,
                offset: UInt64, value: UInt64, width: Int, streams: [UInt16] = []) {
        self.rule = rule
        self.client = client
        self.window = window
        self.register = register
        self.offset = offset
        self.value = value
        self.width = width
        self.streams = streams
    }
}

/// Where audit events go. The daemon's sink writes them to journald; tests collect them.
public protocol AuditSink: AnyObject {
    func record(_ event: AuditEvent)
}

/// Keeps events in memory; for tests and for tools that want the list.
public final class CollectingAuditSink: AuditSink {
    public private(set) var events: [AuditEvent] = []
    public init() {}
    public func record(_ event: AuditEvent) { events.append(event) }
}
