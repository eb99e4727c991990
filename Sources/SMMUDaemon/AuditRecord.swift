/// One DENIED access as the journal records it (G7). The dispatcher maps the hypervisor's audit event to this.
public struct AuditRecord: Sendable, Equatable {
    /// The rule broken, e.g. "G2.smr-foreign-stream" (journal field SMMU_RULE).
    public var rule: String
    /// 32 lowercase hex digits, fixed per rule (MESSAGE_ID; the catalog explains each).
    public var messageID: String
    /// A human sentence (MESSAGE).
    public var message: String
    /// The client's HELLO name: chosen by the client, so informative only; `pid` and `uid` say who it is.
    public var client: String
    /// SO_PEERCRED of the connection: what the audit attributes and coalesces by.
    public var pid: Int32
    public var uid: UInt32
    /// The window (MMU-500 instance) name; empty when the access named none.
    public var window: String
    /// The register in ARM terms, e.g. "SMR[3]"; empty when none.
    public var register: String
    public var offset: UInt64
    public var value: UInt64
    public var width: Int
    public var streams: [UInt16]

    public init(rule: String, messageID: String, message: String, client: String, pid: Int32, uid: UInt32,
                window: String, register: String, offset: UInt64, value: UInt64, width: Int, streams: [UInt16]) {
        self.rule = rule
        self.messageID = messageID
        self.message = message
        self.client = client
        self.pid = pid
        self.uid = uid
        self.window = window
        self.register = register
        self.offset = offset
        self.value = value
        self.width = width
        self.streams = streams
    }

    /// The journal fields of this record, in a fixed order.
    var journalFields: [(name: String, value: String)] {
        [
            ("MESSAGE", "\(message) (client \(client), pid \(pid); \(window.isEmpty ? "-" : window) \(register.isEmpty ? "-" : register) offset \(hex(offset)) value \(hex(value)) width \(width))"),
            ("PRIORITY", "4"),
            ("MESSAGE_ID", messageID),
            ("SYSLOG_IDENTIFIER", "smmu-hypd"),
            ("SMMU_RULE", rule),
            ("SMMU_CLIENT", client),
            ("SMMU_PID", String(pid)),
            ("SMMU_UID", String(uid)),
            ("SMMU_WINDOW", window),
            ("SMMU_REGISTER", register),
            ("SMMU_OFFSET", hex(offset)),
            ("SMMU_VALUE", hex(value)),
            ("SMMU_WIDTH", String(width)),
            ("SMMU_STREAM", streams.map { hex(UInt64($0)) }.joined(separator: ",")),
            ("SMMU_COUNT", "1"),
        ]
    }
}

/// Who a denial is attributed to: the peer's SO_PEERCRED process and user, which it cannot choose (its HELLO
/// name it can). pid 0 stands for several processes of the uid (the sink's table of peers was full).
struct AuditPeer: Hashable, Sendable {
    let pid: Int32
    let uid: UInt32
}

/// A record standing for `count` denials of one peer under one rule that were counted, not written one by one.
struct AuditSummary: Sendable, Equatable {
    var rule: String
    var peer: AuditPeer
    /// The last HELLO name the peer used (informative).
    var client: String
    var count: UInt64
    /// The per-peer burst, for the message.
    var burst: Int

    var journalFields: [(name: String, value: String)] {
        let who = peer.pid == 0 ? "several processes" : "pid \(peer.pid)"
        return [
            ("MESSAGE", "\(count) further denials by \(who) of uid \(peer.uid) (client \(client)) under rule \(rule) were coalesced (more than \(burst) per second for this peer, or the journal budget for all was spent)"),
            ("PRIORITY", "4"),
            ("MESSAGE_ID", AuditMessageIDs.coalesced),
            ("SYSLOG_IDENTIFIER", "smmu-hypd"),
            ("SMMU_RULE", rule),
            ("SMMU_CLIENT", client),
            ("SMMU_PID", String(peer.pid)),
            ("SMMU_UID", String(peer.uid)),
            ("SMMU_COUNT", String(count)),
        ]
    }
}

func hex(_ value: UInt64) -> String { "0x" + String(value, radix: 16) }
