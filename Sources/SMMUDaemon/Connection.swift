import CSystemd
import Dispatch
import Glibc

/// One accepted client: its socket, its two Dispatch sources, its pending output and its session.
/// Confined to the server queue. The read source is suspended while output is over the bound (back-pressure)
/// and the write source is resumed only while output is pending, so an idle connection costs no wake-ups.
final class Connection: @unchecked Sendable {  // invariant: used only on the server queue
    enum State { case open, draining, closed }

    let id: ConnectionID
    let fd: Int32
    let peer: PeerCredentials
    let session: Session
    private unowned let server: UnixServer
    private let limits: UnixServer.Limits
    private let readSource: DispatchSourceRead
    private let writeSource: DispatchSourceWrite
    private var readSuspended = true
    private var writeSuspended = true
    private(set) var state = State.open
    /// Bytes to send; `output[sent...]` is still pending.
    private var output: [UInt8] = []
    private var sent = 0
    /// The most output this connection ever had pending (tests check the bound with it).
    private(set) var peakPendingOutput = 0
    private(set) var bytesReceived: UInt64 = 0

    var pendingOutput: Int { output.count - sent }
    var isReadSuspended: Bool { readSuspended }

    init(id: ConnectionID, fd: Int32, peer: PeerCredentials, session: Session, server: UnixServer, queue: DispatchQueue) {
        self.id = id
        self.fd = fd
        self.peer = peer
        self.session = session
        self.server = server
        self.limits = server.limits
        readSource = DispatchSource.makeReadSource(fileDescriptor: fd, queue: queue)
        writeSource = DispatchSource.makeWriteSource(fileDescriptor: fd, queue: queue)
        // The fd may be closed only once both sources have let go of it.
        let group = DispatchGroup()
        group.enter()
        group.enter()
        readSource.setCancelHandler { group.leave() }
        writeSource.setCancelHandler { group.leave() }
        group.notify(queue: queue) { close(fd) }
        readSource.setEventHandler { [unowned self] in self.readAvailable() }
        writeSource.setEventHandler { [unowned self] in self.writable() }
    }

    func start() { resumeRead() }

    /// Queues unsolicited bytes (events). An events connection whose client stopped reading is cut off at the hard
    /// limit rather than buffered without bound or silently dropped.
    func enqueue(_ bytes: [UInt8]) {
        guard state != .closed else { return }
        output += bytes
        notePeak()
        if pendingOutput > limits.hardPendingOutput {
            server.log("connection \(id) (pid \(peer.pid)): \(pendingOutput) bytes unread, over the hard limit; closing")
            teardown()
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

    private func readAvailable() {
        var budget = limits.readBudgetPerEvent
        let buffer = server.readBuffer
        var received = [Int32](repeating: -1, count: Int(CSYSTEMD_MAX_FDS))
        while budget > 0, state == .open, !readSuspended {
            var count: Int32 = 0
            let n = received.withUnsafeMutableBufferPointer {
                csystemd_recv(fd, buffer.baseAddress, buffer.count, $0.baseAddress, &count)
            }
            var fds = Array(received.prefix(Int(count)))
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
        }
    }

    /// Hands the session a buffer of unsent bytes only. Bytes queued with `enqueue` during the call (a session
    /// pushing an event to itself) go after what the call appended, so no access overlaps.
    private func withSessionOutput(_ body: (inout [UInt8]) -> SessionVerdict) -> SessionVerdict {
        compact()
        var buffer: [UInt8] = []
        swap(&buffer, &output)
        let verdict = body(&buffer)
        if !output.isEmpty { buffer += output }
        output = buffer
        notePeak()
        return verdict
    }

    // MARK: writing

    private func writable() {
        flush()
        relieve()
    }

    /// Sends as much pending output as the socket takes, in as few send() calls as it allows.
    private func flush() {
        while pendingOutput > 0, state != .closed {
            let n = output.withUnsafeBytes { send(fd, $0.baseAddress! + sent, pendingOutput, Int32(MSG_NOSIGNAL) | Int32(MSG_DONTWAIT)) }
            if n > 0 {
                sent += n
                continue
            }
            let e = errno
            if n < 0 && e == EINTR { continue }
            if n < 0 && (e == EAGAIN || e == EWOULDBLOCK) {
                resumeWrite()
                return
            }
            teardown()  // EPIPE, ECONNRESET: the peer is gone
            return
        }
        guard state != .closed else { return }
        output.removeAll(keepingCapacity: output.capacity <= limits.maxPendingOutput)
        sent = 0
        suspendWrite()
        if state == .draining && !session.hasPendingInput { teardown() }
    }

    /// Once output is below half the bound: let the session answer requests it held back, then read again.
    private func relieve() {
        var rounds = 0
        while state != .closed, session.hasPendingInput, pendingOutput <= limits.maxPendingOutput / 2 {
            rounds += 1
            if rounds > 16 {  // stay fair to other connections; continue on a later turn
                server.queue.async { [weak self] in self?.relieve() }
                return
            }
            let verdict = withSessionOutput { session.resumeInput(output: &$0) }
            if verdict == .closeAfterFlush { state = .draining }
            flush()
        }
        if state == .open, readSuspended, !session.hasPendingInput, pendingOutput <= limits.maxPendingOutput / 2 {
            resumeRead()
        }
    }

    // MARK: lifecycle

    /// Closes now: cancels both sources (the fd closes when both are done) and tells the session and the server.
    func teardown() {
        guard state != .closed else { return }
        state = .closed
        readSource.cancel()
        writeSource.cancel()
        // A suspended (or never activated) source must be resumed to run its cancel handler and be released.
        if readSuspended { readSuspended = false; readSource.resume() }
        if writeSuspended { writeSuspended = false; writeSource.resume() }
        output = []
        sent = 0
        session.closed()
        server.connectionClosed(self)
    }

    private func suspendRead() {
        guard !readSuspended, state != .closed else { return }
        readSuspended = true
        readSource.suspend()
    }

    private func resumeRead() {
        guard readSuspended, state != .closed else { return }
        readSuspended = false
        readSource.resume()
    }

    private func suspendWrite() {
        guard !writeSuspended, state != .closed else { return }
        writeSuspended = true
        writeSource.suspend()
    }

    private func resumeWrite() {
        guard writeSuspended, state != .closed else { return }
        writeSuspended = false
        writeSource.resume()
    }

    private func compact() {
        guard sent > 0 else { return }
        output.removeFirst(sent)
        sent = 0
    }

    private func notePeak() { peakPendingOutput = max(peakPendingOutput, pendingOutput) }

    private func closeAll(_ fds: [Int32]) { for fd in fds where fd >= 0 { close(fd) } }
}
