/// Why bytes are not a valid protocol v1 message. Each case is one rule of the spec page.
public enum WireError: Error, Hashable, Sendable, CustomStringConvertible {
    /// The first two bytes are not `53 4D`.
    case badMagic(UInt16)
    /// The version byte is not 1.
    case unknownVersion(UInt8)
    /// The header declares more than 65536 payload bytes.
    case lengthTooLarge(UInt32)
    /// The payload length does not fit what the opcode requires.
    case wrongPayloadLength(opcode: UInt8, length: Int, expected: PayloadSize)
    /// MEM_WRITE: the declared count differs from the bytes that follow it.
    case countMismatch(declared: UInt32, actual: Int)
    /// A response or event payload whose length is wrong for its opcode (client side).
    case wrongResponseLength(opcode: UInt8, length: Int)
    /// The opcode byte is no opcode this side understands.
    case unknownOpcode(UInt8)

    public var description: String {
        switch self {
        case .badMagic(let m): "bad magic 0x\(String(m, radix: 16))"
        case .unknownVersion(let v): "unknown version \(v)"
        case .lengthTooLarge(let n): "length \(n) over 65536"
        case .wrongPayloadLength(let op, let n, let e):
            "payload of \(n) bytes for opcode 0x\(String(op, radix: 16)), expected \(e)"
        case .countMismatch(let d, let a): "MEM_WRITE declares \(d) bytes but carries \(a)"
        case .wrongResponseLength(let op, let n): "response 0x\(String(op, radix: 16)) with \(n) payload bytes"
        case .unknownOpcode(let op): "unknown opcode 0x\(String(op, radix: 16))"
        }
    }
}

/// What payload length an opcode requires.
public enum PayloadSize: Hashable, Sendable, CustomStringConvertible {
    case exactly(Int)
    /// A fixed part followed by up to `maxExtra` variable bytes.
    case between(Int, Int)

    public func admits(_ length: Int) -> Bool {
        switch self {
        case .exactly(let n): length == n
        case .between(let lo, let hi): length >= lo && length <= hi
        }
    }

    public var description: String {
        switch self {
        case .exactly(let n): "\(n)"
        case .between(let lo, let hi): "\(lo)...\(hi)"
        }
    }
}
