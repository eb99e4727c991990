import PKVM

/// Every journal MESSAGE_ID the daemon writes, with the catalog subject for each. systemd/smmu-hypd.catalog must
/// have one entry per ID here (a test checks it), so `journalctl -x` explains every record.
public enum AuditMessageIDs {
    /// The summary of denials counted but not written one by one (SMMU_COUNT carries how many).
    public static let coalesced = "3f1d6c2a9b7e4f0c8a5d1e2b7c9f0aff"
    /// A restart closed a connection whose replayed answers did not line up with what the previous process had
    /// written (not a denial: no SMMU_RULE, no SMMU_COUNT).
    public static let replayMisaligned = "3f1d6c2a9b7e4f0c8a5d1e2b7c9f0b01"

    public struct Entry: Sendable, Equatable {
        public let id: String
        /// SMMU_RULE, or "coalesced".
        public let rule: String
        public let subject: String
    }

    /// Fixed journal MESSAGE_ID per kind of denial (128-bit, lowercase hex).
    public static func id(of rule: TrapRule) -> String {
        switch rule {
        case .smrForeignStream: "3f1d6c2a9b7e4f0c8a5d1e2b7c9f0a11"
        case .s2crHiddenContextBank: "3f1d6c2a9b7e4f0c8a5d1e2b7c9f0a12"
        case .cbarHiddenContextBank: "3f1d6c2a9b7e4f0c8a5d1e2b7c9f0a13"
        case .hiddenContextBank: "3f1d6c2a9b7e4f0c8a5d1e2b7c9f0a14"
        case .hiddenStreamMatchGroup: "3f1d6c2a9b7e4f0c8a5d1e2b7c9f0a15"
        case .hostMemoryAccess: "3f1d6c2a9b7e4f0c8a5d1e2b7c9f0a16"
        case .donateNotHostOwned: "3f1d6c2a9b7e4f0c8a5d1e2b7c9f0a17"
        case .donateLivePageTable: "3f1d6c2a9b7e4f0c8a5d1e2b7c9f0a18"
        case .assignForeignStream: "3f1d6c2a9b7e4f0c8a5d1e2b7c9f0a19"
        case .assignMatchedStream: "3f1d6c2a9b7e4f0c8a5d1e2b7c9f0a1a"
        case .donateSharedMemory: "3f1d6c2a9b7e4f0c8a5d1e2b7c9f0a1b"
        case .mapNotHostOwned: "3f1d6c2a9b7e4f0c8a5d1e2b7c9f0a1c"
        case .mapAlias: "3f1d6c2a9b7e4f0c8a5d1e2b7c9f0a1d"
        case .mcOverrideForeignStream: "3f1d6c2a9b7e4f0c8a5d1e2b7c9f0a1e"
        case .mcForeignClient: "3f1d6c2a9b7e4f0c8a5d1e2b7c9f0a1f"
        case .mcOverridePassthrough: "3f1d6c2a9b7e4f0c8a5d1e2b7c9f0a20"
        case .mcBypassConfig: "3f1d6c2a9b7e4f0c8a5d1e2b7c9f0a21"
        case .assignStreamMCRouted: "3f1d6c2a9b7e4f0c8a5d1e2b7c9f0a22"
        case .finalizeNotHost: "3f1d6c2a9b7e4f0c8a5d1e2b7c9f0a30"
        case .finalizeRepeated: "3f1d6c2a9b7e4f0c8a5d1e2b7c9f0a31"
        }
    }

    /// One entry per trap rule (the hypervisor's table), then the coalesced summary.
    public static var all: [Entry] {
        TrapRule.allCases.map { Entry(id: id(of: $0), rule: $0.rawValue, subject: $0.summary) }
            + [Entry(id: coalesced, rule: "coalesced", subject: "denials coalesced under a flood, with their count"),
               Entry(id: replayMisaligned, rule: "replay-misaligned",
                     subject: "a restart closed a connection its replayed answers did not line up with")]
    }
}
