import Testing

@testable import WireProtocol

/// The trace format (docs/trace-format.md) without sockets: what is written reads back the same, and every way a
/// file can be cut short or damaged is a typed error naming the record, never a crash or a misread record.
struct TraceCodecTests {
    static let header = TraceHeader(configuration: Array("topology: qemu-virt\nmemory: {}\n".utf8))

    /// One record of every kind, with fields that are not zero.
    static let records: [TraceRecord] = [
        .sessionOpened(session: 3, peer: TracePeer(uid: 1000, gid: 100, pid: 4242)),
        .exchange(TraceExchange(
            session: 3, role: nil,
            request: Request.hello(HelloRequest(role: .host, name: "qemu")).encoded(tag: 1),
            response: frame(responseTo: .hello, tag: 1, payload: [1, 0, 0, 0, 1, 0, 0, 0]))),
        .exchange(TraceExchange(
            session: 3, role: .host, descriptor: TraceDescriptor(kind: .file, file: 1, size: 0x2000_0000, seals: 0xF),
            request: Request.memMap(MemMapRequest(address: 0x4000_0000, size: 0x2000_0000, offset: 0)).encoded(tag: 2),
            response: frame(responseTo: .memMap, tag: 2, payload: []))),
        .exchange(TraceExchange(
            session: 4, role: .device, viaRing: true,
            memory: [TraceMemory(address: 0x4000_1000, bytes: [3, 0x20, 0, 0x40, 0, 0, 0, 0]),
                     TraceMemory(address: 0x4000_2008, bytes: Array(repeating: 0xAB, count: 8))],
            request: Request.dma(DMARequest(window: 0, streamID: 8, iova: 0x1000, flags: .write)).encoded(tag: 9),
            response: frame(responseTo: .dma, tag: 9, payload: Array(repeating: 0x11, count: 16)))),
        .event(session: 5, frame: { var b: [UInt8] = []; Event(window: 0, line: 1, level: 1).encode(into: &b); return b }()),
        .sessionClosed(session: 4),
        .finalized,
        .end(.truncated),
    ]

    static func frame(responseTo op: Opcode, tag: UInt32, payload: [UInt8]) -> [UInt8] {
        var out: [UInt8] = []
        FrameHeader(responseTo: op.rawValue, tag: tag, status: .ok, length: payload.count).encode(into: &out)
        return out + payload
    }

    static var encoded: [UInt8] { TraceEncoder.encode(header, records) }

    @Test("every record kind reads back as written, after the header with its configuration")
    func roundTrip() throws {
        let (header, records) = try TraceReader.read(Self.encoded)
        #expect(header == Self.header)
        #expect(header.fingerprint == TraceFormat.fingerprint(Self.header.configuration))
        #expect(records == Self.records)
    }

    @Test("the header is the documented 32 bytes: magic, version, flags, fingerprint, length, reserved")
    func headerLayout() {
        let bytes = Self.encoded
        #expect(Array(bytes[0..<8]) == Array("SMMUTRC\0".utf8))
        #expect(bytes.loadLE(UInt32.self, at: 8) == 1)
        #expect(bytes.loadLE(UInt64.self, at: 16) == Self.header.fingerprint)
        #expect(Int(bytes.loadLE(UInt32.self, at: 24)) == Self.header.configuration.count)
        let first = TraceFormat.headerSize + Self.header.configuration.count
        #expect(bytes[first] == TraceRecord.Kind.sessionOpened.rawValue)
        #expect(bytes.loadLE(UInt32.self, at: first + 4) == 24, "a session record's body is 24 bytes")
    }

    @Test("every prefix of a trace is an error, never a crash and never a shorter trace read as whole")
    func everyPrefixIsRefused() {
        let bytes = Self.encoded
        for cut in 0..<bytes.count {
            #expect(throws: TraceError.self, "cut at \(cut)") { _ = try TraceReader.read(Array(bytes[..<cut])) }
        }
        let lastRecord = bytes.count - TraceEncoder.endRecordSize
        #expect(throws: TraceError.missingEnd(records: Self.records.count - 1)) { _ = try TraceReader.read(Array(bytes[..<lastRecord])) }
        #expect(throws: TraceError.truncated(record: Self.records.count - 1, offset: lastRecord)) {
            _ = try TraceReader.read(Array(bytes[..<(bytes.count - 1)]))
        }
    }

    @Test("a flipped byte in any record is a checksum error naming that record")
    func flippedBytesAreCaught() throws {
        let bytes = Self.encoded
        var offsets: [Int] = []   // where each record starts
        var at = TraceFormat.headerSize + Self.header.configuration.count
        while at < bytes.count {
            offsets.append(at)
            at += TraceFormat.recordHeaderSize + Int(bytes.loadLE(UInt32.self, at: at + 4))
        }
        #expect(offsets.count == Self.records.count)
        for (index, start) in offsets.enumerated() where start + TraceFormat.recordHeaderSize < (offsets.dropFirst(index + 1).first ?? bytes.count) {
            var damaged = bytes
            damaged[start + TraceFormat.recordHeaderSize] ^= 0x40
            #expect(throws: TraceError.checksumMismatch(record: index, offset: start)) { _ = try TraceReader.read(damaged) }
        }
    }

    @Test("another version, another magic, a configuration that does not match its fingerprint: refused")
    func headerRefusals() {
        var v2 = Self.encoded
        v2[8] = 2
        #expect(throws: TraceError.unsupportedVersion(2)) { _ = try TraceReader(bytes: v2) }
        var magic = Self.encoded
        magic[0] = 0x58
        #expect(throws: TraceError.notATrace) { _ = try TraceReader(bytes: magic) }
        var config = Self.encoded
        config[TraceFormat.headerSize] ^= 1
        #expect(throws: TraceError.self) { _ = try TraceReader(bytes: config) }
        var long = Self.encoded
        long[27] = 0x7F   // a configuration length far past the file
        #expect(throws: TraceError.self) { _ = try TraceReader(bytes: long) }
    }

    @Test("bytes after the end record, an unknown kind, or a body its kind cannot hold: corrupt")
    func corruptStructure() throws {
        #expect(throws: TraceError.trailingBytes(offset: Self.encoded.count)) { _ = try TraceReader.read(Self.encoded + [0]) }
        var unknown = TraceEncoder.encode(Self.header, [])
        let start = TraceEncoder.begin(.finalized, into: &unknown)
        unknown[start] = 99
        TraceEncoder.finish(recordAt: start, in: &unknown)
        #expect(throws: TraceError.unknownKind(record: 0, offset: start, kind: 99)) { _ = try TraceReader.read(unknown) }
        var short = TraceEncoder.encode(Self.header, [])
        let s = TraceEncoder.begin(.sessionClosed, into: &short)
        short.appendLE(UInt32(7))   // 4 bytes where a session number takes 8
        TraceEncoder.finish(recordAt: s, in: &short)
        #expect(throws: TraceError.self) { _ = try TraceReader.read(short) }
        var badEnd = TraceEncoder.encode(Self.header, [])
        let e = TraceEncoder.begin(.end, into: &badEnd)
        badEnd.appendLE(UInt32(77))
        TraceEncoder.finish(recordAt: e, in: &badEnd)
        #expect(throws: TraceError.self) { _ = try TraceReader.read(badEnd) }
    }

    @Test("TRACE's answer is 32 bytes and reads back")
    func traceStatus() throws {
        let s = TraceStatus(recording: false, end: .truncated, bytes: 262_100, records: 3_000, maxBytes: 262_144)
        #expect(s.encoded.count == TraceStatus.size)
        #expect(try TraceStatus.decode(s.encoded) == s)
        #expect(throws: WireError.self) { _ = try TraceStatus.decode(Array(s.encoded.dropLast())) }
    }
}
