/// Writes trace records (docs/trace-format.md). A record is `u8 kind`, `u8 flags`, `u16 reserved`, `u32 body
/// length`, `u32 checksum` (FNV-1a of the body), then the body. The daemon appends an exchange from the frame's
/// parts with no intermediate values (`appendExchange`); everything else goes through `append(_:into:)`.
public enum TraceEncoder {
    /// Starts a record: its header with the length and checksum left zero. Returns where it starts.
    @inlinable
    public static func begin(_ kind: TraceRecord.Kind, into out: inout [UInt8]) -> Int {
        let start = out.count
        out.append(kind.rawValue)
        out.append(0)
        out.appendLE(UInt16(0))
        out.appendLE(UInt64(0))  // body length and checksum, filled in by `finish`
        return start
    }

    /// Fills in the length and checksum of the record that starts at `start` and ends at the end of `out`.
    @inlinable
    public static func finish(recordAt start: Int, in out: inout [UInt8]) {
        let bodyStart = start + TraceFormat.recordHeaderSize
        let length = UInt32(out.count - bodyStart)
        let sum = out.withUnsafeBytes { TraceFormat.checksum(UnsafeRawBufferPointer(rebasing: $0[bodyStart...])) }
        withUnsafeBytes(of: length.littleEndian) { for i in 0..<4 { out[start + 4 + i] = $0[i] } }
        withUnsafeBytes(of: sum.littleEndian) { for i in 0..<4 { out[start + 8 + i] = $0[i] } }
    }

    /// Appends an exchange from its parts: `memory` is `count` observations already encoded by
    /// `TraceMemory.encode`, `request` the payload after `header`, `response` the output bytes of the answer.
    public static func appendExchange(
        into out: inout [UInt8], session: UInt64, role: Role?, viaRing: Bool, descriptor: TraceDescriptor?,
        memoryCount: Int, memory: ArraySlice<UInt8>, header: FrameHeader, payload: UnsafeRawBufferPointer,
        response: ArraySlice<UInt8>
    ) {
        let start = out.count
        // The fixed part (record header, session, role, ring, count, descriptor, 52 bytes) in one append: this runs
        // for every request recorded. Length and checksum are filled in by `finish`.
        let d = descriptor
        var fixed = (UInt64(TraceRecord.Kind.exchange.rawValue).littleEndian, UInt32(0), session.littleEndian,
                     (UInt32(role?.rawValue ?? 0) | (viaRing ? 1 << 8 : 0)).littleEndian, UInt32(memoryCount).littleEndian,
                     UInt32(d?.kind.rawValue ?? 0).littleEndian, (d?.file ?? 0).littleEndian, (d?.size ?? 0).littleEndian,
                     (d?.seals ?? 0).littleEndian, UInt32(0))
        withUnsafeBytes(of: &fixed) { raw in
            // The tuple's layout: u64 (kind, flags, reserved, length 0), u32 (checksum 0), then the body's fields.
            out.append(contentsOf: UnsafeRawBufferPointer(rebasing: raw[0..<12]))
            out.append(contentsOf: UnsafeRawBufferPointer(rebasing: raw[16..<56]))
        }
        out.append(contentsOf: memory)
        var frame = (UInt32(FrameHeader.size + payload.count).littleEndian, header.words.0, header.words.1)
        withUnsafeBytes(of: &frame) { raw in
            out.append(contentsOf: UnsafeRawBufferPointer(rebasing: raw[0..<4]))
            out.append(contentsOf: UnsafeRawBufferPointer(rebasing: raw[8..<24]))
        }
        out.append(contentsOf: payload)
        out.appendLE(UInt32(response.count))
        out.append(contentsOf: response)
        finish(recordAt: start, in: &out)
    }

    /// The encoded size of `end`: the recorder keeps room for it under `max_bytes`.
    public static let endRecordSize = TraceFormat.recordHeaderSize + 4

    /// Appends one record.
    public static func append(_ record: TraceRecord, into out: inout [UInt8]) {
        switch record {
        case .exchange(let e):
            var memory: [UInt8] = []
            for m in e.memory { m.bytes.withUnsafeBytes { TraceMemory.encode(address: m.address, bytes: $0, into: &memory) } }
            let header = FrameHeader(decoding: e.request) ?? FrameHeader(opcode: 0, tag: 0, length: 0)
            let payload = e.request.count > FrameHeader.size ? Array(e.request[FrameHeader.size...]) : []
            payload.withUnsafeBytes {
                appendExchange(into: &out, session: e.session, role: e.role, viaRing: e.viaRing,
                               descriptor: e.descriptor, memoryCount: e.memory.count, memory: memory[...],
                               header: header, payload: $0, response: e.response[...])
            }
            return
        default: break
        }
        let start = begin(record.kind, into: &out)
        switch record {
        case .sessionOpened(let session, let peer):
            out.appendLE(session)
            out.appendLE(peer.uid)
            out.appendLE(peer.gid)
            out.appendLE(peer.pid)
            out.appendLE(UInt32(0))
        case .event(let session, let frame):
            out.appendLE(session)
            out.append(contentsOf: frame)
        case .sessionClosed(let session):
            out.appendLE(session)
        case .finalized, .exchange:
            break
        case .end(let why):
            out.appendLE(why.rawValue)
        }
        finish(recordAt: start, in: &out)
    }

    /// A whole trace: the header, then the records.
    public static func encode(_ header: TraceHeader, _ records: [TraceRecord]) -> [UInt8] {
        var out: [UInt8] = []
        header.encode(into: &out)
        for r in records { append(r, into: &out) }
        return out
    }

    /// `u8 kind` (0 none), 3 reserved, `u32 file`, `u64 size`, `u32 seals`, `u32 reserved`: always 24 bytes.
    static func encode(_ d: TraceDescriptor?, into out: inout [UInt8]) {
        out.append(d?.kind.rawValue ?? 0)
        out.appendZeros(3)
        out.appendLE(d?.file ?? 0)
        out.appendLE(d?.size ?? 0)
        out.appendLE(d?.seals ?? 0)
        out.appendLE(UInt32(0))
    }
}
