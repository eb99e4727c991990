#if canImport(Glibc)
import Glibc
#endif
import CSocketShims
import Foundation
import Synchronization
import WireProtocol

/// Protocol v1.1's shared-memory transport (docs/protocol-v1.md, "0x0B RING"): a connection's requests
/// through a memfd both processes map, one request at a time, instead of through the socket.
///
/// A thread per ring waits for requests: it spins while the client is busy, then sleeps on a futex on the
/// request word (an idle ring costs no CPU). Each request enters the server's serial queue with `queue.sync`
/// and is handled by `Dispatcher.handle` for the connection's own session, exactly as a request read from
/// the socket: the same role, policy checks, audit records, statistics and order of effects. Only what needs a
/// descriptor or changes what the socket carries (HELLO, EVENTS, MEM_MAP, DMA_EPOCH, RING) stays on the socket.
final class SharedRing: @unchecked Sendable {   // invariant: `dispatcher` is used only on `queue`
    static let size = 0x23000
    static let requestOffset = 0x1000
    static let responseOffset = 0x12000
    static let maxFrame = FrameHeader.size + Int(FrameHeader.maxPayloadLength)
    /// At most this many rings (each one is a thread, G8).
    static let limit = 16
    /// How long the thread spins for the next request before it sleeps (yielding every 1,024 polls, so a client
    /// that shares its CPU gets to run: round trip p50 0.5 µs with a core each, about 4 µs sharing one).
    static let spinNanoseconds: UInt64 = 200_000

    // Words of the header page.
    private var requestSeq: UnsafeMutablePointer<UInt32> { base.assumingMemoryBound(to: UInt32.self) }
    private var responseSeq: UnsafeMutablePointer<UInt32> { requestSeq + 1 }
    private var serverSleeping: UnsafeMutablePointer<UInt32> { requestSeq + 2 }
    private var clientSleeping: UnsafeMutablePointer<UInt32> { requestSeq + 3 }
    private var requestBytes: UnsafeMutablePointer<UInt32> { requestSeq + 4 }
    private var responseBytes: UnsafeMutablePointer<UInt32> { requestSeq + 5 }

    private let base: UnsafeMutableRawPointer
    private let queue: DispatchQueue
    private let dispatcher: Dispatcher
    /// The connection's context when the ring was attached (greeted: its role and audit identity no longer change).
    private let context: SessionContext
    private let stopping = Atomic<Bool>(false)

    init(base: UnsafeMutableRawPointer, queue: DispatchQueue, dispatcher: Dispatcher, context: SessionContext) {
        self.base = base
        self.queue = queue
        self.dispatcher = dispatcher
        self.context = context
        initialSeq = csock_load_acquire(base.assumingMemoryBound(to: UInt32.self))
    }

    /// The request word when RING was answered: the client sends its first request after that answer, so
    /// the thread must not read it later (it may start after the first request has arrived).
    private let initialSeq: UInt32

    func start() {
        let thread = Thread { [self] in run() }
        thread.name = "smmu-hypd ring"
        thread.start()
    }

    /// From the queue, when the connection closes: the thread finishes the request in hand, then unmaps.
    func stop() {
        stopping.store(true, ordering: .releasing)
        csock_futex_wake(requestSeq)
    }

    private func now() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
    }

    private func run() {
        defer { munmap(base, Self.size) }
        var last = initialSeq
        var decoder = FrameDecoder(mode: .requests, initialCapacity: 4096)
        var frame = [UInt8](repeating: 0, count: Self.maxFrame)
        var output: [UInt8] = []
        output.reserveCapacity(4096)
        while !stopping.load(ordering: .acquiring) {
            var seq = csock_load_acquire(requestSeq)
            if seq == last {
                let start = now()
                var spins = 0
                while seq == last && !stopping.load(ordering: .relaxed) {
                    csock_cpu_relax()
                    spins += 1
                    // Yield now and then: when the client runs on this CPU (the other is busy), spinning
                    // would keep it from writing the request we wait for.
                    if spins & 1023 == 0 {
                        sched_yield()
                        if now() - start > Self.spinNanoseconds { break }
                    }
                    seq = csock_load_acquire(requestSeq)
                }
                if seq == last {
                    csock_store_release(serverSleeping, 1)
                    csock_fence()
                    if csock_load_acquire(requestSeq) == last && !stopping.load(ordering: .acquiring) {
                        _ = csock_futex_wait(requestSeq, last, 1000)
                    }
                    csock_store_release(serverSleeping, 0)
                    continue
                }
            }
            // One request frame, or (request_bytes set) several whole frames one after the other, as a
            // pipelined socket client sends them; the decoder judges them as it judges the socket's bytes.
            let batch = Int(UInt32(littleEndian: csock_load_acquire(requestBytes)))
            let declared = Int(base.loadUnaligned(fromByteOffset: Self.requestOffset + 12, as: UInt32.self).littleEndian)
            let count = batch > 0 ? min(batch, Self.maxFrame)
                : FrameHeader.size + min(declared, Int(FrameHeader.maxPayloadLength))
            frame.withUnsafeMutableBytes { $0.baseAddress!.copyMemory(from: base + Self.requestOffset, byteCount: count) }
            frame.withUnsafeBytes { decoder.append(UnsafeRawBufferPointer(rebasing: $0[..<count])) }
            output.removeAll(keepingCapacity: true)
            let step = serve(&decoder, into: &output)
            // One exchange is whole: frames left unrun (no room for their answers) or a partial frame are dropped.
            decoder.discardBuffered()
            let closeRing = step == .closeRing
            let n = output.count
            output.withUnsafeBytes { (base + Self.responseOffset).copyMemory(from: $0.baseAddress!, byteCount: n) }
            csock_store_release(responseBytes, UInt32(n))
            last = seq
            csock_store_release(responseSeq, seq)
            csock_fence()
            if csock_load_acquire(clientSleeping) != 0 { csock_futex_wake(responseSeq) }
            if closeRing { break }
        }
    }
}

extension SharedRing {
    enum Step { case done, closeRing, stopped }

    /// Runs the exchange's frames in order, one turn of the serial queue per `TurnBudget` (other connections are
    /// served between turns, G8), each only while the response area has room for the largest answer it can get: the
    /// frames after the first that might not fit are not run (the client sees fewer answers and sends them again), so
    /// a batch never does work whose answer is lost, and the output never outgrows the area.
    func serve(_ decoder: inout FrameDecoder, into output: inout [UInt8]) -> Step {
        var step = Step.done
        var full = false
        // Another turn only when this one ran out of budget: a partial frame left over is not waited for.
        var budgetSpent = true
        while step == .done && !full && budgetSpent {
            budgetSpent = false
            queue.sync {
                guard !stopping.load(ordering: .acquiring) else { step = .stopped; return }
                var spent = 0
                while step == .done, !full, !budgetSpent, let _ = decoder.next({ verdict, payload in
                    switch verdict {
                    case .request(let op, let header):
                        let room = Self.maxFrame - output.count - FrameHeader.size
                        guard op.maxResponsePayload(request: payload) <= room else { full = true; return }
                        switch op {
                        case .hello, .events, .memMap, .dmaEpoch, .ring:
                            spent += TurnBudget.framingCost
                            ResponseEncoder.append(to: &output, opcode: op.rawValue, tag: header.tag, status: .forbidden)
                        default:
                            var fds: [Int32] = []
                            // The opcodes whose effect changes the session are refused above; an undecodable
                            // request is answered MALFORMED and ends the ring, as it ends a socket connection.
                            if dispatcher.handle(op, header: header, payload: payload, fds: &fds, context: context,
                                                 output: &output, spent: &spent) == .closeAfterFrame { step = .closeRing }
                        }
                    case .unsupported(let header):
                        guard output.count + FrameHeader.size <= Self.maxFrame else { full = true; return }
                        spent += TurnBudget.framingCost
                        dispatcher.answerUnsupported(header, output: &output)
                    case .malformed(let opcode, let tag, _):
                        guard output.count + FrameHeader.size <= Self.maxFrame else { full = true; return }
                        dispatcher.answerMalformed(opcode: opcode, tag: tag, output: &output)
                        step = .closeRing
                    case .message:
                        break
                    }
                    budgetSpent = spent >= TurnBudget.units
                }) {}
            }
        }
        return step == .stopped ? .closeRing : step
    }
}

extension Dispatcher {
    /// RING: maps the client's memfd (checked as MEM_MAP's files are) and starts serving it.
    func attachRing(fd: Int32, context: SessionContext) -> Status {
        // Ring requests bypass the restart journal: in restart mode a ring is refused and the client stays on the
        // socket (QEMU's device falls back to it), so a restart or a crash replays everything it did.
        guard rings[context.connection] == nil, rings.count < SharedRing.limit,
              let server = server as? UnixServer, server.persistence == nil else { return .invalid }
        let queue = server.queue
        guard case .success(let file) = SharedMemoryFile.map(fd: fd, offset: 0, size: UInt64(SharedRing.size)) else {
            return .invalid
        }
        let ring = SharedRing(base: file.pointer, queue: queue, dispatcher: self, context: context)
        rings[context.connection] = ring
        ring.start()
        return .ok
    }
}
