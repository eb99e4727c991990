/// The 16-byte header in front of every message, little-endian:
/// magic u16, version u8, opcode u8, tag u32, status u32, length u32.
public struct FrameHeader: Hashable, Sendable {
    /// `0x4D53`, the bytes `53 4D` ("SM") on the wire.
    public static let magic: UInt16 = 0x4D53
    public static let version: UInt8 = 1
    public static let size = 16
    /// The largest payload a message may carry.
    public static let maxPayloadLength: UInt32 = 65536

    public var magic: UInt16
    public var version: UInt8
    /// The raw opcode byte (a request opcode, `opcode | 0x80` in a response, or 0xB0 for an event).
    public var opcode: UInt8
    public var tag: UInt32
    /// The raw status (0 in a request); see ``statusCode``.
    public var status: UInt32
    public var length: UInt32

    public init(
        opcode: UInt8, tag: UInt32, status: UInt32 = 0, length: UInt32,
        magic: UInt16 = FrameHeader.magic, version: UInt8 = FrameHeader.version
    ) {
        self.magic = magic
        self.version = version
        self.opcode = opcode
        self.tag = tag
        self.status = status
        self.length = length
    }

    /// The header of a request.
    public init(request opcode: Opcode, tag: UInt32, length: Int) {
        self.init(opcode: opcode.rawValue, tag: tag, length: UInt32(length))
    }

    /// The header of a response to `opcode` (raw byte, so unknown opcodes can be answered too).
    public init(responseTo opcode: UInt8, tag: UInt32, status: Status, length: Int) {
        self.init(opcode: opcode | Opcode.responseBit, tag: tag, status: status.rawValue, length: UInt32(length))
    }

    /// The typed status, nil for a value outside the table.
    public var statusCode: Status? { Status(rawValue: status) }

    /// Decodes the first 16 bytes of `bytes` as a header (no validation: see ``FrameDecoder``).
    /// - Precondition: `bytes.count >= 16`.
    public init(decoding bytes: UnsafeRawBufferPointer) {
        precondition(bytes.count >= Self.size, "a header is 16 bytes")
        magic = bytes.loadLE(UInt16.self, at: 0)
        version = bytes[2]
        opcode = bytes[3]
        tag = bytes.loadLE(UInt32.self, at: 4)
        status = bytes.loadLE(UInt32.self, at: 8)
        length = bytes.loadLE(UInt32.self, at: 12)
    }

    /// Decodes a header from the first 16 bytes of an array, nil if shorter.
    public init?(decoding bytes: [UInt8]) {
        guard bytes.count >= Self.size else { return nil }
        self = bytes.withUnsafeBytes { FrameHeader(decoding: $0) }
    }

    /// The 16 encoded bytes as two little-endian words (bytes 0..<8, 8..<16).
    @inlinable
    public var words: (UInt64, UInt64) {
        let low = UInt64(magic) | UInt64(version) << 16 | UInt64(opcode) << 24 | UInt64(tag) << 32
        let high = UInt64(status) | UInt64(length) << 32
        return (low.littleEndian, high.littleEndian)
    }

    /// Appends the 16 encoded bytes to `out`.
    @inlinable
    public func encode(into out: inout [UInt8]) {
        // Two words, one append: the header is on every response's hot path.
        withUnsafeBytes(of: words) { out.append(contentsOf: $0) }
    }

    /// The 16 encoded bytes.
    public var encoded: [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(Self.size)
        encode(into: &out)
        return out
    }
}
