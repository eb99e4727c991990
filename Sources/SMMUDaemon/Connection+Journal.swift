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
    /// session after it is committed: a request is in the journal before anything it changes. Only whole frames are
    /// received, at most a turn's worth (InputTake): the rest stays in the socket, so a checkpoint copies no input.
    /// `peerDone`: the peer sent its last byte (a partial frame then is all there will be: it is read, as before).
    func readIntoJournal(_ journal: RestartJournal, peerDone: Bool = false) {
        var budget = limits.readBudgetPerEvent
        let scratch = journal.scratch
        var finishing = false  // a frame is being received in several pieces: it is finished in this turn
        while state == .open, finishing || (budget > 0 && !readSuspended) {
            var count: Int32 = 0
            var truncated: Int32 = 0
            let n = csock_recv_with_fds(fd, scratch.baseAddress, min(scratch.count, limits.readChunk), server.receivedFDs,
                                        CSOCK_MAX_FDS, &count, &truncated, Int32(MSG_PEEK) | Int32(MSG_DONTWAIT))
            var peeked: [Int32] = count > 0 ? Array(UnsafeBufferPointer(start: server.receivedFDs, count: Int(min(count, CSOCK_MAX_FDS)))) : []
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
            let take = peerDone || !session.wantsInput ? InputTake(bytes: n) : measureTake(peeked: UnsafeRawBufferPointer(rebasing: scratch[0..<n]))
            awaitFrame(take.bytes == 0)
            guard take.bytes > 0 else {
                closeAll(peeked)
                return
            }
            finishing = take.continues
            if take.bytes < n && !peeked.isEmpty {
                // The descriptors may come with bytes after the take: peek again, as far as recv() will read.
                closeAll(peeked)
                _ = csock_recv_with_fds(fd, scratch.baseAddress, take.bytes, server.receivedFDs, CSOCK_MAX_FDS, &count,
                                        &truncated, Int32(MSG_PEEK) | Int32(MSG_DONTWAIT))
                peeked = count > 0 ? Array(UnsafeBufferPointer(start: server.receivedFDs, count: Int(min(count, CSOCK_MAX_FDS)))) : []
            }
            let peekedCount = n, taken = take.bytes
            // Descriptors are in systemd's store before the bytes that carry them are consumed: a replay finds them.
            let files = peeked.compactMap(FDStore.FileIdentity.init(fd:))
            if !peeked.isEmpty { server.persistence?.storeFiles(peeked, connection: id) }
            closeAll(peeked)
            guard let target = journal.beginData(connection: id.rawValue, files: files, count: taken) else {
                server.persistence?.journalFull()
                readAvailable()
                return
            }
            var m = -1
            while m < 0 {
                m = csock_recv_with_fds(fd, target.baseAddress, taken, server.receivedFDs, CSOCK_MAX_FDS, &count, &truncated,
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
            let delivered = deliver(UnsafeRawBufferPointer(rebasing: target[0..<m]), fds: &fds)
            noteUnconsumedInput()
            if finishing { continue }
            // Stop at what the turn did not take (the rest waits for the next poll round, after the other ready
            // connections, as held-back input waits for a later turn) or when the socket is drained.
            if !delivered || m < taken || taken < peekedCount || taken < limits.readChunk && count == 0 { return }
        }
    }

    /// How much of the peeked bytes to receive: whole frames, a turn's worth, and more than one frame only while
    /// all connections' input held back stays under its bound (`ServerPersistence.maxHeldInput`).
    private func measureTake(peeked: UnsafeRawBufferPointer) -> InputTake {
        let room = server.persistence?.heldInputRoom(for: id, chunk: limits.readChunk) ?? limits.readChunk
        return session.withUnconsumedInput { unconsumed, skip in
            var take = InputTake.measure(unconsumed: unconsumed, skip: skip, peeked: peeked, queued: peeked.count,
                                         maxCost: TurnBudget.units, maxBytes: room)
            // What the socket holds beyond the peek matters only when no whole frame is in it: ask then only.
            if take.bytes == 0, case let queued = Int(csock_queued(fd)), queued > peeked.count {
                take = InputTake.measure(unconsumed: unconsumed, skip: skip, peeked: peeked, queued: queued,
                                         maxCost: TurnBudget.units, maxBytes: room)
            }
            // No whole frame, and the rest is not in the socket yet: the sender may be blocked until this part is read
            // (a small SO_SNDBUF holds only a few small writes, whatever their bytes), so the part is held in the
            // session while all connections' held input stays under its bound; past it, it waits in the socket.
            if take.bytes == 0, server.persistence?.mayHold(id, bytes: unconsumed.count + peeked.count) == true {
                return InputTake(bytes: peeked.count)
            }
            return take
        }
    }

    /// Polls edge-triggered while the socket holds only the start of a frame (level-triggered polling would report
    /// those bytes without end), level-triggered otherwise.
    private func awaitFrame(_ waiting: Bool) {
        guard awaitingFrame != waiting else { return }
        awaitingFrame = waiting
        updateInterest()
    }

    /// Tells the persistence how much input the session holds unconsumed (what a checkpoint would carry).
    func noteUnconsumedInput() {
        server.persistence?.noteHeldInput(id, bytes: session.withUnconsumedInput { bytes, _ in bytes.count })
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
        noteUnconsumedInput()
        if verdict == .closeAfterFlush, state == .open { state = .draining }
    }

    /// A RESUME record.
    func replayResume() {
        guard state != .closed else { return }
        let verdict = withSessionOutput { session.resumeInput(output: &$0) }
        noteUnconsumedInput()
        if verdict == .closeAfterFlush { state = .draining }
    }

    /// A CLOSE record: the session ends as it did; the socket (if systemd still had it) is closed.
    func replayClose() {
        guard state != .closed else { return }
        server.persistence?.noteHeldInput(id, bytes: 0)
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
