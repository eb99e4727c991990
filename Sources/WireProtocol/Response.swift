/// Response payloads: their layouts, the fixed-size rule, and encoding into an output buffer.

/// One MMU-500 instance's register window as HELLO lists it (32 bytes on the wire).
public struct WindowRecord: Hashable, Sendable {
    public static let size = 32
    public static let maxNameLength = 8
    public var base: UInt64
    public var size: UInt64
    /// The register page size in bytes (4 KiB or 64 KiB).
    public var pageSize: UInt32
    /// Context banks the host sees (after the hypervisor's reservations).
    public var numContextBanks: UInt16
    /// Stream match register groups the host sees.
    public var numStreamMatchGroups: UInt16
    /// ASCII, at most 8 bytes (NUL-padded on the wire).
    public var name: String

    public init(
        base: UInt64, size: UInt64, pageSize: UInt32, numContextBanks: UInt16, numStreamMatchGroups: UInt16,
        name: String
    ) {
        self.base = base
        self.size = size
        self.pageSize = pageSize
        self.numContextBanks = numContextBanks
        self.numStreamMatchGroups = numStreamMatchGroups
        self.name = name
    }

    func encode(into out: inout [UInt8]) {
        out.appendLE(base)
        out.appendLE(size)
        out.appendLE(pageSize)
        out.appendLE(numContextBanks)
        out.appendLE(numStreamMatchGroups)
        let bytes = name.utf8.prefix(Self.maxNameLength)
        out.append(contentsOf: bytes)
        out.appendZeros(Self.maxNameLength - bytes.count)
    }

    init(decoding p: UnsafeRawBufferPointer, at o: Int) {
        base = p.loadLE(UInt64.self, at: o)
        size = p.loadLE(UInt64.self, at: o + 8)
        pageSize = p.loadLE(UInt32.self, at: o + 16)
        numContextBanks = p.loadLE(UInt16.self, at: o + 20)
        numStreamMatchGroups = p.loadLE(UInt16.self, at: o + 22)
        let raw = p[(o + 24)..<(o + 32)]
        name = String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
    }
}

/// HELLO response: `u32 server_version`, `u32 state`, `u32 N`, `u32 reserved`, N window records.
public struct HelloResponse: Hashable, Sendable {
    public var serverVersion: UInt32
    /// The raw state; see ``state``.
    public var stateValue: UInt32
    public var windows: [WindowRecord]
    public var state: HelloState? { HelloState(rawValue: stateValue) }

    public init(serverVersion: UInt32 = 1, state: HelloState, windows: [WindowRecord]) {
        self.init(serverVersion: serverVersion, stateValue: state.rawValue, windows: windows)
    }
    public init(serverVersion: UInt32, stateValue: UInt32, windows: [WindowRecord]) {
        self.serverVersion = serverVersion
        self.stateValue = stateValue
        self.windows = windows
    }

    public var encodedLength: Int { 16 + WindowRecord.size * windows.count }

    public func encode(into out: inout [UInt8]) {
        out.appendLE(serverVersion)
        out.appendLE(stateValue)
        out.appendLE(UInt32(windows.count))
        out.appendLE(UInt32(0))
        for w in windows { w.encode(into: &out) }
    }

    public static func decode(_ p: UnsafeRawBufferPointer) throws(WireError) -> HelloResponse {
        guard p.count >= 16 else { throw .wrongResponseLength(opcode: Opcode.hello.responseCode, length: p.count) }
        let n = Int(p.loadLE(UInt32.self, at: 8))
        guard p.count == 16 + WindowRecord.size * n else {
            throw .wrongResponseLength(opcode: Opcode.hello.responseCode, length: p.count)
        }
        let windows = (0..<n).map { WindowRecord(decoding: p, at: 16 + WindowRecord.size * $0) }
        return HelloResponse(
            serverVersion: p.loadLE(UInt32.self, at: 0), stateValue: p.loadLE(UInt32.self, at: 4), windows: windows)
    }
}

/// DMA response: `u64 physical_address`, `u32 fault`, `u32 reserved`.
public struct DMAResponse: Hashable, Sendable {
    public var physicalAddress: UInt64
    /// 0 when OK, else the spec's fault value (1 unidentified stream ... 8 multiple SMRs match).
    public var fault: UInt32
    public init(physicalAddress: UInt64, fault: UInt32) {
        self.physicalAddress = physicalAddress
        self.fault = fault
    }
    public static func decode(_ p: UnsafeRawBufferPointer) throws(WireError) -> DMAResponse {
        guard p.count == 16 else { throw .wrongResponseLength(opcode: Opcode.dma.responseCode, length: p.count) }
        return DMAResponse(physicalAddress: p.loadLE(UInt64.self, at: 0), fault: p.loadLE(UInt32.self, at: 8))
    }
}

/// MC_DMA response: DMA's layout, with its reserved word carrying the route: `u64 physical_address`, `u32 fault`,
/// `u32 route` (bits 15:0 the stream ID the SMMU saw, bits 23:16 the window that translated, bit 31 set when the
/// transaction went around every SMMU).
public struct MCDMAResult: Hashable, Sendable {
    public static let aroundSMMU: UInt32 = 1 << 31
    public var physicalAddress: UInt64
    public var fault: UInt32
    public var route: UInt32
    public init(physicalAddress: UInt64, fault: UInt32, route: UInt32) {
        self.physicalAddress = physicalAddress
        self.fault = fault
        self.route = route
    }
    /// The route of a translation by window `window` for `stream`.
    public static func route(window: UInt32, stream: UInt32) -> UInt32 { (window & 0xFF) << 16 | (stream & 0xFFFF) }
    public var window: UInt32? { route & Self.aroundSMMU != 0 ? nil : (route >> 16) & 0xFF }
    public var stream: UInt32? { route & Self.aroundSMMU != 0 ? nil : route & 0xFFFF }
    public static func decode(_ p: UnsafeRawBufferPointer) throws(WireError) -> MCDMAResult {
        guard p.count == 16 else { throw .wrongResponseLength(opcode: Opcode.mcDMA.responseCode, length: p.count) }
        return MCDMAResult(physicalAddress: p.loadLE(UInt64.self, at: 0), fault: p.loadLE(UInt32.self, at: 8),
                           route: p.loadLE(UInt32.self, at: 12))
    }
}

/// DMA_CACHED response (v1.1, 24 bytes): `u64 physical_address`, `u32 fault`, `u8 size_shift`, `u8 access`,
/// `u16 reserved`, `u64 epoch`. When OK, the naturally aligned 2^size_shift bytes of IOVA around the request's
/// address map linearly onto the same-aligned physical range, for reads (access bit 0) and writes (bit 1) with
/// the request's other flags, while the shared epoch still equals `epoch`.
public struct CachedDMAResult: Hashable, Sendable {
    public static let size = 24
    public var physicalAddress: UInt64
    public var fault: UInt32
    public var sizeShift: UInt8
    public var access: UInt8
    /// v1.2: log2 of the naturally aligned range around the IOVA that a TLBIVA(L) must name an address of to
    /// end this translation (the invalidation log's ranges are compared with it); 0 from a v1.1 daemon.
    public var reachShift: UInt8
    public var epoch: UInt64
    public init(physicalAddress: UInt64, fault: UInt32, sizeShift: UInt8 = 0, access: UInt8 = 0, reachShift: UInt8 = 0,
                epoch: UInt64 = 0) {
        self.physicalAddress = physicalAddress
        self.fault = fault
        self.sizeShift = sizeShift
        self.access = access
        self.reachShift = reachShift
        self.epoch = epoch
    }
    public static let readable: UInt8 = 1 << 0
    public static let writable: UInt8 = 1 << 1
    public static func decode(_ p: UnsafeRawBufferPointer) throws(WireError) -> CachedDMAResult {
        guard p.count == size else { throw .wrongResponseLength(opcode: Opcode.dmaCached.responseCode, length: p.count) }
        return CachedDMAResult(physicalAddress: p.loadLE(UInt64.self, at: 0), fault: p.loadLE(UInt32.self, at: 8),
                               sizeShift: p.load(fromByteOffset: 12, as: UInt8.self),
                               access: p.load(fromByteOffset: 13, as: UInt8.self),
                               reachShift: p.load(fromByteOffset: 14, as: UInt8.self), epoch: p.loadLE(UInt64.self, at: 16))
    }
}

/// An interrupt line change on an EVENTS connection: `u32 window`, `u32 line`, `u32 level`.
/// Line 0 is the global fault line; line 1 + n is context interrupt n.
public struct Event: Hashable, Sendable {
    public static let size = 12
    public var window: UInt32
    public var line: UInt32
    public var level: UInt32
    public init(window: UInt32, line: UInt32, level: UInt32) {
        self.window = window
        self.line = line
        self.level = level
    }
    /// Appends the whole event message (header with opcode 0xB0, tag 0, status 0, and payload).
    public func encode(into out: inout [UInt8]) {
        FrameHeader(opcode: Opcode.event.rawValue, tag: 0, length: UInt32(Self.size)).encode(into: &out)
        out.appendLE(window)
        out.appendLE(line)
        out.appendLE(level)
    }
    public static func decode(_ p: UnsafeRawBufferPointer) throws(WireError) -> Event {
        guard p.count == size else { throw .wrongResponseLength(opcode: Opcode.event.rawValue, length: p.count) }
        return Event(window: p.loadLE(UInt32.self, at: 0), line: p.loadLE(UInt32.self, at: 4), level: p.loadLE(UInt32.self, at: 8))
    }
}

/// What a response carries; ``ResponseEncoder`` applies the fixed-size rule to it.
public enum ResponsePayload: Sendable {
    case none
    case hello(HelloResponse)
    /// READ: the value read.
    case read(UInt64)
    case dma(DMAResponse)
    case mcDMA(MCDMAResult)
    /// DMA_CACHED (v1.1).
    case cachedDMA(CachedDMAResult)
    /// DMA_EPOCH (v1.1): the epoch now.
    case epoch(UInt64)
    /// VM_CREATE: the new VM's number.
    case vmCreate(UInt32)
    /// MEM_READ bytes.
    case bytes([UInt8])
    /// STATS or DUMP JSON.
    case text(String)
}

extension Opcode {
    /// The fixed response payload size, or nil for the variable ones (HELLO, MEM_READ, STATS, DUMP).
    public var fixedResponseSize: Int? {
        switch self {
        case .read: 8
        case .dma, .mcDMA: 16
        case .dmaCached: CachedDMAResult.size
        case .dmaEpoch: 8
        case .vmCreate: 4
        case .hello, .memRead, .stats, .dump, .dmaPrefetch, .trace: nil
        case .write, .memWrite, .memMap, .vmDonate, .vmAssignStream, .vmDestroy, .finalize, .protFinalize, .events, .ring: 0
        case .event: Event.size
        }
    }
}

extension Opcode {
    /// The largest response payload a request of this opcode with this payload can get: the fixed size, else what
    /// MEM_READ asks for or the most records DMA_PREFETCH can answer, else a whole frame's (HELLO, STATS, DUMP, TRACE).
    /// A shared-memory ring's response area must have room for it before the request is run.
    public func maxResponsePayload(request payload: UnsafeRawBufferPointer) -> Int {
        if let fixed = fixedResponseSize { return fixed }
        switch self {
        case .memRead where payload.count >= 12:
            return min(Int(UInt32(littleEndian: payload.loadUnaligned(fromByteOffset: 8, as: UInt32.self))),
                       MemReadRequest.maxLength)
        case .dmaPrefetch:
            return 16 + 16 * (2 * Int(DMAPrefetchRequest.maxPages) + 1)
        default:
            return Int(FrameHeader.maxPayloadLength)
        }
    }
}

/// Appends responses to an output buffer with no allocation of its own.
///
/// The fixed-size rule lives here: READ, DMA and VM_CREATE responses always carry 8, 16 and 4
/// bytes, zero-filled unless OK (a DMA FAULT carries its fault); HELLO, MEM_READ, STATS and DUMP
/// are empty unless OK; MALFORMED and UNSUPPORTED carry nothing.
public enum ResponseEncoder {
    /// Appends one response frame answering `opcode` (the raw request byte) and `tag`.
    public static func append(
        to out: inout [UInt8], opcode rawOpcode: UInt8, tag: UInt32, status: Status, payload: ResponsePayload = .none
    ) {
        let opcode = status == .malformed || status == .unsupported ? nil : Opcode(rawValue: rawOpcode)
        let length = opcode.map { payloadLength(opcode: $0, status: status, payload: payload) } ?? 0
        let header = FrameHeader(responseTo: rawOpcode, tag: tag, status: status, length: length)
        guard let opcode, opcode.fixedResponseSize == nil else {
            // No payload (MALFORMED, UNSUPPORTED) or a fixed-size one: every per-request answer.
            appendFixed(to: &out, header: header, opcode: opcode, status: status, payload: payload)
            return
        }
        header.encode(into: &out)
        switch payload {
        case .hello(let h) where length > 0: h.encode(into: &out)
        case .bytes(let b) where length > 0: out.append(contentsOf: b)
        case .text(let t) where length > 0: out.append(contentsOf: t.utf8)
        default: break  // not OK, or no payload of this opcode's kind: empty
        }
    }

    /// The payload size the fixed-size rule gives this response.
    static func payloadLength(opcode: Opcode, status: Status, payload: ResponsePayload) -> Int {
        if let fixed = opcode.fixedResponseSize { return fixed }
        guard status == .ok else { return 0 }
        switch (opcode, payload) {
        case (.hello, .hello(let h)): return h.encodedLength
        case (.memRead, .bytes(let b)), (.stats, .bytes(let b)), (.dump, .bytes(let b)), (.dmaPrefetch, .bytes(let b)),
             (.trace, .bytes(let b)):
            return b.count
        case (.memRead, .text(let t)), (.stats, .text(let t)), (.dump, .text(let t)): return t.utf8.count
        default: return 0
        }
    }

    /// Appends the MALFORMED response to a framing error (opcode and tag as received).
    public static func appendMalformed(to out: inout [UInt8], opcode: UInt8, tag: UInt32) {
        append(to: &out, opcode: opcode, tag: tag, status: .malformed)
    }

    /// A response with no payload or a fixed-size one (at most 24 bytes, so at most 40 in all), built on the stack
    /// and appended in one copy: this runs once per request. Zero-filled unless OK (a DMA FAULT carries its fault).
    @inline(__always)
    private static func appendFixed(to out: inout [UInt8], header: FrameHeader, opcode: Opcode?, status: Status,
                                    payload: ResponsePayload) {
        var frame = (header.words.0, header.words.1, UInt64(0), UInt64(0), UInt64(0))
        switch (opcode, status, payload) {
        case (.read, .ok, .read(let v)), (.dmaEpoch, .ok, .epoch(let v)): frame.2 = v.littleEndian
        case (.dmaCached, .ok, .cachedDMA(let r)), (.dmaCached, .fault, .cachedDMA(let r)):
            frame.2 = r.physicalAddress.littleEndian
            frame.3 = (UInt64(r.fault) | UInt64(r.sizeShift) << 32 | UInt64(r.access) << 40
                       | UInt64(r.reachShift) << 48).littleEndian
            frame.4 = r.epoch.littleEndian
        case (.vmCreate, .ok, .vmCreate(let vm)): frame.2 = UInt64(vm).littleEndian
        case (.dma, .ok, .dma(let r)), (.dma, .fault, .dma(let r)):
            frame.2 = r.physicalAddress.littleEndian
            frame.3 = UInt64(r.fault).littleEndian  // fault, then 4 reserved zero bytes
        case (.mcDMA, .ok, .mcDMA(let r)), (.mcDMA, .fault, .mcDMA(let r)):
            frame.2 = r.physicalAddress.littleEndian
            frame.3 = (UInt64(r.route) << 32 | UInt64(r.fault)).littleEndian
        default: break  // not OK, or no matching payload: zero-filled at the opcode's size
        }
        assert(header.length <= 24, "a fixed-size response outgrew appendFixed's stack frame")
        let count = FrameHeader.size + Int(header.length)
        withUnsafeBytes(of: &frame) { out.append(contentsOf: UnsafeRawBufferPointer(rebasing: $0[..<count])) }
    }
}
