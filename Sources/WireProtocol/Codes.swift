/// The enumerations of protocol v1 (docs/protocol-v1.md). Raw values are the wire values.

/// A request opcode. A response carries `opcode | 0x80`; an event message carries ``event``.
public enum Opcode: UInt8, Sendable, CaseIterable, CustomStringConvertible {
    case hello = 0x01
    case read = 0x02
    case write = 0x03
    case dma = 0x04
    case memRead = 0x05
    case memWrite = 0x06
    case memMap = 0x07
    /// v1.1: share a page holding the translation epoch (one fd); DMA_CACHED answers carry the epoch.
    case dmaEpoch = 0x08
    /// v1.1: DMA, answered with the mapping's size, permissions and epoch so the device may cache it.
    case dmaCached = 0x09
    /// v1.1: DMA_CACHED for one access plus speculative translations of the pages after it.
    case dmaPrefetch = 0x0A
    /// v1.1: move this connection's requests to a shared-memory ring (one fd).
    case ring = 0x0B
    /// A DMA by a memory-controller client (Tegra): the stream its override produces (docs/protocol-v1.md).
    case mcDMA = 0x0C
    case vmCreate = 0x10
    case vmDonate = 0x11
    case vmAssignStream = 0x12
    case vmDestroy = 0x13
    case stats = 0x20
    case dump = 0x21
    case finalize = 0x22
    /// Start, stop or ask about the MMIO trace (admin; docs/trace-format.md).
    case trace = 0x23
    case events = 0x30
    /// The opcode of an event message the daemon sends on an EVENTS connection (not a request).
    case event = 0xB0

    /// The bit a response sets in the request's opcode.
    public static let responseBit: UInt8 = 0x80

    /// The opcode byte of this request's response. Note EVENTS' response byte, 0xB0, is also the
    /// event message's opcode: the OK response carries the request's tag, events carry tag 0.
    public var responseCode: UInt8 { rawValue | Self.responseBit }

    /// True for the opcodes a client may send (everything but ``event``).
    public var isRequest: Bool { self != .event }

    /// The request opcode a response byte answers, if it is one (0xB0 answers EVENTS).
    public init?(response byte: UInt8) {
        guard byte & Self.responseBit != 0, let op = Opcode(rawValue: byte & ~Self.responseBit), op.isRequest else {
            return nil
        }
        self = op
    }

    public var description: String {
        switch self {
        case .hello: "HELLO"
        case .read: "READ"
        case .write: "WRITE"
        case .dma: "DMA"
        case .memRead: "MEM_READ"
        case .memWrite: "MEM_WRITE"
        case .memMap: "MEM_MAP"
        case .mcDMA: "MC_DMA"
        case .dmaEpoch: "DMA_EPOCH"
        case .dmaCached: "DMA_CACHED"
        case .dmaPrefetch: "DMA_PREFETCH"
        case .ring: "RING"
        case .vmCreate: "VM_CREATE"
        case .vmDonate: "VM_DONATE"
        case .vmAssignStream: "VM_ASSIGN_STREAM"
        case .vmDestroy: "VM_DESTROY"
        case .stats: "STATS"
        case .dump: "DUMP"
        case .finalize: "FINALIZE"
        case .trace: "TRACE"
        case .events: "EVENTS"
        case .event: "EVENT"
        }
    }
}

/// The result of a request, in the response header's status field.
public enum Status: UInt32, Sendable, CaseIterable, Error, CustomStringConvertible {
    case ok = 0
    /// pKVM not finalized yet: like Linux's -EPROBE_DEFER, retry later.
    case deferred = 1
    /// Trapped and refused by the ownership policy; nothing changed; audited.
    case denied = 2
    case badAddress = 3
    case badAccess = 4
    /// Framing error; the daemon closes the connection after this response.
    case malformed = 5
    case unsupported = 6
    case forbidden = 7
    /// A DMA translation faulted; the DMA payload says how.
    case fault = 8
    case invalid = 9
    case shuttingDown = 10

    public var description: String {
        switch self {
        case .ok: "OK"
        case .deferred: "DEFERRED"
        case .denied: "DENIED"
        case .badAddress: "BAD_ADDRESS"
        case .badAccess: "BAD_ACCESS"
        case .malformed: "MALFORMED"
        case .unsupported: "UNSUPPORTED"
        case .forbidden: "FORBIDDEN"
        case .fault: "FAULT"
        case .invalid: "INVALID"
        case .shuttingDown: "SHUTTING_DOWN"
        }
    }
}

/// The role a connection takes in HELLO; the daemon checks it against the peer's credentials.
public enum Role: UInt32, Sendable, CaseIterable, CustomStringConvertible {
    /// The EL1 kernel and its VMM: MMIO, its own memory, hypercalls.
    case host = 1
    /// A bus master: DMA translation.
    case device = 2
    /// The operator: state, statistics, manual finalization.
    case admin = 3

    public var description: String {
        switch self {
        case .host: "host"
        case .device: "device"
        case .admin: "admin"
        }
    }
}

/// pKVM's lifecycle as HELLO reports it (the response's `u32 state`).
public enum HelloState: UInt32, Sendable, CaseIterable, CustomStringConvertible {
    case notFinalized = 0
    case finalized = 1
    case stopping = 2

    public var description: String {
        switch self {
        case .notFinalized: "not finalized"
        case .finalized: "finalized"
        case .stopping: "stopping"
        }
    }
}

/// Why a DMA translation faulted: the DMA response's `u32 fault` (0 when it did not).
public enum FaultCode: UInt32, Sendable, CaseIterable {
    /// No SMR matches and unmatched streams fault.
    case unidentifiedStream = 1
    case streamFault = 2
    case translation = 3
    case accessFlag = 4
    case permission = 5
    case addressSize = 6
    /// The owner's stage-2 refused the output address or a table walk.
    case ownership = 7
    /// Several valid SMRs match the stream.
    case multipleMatch = 8
}

/// DMA request flags (bit 0 write, bit 1 instruction fetch, bit 2 privileged).
public struct DMAFlags: OptionSet, Hashable, Sendable {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }
    public static let write = DMAFlags(rawValue: 1 << 0)
    public static let instructionFetch = DMAFlags(rawValue: 1 << 1)
    public static let privileged = DMAFlags(rawValue: 1 << 2)
}
