/// Typed request payloads: exact sizes per opcode, decode from bytes, encode into a frame.

/// HELLO: `u32 role`, `u32 reserved`, then the client's name (n ≤ 64 bytes of UTF-8).
public struct HelloRequest: Hashable, Sendable {
    public static let maxNameLength = 64
    /// The raw role (the daemon answers an unknown one; see ``role``).
    public var roleValue: UInt32
    public var name: String
    public var role: Role? { Role(rawValue: roleValue) }
    public init(role: Role, name: String) { self.init(roleValue: role.rawValue, name: name) }
    public init(roleValue: UInt32, name: String) {
        self.roleValue = roleValue
        self.name = name
    }
}

/// READ: `u64 address` (physical), `u32 width` (4 or 8: validated by the daemon), `u32 reserved`.
public struct ReadRequest: Hashable, Sendable {
    public var address: UInt64
    public var width: UInt32
    public init(address: UInt64, width: UInt32) {
        self.address = address
        self.width = width
    }
}

/// WRITE: `u64 address`, `u64 value`, `u32 width`, `u32 reserved`.
public struct WriteRequest: Hashable, Sendable {
    public var address: UInt64
    public var value: UInt64
    public var width: UInt32
    public init(address: UInt64, value: UInt64, width: UInt32) {
        self.address = address
        self.value = value
        self.width = width
    }
}

/// DMA: `u32 window`, `u32 stream_id`, `u64 iova`, `u32 flags`, `u32 reserved`.
public struct DMARequest: Hashable, Sendable {
    public var window: UInt32
    public var streamID: UInt32
    public var iova: UInt64
    public var flags: DMAFlags
    public init(window: UInt32, streamID: UInt32, iova: UInt64, flags: DMAFlags) {
        self.window = window
        self.streamID = streamID
        self.iova = iova
        self.flags = flags
    }
}

/// MC_DMA: `u32 client_id`, `u32 reserved`, `u64 iova`, `u32 flags`, `u32 reserved`.
public struct MCDMARequest: Hashable, Sendable {
    public var client: UInt32
    public var iova: UInt64
    public var flags: DMAFlags
    public init(client: UInt32, iova: UInt64, flags: DMAFlags) {
        self.client = client
        self.iova = iova
        self.flags = flags
    }
}

/// DMA_PREFETCH (v1.1): DMA's fields, with `u32 pages` (1 to 64; v1.3: to 512) in place of the reserved word.
public struct DMAPrefetchRequest: Hashable, Sendable {
    public static let maxPages: UInt32 = 512
    /// v1.2: bit 31 of the `pages` word: speculate over the ranges before the access instead of after it.
    public static let backwardFlag: UInt32 = 1 << 31
    public var access: DMARequest
    /// The word as sent: the record count, with `backwardFlag`.
    public var pages: UInt32
    public init(access: DMARequest, pages: UInt32) {
        self.access = access
        self.pages = pages
    }
    /// v1.2: bit 30: speculate over the pages on both sides of the access, skipping unmapped ones.
    public static let windowFlag: UInt32 = 1 << 30
    /// Records (forward, backward) or pages probed on each side (window): 1 to `maxPages` is valid (64 before v1.3).
    public var count: UInt32 { pages & ~(Self.backwardFlag | Self.windowFlag) }
    /// Whether the speculative ranges precede the access (v1.2).
    public var backward: Bool { pages & Self.backwardFlag != 0 }
    /// Whether the speculation covers both sides and skips holes (v1.2).
    public var window: Bool { pages & Self.windowFlag != 0 }
}

/// MEM_READ: `u64 address`, `u32 length` (≤ 65536 − 16), `u32 reserved`.
public struct MemReadRequest: Hashable, Sendable {
    public static let maxLength = Int(FrameHeader.maxPayloadLength) - 16
    public var address: UInt64
    public var length: UInt32
    public init(address: UInt64, length: UInt32) {
        self.address = address
        self.length = length
    }
}

/// MEM_WRITE: `u64 address`, `u32 n`, `u32 reserved`, then n bytes.
public struct MemWriteRequest: Hashable, Sendable {
    public var address: UInt64
    public var bytes: [UInt8]
    public init(address: UInt64, bytes: [UInt8]) {
        self.address = address
        self.bytes = bytes
    }
}

/// MEM_MAP: `u64 address`, `u64 size`, `u64 offset`; one fd travels beside it as SCM_RIGHTS.
public struct MemMapRequest: Hashable, Sendable {
    public var address: UInt64
    public var size: UInt64
    public var offset: UInt64
    public init(address: UInt64, size: UInt64, offset: UInt64) {
        self.address = address
        self.size = size
        self.offset = offset
    }
}

/// VM_DONATE: `u32 vm`, `u32 reserved`, `u64 address`, `u64 size`.
public struct VMDonateRequest: Hashable, Sendable {
    public var vm: UInt32
    public var address: UInt64
    public var size: UInt64
    public init(vm: UInt32, address: UInt64, size: UInt64) {
        self.vm = vm
        self.address = address
        self.size = size
    }
}

/// VM_ASSIGN_STREAM: `u32 vm`, `u32 window`, `u32 stream_id`.
public struct VMAssignStreamRequest: Hashable, Sendable {
    public var vm: UInt32
    public var window: UInt32
    public var streamID: UInt32
    public init(vm: UInt32, window: UInt32, streamID: UInt32) {
        self.vm = vm
        self.window = window
        self.streamID = streamID
    }
}

/// TRACE (admin): `u32 command` (0 status, 1 start, 2 stop), `u32 reserved`, `u64 max_bytes` (start: 0 takes the
/// configuration's), then the path as n ≤ 4096 bytes of UTF-8 (start: empty takes the configuration's).
public struct TraceControlRequest: Hashable, Sendable {
    public enum Command: UInt32, Sendable {
        case status = 0
        case start = 1
        case stop = 2
    }
    public static let maxPathLength = 4096
    /// The raw command (the daemon answers INVALID to an unknown one; see ``command``).
    public var commandValue: UInt32
    public var maxBytes: UInt64
    public var path: String
    public var command: Command? { Command(rawValue: commandValue) }
    public init(_ command: Command, maxBytes: UInt64 = 0, path: String = "") {
        self.init(commandValue: command.rawValue, maxBytes: maxBytes, path: path)
    }
    public init(commandValue: UInt32, maxBytes: UInt64, path: String) {
        self.commandValue = commandValue
        self.maxBytes = maxBytes
        self.path = path
    }
}

/// One decoded request.
public enum Request: Hashable, Sendable {
    case hello(HelloRequest)
    case read(ReadRequest)
    case write(WriteRequest)
    case dma(DMARequest)
    case memRead(MemReadRequest)
    case memWrite(MemWriteRequest)
    case memMap(MemMapRequest)
    case mcDMA(MCDMARequest)
    /// DMA_EPOCH (v1.1): no payload; one fd travels beside it as SCM_RIGHTS.
    case dmaEpoch
    /// DMA_CACHED (v1.1): DMA's payload.
    case dmaCached(DMARequest)
    case dmaPrefetch(DMAPrefetchRequest)
    /// RING (v1.1): no payload; one fd travels beside it as SCM_RIGHTS.
    case ring
    case vmCreate
    case vmDonate(VMDonateRequest)
    case vmAssignStream(VMAssignStreamRequest)
    /// VM_DESTROY: `u32 vm`.
    case vmDestroy(vm: UInt32)
    case stats
    case dump
    case finalize
    case trace(TraceControlRequest)
    case protFinalize
    case events

    public var opcode: Opcode {
        switch self {
        case .hello: .hello
        case .read: .read
        case .write: .write
        case .dma: .dma
        case .memRead: .memRead
        case .memWrite: .memWrite
        case .memMap: .memMap
        case .mcDMA: .mcDMA
        case .dmaEpoch: .dmaEpoch
        case .dmaCached: .dmaCached
        case .dmaPrefetch: .dmaPrefetch
        case .ring: .ring
        case .vmCreate: .vmCreate
        case .vmDonate: .vmDonate
        case .vmAssignStream: .vmAssignStream
        case .vmDestroy: .vmDestroy
        case .stats: .stats
        case .dump: .dump
        case .finalize: .finalize
        case .trace: .trace
        case .protFinalize: .protFinalize
        case .events: .events
        }
    }
}

extension Opcode {
    /// The payload length a request with this opcode must have; nil for ``event`` (not a request).
    public var requestSize: PayloadSize? {
        switch self {
        case .hello: .between(8, 8 + HelloRequest.maxNameLength)
        case .read: .exactly(16)
        case .write, .dma, .dmaCached, .dmaPrefetch, .memMap, .mcDMA, .vmDonate: .exactly(24)
        case .memRead: .exactly(16)
        case .memWrite: .between(16, Int(FrameHeader.maxPayloadLength))
        case .vmAssignStream: .exactly(12)
        case .vmDestroy: .exactly(4)
        case .trace: .between(16, 16 + TraceControlRequest.maxPathLength)
        case .vmCreate, .stats, .dump, .finalize, .protFinalize, .events, .dmaEpoch, .ring: .exactly(0)
        case .event: nil
        }
    }
}

extension Request {
    /// Decodes a request payload, checking its size exactly as the spec requires.
    /// - Throws: ``WireError/wrongPayloadLength(opcode:length:expected:)``,
    ///   ``WireError/countMismatch(declared:actual:)`` or ``WireError/unknownOpcode(_:)``.
    public static func decode(opcode: Opcode, payload p: UnsafeRawBufferPointer) throws(WireError) -> Request {
        guard let size = opcode.requestSize else { throw .unknownOpcode(opcode.rawValue) }
        guard size.admits(p.count) else {
            throw .wrongPayloadLength(opcode: opcode.rawValue, length: p.count, expected: size)
        }
        switch opcode {
        case .hello:
            let name = String(decoding: UnsafeRawBufferPointer(rebasing: p[8...]), as: UTF8.self)
            return .hello(HelloRequest(roleValue: p.loadLE(UInt32.self, at: 0), name: name))
        case .read:
            return .read(ReadRequest(address: p.loadLE(UInt64.self, at: 0), width: p.loadLE(UInt32.self, at: 8)))
        case .write:
            return .write(
                WriteRequest(
                    address: p.loadLE(UInt64.self, at: 0), value: p.loadLE(UInt64.self, at: 8),
                    width: p.loadLE(UInt32.self, at: 16)))
        case .dma, .dmaCached:
            let d = DMARequest(
                window: p.loadLE(UInt32.self, at: 0), streamID: p.loadLE(UInt32.self, at: 4),
                iova: p.loadLE(UInt64.self, at: 8), flags: DMAFlags(rawValue: p.loadLE(UInt32.self, at: 16)))
            return opcode == .dma ? .dma(d) : .dmaCached(d)
        case .dmaPrefetch:
            return .dmaPrefetch(DMAPrefetchRequest(
                access: DMARequest(
                    window: p.loadLE(UInt32.self, at: 0), streamID: p.loadLE(UInt32.self, at: 4),
                    iova: p.loadLE(UInt64.self, at: 8), flags: DMAFlags(rawValue: p.loadLE(UInt32.self, at: 16))),
                pages: p.loadLE(UInt32.self, at: 20)))
        case .dmaEpoch: return .dmaEpoch
        case .ring: return .ring
        case .memRead:
            return .memRead(
                MemReadRequest(address: p.loadLE(UInt64.self, at: 0), length: p.loadLE(UInt32.self, at: 8)))
        case .memWrite:
            let declared = p.loadLE(UInt32.self, at: 8)
            guard Int(declared) == p.count - 16 else { throw .countMismatch(declared: declared, actual: p.count - 16) }
            return .memWrite(MemWriteRequest(address: p.loadLE(UInt64.self, at: 0), bytes: Array(p[16...])))
        case .memMap:
            return .memMap(
                MemMapRequest(
                    address: p.loadLE(UInt64.self, at: 0), size: p.loadLE(UInt64.self, at: 8),
                    offset: p.loadLE(UInt64.self, at: 16)))
        case .mcDMA:
            return .mcDMA(
                MCDMARequest(
                    client: p.loadLE(UInt32.self, at: 0), iova: p.loadLE(UInt64.self, at: 8),
                    flags: DMAFlags(rawValue: p.loadLE(UInt32.self, at: 16))))
        case .vmCreate: return .vmCreate
        case .vmDonate:
            return .vmDonate(
                VMDonateRequest(
                    vm: p.loadLE(UInt32.self, at: 0), address: p.loadLE(UInt64.self, at: 8),
                    size: p.loadLE(UInt64.self, at: 16)))
        case .vmAssignStream:
            return .vmAssignStream(
                VMAssignStreamRequest(
                    vm: p.loadLE(UInt32.self, at: 0), window: p.loadLE(UInt32.self, at: 4),
                    streamID: p.loadLE(UInt32.self, at: 8)))
        case .vmDestroy: return .vmDestroy(vm: p.loadLE(UInt32.self, at: 0))
        case .stats: return .stats
        case .dump: return .dump
        case .finalize: return .finalize
        case .protFinalize: return .protFinalize
        case .trace:
            let path = String(decoding: UnsafeRawBufferPointer(rebasing: p[16...]), as: UTF8.self)
            return .trace(TraceControlRequest(commandValue: p.loadLE(UInt32.self, at: 0),
                                              maxBytes: p.loadLE(UInt64.self, at: 8), path: path))
        case .events: return .events
        case .event: throw .unknownOpcode(opcode.rawValue)
        }
    }

    /// Decodes a request from an array payload.
    public static func decode(opcode: Opcode, payload: [UInt8]) throws(WireError) -> Request {
        try payload.withBytes { p throws(WireError) in try decode(opcode: opcode, payload: p) }
    }

    /// Appends the whole frame (header and payload) to `out`.
    /// A HELLO name longer than 64 bytes is encoded as it is (so tests can send it); the daemon refuses it.
    public func encode(tag: UInt32, into out: inout [UInt8]) {
        let start = out.count
        FrameHeader(request: opcode, tag: tag, length: 0).encode(into: &out)
        switch self {
        case .hello(let h):
            out.appendLE(h.roleValue)
            out.appendLE(UInt32(0))
            out.append(contentsOf: h.name.utf8)
        case .read(let r):
            out.appendLE(r.address)
            out.appendLE(r.width)
            out.appendLE(UInt32(0))
        case .write(let w):
            out.appendLE(w.address)
            out.appendLE(w.value)
            out.appendLE(w.width)
            out.appendLE(UInt32(0))
        case .dma(let d), .dmaCached(let d):
            out.appendLE(d.window)
            out.appendLE(d.streamID)
            out.appendLE(d.iova)
            out.appendLE(d.flags.rawValue)
            out.appendLE(UInt32(0))
        case .dmaPrefetch(let p):
            out.appendLE(p.access.window)
            out.appendLE(p.access.streamID)
            out.appendLE(p.access.iova)
            out.appendLE(p.access.flags.rawValue)
            out.appendLE(p.pages)
        case .memRead(let r):
            out.appendLE(r.address)
            out.appendLE(r.length)
            out.appendLE(UInt32(0))
        case .memWrite(let w):
            out.appendLE(w.address)
            out.appendLE(UInt32(truncatingIfNeeded: w.bytes.count))
            out.appendLE(UInt32(0))
            out.append(contentsOf: w.bytes)
        case .memMap(let m):
            out.appendLE(m.address)
            out.appendLE(m.size)
            out.appendLE(m.offset)
        case .mcDMA(let d):
            out.appendLE(d.client)
            out.appendLE(UInt32(0))
            out.appendLE(d.iova)
            out.appendLE(d.flags.rawValue)
            out.appendLE(UInt32(0))
        case .vmDonate(let d):
            out.appendLE(d.vm)
            out.appendLE(UInt32(0))
            out.appendLE(d.address)
            out.appendLE(d.size)
        case .vmAssignStream(let a):
            out.appendLE(a.vm)
            out.appendLE(a.window)
            out.appendLE(a.streamID)
        case .vmDestroy(let vm):
            out.appendLE(vm)
        case .trace(let t):
            out.appendLE(t.commandValue)
            out.appendLE(UInt32(0))
            out.appendLE(t.maxBytes)
            out.append(contentsOf: t.path.utf8)
        case .vmCreate, .stats, .dump, .finalize, .protFinalize, .events, .dmaEpoch, .ring:
            break
        }
        let length = UInt32(truncatingIfNeeded: out.count - start - FrameHeader.size)
        withUnsafeBytes(of: length.littleEndian) { bytes in
            for i in 0..<4 { out[start + 12 + i] = bytes[i] }
        }
    }

    /// The whole encoded frame.
    public func encoded(tag: UInt32) -> [UInt8] {
        var out: [UInt8] = []
        encode(tag: tag, into: &out)
        return out
    }
}
