#if canImport(Glibc)
import Glibc
#endif
import CSocketShims
import POSIXCalls
import SystemPackage
import WireProtocol

/// A blocking client of smmu-hypd's protocol v1 on one connection.
///
/// Every typed call sends one request and waits for its response; a non-OK status throws
/// ``SMMUClientError/status(_:)``. ``pipeline(_:)`` and ``exchange(_:responses:_:)`` send many
/// requests at once and read the answers in order; ``sendRaw(_:fds:)`` and ``receiveFrame()`` let
/// tests put arbitrary bytes on the wire. Not thread-safe: one connection per thread.
public final class SMMUClient {
    public static let defaultSocketPath = "/run/smmu-hypd/smmu-hypd.sock"

    /// One response (or event) as received.
    public struct Frame: Hashable, Sendable {
        public var header: FrameHeader
        public var payload: [UInt8]
        public var status: Status? { header.statusCode }
    }

    let stream: UnixStream
    private var decoder = FrameDecoder(mode: .responses, initialCapacity: 16 + 65536)
    private var output: [UInt8] = []
    private var nextTag: UInt32 = 1
    /// How long a call waits for the daemon; nil waits forever.
    public var timeout: Duration?
    /// The greeting, once ``hello(role:name:)`` succeeded.
    public private(set) var greeting: HelloResponse?

    /// Connects to the daemon's socket.
    public init(path: String = SMMUClient.defaultSocketPath, timeout: Duration? = .seconds(30)) throws(SMMUClientError) {
        stream = try UnixStream.connect(path: path)
        self.timeout = timeout
        output.reserveCapacity(4096)
    }

    /// Wraps an already connected stream socket (it is closed with the client).
    public init(connectedFD fd: Int32, timeout: Duration? = .seconds(30)) {
        stream = UnixStream(fd: fd)
        self.timeout = timeout
    }

    /// The socket descriptor (for poll loops in tests and benchmarks).
    public var fileDescriptor: Int32 { stream.fd }

    public func close() { stream.close() }

    // MARK: typed calls

    /// HELLO: takes `role` and returns the server version, lifecycle state and windows.
    @discardableResult
    public func hello(role: Role, name: String) throws(SMMUClientError) -> HelloResponse {
        guard name.utf8.count <= HelloRequest.maxNameLength else { throw .invalidArgument("name over 64 bytes") }
        let payload = try callOK(.hello(HelloRequest(role: role, name: name)))
        let response = try decode { () throws(WireError) in try payload.withBytes { p throws(WireError) in try HelloResponse.decode(p) } }
        greeting = response
        return response
    }

    /// READ: one register access of `width` bytes (4 or 8) at a physical address.
    public func read(address: UInt64, width: UInt32 = 4) throws(SMMUClientError) -> UInt64 {
        try Self.readValue(callOK(.read(ReadRequest(address: address, width: width))))
    }

    /// The value an OK READ response carries (also for READs answered in a pipeline).
    static func readValue(_ payload: [UInt8]) throws(SMMUClientError) -> UInt64 {
        guard payload.count == 8 else { throw .protocolViolation("READ response of \(payload.count) bytes") }
        return payload.loadLE(UInt64.self, at: 0)
    }

    /// WRITE: one register access.
    public func write(address: UInt64, value: UInt64, width: UInt32 = 4) throws(SMMUClientError) {
        _ = try callOK(.write(WriteRequest(address: address, value: value, width: width)))
    }

    /// DMA: translate one access of `stream` through window `window`'s SMMU.
    /// A translation fault is a result, not an error: the returned `fault` is non-zero.
    public func dma(window: UInt32, stream: UInt32, iova: UInt64, flags: DMAFlags = []) throws(SMMUClientError) -> DMAResponse {
        let frame = try call(.dma(DMARequest(window: window, streamID: stream, iova: iova, flags: flags)))
        guard frame.status == .ok || frame.status == .fault else { throw .status(frame.status ?? .malformed) }
        return try decode { () throws(WireError) in try frame.payload.withBytes { p throws(WireError) in try DMAResponse.decode(p) } }
    }

    /// DMA_CACHED (v1.1): DMA, answered with what the device may cache (size, directions, epoch).
    public func dmaCached(window: UInt32, stream: UInt32, iova: UInt64, flags: DMAFlags = []) throws(SMMUClientError) -> CachedDMAResult {
        let frame = try call(.dmaCached(DMARequest(window: window, streamID: stream, iova: iova, flags: flags)))
        guard frame.status == .ok || frame.status == .fault else { throw .status(frame.status ?? .malformed) }
        return try decode { () throws(WireError) in try frame.payload.withBytes { p throws(WireError) in try CachedDMAResult.decode(p) } }
    }

    /// DMA_PREFETCH (v1.1): the access, then speculative translations of up to `pages` - 1 ranges after it (v1.2
    /// `backward`: before it, each ending where the previous record starts; `aroundSkippingHoles`: the mapped ranges
    /// among `pages` pages probed on each side). v1.2 gives each record's first page relative to the access's.
    /// Nil when the access itself faults (FAULT); else the epoch and one record per range, in order.
    public func dmaPrefetch(window: UInt32, stream: UInt32, iova: UInt64, flags: DMAFlags = [], pages: UInt32,
                            backward: Bool = false, aroundSkippingHoles: Bool = false)
        throws(SMMUClientError) -> (epoch: UInt64, ranges: [CachedDMAResult], pageOffsets: [Int32])? {
        let frame = try call(.dmaPrefetch(DMAPrefetchRequest(
            access: DMARequest(window: window, streamID: stream, iova: iova, flags: flags),
            pages: pages | (backward ? DMAPrefetchRequest.backwardFlag : 0)
                | (aroundSkippingHoles ? DMAPrefetchRequest.windowFlag : 0))))
        if frame.status == .fault { return nil }
        guard frame.status == .ok else { throw .status(frame.status ?? .malformed) }
        let p = frame.payload
        guard p.count >= 16 else { throw .protocolViolation("DMA_PREFETCH gave \(p.count) bytes") }
        return p.withBytes { b in
            let epoch = b.loadLE(UInt64.self, at: 0)
            let n = Int(b.loadLE(UInt32.self, at: 8))
            let records = 0..<min(n, (p.count - 16) / 16)
            let ranges = records.map { i in
                CachedDMAResult(physicalAddress: b.loadLE(UInt64.self, at: 16 + 16 * i), fault: 0,
                                sizeShift: b[16 + 16 * i + 8], access: b[16 + 16 * i + 9],
                                reachShift: b[16 + 16 * i + 10], epoch: epoch)
            }
            return (epoch, ranges, records.map { b.loadLE(Int32.self, at: 16 + 16 * $0 + 12) })
        }
    }

    /// DMA_EPOCH (v1.1): share the first 4 KiB of `fd` (a sealed memfd, see `makeSharedMemory`) as this
    /// connection's epoch page; returns the epoch now. The daemon keeps the u64 at offset 0 current.
    public func dmaEpoch(fd: Int32) throws(SMMUClientError) -> UInt64 {
        let payload = try callOK(.dmaEpoch, fds: [fd])
        guard payload.count == 8 else { throw .protocolViolation("DMA_EPOCH gave \(payload.count) bytes") }
        return payload.withBytes { $0.loadLE(UInt64.self, at: 0) }
    }

    /// MEM_READ: `length` bytes of physical memory, through the host's stage-2.
    public func memRead(address: UInt64, length: Int) throws(SMMUClientError) -> [UInt8] {
        guard length >= 0, length <= MemReadRequest.maxLength else { throw .invalidArgument("MEM_READ length \(length)") }
        let payload = try callOK(.memRead(MemReadRequest(address: address, length: UInt32(length))))
        guard payload.count == length else { throw .protocolViolation("MEM_READ gave \(payload.count) of \(length) bytes") }
        return payload
    }

    /// MEM_WRITE: bytes into physical memory, through the host's stage-2.
    public func memWrite(address: UInt64, bytes: [UInt8]) throws(SMMUClientError) {
        guard bytes.count <= Int(FrameHeader.maxPayloadLength) - 16 else { throw .invalidArgument("MEM_WRITE of \(bytes.count) bytes") }
        _ = try callOK(.memWrite(MemWriteRequest(address: address, bytes: bytes)))
    }

    /// MEM_MAP: lend bytes [offset, offset+size) of the file `fd` as physical memory at `address`.
    /// The fd travels as SCM_RIGHTS; the caller keeps its own copy. The daemon takes only a memfd sealed
    /// against shrinking (`makeSharedMemory` makes one) that holds the whole range.
    public func memMap(address: UInt64, size: UInt64, offset: UInt64, fd: Int32) throws(SMMUClientError) {
        _ = try callOK(.memMap(MemMapRequest(address: address, size: size, offset: offset)), fds: [fd])
    }

    /// A memfd of `size` bytes the daemon will accept for MEM_MAP: sealed against shrinking and growing, as
    /// QEMU's `memory-backend-memfd` seals guest RAM. The caller owns (and closes) the descriptor.
    public static func makeSharedMemory(size: Int, name: String = "smmu-hypd-ram") throws(SMMUClientError) -> Int32 {
        let fd = csock_sealed_memfd(name, size)
        guard fd >= 0 else { throw .invalidArgument("memfd of \(size) bytes: \(Errno.last)") }
        return fd
    }

    /// VM_CREATE: a new protected VM's number (≥ 1).
    public func vmCreate() throws(SMMUClientError) -> UInt32 {
        let payload = try callOK(.vmCreate)
        guard payload.count == 4 else { throw .protocolViolation("VM_CREATE response of \(payload.count) bytes") }
        return payload.loadLE(UInt32.self, at: 0)
    }

    public func vmDonate(vm: UInt32, address: UInt64, size: UInt64) throws(SMMUClientError) {
        _ = try callOK(.vmDonate(VMDonateRequest(vm: vm, address: address, size: size)))
    }

    public func vmAssignStream(vm: UInt32, window: UInt32, stream: UInt32) throws(SMMUClientError) {
        _ = try callOK(.vmAssignStream(VMAssignStreamRequest(vm: vm, window: window, streamID: stream)))
    }

    public func vmDestroy(vm: UInt32) throws(SMMUClientError) {
        _ = try callOK(.vmDestroy(vm: vm))
    }

    /// STATS: the counters as JSON text.
    public func stats() throws(SMMUClientError) -> String { String(decoding: try callOK(.stats), as: UTF8.self) }

    /// DUMP: the whole state as JSON text (admin).
    public func dump() throws(SMMUClientError) -> String { String(decoding: try callOK(.dump), as: UTF8.self) }

    /// FINALIZE: run pKVM finalization now (admin).
    public func finalize() throws(SMMUClientError) { _ = try callOK(.finalize) }

    /// EVENTS: turns this connection into an event stream; the client can send nothing more.
    public func events() throws(SMMUClientError) -> SMMUEventStream {
        _ = try callOK(.events)
        return SMMUEventStream(client: self)
    }

    // MARK: request/response

    /// Sends one request and returns its response, whatever its status.
    public func call(_ request: Request, fds: [Int32] = []) throws(SMMUClientError) -> Frame {
        let tag = takeTag()
        output.removeAll(keepingCapacity: true)
        request.encode(tag: tag, into: &output)
        try output.withBytes { bytes throws(SMMUClientError) in try stream.sendAll(bytes, fds: fds, timeout: timeout) }
        let frame = try receiveFrame()
        try check(frame.header, answers: request.opcode, tag: tag)
        return frame
    }

    /// Sends one request; returns the payload if OK, else throws its status.
    public func callOK(_ request: Request, fds: [Int32] = []) throws(SMMUClientError) -> [UInt8] {
        let frame = try call(request, fds: fds)
        guard frame.status == .ok else { throw .status(frame.status ?? .malformed) }
        return frame.payload
    }

    /// Sends every request in one write and returns the responses in order (tags checked).
    public func pipeline(_ requests: [Request]) throws(SMMUClientError) -> [Frame] {
        let tags = requests.map { _ in takeTag() }
        var bytes: [UInt8] = []
        for (request, tag) in zip(requests, tags) { request.encode(tag: tag, into: &bytes) }
        var frames: [Frame] = []
        frames.reserveCapacity(requests.count)
        var failure: SMMUClientError?
        try exchange(bytes, responses: requests.count) { header, payload in
            let i = frames.count
            if failure == nil {
                do throws(SMMUClientError) {
                    try check(header, answers: requests[i].opcode, tag: tags[i])
                } catch { failure = error }
            }
            frames.append(Frame(header: header, payload: Array(payload)))
        }
        if let failure { throw failure }
        return frames
    }

    /// Writes `encoded` (any number of requests) while reading back `responses` frames, handing
    /// each to `body` as it arrives. Writing and reading interleave, so a daemon applying
    /// back-pressure never deadlocks us. Allocates nothing per frame.
    public func exchange(
        _ encoded: [UInt8], responses: Int, _ body: (FrameHeader, UnsafeRawBufferPointer) throws(SMMUClientError) -> Void
    ) throws(SMMUClientError) {
        var sent = 0
        var received = 0
        while received < responses || sent < encoded.count {
            while received < responses, try nextBuffered(body) != nil {
                received += 1
            }
            if received == responses && sent == encoded.count { break }
            let ready = try stream.wait(readable: received < responses, writable: sent < encoded.count, timeout: timeout)
            if ready.timedOut { throw .timedOut }
            if sent < encoded.count && ready.writable {
                sent += try encoded.withBytes { b throws(SMMUClientError) in
                    try stream.sendSome(UnsafeRawBufferPointer(rebasing: b[sent...]))
                }
            }
            if received < responses && ready.readable {
                try fill()
            }
        }
    }

    // MARK: raw frames (for tests that break the rules)

    /// Sends raw bytes (and descriptors) as they are.
    public func sendRaw(_ bytes: [UInt8], fds: [Int32] = []) throws(SMMUClientError) {
        try bytes.withBytes { b throws(SMMUClientError) in try stream.sendAll(b, fds: fds, timeout: timeout) }
    }

    /// Receives the next whole frame (response or event).
    public func receiveFrame() throws(SMMUClientError) -> Frame {
        while true {
            if let frame = try nextBuffered({ h, p throws(SMMUClientError) in Frame(header: h, payload: Array(p)) }) {
                return frame
            }
            if try stream.wait(readable: true, writable: false, timeout: timeout).timedOut { throw .timedOut }
            try fill()
        }
    }

    /// Waits up to `timeout` for the daemon to close the connection, discarding anything it sends.
    /// Returns true if it closed.
    public func waitForClose(timeout: Duration = .seconds(5)) throws(SMMUClientError) -> Bool {
        while true {
            if try stream.wait(readable: true, writable: false, timeout: timeout).timedOut { return false }
            do throws(SMMUClientError) { try fill() } catch .closed { return true }
        }
    }

    /// The next frame already received, if any.
    func nextBuffered<R>(_ body: (FrameHeader, UnsafeRawBufferPointer) throws(SMMUClientError) -> R) throws(SMMUClientError) -> R? {
        var failure: SMMUClientError?
        let r: R?? = decoder.next { verdict, payload -> R? in
            guard case .message(let header) = verdict else {
                failure = .protocolViolation("undecodable frame from the daemon: \(verdict)")
                return nil
            }
            do throws(SMMUClientError) { return try body(header, payload) } catch {
                failure = error
                return nil
            }
        }
        if let failure { throw failure }
        return r ?? nil
    }

    /// Reads whatever is available into the decoder; throws ``SMMUClientError/closed`` at end of stream.
    private func fill() throws(SMMUClientError) {
        var result: Int?? = .none
        var failure: SMMUClientError?
        _ = decoder.readInto(minimumSpace: 65536) { space in
            do throws(SMMUClientError) {
                result = .some(try stream.receiveSome(into: space))
            } catch { failure = error }
            return (result ?? 0) ?? 0
        }
        if let failure { throw failure }
        if case .some(.none) = result { throw .closed }
    }

    /// Tags start at 1 and skip 0 on wrap-around: 0 is the tag of event messages.
    private func takeTag() -> UInt32 {
        defer { nextTag = nextTag == .max ? 1 : nextTag + 1 }
        return nextTag
    }

    private func check(_ header: FrameHeader, answers opcode: Opcode, tag: UInt32) throws(SMMUClientError) {
        guard header.tag == tag else { throw .protocolViolation("response tag \(header.tag), expected \(tag)") }
        // MALFORMED echoes the opcode as received; every other response sets the response bit.
        guard header.opcode == opcode.responseCode || header.statusCode == .malformed else {
            throw .protocolViolation("response opcode 0x\(String(header.opcode, radix: 16)) to \(opcode)")
        }
    }

    private func decode<T>(_ body: () throws(WireError) -> T) throws(SMMUClientError) -> T {
        do { return try body() } catch { throw .protocolViolation(error.description) }
    }
}

/// An EVENTS connection: yields interrupt line changes as the daemon sends them.
public final class SMMUEventStream {
    let client: SMMUClient
    init(client: SMMUClient) { self.client = client }

    /// The next event, or nil if none arrives within `timeout` (nil: the client's timeout).
    /// Throws ``SMMUClientError/closed`` when the daemon closes the stream.
    public func next(timeout: Duration? = nil) throws(SMMUClientError) -> Event? {
        let saved = client.timeout
        if let timeout { client.timeout = timeout }
        defer { client.timeout = saved }
        let frame: SMMUClient.Frame
        do throws(SMMUClientError) { frame = try client.receiveFrame() } catch .timedOut { return nil }
        guard frame.header.opcode == Opcode.event.rawValue else {
            throw .protocolViolation("opcode 0x\(String(frame.header.opcode, radix: 16)) on an event stream")
        }
        do throws(WireError) { return try frame.payload.withBytes { p throws(WireError) in try Event.decode(p) } } catch {
            throw .protocolViolation(error.description)
        }
    }

    public func close() { client.close() }
}
