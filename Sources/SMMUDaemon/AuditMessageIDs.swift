import Hypervisor

/// Every journal MESSAGE_ID the daemon writes, with the catalog subject for each. systemd/smmu-hypd.catalog must
/// have one entry per ID here (a test checks it), so `journalctl -x` explains every record.
public enum AuditMessageIDs {
    /// The summary of denials counted but not written one by one (SMMU_COUNT carries how many).
    public static let coalesced = "3f1d6c2a9b7e4f0c8a5d1e2b7c9f0aff"

    public struct Entry: Sendable, Equatable {
        public let id: String
        /// SMMU_RULE, or "coalesced".
        public let rule: String
        public let subject: String
    }

    /// One entry per trap rule (the hypervisor's table), then the coalesced summary.
    public static var all: [Entry] {
        TrapRule.allCases.map { Entry(id: $0.messageID, rule: $0.rawValue, subject: $0.summary) }
            + [Entry(id: coalesced, rule: "coalesced", subject: "denials coalesced under a flood, with their count")]
    }
}
