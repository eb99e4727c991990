import CSocketShims
import Dispatch
import Glibc

/// One accepted client: its socket, its registration with the server's poller, its pending output and its session.
/// Confined to the server queue. Reading stops while output is over the bound (back-pressure) and writability is
/// asked for only while output is pending, so an idle connection costs no wake-ups.
final class Connection: @unchecked Sendable {  // invariant: used only on the server queue
    enum State { case open, draining, closed }

    let id: ConnectionID
    let fd: Int32
    let peer: PeerCredentials
    let session: Session
    unowned let server: UnixServer
    let limits: UnixServer.Limits
    /// Restart mode (the fd store): the answers go through this file, and input is received into the journal.
    let outputFile: OutputFile?
    var readSuspended = true
    /// Restart mode: the socket holds only the start of a frame; polled edge-triggered until more comes (InputTake).
    var awaitingFrame = false
    /// A turn of held-back input is queued (`relieve`).
    private var resumeScheduled = false
    private var writeSuspended = true
    /// What the poller was last told; changed only when the wanted interest differs.
    var registered: EventPoller.Interest = []
    var state = State.open
    /// Bytes to send; `output[sent...]` is still pending. In restart mode only what the session pushed to itself
    /// during a call, moved to `outputFile` at its end.
    private var output: [UInt8] = []
    private var sent = 0
    /// The most output this connection ever had pending (tests check the bound with it).
    private(set) var peakPendingOutput = 0
    var bytesReceived: UInt64 = 0
    /// What the server's total of unsent output counts for this connection (kept equal to `pendingOutput`).
    private var accountedOutput = 0
    /// Since when the socket has refused output while some waits; nil when nothing waits or the last send went
    /// through. A client that reads has short stalls; one that never reads, a stall as old as its last read.
    private(set) var stalledSince: ContinuousClock.Instant?

    var pendingOutput: Int { outputFile?.pending ?? (output.count - sent) }
    var isReadSuspended: Bool { readSuspended }

    init(id: ConnectionID, fd: Int32, peer: PeerCredentials, session: Session, server: UnixServer,
         outputFile: OutputFile? = nil) {
        self.id = id
        self.outputFile = outputFile
        self.fd = fd
        self.peer = peer
        self.session = session
        self.server = server
        self.limits = server.limits
    }

    /// Registers with the poller for reading; false if the kernel refused (the caller tears down).
    func start() -> Bool {
        readSuspended = false
        registered = .read
        return server.poller.add(fd, token: id.rawValue, interest: registered)
    }

    /// One poller event. A hang-up while not reading means the peer is gone and nothing it sent is still wanted.
    func handle(_ event: EventPoller.Event) {
        if event.writable { writable() }
        guard state != .closed, event.readable || event.hungUp else { return }
        if !readSuspended {
            if let journal = server.persistence?.activeJournal {
                readIntoJournal(journal, peerDone: event.peerDone)
            } else {
                readAvailable()
            }
        } else if event.hungUp {
            teardown()
        }
    }

    /// Queues unsolicited bytes (events). An events connection whose client stopped reading is cut off at the hard
    /// limit rather than buffered without bound or silently dropped.
    func enqueue(_ bytes: [UInt8]) {
        guard state != .closed else { return }
        if let outputFile {
            // Inside another connection's request: the bytes go to the file now, in the journal's order. Closing
            // waits for the end of that request, as a replay of the journal closes it (the CLOSE record follows).
            server.persistence?.commitReads()
            _ = bytes.withUnsafeBytes { outputFile.append($0) }
            notePeak()
            account()
            if pendingOutput > limits.hardPendingOutput {
                server.queue.async { [self] in
                    guard state != .closed, pendingOutput > limits.hardPendingOutput else { return }
                    server.closedForUnreadEvents(self)
                    teardown(reason: .unreadEvents)
                }
            } else {
                flush()
            }
            return
        }
        output += bytes
        notePeak()
        if pendingOutput > limits.hardPendingOutput {
            server.closedForUnreadEvents(self)
            teardown(reason: .unreadEvents)
            return
        }
        flush()
    }

    /// Stops reading and closes once everything pending has been answered and sent.
    func finishAfterFlush() {
        guard state == .open else { return }
        state = .draining
        suspendRead()
        if pendingOutput == 0 && !session.hasPendingInput { teardown() } else { flush(); relieve() }
    }

    // MARK: reading

    func readAvailable() {
        var budget = limits.readBudgetPerEvent
        let buffer = server.readBuffer
        while budget > 0, state == .open, !readSuspended {
            var received: Int32 = 0
            var truncated: Int32 = 0  // the kernel closed what did not fit; the descriptors kept are still handled
            let n = csock_recv_with_fds(fd, buffer.baseAddress, buffer.count, server.receivedFDs, CSOCK_MAX_FDS, &received,
                &truncated, Int32(MSG_DONTWAIT))
            let count = min(received, CSOCK_MAX_FDS)  // the rest were closed
            var fds: [Int32] = count > 0 ? Array(UnsafeBufferPointer(start: server.receivedFDs, count: Int(count))) : []
            if n < 0 {
                let e = errno
                if e == EINTR { continue }
                if e == EAGAIN || e == EWOULDBLOCK { return }
                teardown()
                return
            }
            if n == 0 {  // the peer shut down its side: answer what it sent, then close
                closeAll(fds)
                finishAfterFlush()
                return
            }
            bytesReceived += UInt64(n)
            budget -= n
            guard session.wantsInput else {  // EVENTS mode: requests are not read; discarding notices a hang-up
                closeAll(fds)
                continue
            }
            let verdict = withSessionOutput { session.receive(UnsafeRawBufferPointer(rebasing: buffer[0..<n]), fds: &fds, output: &$0) }
            closeAll(fds)
            if verdict == .closeAfterFlush {
                finishAfterFlush()
                return
            }
            flush()
            if state == .open, session.hasPendingInput {
                suspendRead()
                relieve()
                return
            }
            if state == .open, pendingOutput > limits.maxPendingOutput { suspendRead() }
            if n < buffer.count && count == 0 { return }  // drained: level-triggered polling reports what comes next
        }
    }

    /// Hands the session a buffer of unsent bytes only. Bytes queued with `enqueue` during the call (a session
    /// pushing an event to itself) go after what the call appended, so no access overlaps.
    func withSessionOutput(_ body: (inout [UInt8]) -> SessionVerdict) -> SessionVerdict {
        compact()
        var buffer: [UInt8] = []
        swap(&buffer, &output)
        let verdict = body(&buffer)
        if !output.isEmpty { buffer += output }
        if let outputFile {
            // The session always starts from an empty buffer: what it answers depends on its input alone, never on
            // how fast the socket drains, so a replay answers exactly the same. The reads it was computed from are
            // journaled first (MemoryReadLog): what an output file holds, a replay computes again byte for byte.
            server.persistence?.commitReads()
            _ = buffer.withUnsafeBytes { outputFile.append($0) }
            output = []
        } else {
            output = buffer
        }
        notePeak()
        account()
        return verdict
    }

    // MARK: writing

    private func writable() {
        flush()
        relieve()
    }

    /// Sends as much pending output as the socket takes, in as few send() calls as it allows.
    func flush() {
        defer { account() }
        if let outputFile {
            guard state != .closed, server.persistence?.replaying != true else { return }
            switch outputFile.flush(to: fd) {
            case .drained: break
            case .wouldBlock:
                if stalledSince == nil { stalledSince = .now }
                resumeWrite()
                return
            case .failed:
                teardown()
                return
            }
            stalledSince = nil
            suspendWrite()
            if state == .draining && !session.hasPendingInput { teardown() }
            return
        }
        while pendingOutput > 0, state != .closed {
            let n = output.withUnsafeBytes { send(fd, $0.baseAddress! + sent, pendingOutput, Int32(MSG_NOSIGNAL) | Int32(MSG_DONTWAIT)) }
            if n > 0 {
                sent += n
                stalledSince = nil
                continue
            }
            let e = errno
            if n < 0 && e == EINTR { continue }
            if n < 0 && (e == EAGAIN || e == EWOULDBLOCK) {
                if stalledSince == nil { stalledSince = .now }
                resumeWrite()
                return
            }
            teardown()  // EPIPE, ECONNRESET: the peer is gone
            return
        }
        guard state != .closed else { return }
        output.removeAll(keepingCapacity: output.capacity <= limits.maxPendingOutput)
        sent = 0
        stalledSince = nil
        suspendWrite()
        if state == .draining && !session.hasPendingInput { teardown() }
    }

    /// Once output is below half the bound: let the session answer requests it held back, one turn's worth per turn
    /// of the queue (the other connections' turns come between, G8), then read again.
    func relieve() {
        guard state != .closed else { return }
        if session.hasPendingInput {
            guard pendingOutput <= limits.maxPendingOutput / 2, !resumeScheduled else { return }
            resumeScheduled = true
            server.queue.async { [weak self] in self?.resumeHeldInput() }
            return
        }
        if state == .open, readSuspended, pendingOutput <= limits.maxPendingOutput / 2 { resumeRead() }
    }

    /// One turn of the input the session held back.
    private func resumeHeldInput() {
        resumeScheduled = false
        if state != .closed, session.hasPendingInput, pendingOutput <= limits.maxPendingOutput / 2 {
            server.persistence?.resumed(id)
            let verdict = withSessionOutput { session.resumeInput(output: &$0) }
            if outputFile != nil { noteUnconsumedInput() }
            if verdict == .closeAfterFlush { state = .draining }
            flush()
        }
        relieve()
    }

    // MARK: lifecycle

    /// Closes now (the queue owns the fd; the poller skips events for an id that is gone) and tells the session
    /// and the server.
    func teardown(reason: CloseReason = .plain) {
        guard state != .closed else { return }
        state = .closed
        server.persistence?.closed(id, reason: reason)
        server.poller.remove(fd)
        if fd >= 0 { close(fd) }
        output = []
        sent = 0
        stalledSince = nil
        account()
        session.closed()
        server.connectionClosed(self)
    }

    func suspendRead() {
        readSuspended = true
        updateInterest()
    }

    private func resumeRead() {
        readSuspended = false
        updateInterest()
    }

    func suspendWrite() {
        writeSuspended = true
        updateInterest()
    }

    func resumeWrite() {
        writeSuspended = false
        updateInterest()
    }

    func updateInterest() {
        guard state != .closed else { return }
        var wanted: EventPoller.Interest = []
        if !readSuspended { wanted.insert(awaitingFrame ? [.read, .edge, .peerShutdown] : .read) }
        if !writeSuspended { wanted.insert(.write) }
        guard wanted != registered else { return }
        registered = wanted
        server.poller.modify(fd, token: id.rawValue, interest: wanted)
    }

    private func compact() {
        guard sent > 0 else { return }
        output.removeFirst(sent)
        sent = 0
    }

    func notePeak() { peakPendingOutput = max(peakPendingOutput, pendingOutput) }

    /// Tells the server how this connection's unsent output changed, for the bound on all connections' output.
    func account() {
        let now = pendingOutput
        guard now != accountedOutput else { return }
        server.pendingOutputChanged(by: now - accountedOutput)
        accountedOutput = now
    }

    func closeAll(_ fds: [Int32]) { for fd in fds where fd >= 0 { close(fd) } }
}
