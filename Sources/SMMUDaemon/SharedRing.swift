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
///
/// Restart mode: each request is journaled (a RING record) before it is applied and its answer is published on the
/// queue; a restart replays the records (`replay`) and then publishes what the old process had not
/// (`resumeAfterReplay`), so every request is applied once and answered once (docs/hypervisor-model.md).
final class SharedRing: @unchecked Sendable {   // invariant: `dispatcher` is used only on `queue`
    static let size = 0x23000
    static let requestOffset = 0x1000
    static let responseOffset = 0x12000
    static let maxFrame = FrameHeader.size + Int(FrameHeader.maxPayloadLength)
    /// At most this many rings (each one is a thread, G8).
    static let limit = 16
    /// How long the thread spins for the next request before it sleeps (yielding about every 2 µs, `RingSpin`, so a
    /// client that shares its CPU gets to run soon: yielding every 1,024 polls, a guest's DMA_PREFETCH round trip took
    /// 47 µs where the daemon worked 15).
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
    /// The ring's file (restart mode: it is in the fd store, and a checkpoint names it).
    let file: FDStore.FileIdentity
    private let stopping = Atomic<Bool>(false)

    // On the queue only.
    private var decoder = FrameDecoder(mode: .requests, initialCapacity: 4096)
    private var output: [UInt8] = []
    /// The request word of the request answered last (when attached: the request word then, as the client sends its
    /// first request after RING's answer, and the thread may start after it arrived). The thread waits for another.
    private(set) var answered: UInt32
    /// A malformed frame ended the ring (the connection keeps it: a second RING stays INVALID).
    private(set) var ended = false
    /// A restart's replay: the answer to the last replayed request, published after the replay unless the previous
    /// process did (`resumeAfterReplay`).
    private var replayed: (seq: UInt32, answer: [UInt8])?
    private enum Mapping { case idle, serving, unmapped }
    private var mapping = Mapping.idle

    init(base: UnsafeMutableRawPointer, file: FDStore.FileIdentity, queue: DispatchQueue, dispatcher: Dispatcher,
         context: SessionContext) {
        self.base = base
        self.file = file
        self.queue = queue
        self.dispatcher = dispatcher
        self.context = context
        answered = csock_load_acquire(base.assumingMemoryBound(to: UInt32.self))
        output.reserveCapacity(4096)
    }

    /// From the queue: serves requests from `answered` on.
    func start() {
        guard mapping == .idle, !ended else { return }
        mapping = .serving
        let thread = Thread { [self, last = answered] in run(after: last) }
        thread.name = "smmu-hypd ring"
        thread.start()
    }

    /// From the queue, when the connection closes: the thread finishes the request in hand, then unmaps.
    func stop() {
        stopping.store(true, ordering: .releasing)
        switch mapping {
        case .serving: csock_futex_wake(requestSeq)
        case .idle: unmap()
        case .unmapped: break
        }
    }

    private func unmap() {
        mapping = .unmapped
        SharedMemoryFile.unmap(base, size: Self.size)
    }

    private func now() -> UInt64 { csock_monotonic_ns() }

    private func run(after initial: UInt32) {
        // Plain munmap: a serving ring was mapped shared from the start, or again after the replay (ReplayMappings).
        defer { munmap(base, Self.size) }
        var last = initial
        var frame = [UInt8](repeating: 0, count: Self.maxFrame)
        var spin = RingSpin(now: now())
        while !stopping.load(ordering: .acquiring) {
            var seq = csock_load_acquire(requestSeq)
            if seq == last {
                let start = now()
                var spins = 0
                while seq == last && !stopping.load(ordering: .relaxed) {
                    csock_cpu_relax()
                    spins += 1
                    // Yield now and then: when the client runs on this CPU (the other is busy), spinning
                    // would keep it from writing the request we wait for (RingSpin says when, and when to move).
                    if spins & 15 == 0 {
                        let t = now()
                        if t - start > Self.spinNanoseconds { break }
                        if spin.shouldYield(now: t) {
                            sched_yield()
                            if spin.yielded(from: t, to: now()) { _ = csock_leave_this_cpu() }
                        }
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
            // Copied out of the shared memory once: the client cannot change what is judged (nor what is journaled).
            let batch = Int(UInt32(littleEndian: csock_load_acquire(requestBytes)))
            let declared = Int(base.loadUnaligned(fromByteOffset: Self.requestOffset + 12, as: UInt32.self).littleEndian)
            let count = batch > 0 ? min(batch, Self.maxFrame)
                : FrameHeader.size + min(declared, Int(FrameHeader.maxPayloadLength))
            frame.withUnsafeMutableBytes { $0.baseAddress!.copyMemory(from: base + Self.requestOffset, byteCount: count) }
            var closeRing = false
            queue.sync {
                guard !stopping.load(ordering: .acquiring) else { return }
                frame.withUnsafeBytes { closeRing = serve(UnsafeRawBufferPointer(rebasing: $0[..<count]), seq: seq) }
            }
            if stopping.load(ordering: .acquiring) { break }
            last = seq
            csock_fence()
            if csock_load_acquire(clientSleeping) != 0 { csock_futex_wake(responseSeq) }
            if closeRing { break }
        }
    }

    /// On the queue: one request (or batch) `seq`, journaled before it is applied (restart mode), answered, and
    /// published. Publishing on the queue keeps a checkpoint (also on the queue) from falling between a request and
    /// its answer: every checkpoint finds each ring answered up to `answered`. True when the ring ends.
    private func serve(_ request: UnsafeRawBufferPointer, seq: UInt32) -> Bool {
        let server = dispatcher.server as? UnixServer
        server?.persistence?.journalRing(context.connection, seq: seq, request: request)
        let close = answer(request)
        server?.persistence?.commitReads()
        let n = Self.wholeResponses(output)
        output.withUnsafeBytes { (base + Self.responseOffset).copyMemory(from: $0.baseAddress!, byteCount: n) }
        csock_store_release(responseBytes, UInt32(n))
        csock_store_release(responseSeq, seq)
        answered = seq
        if close { ended = true }
        server?.afterInput?()
        return close
    }

    /// On the queue: answers the frames of `request` into `output`, as the socket's session would, within one turn of
    /// the queue (G8): each frame runs only while the response area has room for the largest answer it can get and
    /// the turn's `TurnBudget` is not spent; the frames after are not run and get no answer (the client sends them
    /// again), and bytes left over (frames not run, a partial frame) are dropped: an exchange is whole. One turn, so a
    /// checkpoint never falls inside an exchange, and the budget counts requests, not time, so a replay runs the same
    /// frames. True when a malformed frame ends the ring.
    private func answer(_ request: UnsafeRawBufferPointer) -> Bool {
        output.removeAll(keepingCapacity: true)
        defer { decoder.discardBuffered() }
        var closeRing = false
        var full = false
        var spent = 0
        decoder.append(request)
        while !closeRing, !full, spent < TurnBudget.units, let _ = decoder.next({ verdict, payload in
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
                                         output: &output, spent: &spent) == .closeAfterFrame { closeRing = true }
                }
            case .unsupported(let header):
                guard output.count + FrameHeader.size <= Self.maxFrame else { full = true; return }
                spent += TurnBudget.framingCost
                dispatcher.answerUnsupported(header, output: &output)
            case .malformed(let opcode, let tag, _):
                guard output.count + FrameHeader.size <= Self.maxFrame else { full = true; return }
                dispatcher.answerMalformed(opcode: opcode, tag: tag, output: &output)
                closeRing = true
            case .message:
                break
            }
        }) {}
        return closeRing
    }

    /// The bytes of `output`'s whole responses that fit the response area: a batch whose answers would not fit is cut
    /// at the last one that does (a client batches small requests, so this does not happen to a well-behaved one).
    static func wholeResponses(_ output: [UInt8]) -> Int {
        var n = 0
        while n + FrameHeader.size <= output.count {
            let length = Int(output.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: n + 12, as: UInt32.self).littleEndian })
            guard n + FrameHeader.size + length <= min(output.count, Self.maxFrame) else { break }
            n += FrameHeader.size + length
        }
        return n
    }

    // MARK: restart (docs/hypervisor-model.md, "Restart and crash survival": the ring)

    /// A journaled RING record: `request` nil for the attach (the request word then), else a request the previous
    /// process took from the ring, applied again. Its answer is kept for `resumeAfterReplay`.
    func replay(seq: UInt32, request: UnsafeRawBufferPointer?, ended: Bool = false) {
        answered = seq
        if ended { self.ended = true }
        guard let request else { return }
        if answer(request) { self.ended = true }
        replayed = (seq, Array(output[..<Self.wholeResponses(output)]))
    }

    /// What `resumeAfterReplay` did with the last replayed answer.
    enum Resumption: Equatable {
        case nothingReplayed
        /// The previous process had published it: left as it was. Nil when it equals the replayed one, else the
        /// opcode of the replayed answer's first frame that differs (expected for answers that carry the translation
        /// epoch, which a restore moves on, as on the socket).
        case alreadyPublished(differing: UInt8?)
        /// The previous process had not: published now.
        case published
    }

    /// The opcode byte of the first frame of `answer` that differs from `published` (nil: the same bytes).
    static func firstDifferingOpcode(_ answer: [UInt8], _ published: UnsafeRawBufferPointer) -> UInt8? {
        let common = min(answer.count, published.count)
        guard let first = (0..<common).first(where: { answer[$0] != published[$0] })
                ?? (answer.count == published.count ? nil : common) else { return nil }
        var frame = 0
        while frame + FrameHeader.size <= answer.count {
            let end = frame + FrameHeader.size
                + Int(answer.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: frame + 12, as: UInt32.self).littleEndian })
            if first < end { return answer[frame + 3] }
            frame = end
        }
        return 0
    }

    /// After the replay (the ring's memory mapped shared again): publishes the last replayed answer unless the
    /// previous process did (`response_seq` already says so), wakes a client that slept through the restart, and
    /// serves the ring from `answered` on.
    @discardableResult
    func resumeAfterReplay() -> Resumption {
        var outcome = Resumption.nothingReplayed
        if let (seq, answer) = replayed {
            if csock_load_acquire(responseSeq) == seq {
                let n = Int(UInt32(littleEndian: csock_load_acquire(responseBytes)))
                let published = UnsafeRawBufferPointer(start: base + Self.responseOffset, count: n)
                outcome = .alreadyPublished(differing: Self.firstDifferingOpcode(answer, published))
            } else {
                answer.withUnsafeBytes { (base + Self.responseOffset).copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
                csock_store_release(responseBytes, UInt32(answer.count))
                csock_store_release(responseSeq, seq)
                outcome = .published
            }
            replayed = nil
        }
        csock_fence()
        csock_futex_wake(responseSeq)
        if ended { unmap() } else { start() }
        return outcome
    }
}

extension Dispatcher {
    /// RING: maps the client's memfd (checked as MEM_MAP's files are) and starts serving it. In restart mode the
    /// request word it starts from is journaled (a replay attaches the ring again when the client has moved on), and
    /// during a replay the ring is not served until the replay is over (`SharedRing.resumeAfterReplay`).
    func attachRing(fd: Int32, context: SessionContext) -> Status {
        guard rings[context.connection] == nil, rings.count < SharedRing.limit,
              let server = server as? UnixServer else { return .invalid }
        guard case .success(let mapped) = SharedMemoryFile.map(fd: fd, offset: 0, size: UInt64(SharedRing.size)) else {
            return .invalid
        }
        let ring = SharedRing(base: mapped.pointer, file: FDStore.FileIdentity(device: mapped.file.device, inode: mapped.file.inode),
                              queue: server.queue, dispatcher: self, context: context)
        rings[context.connection] = ring
        if server.persistence?.replaying != true {
            server.persistence?.journalRing(context.connection, seq: ring.answered, request: nil)
            ring.start()
        }
        return .ok
    }
}
