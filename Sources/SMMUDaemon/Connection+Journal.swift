import CSocketShims
import Glibc

/// Why a connection was closed, as the restart journal records it (STATS counts some of them).
enum CloseReason: UInt32 {
    case plain = 0, evicted, helloTimeout, output, unreadEvents
}

// Restart mode: a connection's input is received straight into the restart journal (see RestartJournal), and a
// replay of the journal drives the connection exactly as the live bytes did.
extension Connection {
    /// Reads what the socket holds into the journal, one peek-then-receive per chunk, and hands each chunk to the
    /// session after it is committed: a request is in the journal before anything it changes.
    func readIntoJournal(_ journal: RestartJournal) {
        var budget = limits.readBudgetPerEvent
        let scratch = journal.scratch
        while budget > 0, state == .open, !readSuspended {
            var count: Int32 = 0
            var truncated: Int32 = 0
            let n = csock_recv_with_fds(fd, scratch.baseAddress, min(scratch.count, limits.readChunk), server.receivedFDs,
                                        CSOCK_MAX_FDS, &count, &truncated, Int32(MSG_PEEK) | Int32(MSG_DONTWAIT))
            let peeked: [Int32] = count > 0 ? Array(UnsafeBufferPointer(start: server.receivedFDs, count: Int(min(count, CSOCK_MAX_FDS)))) : []
            if n < 0 {
                let e = errno
                if e == EINTR { continue }
                if e == EAGAIN || e == EWOULDBLOCK { return }
                teardown()
                return
            }
            if n == 0 {
                finishAfterFlush()
                return
            }
            // Descriptors are in systemd's store before the bytes that carry them are consumed: a replay finds them.
            let files = peeked.compactMap(FDStore.FileIdentity.init(fd:))
            if !peeked.isEmpty { server.persistence?.storeFiles(peeked, connection: id) }
            closeAll(peeked)
            guard let target = journal.beginData(connection: id.rawValue, files: files, count: n) else {
                server.persistence?.journalFull()
                readAvailable()
                return
            }
            var m = -1
            while m < 0 {
                m = csock_recv_with_fds(fd, target.baseAddress, n, server.receivedFDs, CSOCK_MAX_FDS, &count, &truncated,
                                        Int32(MSG_DONTWAIT))
                if m < 0 && errno != EINTR { break }
            }
            var fds: [Int32] = count > 0 ? Array(UnsafeBufferPointer(start: server.receivedFDs, count: Int(min(count, CSOCK_MAX_FDS)))) : []
            guard m > 0 else {  // the peeked bytes vanished: only a reset connection does that
                closeAll(fds)
                teardown()
                return
            }
            journal.commitData(received: m)
            bytesReceived += UInt64(m)
            budget -= m
            if !deliver(UnsafeRawBufferPointer(rebasing: target[0..<m]), fds: &fds) { return }
            if m < n || m < limits.readChunk && count == 0 { return }
        }
    }

    /// Hands received bytes to the session, as a live read does; false when reading this connection stops here.
    private func deliver(_ bytes: UnsafeRawBufferPointer, fds: inout [Int32]) -> Bool {
        guard session.wantsInput else {  // EVENTS mode: requests are not read
            closeAll(fds)
            return true
        }
        let verdict = withSessionOutput { session.receive(bytes, fds: &fds, output: &$0) }
        closeAll(fds)
        if verdict == .closeAfterFlush {
            finishAfterFlush()
            return false
        }
        flush()
        if state == .open, session.hasPendingInput {
            suspendRead()
            relieve()
            return false
        }
        if state == .open, pendingOutput > limits.maxPendingOutput { suspendRead() }
        return true
    }

    // MARK: replay

    /// A DATA record: the session gets the bytes and descriptors the live read gave it.
    func replayReceive(_ bytes: UnsafeRawBufferPointer, fds: [Int32]) {
        var fds = fds
        guard state != .closed, session.wantsInput else {
            closeAll(fds)
            return
        }
        let verdict = withSessionOutput { session.receive(bytes, fds: &fds, output: &$0) }
        closeAll(fds)
        if verdict == .closeAfterFlush, state == .open { state = .draining }
    }

    /// A RESUME record.
    func replayResume() {
        guard state != .closed else { return }
        let verdict = withSessionOutput { session.resumeInput(output: &$0) }
        if verdict == .closeAfterFlush { state = .draining }
    }

    /// A CLOSE record: the session ends as it did; the socket (if systemd still had it) is closed.
    func replayClose() {
        guard state != .closed else { return }
        state = .closed
        if fd >= 0 { close(fd) }
        session.closed()
        server.connectionClosed(self)
    }

    /// After the replay: polls the socket again and sends what the peer has not got. False when the connection is
    /// gone (its socket was not in the store: the peer hung up while no daemon ran).
    func resumeAfterReplay() -> Bool {
        guard state != .closed else { return false }
        guard fd >= 0 else {
            teardown()
            return false
        }
        if let outputFile {
            outputFile.finishReplay()
            let check = outputFile.replayCheck
            if let problem = check.problem {
                // Sending on would corrupt the peer's stream: it sees its connection closed instead.
                server.replayMisaligned(self, problem)
                teardown()
                return false
            }
            if let first = check.firstDifferent {
                // Expected for answers that carry the translation epoch (DMA_CACHED, DMA_PREFETCH, DMA_EPOCH), which a
                // restore moves on, and for STATS; the peer gets the previous process's.
                server.logger.info("restore: \(id): \(check.different) replayed answer(s) of the same length differ from what the previous process wrote, the first (opcode 0x\(String(first.opcode, radix: 16))) at byte \(first.offset); the peer gets the previous process's")
            }
        }
        readSuspended = state == .draining || session.hasPendingInput || pendingOutput > limits.maxPendingOutput
        registered = readSuspended ? [] : .read
        guard server.poller.add(fd, token: id.rawValue, interest: registered) else {
            teardown()
            return false
        }
        account()
        flush()
        if state != .closed { relieve() }
        return state != .closed
    }
}
