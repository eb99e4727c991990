import SMMUModel

/// The hypervisor's complete state as a value (docs/state-image.md): what `Hypervisor.stateImage` captures and
/// `Hypervisor.restore` rebuilds a hypervisor from, exactly. Not `HypervisorSnapshot` (Snapshot.swift), which is a
/// bounded, readable summary for DUMP and the invariant checker; this one is complete and not meant to be read.
public struct HypervisorStateImage: Sendable, Equatable {
    public static let magic: [UInt8] = Array("SMMUHYPS".utf8)
    /// Bumped by every change to what the image holds or how it is coded; an image of another version is refused.
    public static let formatVersion: UInt32 = 1

    /// What the image was taken under; a restore under anything else is refused.
    public var configuration: ConfigurationFingerprint
    public var lifecycle: LifecycleState
    /// The translation epoch when the image was taken (a restore continues strictly after it).
    public var translationEpoch: UInt64
    /// Where the search for the next VM handle starts.
    public var nextVM: UInt32
    public var statistics: HypervisorStatistics
    /// One per window, in topology order.
    public var instances: [InstanceImage]
    public var memoryController: MemoryControllerImage?
    /// Streams that are not the host's, per logical SMMU, ascending.
    public var streamOwners: [[StreamOwner]]
    /// Per host-RAM region (policy order), the owner code of every page (`Ownership`'s table, shared bit included),
    /// as runs of equal codes.
    public var pageCodes: [[CodeRun]]
    /// The hypervisor's free pages, in allocation order (the last is handed out first), as runs of adjacent pages.
    public var freeHypervisorPages: [PageRun]
    /// Live VMs, by ascending handle.
    public var vms: [VMImage]
    /// Client memory (MEM_MAP) backing host pages, in the order it was mapped.
    public var sharedMappings: [SharedMappingImage]
    /// RAM contents: every non-zero page of the daemon's own memory, or nil when the caller keeps RAM itself.
    public var memory: [MemoryPage]?

    public struct CodeRun: Sendable, Equatable {
        public var code: UInt32
        public var count: Int
    }

    /// `count` pages from `first`, each 4 KiB above (or below, `descending`) the one before.
    public struct PageRun: Sendable, Equatable {
        public var first: UInt64
        public var count: Int
        public var descending: Bool
    }

    public struct StreamOwner: Sendable, Equatable {
        public var stream: StreamID
        public var owner: Owner
    }

    public struct InstanceImage: Sendable, Equatable {
        public var physical: MMU500StateImage
        /// The host's view (its register file; its TLB is always empty: the host's view translates nothing).
        public var virtual: MMU500StateImage
        /// Reserved SMR slot -> what the hypervisor programmed there, ascending slots.
        public var reservedSMRUse: [ReservedSMR]
        /// Reserved context bank -> the VM it serves, ascending banks.
        public var reservedContextBankUse: [ReservedBank]
    }

    public struct ReservedSMR: Sendable, Equatable {
        public var slot: Int
        public var stream: StreamID
        public var owner: Owner
    }

    public struct ReservedBank: Sendable, Equatable {
        public var bank: Int
        public var vm: VMHandle
    }

    public struct MemoryControllerImage: Sendable, Equatable {
        public var overrides: [UInt32]
        public var securities: [UInt32]
        public var bypassConfig: UInt32
        public var interruptMask: UInt32
        /// The host's write-disable bit per client (its view only).
        public var hostLocked: [Bool]
    }

    public struct VMImage: Sendable, Equatable {
        public var handle: VMHandle
        public var stage2Root: UInt64
        /// Every page of its stage-2 tables, root included, ascending.
        public var tablePages: [UInt64]
        /// Assigned streams, in assignment order.
        public var streams: [AssignedStream]
        /// Logical SMMU -> the reserved context bank serving the VM there, ascending SMMUs.
        public var contextBanks: [AssignedBank]
    }

    public struct AssignedStream: Sendable, Equatable {
        public var smmu: Int
        public var stream: StreamID
    }

    public struct AssignedBank: Sendable, Equatable {
        public var smmu: Int
        public var bank: Int
    }

    /// A MEM_MAPped range: where it is, and which file bytes back it (the stable key the caller attaches again).
    public struct SharedMappingImage: Sendable, Equatable {
        public var range: PhysicalRange
        public var file: SharedFileRange
    }

    public struct MemoryPage: Sendable, Equatable {
        public var address: UInt64
        /// 4096 bytes.
        public var bytes: [UInt8]
    }
}
