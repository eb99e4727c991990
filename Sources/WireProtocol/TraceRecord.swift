/// The MMIO trace (docs/trace-format.md): what the daemon records of every accepted request, so that
/// `smmuctl replay` can send the same requests to a fresh daemon and compare every answer byte for byte.
/// Pure values and their encoding; the daemon's `TraceRecorder` writes them, `TraceReader` reads them back.

/// The file's constants.
public enum TraceFormat {
    /// `SMMUTRC` and a NUL: the first 8 bytes of every trace.
    public static let magic: [UInt8] = [0x53, 0x4D, 0x4D, 0x55, 0x54, 0x52, 0x43, 0x00]
    /// The one version this code writes and reads; a reader refuses any other.
    public static let version: UInt32 = 1
    /// magic, version, flags, fingerprint, configuration length, reserved.
    public static let headerSize = 32
    /// kind, flags, reserved, body length, checksum.
    public static let recordHeaderSize = 12
    /// The configuration text kept in the header at most (a replay re-runs the daemon under it).
    public static let maxConfigurationLength = 1 << 20
    /// A record's body at most: a request and its answer are each one frame, plus what memory they read (VM_DONATE's
    /// table scan reads at most 131,072 descriptors: 3 MiB of observations).
    public static let maxBodyLength = 1 << 24

    /// FNV-1a (64 bits): the configuration's fingerprint. Detects a different configuration, not an adversary.
    public static func fingerprint(_ bytes: [UInt8]) -> UInt64 {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for b in bytes { h = (h ^ UInt64(b)) &* 0x100_0000_01b3 }
        return h
    }

    /// A record body's checksum: a flipped or missing byte is a corrupt trace, not a divergence. FNV-1a's step over
    /// the body's little-endian 64-bit words (the last one zero-padded), folded to 32 bits: a word at a time, as it
    /// runs for every request the daemon records.
    public static func checksum(_ bytes: UnsafeRawBufferPointer) -> UInt32 {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        var at = 0
        while bytes.count - at >= 8 {
            h = (h ^ UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: at, as: UInt64.self))) &* 0x100_0000_01b3
            at += 8
        }
        if at < bytes.count {
            var last: UInt64 = 0
            for i in at..<bytes.count { last |= UInt64(bytes[i]) << (8 * UInt64(i - at)) }
            h = (h ^ last) &* 0x100_0000_01b3
        }
        return UInt32(truncatingIfNeeded: h ^ h >> 32)
    }
}

/// The header: which configuration the daemon ran under (its YAML text, exactly as it read it).
public struct TraceHeader: Hashable, Sendable {
    public var version: UInt32
    public var configuration: [UInt8]
    public var fingerprint: UInt64 { TraceFormat.fingerprint(configuration) }

    public init(configuration: [UInt8], version: UInt32 = TraceFormat.version) {
        self.configuration = configuration
        self.version = version
    }

    public var configurationText: String { String(decoding: configuration, as: UTF8.self) }

    public func encode(into out: inout [UInt8]) {
        out.append(contentsOf: TraceFormat.magic)
        out.appendLE(version)
        out.appendLE(UInt32(0))  // flags
        out.appendLE(fingerprint)
        out.appendLE(UInt32(configuration.count))
        out.appendLE(UInt32(0))
        out.append(contentsOf: configuration)
    }
}

/// The peer of a connection, as SO_PEERCRED gave it (informative: a replay connects as itself).
public struct TracePeer: Hashable, Sendable {
    public var uid: UInt32
    public var gid: UInt32
    public var pid: Int32
    public init(uid: UInt32, gid: UInt32, pid: Int32) {
        self.uid = uid
        self.gid = gid
        self.pid = pid
    }
}

/// The file descriptor a request carried (MEM_MAP, DMA_EPOCH, RING), as much of it as the answer depends on.
public struct TraceDescriptor: Hashable, Sendable {
    public enum Kind: UInt8, Sendable {
        /// A regular file (a memfd): replay passes a memfd of the same size and seals.
        case file = 1
        /// Anything else (a socket, a pipe): replay passes a pipe, which the daemon refuses alike.
        case other = 2
    }
    public var kind: Kind
    /// The same number for the same file (device and inode) throughout one trace: replay passes one memfd for
    /// all of them, so an alias refused when recorded is refused again.
    public var file: UInt32
    public var size: UInt64
    /// F_GET_SEALS (F_SEAL_SHRINK is 0x2).
    public var seals: UInt32
    public init(kind: Kind, file: UInt32, size: UInt64, seals: UInt32) {
        self.kind = kind
        self.file = file
        self.size = size
        self.seals = seals
    }
    static let encodedSize = 24
}

/// Bytes the daemon read from client-mapped memory (MEM_MAP) while answering a request: a descriptor of a
/// table walk, MEM_READ's data. Replay writes them into its own mapping before it sends the request.
public struct TraceMemory: Hashable, Sendable {
    public var address: UInt64
    public var bytes: [UInt8]
    public init(address: UInt64, bytes: [UInt8]) {
        self.address = address
        self.bytes = bytes
    }

    /// Appends one observation (`u64 address`, `u32 length`, `u32 reserved`, the bytes).
    public static func encode(address: UInt64, bytes: UnsafeRawBufferPointer, into out: inout [UInt8]) {
        out.appendLE(address)
        out.appendLE(UInt32(bytes.count))
        out.appendLE(UInt32(0))
        out.append(contentsOf: bytes)
    }
}

/// One request and its answer, as the daemon handled it.
public struct TraceExchange: Hashable, Sendable {
    public var session: UInt64
    /// The connection's role when the request arrived (nil before HELLO).
    public var role: Role?
    /// The request came through the connection's shared-memory ring (RING), not the socket.
    public var viaRing: Bool
    public var descriptor: TraceDescriptor?
    public var memory: [TraceMemory]
    /// The whole request frame (header and payload).
    public var request: [UInt8]
    /// Every frame the daemon appended to this connection's output while answering: the response, and for
    /// EVENTS the events of the lines already up.
    public var response: [UInt8]

    public init(session: UInt64, role: Role?, viaRing: Bool = false, descriptor: TraceDescriptor? = nil,
                memory: [TraceMemory] = [], request: [UInt8], response: [UInt8]) {
        self.session = session
        self.role = role
        self.viaRing = viaRing
        self.descriptor = descriptor
        self.memory = memory
        self.request = request
        self.response = response
    }
}

/// Why recording stopped: the last record of a complete trace.
public enum TraceEnd: UInt32, Hashable, Sendable, CustomStringConvertible {
    /// TRACE stop, or the daemon stopping.
    case stopped = 1
    /// The next record would have passed `max_bytes`: the trace is a prefix of what happened.
    case truncated = 2
    /// The background writer fell behind by more than it may buffer: recording stopped rather than block.
    case writerBehind = 3
    /// A write to the file failed (disk full, ...).
    case writeFailed = 4

    public var description: String {
        switch self {
        case .stopped: "stopped"
        case .truncated: "truncated at max_bytes"
        case .writerBehind: "stopped: the writer fell behind"
        case .writeFailed: "stopped: a write failed"
        }
    }
}

/// One record of the trace, in the daemon's global order (its serial queue's).
public enum TraceRecord: Hashable, Sendable {
    /// A connection was accepted.
    case sessionOpened(session: UInt64, peer: TracePeer)
    case exchange(TraceExchange)
    /// An EVENTS message sent to a subscriber outside its own requests (while another request ran).
    case event(session: UInt64, frame: [UInt8])
    /// The daemon finished with a connection (the peer hung up, or the daemon closed it).
    case sessionClosed(session: UInt64)
    /// pKVM was finalized by the daemon's timer (an admin FINALIZE is an exchange).
    case finalized
    case end(TraceEnd)

    /// The record kinds (the record header's first byte).
    public enum Kind: UInt8, Sendable {
        case sessionOpened = 1, exchange = 2, event = 3, sessionClosed = 4, finalized = 5, end = 6
    }

    public var kind: Kind {
        switch self {
        case .sessionOpened: .sessionOpened
        case .exchange: .exchange
        case .event: .event
        case .sessionClosed: .sessionClosed
        case .finalized: .finalized
        case .end: .end
        }
    }
}

/// TRACE's answer (32 bytes when OK): `u32 recording` (1 while recording), `u32 end` (why the last trace ended, 0 while
/// recording or before any), `u64 bytes` (of the current or last trace, header included), `u64 records`, `u64 max_bytes`.
public struct TraceStatus: Hashable, Sendable {
    public static let size = 32
    public var recording: Bool
    public var end: TraceEnd?
    public var bytes: UInt64
    public var records: UInt64
    public var maxBytes: UInt64
    public init(recording: Bool, end: TraceEnd?, bytes: UInt64, records: UInt64, maxBytes: UInt64) {
        self.recording = recording
        self.end = end
        self.bytes = bytes
        self.records = records
        self.maxBytes = maxBytes
    }

    public var encoded: [UInt8] {
        var out: [UInt8] = []
        out.appendLE(UInt32(recording ? 1 : 0))
        out.appendLE(end?.rawValue ?? 0)
        out.appendLE(bytes)
        out.appendLE(records)
        out.appendLE(maxBytes)
        return out
    }

    public static func decode(_ p: [UInt8]) throws(WireError) -> TraceStatus {
        guard p.count == size else { throw .wrongResponseLength(opcode: Opcode.trace.responseCode, length: p.count) }
        return TraceStatus(recording: p.loadLE(UInt32.self, at: 0) != 0, end: TraceEnd(rawValue: p.loadLE(UInt32.self, at: 4)),
                           bytes: p.loadLE(UInt64.self, at: 8), records: p.loadLE(UInt64.self, at: 16),
                           maxBytes: p.loadLE(UInt64.self, at: 24))
    }
}
