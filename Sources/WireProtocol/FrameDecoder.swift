/// An incremental frame decoder: raw bytes in, complete frames and framing verdicts out.
///
/// It is a state machine that does no I/O: the server reads into it (``append(_:)`` or
/// ``readInto(minimumSpace:_:)``) and drains it with ``next(_:)``, which hands out each payload as a
/// pointer into its own contiguous buffer, so steady-state decoding allocates nothing.
///
/// Verdicts follow the spec's framing rules: a bad magic, an unknown version or a length over 65536
/// gives ``Verdict/malformed(opcode:tag:_:)`` and the decoder closes (the server answers MALFORMED,
/// then closes the connection); so does a payload length the opcode does not allow. An unknown
/// opcode gives ``Verdict/unsupported(_:)`` as soon as its header is in, and its payload is skipped
/// however many reads it spans; decoding goes on.
public struct FrameDecoder: Sendable {
    /// Requests (server side: opcodes and sizes checked) or responses and events (client side).
    public enum Mode: Sendable { case requests, responses }

    public enum Verdict: Hashable, Sendable {
        /// A complete request whose payload size fits its opcode (requests mode).
        case request(Opcode, FrameHeader)
        /// A complete message of any opcode (responses mode).
        case message(FrameHeader)
        /// An unknown opcode with a valid header: answer UNSUPPORTED; the payload is skipped.
        case unsupported(FrameHeader)
        /// A framing error: answer MALFORMED with this opcode and tag, then close.
        case malformed(opcode: UInt8, tag: UInt32, WireError)
    }

    public let mode: Mode
    private var storage: [UInt8]
    private var readIndex = 0
    private var writeIndex = 0
    private var skipRemaining = 0
    /// True once a malformed frame was seen: nothing more is decoded.
    public private(set) var isClosed = false

    /// - Parameter initialCapacity: bytes reserved up front; the buffer grows to hold the largest frame.
    public init(mode: Mode = .requests, initialCapacity: Int = 16 + 65536) {
        self.mode = mode
        storage = [UInt8](repeating: 0, count: max(initialCapacity, FrameHeader.size))
    }

    /// Bytes received and not yet consumed (back-pressure accounting).
    public var bufferedByteCount: Int { writeIndex - readIndex }

    /// What a decoder holds between two reads, for a daemon's state image (docs/state-image.md): the bytes of frames
    /// not complete yet, how much of an unsupported frame's payload is still to skip, and whether it has closed.
    public struct PendingState: Sendable, Equatable {
        public var unread: [UInt8]
        public var skipRemaining: Int
        public var isClosed: Bool
        public init(unread: [UInt8] = [], skipRemaining: Int = 0, isClosed: Bool = false) {
            self.unread = unread
            self.skipRemaining = skipRemaining
            self.isClosed = isClosed
        }
    }

    public var pendingState: PendingState {
        PendingState(unread: Array(storage[readIndex..<writeIndex]), skipRemaining: skipRemaining, isClosed: isClosed)
    }

    /// The bytes received and not yet consumed, and the payload bytes of an unsupported frame still to skip, without
    /// copying them (restart mode looks at them to take only whole frames off a socket: InputTake).
    public func withUnconsumed<R>(_ body: (UnsafeRawBufferPointer, _ skip: Int) throws -> R) rethrows -> R {
        try storage.withUnsafeBytes { raw in try body(UnsafeRawBufferPointer(rebasing: raw[readIndex..<writeIndex]), skipRemaining) }
    }

    /// A decoder that continues where one in `state` stopped (a restored daemon's connection).
    public init(mode: Mode, restoring state: PendingState) {
        self.init(mode: mode, initialCapacity: max(4096, state.unread.count))
        append(state.unread)
        skipRemaining = max(0, state.skipRemaining)
        isClosed = state.isClosed
    }

    /// Copies `bytes` in.
    public mutating func append(_ bytes: UnsafeRawBufferPointer) {
        guard !bytes.isEmpty else { return }
        _ = readInto(minimumSpace: bytes.count) { space in
            space.copyMemory(from: bytes)
            return bytes.count
        }
    }

    public mutating func append(_ bytes: [UInt8]) {
        bytes.withUnsafeBytes { append($0) }
    }

    /// Lets `body` fill free buffer space directly (e.g. with `read(2)`) and returns what it returns.
    /// - Parameter body: receives at least `minimumSpace` writable bytes; returns how many it wrote
    ///   (a negative or zero result adds nothing).
    public mutating func readInto(
        minimumSpace: Int = 65536, _ body: (UnsafeMutableRawBufferPointer) throws -> Int
    ) rethrows -> Int {
        reserve(minimumSpace)
        let start = writeIndex
        let n = try storage.withUnsafeMutableBytes { raw in
            try body(UnsafeMutableRawBufferPointer(rebasing: raw[start...]))
        }
        if n > 0 { writeIndex += min(n, storage.count - start) }
        return n
    }

    /// Decodes the next frame if one is complete and hands it to `body`, with its payload, which
    /// is valid only inside `body`. Returns nil when more bytes are needed or the decoder is closed.
    public mutating func next<R>(_ body: (Verdict, UnsafeRawBufferPointer) throws -> R) rethrows -> R? {
        guard !isClosed else { return nil }
        if skipRemaining > 0 {
            let n = min(skipRemaining, bufferedByteCount)
            readIndex += n
            skipRemaining -= n
            if skipRemaining > 0 { return nil }
        }
        guard bufferedByteCount >= FrameHeader.size else {
            compactIfEmpty()
            return nil
        }
        let header = storage.withUnsafeBytes { raw in
            FrameHeader(decoding: UnsafeRawBufferPointer(rebasing: raw[readIndex..<(readIndex + FrameHeader.size)]))
        }
        if let error = Self.framingError(header) {
            return try close(header, error, body)
        }
        let length = Int(header.length)
        var opcode: Opcode?
        if mode == .requests {
            guard let op = Opcode(rawValue: header.opcode), let size = op.requestSize else {
                readIndex += FrameHeader.size
                skipRemaining = length
                let n = min(skipRemaining, bufferedByteCount)
                readIndex += n
                skipRemaining -= n
                compactIfEmpty()
                return try body(.unsupported(header), UnsafeRawBufferPointer(start: nil, count: 0))
            }
            guard size.admits(length) else {
                return try close(header, .wrongPayloadLength(opcode: op.rawValue, length: length, expected: size), body)
            }
            opcode = op
        }
        guard bufferedByteCount >= FrameHeader.size + length else {
            reserve(FrameHeader.size + length - bufferedByteCount)
            return nil
        }
        let payloadStart = readIndex + FrameHeader.size
        if opcode == .memWrite {
            let declared = storage.loadLE(UInt32.self, at: payloadStart + 8)
            if Int(declared) != length - 16 {
                return try close(header, .countMismatch(declared: declared, actual: length - 16), body)
            }
        }
        readIndex = payloadStart + length
        let verdict: Verdict = opcode.map { .request($0, header) } ?? .message(header)
        let result = try storage.withUnsafeBytes { raw in
            try body(verdict, UnsafeRawBufferPointer(rebasing: raw[payloadStart..<(payloadStart + length)]))
        }
        compactIfEmpty()
        return result
    }

    /// Drops every byte buffered and any payload still to skip (a shared-memory ring's exchange is whole: what one
    /// left undecoded or unexecuted does not become the start of the next). A closed decoder stays closed.
    public mutating func discardBuffered() {
        readIndex = 0
        writeIndex = 0
        skipRemaining = 0
    }

    /// The header-level framing rules that close the connection.
    public static func framingError(_ header: FrameHeader) -> WireError? {
        if header.magic != FrameHeader.magic { return .badMagic(header.magic) }
        if header.version != FrameHeader.version { return .unknownVersion(header.version) }
        if header.length > FrameHeader.maxPayloadLength { return .lengthTooLarge(header.length) }
        return nil
    }

    private mutating func close<R>(
        _ header: FrameHeader, _ error: WireError, _ body: (Verdict, UnsafeRawBufferPointer) throws -> R
    ) rethrows -> R {
        isClosed = true
        readIndex = writeIndex
        return try body(.malformed(opcode: header.opcode, tag: header.tag, error), UnsafeRawBufferPointer(start: nil, count: 0))
    }

    private mutating func compactIfEmpty() {
        if readIndex == writeIndex {
            readIndex = 0
            writeIndex = 0
        }
    }

    /// Makes room for `space` more bytes after `writeIndex`: slides unread bytes to the front, grows if needed.
    private mutating func reserve(_ space: Int) {
        if storage.count - writeIndex >= space { return }
        let unread = writeIndex - readIndex
        if readIndex > 0 {
            let from = readIndex
            storage.withUnsafeMutableBytes { raw in
                guard let base = raw.baseAddress else { return }
                (base).copyMemory(from: base + from, byteCount: unread)
            }
            readIndex = 0
            writeIndex = unread
        }
        if storage.count - writeIndex < space {
            storage.append(contentsOf: repeatElement(0, count: writeIndex + space - storage.count))
        }
    }
}
