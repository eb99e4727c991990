#if canImport(Glibc)
import Glibc
#endif
import CSocketShims
import WireProtocol

/// The client end of protocol v1.1's shared-memory ring (docs/protocol-v1.md, "0x0B RING"): one request at a
/// time through a memfd the daemon maps too, answered by the connection's own session. The socket connection
/// stays open (closing it ends the ring) and keeps what needs it: EVENTS, MEM_MAP, DMA_EPOCH.
public final class SMMUClientRing {
    public static let size = 0x23000
    static let requestOffset = 0x1000
    static let responseOffset = 0x12000
    /// How long `call` spins for the answer before it sleeps on the futex.
    public var spinNanoseconds: UInt64 = 100_000

    public let client: SMMUClient
    private let base: UnsafeMutableRawPointer
    private var seq: UInt32
    private var tag: UInt32 = 0x8000_0000
    private var out: [UInt8] = []

    private var requestSeq: UnsafeMutablePointer<UInt32> { base.assumingMemoryBound(to: UInt32.self) }
    private var responseSeq: UnsafeMutablePointer<UInt32> { requestSeq + 1 }
    private var serverSleeping: UnsafeMutablePointer<UInt32> { requestSeq + 2 }
    private var clientSleeping: UnsafeMutablePointer<UInt32> { requestSeq + 3 }
    private var requestBytes: UnsafeMutablePointer<UInt32> { requestSeq + 4 }
    private var responseBytes: UnsafeMutablePointer<UInt32> { requestSeq + 5 }

    /// Sends RING on `client`'s (greeted) connection with a fresh sealed memfd.
    public init(client: SMMUClient) throws(SMMUClientError) {
        self.client = client
        let fd = try SMMUClient.makeSharedMemory(size: Self.size, name: "smmu-hypd-ring")
        defer { close(fd) }
        guard let p = mmap(nil, Self.size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0), p != MAP_FAILED else {
            throw .invalidArgument("mmap of the ring: \(String(cString: strerror(errno)))")
        }
        base = p
        seq = 0
        do { _ = try client.callOK(.ring, fds: [fd]) } catch {
            munmap(p, Self.size)
            throw error
        }
        out.reserveCapacity(256)
    }

    deinit { munmap(base, Self.size) }

    private func now() -> UInt64 { csock_monotonic_ns() }

    /// One request through the ring and its response.
    public func call(_ request: Request) throws(SMMUClientError) -> SMMUClient.Frame {
        guard let frame = try batch([request]).first else { throw .protocolViolation("no ring response") }
        return frame
    }

    /// Several requests in exchanges of `request_bytes`, answered in order. The daemon runs a batch's frames only while
    /// their answers fit the response area and one turn of its queue lasts, and answers those (docs/protocol-v1.md,
    /// RING): the rest are sent again in the next exchange, until every request is answered.
    public func batch(_ requests: [Request]) throws(SMMUClientError) -> [SMMUClient.Frame] {
        var answered: [SMMUClient.Frame] = []
        var rest = requests[...]
        while !rest.isEmpty {
            let first = tag &+ 1
            out.removeAll(keepingCapacity: true)
            var sent = 0
            for r in rest {
                let mark = out.count
                r.encode(tag: first &+ UInt32(sent), into: &out)
                guard out.count <= FrameHeader.size + Int(FrameHeader.maxPayloadLength) else {
                    guard sent > 0 else { throw .invalidArgument("a ring request of \(out.count - mark) bytes") }
                    out.removeSubrange(mark...)
                    break
                }
                sent += 1
            }
            tag = first &+ UInt32(sent - 1)
            let frames = try exchange(out, batch: sent > 1)
            for (i, frame) in frames.enumerated() where frame.header.tag != first &+ UInt32(i) {
                throw .protocolViolation("unexpected ring response")
            }
            guard !frames.isEmpty, frames.count <= sent else {
                throw .protocolViolation("\(frames.count) ring responses of \(sent)")
            }
            answered += frames
            rest = rest.dropFirst(frames.count)
        }
        return answered
    }

    /// One exchange of raw request bytes (`batch`: sent as `request_bytes` of frames, else as one frame) and the
    /// response frames the daemon wrote, as they are (tests send what a well-behaved client would not).
    public func exchange(_ bytes: [UInt8], batch: Bool) throws(SMMUClientError) -> [SMMUClient.Frame] {
        guard bytes.count <= FrameHeader.size + Int(FrameHeader.maxPayloadLength) else {
            throw .invalidArgument("a ring batch of \(bytes.count) bytes")
        }
        bytes.withUnsafeBytes { (base + Self.requestOffset).copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
        csock_store_release(requestBytes, batch ? UInt32(bytes.count) : 0)
        seq &+= 1
        csock_store_release(requestSeq, seq)
        csock_fence()
        if csock_load_acquire(serverSleeping) != 0 { csock_futex_wake(requestSeq) }
        let start = now()
        var spins = 0
        while csock_load_acquire(responseSeq) != seq {
            csock_cpu_relax()
            spins += 1
            guard spins & 63 == 0 else { continue }
            sched_yield()   // the daemon's thread may be waiting for this CPU (64 pauses: about 1.7 µs)
            guard now() - start > spinNanoseconds else { continue }
            csock_store_release(clientSleeping, 1)
            csock_fence()
            let current = csock_load_acquire(responseSeq)
            if current != seq { _ = csock_futex_wait(responseSeq, current, 1000) }
            csock_store_release(clientSleeping, 0)
            if now() - start > 30_000_000_000 { throw .timedOut }
        }
        let count = Int(csock_load_acquire(responseBytes))
        guard count <= FrameHeader.size + Int(FrameHeader.maxPayloadLength) else {
            throw .protocolViolation("ring responses of \(count) bytes")
        }
        var decoder = FrameDecoder(mode: .responses, initialCapacity: max(count, 16))
        decoder.append(UnsafeRawBufferPointer(start: base + Self.responseOffset, count: count))
        var frames: [SMMUClient.Frame] = []
        while let frame = decoder.next({ verdict, payload -> SMMUClient.Frame? in
            guard case .message(let h) = verdict else { return nil }
            return SMMUClient.Frame(header: h, payload: Array(payload))
        }) {
            guard let frame else { throw .protocolViolation("unexpected ring response") }
            frames.append(frame)
        }
        return frames
    }

    /// READ through the ring.
    public func read(address: UInt64, width: UInt32 = 4) throws(SMMUClientError) -> UInt64 {
        let frame = try call(.read(ReadRequest(address: address, width: width)))
        guard frame.status == .ok else { throw .status(frame.status ?? .malformed) }
        return try SMMUClient.readValue(frame.payload)
    }

    /// WRITE through the ring; the status as the daemon answered it.
    public func write(address: UInt64, value: UInt64, width: UInt32 = 4) throws(SMMUClientError) -> Status? {
        try call(.write(WriteRequest(address: address, value: value, width: width))).status
    }
}
