import PKVM
import WireProtocol

/// The daemon layer's state as a value (docs/state-image.md, "Daemon layer"), beside the hypervisor's
/// `HypervisorStateImage`: every session by its connection's id, the dispatcher's and the server's counters, what
/// EVENTS subscribers last heard, and the audit sink's coalescing state. Pure data: the caller (the restart path)
/// owns the descriptors and hands each session's socket, MEM_MAP files, epoch page and ring back on restore.
public struct DispatcherStateImage: Sendable, Equatable {
    public static let magic: [UInt8] = Array("SMMUDSPS".utf8)
    public static let formatVersion: UInt32 = 1

    /// STATS' request counters: (role slot, opcode, status) -> count, only the non-zero ones, ascending.
    public var operations: [OperationCount]
    public var connectionsOpened: Int
    public var connectionsOpen: Int
    public var unsupported: Int
    public var malformed: Int
    /// The server's admission counters (STATS' "connections").
    public var serverCounters: ConnectionCounters
    /// The interrupt-line levels EVENTS subscribers last heard, per window.
    public var interruptLines: [[Bool]]
    /// Every open connection's session, by ascending id.
    public var sessions: [SessionImage]
    /// The journal sink's counters and coalescing windows (nil: the daemon had no journal sink).
    public var audit: AuditSinkImage?
    /// Who finalized pKVM (STATS' `finalized_by`; nil: not finalized yet).
    public var finalizedBy: Finalizer? = nil

    public struct OperationCount: Sendable, Equatable {
        /// 0 un-greeted, else the role's raw value.
        public var roleSlot: Int
        public var opcode: UInt8
        public var status: UInt32
        public var count: Int
    }

    /// One connection's protocol state. `id` is the stable key the restart path matches descriptors by.
    public struct SessionImage: Sendable, Equatable {
        public var id: UInt64
        public var peer: PeerCredentials
        /// Nil until a HELLO was accepted.
        public var role: Role?
        /// The name the audit uses (the HELLO name, or "pid<n>").
        public var clientName: String
        /// EVENTS: the connection only receives events now.
        public var subscribed: Bool
        /// A malformed frame was answered: the connection closes once its output is sent.
        public var closing: Bool
        /// Complete requests were held back for the output bound (`DispatcherSession.hasPendingInput`).
        public var heldBack: Bool
        /// Bases of the ranges it MEM_MAPped (the hypervisor's image has their files).
        public var mappedBases: [UInt64]
        /// It shared an epoch page (DMA_EPOCH) / a ring (RING): the caller attaches their files again.
        public var epochPage: Bool
        public var ring: Bool
        /// Bytes received and not yet answered: partial frames, or frames held back.
        public var input: FrameDecoder.PendingState
        /// Bytes answered and not yet sent.
        public var output: [UInt8]

        public init(id: UInt64, peer: PeerCredentials, role: Role?, clientName: String, subscribed: Bool = false,
                    closing: Bool = false, heldBack: Bool = false, mappedBases: [UInt64] = [], epochPage: Bool = false,
                    ring: Bool = false, input: FrameDecoder.PendingState = .init(), output: [UInt8] = []) {
            self.id = id
            self.peer = peer
            self.role = role
            self.clientName = clientName
            self.subscribed = subscribed
            self.closing = closing
            self.heldBack = heldBack
            self.mappedBases = mappedBases
            self.epochPage = epochPage
            self.ring = ring
            self.input = input
            self.output = output
        }
    }

    /// `JournalAuditSink`'s state: its counters, and per (peer, rule) the window that decides what is written and
    /// what is counted for a summary. Times are kept as ages, since clocks do not survive a restart.
    public struct AuditSinkImage: Sendable, Equatable {
        public var counters: JournalAuditSink.Counters
        public var sequence: UInt64
        public var windows: [AuditWindow]
    }

    public struct AuditWindow: Sendable, Equatable {
        public var pid: Int32
        public var uid: UInt32
        public var rule: String
        public var client: String
        /// How long ago the window's current second began, in nanoseconds.
        public var ageNanoseconds: UInt64
        public var written: Int
        public var suppressed: UInt64
        public var awaitingSince: UInt64
    }
}
