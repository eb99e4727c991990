/// Why bytes are not a trace this code can replay. A bad trace is an error with its place, never a crash.
public enum TraceError: Error, Hashable, Sendable, CustomStringConvertible {
    /// Shorter than a header, or the first 8 bytes are not `SMMUTRC\0`.
    case notATrace
    case unsupportedVersion(UInt32)
    /// The header's configuration length runs past the file or over the limit.
    case badHeader(String)
    /// The file ends inside record `index` (at byte `offset`).
    case truncated(record: Int, offset: Int)
    /// Record `index`'s body does not match its checksum.
    case checksumMismatch(record: Int, offset: Int)
    case unknownKind(record: Int, offset: Int, kind: UInt8)
    /// A body whose fields do not fit its length (or say something impossible).
    case malformed(record: Int, offset: Int, reason: String)
    /// The file ends after `records` whole records with no end record: the daemon did not finish writing it.
    case missingEnd(records: Int)
    /// Bytes after the end record.
    case trailingBytes(offset: Int)

    public var description: String {
        switch self {
        case .notATrace: "not a trace (no SMMUTRC header)"
        case .unsupportedVersion(let v): "trace version \(v) is not supported (this smmuctl reads version \(TraceFormat.version))"
        case .badHeader(let why): "bad trace header: \(why)"
        case .truncated(let r, let o): "the trace is truncated: record \(r) at byte \(o) is incomplete"
        case .checksumMismatch(let r, let o): "the trace is corrupt: record \(r) at byte \(o) fails its checksum"
        case .unknownKind(let r, let o, let k): "the trace is corrupt: record \(r) at byte \(o) has unknown kind \(k)"
        case .malformed(let r, let o, let why): "the trace is corrupt: record \(r) at byte \(o): \(why)"
        case .missingEnd(let n): "the trace is incomplete: \(n) records and no end record (the daemon never finished it)"
        case .trailingBytes(let o): "the trace is corrupt: bytes after the end record at byte \(o)"
        }
    }
}

/// Reads a trace: the header at once, then one record per `next()`, checking each before it is returned.
public struct TraceReader {
    public let header: TraceHeader
    private let bytes: [UInt8]
    private var offset: Int
    /// Records returned so far (the index of the next one).
    public private(set) var index = 0
    private var ended = false

    public init(bytes: [UInt8]) throws(TraceError) {
        guard bytes.count >= TraceFormat.headerSize, Array(bytes[0..<8]) == TraceFormat.magic else { throw .notATrace }
        let version = bytes.loadLE(UInt32.self, at: 8)
        guard version == TraceFormat.version else { throw .unsupportedVersion(version) }
        let fingerprint = bytes.loadLE(UInt64.self, at: 16)
        let length = Int(bytes.loadLE(UInt32.self, at: 24))
        guard length <= TraceFormat.maxConfigurationLength, TraceFormat.headerSize + length <= bytes.count else {
            throw .badHeader("a configuration of \(length) bytes does not fit the file")
        }
        let header = TraceHeader(configuration: Array(bytes[TraceFormat.headerSize..<(TraceFormat.headerSize + length)]),
                                 version: version)
        guard header.fingerprint == fingerprint else { throw .badHeader("the configuration does not match its fingerprint") }
        self.header = header
        self.bytes = bytes
        offset = TraceFormat.headerSize + length
    }

    /// Every record, checked; throws at the first bad one.
    public static func read(_ bytes: [UInt8]) throws(TraceError) -> (TraceHeader, [TraceRecord]) {
        var reader = try TraceReader(bytes: bytes)
        var records: [TraceRecord] = []
        while let r = try reader.next() { records.append(r) }
        return (reader.header, records)
    }

    /// The next record, or nil after the end record (which is returned first).
    public mutating func next() throws(TraceError) -> TraceRecord? {
        if ended {
            guard offset == bytes.count else { throw .trailingBytes(offset: offset) }
            return nil
        }
        guard offset < bytes.count else { throw .missingEnd(records: index) }
        let at = offset
        guard bytes.count - at >= TraceFormat.recordHeaderSize else { throw .truncated(record: index, offset: at) }
        let kindByte = bytes[at]
        let length = Int(bytes.loadLE(UInt32.self, at: at + 4))
        let sum = bytes.loadLE(UInt32.self, at: at + 8)
        let bodyStart = at + TraceFormat.recordHeaderSize
        guard length <= TraceFormat.maxBodyLength, bytes.count - bodyStart >= length else {
            throw .truncated(record: index, offset: at)
        }
        let body = bytes[bodyStart..<(bodyStart + length)]
        guard body.withUnsafeBytes({ TraceFormat.checksum($0) }) == sum else {
            throw .checksumMismatch(record: index, offset: at)
        }
        guard let kind = TraceRecord.Kind(rawValue: kindByte) else {
            throw .unknownKind(record: index, offset: at, kind: kindByte)
        }
        var cursor = Cursor(bytes: Array(body))
        let record: TraceRecord? = Self.decode(kind, &cursor)
        guard let record, cursor.atEnd else {
            throw .malformed(record: index, offset: at, reason: "a \(kind) body of \(length) bytes does not decode")
        }
        if case .end = record { ended = true }
        offset = bodyStart + length
        index += 1
        return record
    }

    private static func decode(_ kind: TraceRecord.Kind, _ c: inout Cursor) -> TraceRecord? {
        switch kind {
        case .sessionOpened:
            guard let s = c.u64(), let uid = c.u32(), let gid = c.u32(), let pid = c.u32(), c.u32() != nil else { return nil }
            return .sessionOpened(session: s, peer: TracePeer(uid: uid, gid: gid, pid: Int32(bitPattern: pid)))
        case .exchange:
            return decodeExchange(&c).map { .exchange($0) }
        case .event:
            guard let s = c.u64(), let frame = c.bytes(c.remaining), frame.count >= FrameHeader.size else { return nil }
            return .event(session: s, frame: frame)
        case .sessionClosed:
            return c.u64().map { .sessionClosed(session: $0) }
        case .finalized:
            return .finalized
        case .end:
            return c.u32().flatMap(TraceEnd.init(rawValue:)).map { .end($0) }
        }
    }

    private static func decodeExchange(_ c: inout Cursor) -> TraceExchange? {
        guard let session = c.u64(), let roleByte = c.u8(), let via = c.u8(), c.u16() != nil,
              let count = c.u32(), let dKind = c.u8(), c.bytes(3) != nil, let file = c.u32(), let size = c.u64(),
              let seals = c.u32(), c.u32() != nil else { return nil }
        let role = roleByte == 0 ? nil : Role(rawValue: UInt32(roleByte))
        guard roleByte == 0 || role != nil, via <= 1 else { return nil }
        var descriptor: TraceDescriptor?
        if dKind != 0 {
            guard let k = TraceDescriptor.Kind(rawValue: dKind) else { return nil }
            descriptor = TraceDescriptor(kind: k, file: file, size: size, seals: seals)
        }
        var memory: [TraceMemory] = []
        for _ in 0..<count {
            guard let address = c.u64(), let n = c.u32(), c.u32() != nil, let b = c.bytes(Int(n)) else { return nil }
            memory.append(TraceMemory(address: address, bytes: b))
        }
        guard let rl = c.u32(), let request = c.bytes(Int(rl)), request.count >= FrameHeader.size,
              let al = c.u32(), let response = c.bytes(Int(al)) else { return nil }
        return TraceExchange(session: session, role: role, viaRing: via == 1, descriptor: descriptor, memory: memory,
                             request: request, response: response)
    }

    /// Bounds-checked little-endian reads from a record body: nil past the end.
    private struct Cursor {
        let bytes: [UInt8]
        var at = 0
        var remaining: Int { bytes.count - at }
        var atEnd: Bool { at == bytes.count }
        mutating func bytes(_ n: Int) -> [UInt8]? {
            guard n >= 0, remaining >= n else { return nil }
            defer { at += n }
            return Array(bytes[at..<(at + n)])
        }
        mutating func int<T: FixedWidthInteger>(_: T.Type) -> T? {
            guard remaining >= MemoryLayout<T>.size else { return nil }
            defer { at += MemoryLayout<T>.size }
            return bytes.loadLE(T.self, at: at)
        }
        mutating func u8() -> UInt8? { int(UInt8.self) }
        mutating func u16() -> UInt16? { int(UInt16.self) }
        mutating func u32() -> UInt32? { int(UInt32.self) }
        mutating func u64() -> UInt64? { int(UInt64.self) }
    }
}
