import Dispatch
import Glibc
import Logging

// The bounds that keep one client, or many, from taking the daemon's descriptors or memory (G8).
//
// Descriptors: at most `maxConnections` are open. A connection that has not been greeted serves nobody yet, so at
// the cap the oldest un-greeted one makes room for the newcomer (the oldest has had the longest to say HELLO, and a
// flood of idle connections then only ever competes with itself); only when every open connection is greeted is the
// newcomer closed at once. Un-greeted connections are also closed at the HELLO deadline.
//
// Memory: each connection's unsent output is bounded (back-pressure, the events hard limit), and so is the sum over
// all of them. Past `maxTotalPendingOutput` the server closes connections until the sum is back under it: first those
// not draining (the socket took nothing for `stallThreshold` while output waited), largest first; only if none is,
// the largest of those that are. A client that reads its answers keeps little unsent output and is not stalled, so
// it is served on; the peers that never read are the ones closed.
extension UnixServer {
    // MARK: the cap

    /// Makes room for a newcomer at the cap; false when every open connection is greeted (the newcomer is refused).
    func admit(_ peer: PeerCredentials) -> Bool {
        guard openConnections.count >= limits.maxConnections else { return true }
        if evictOldestUngreeted(reason: "connection cap \(limits.maxConnections) reached") { return true }
        counters.refused += 1
        persistence?.refused()
        notice(.refused, "connection cap \(limits.maxConnections) reached and every connection is greeted: refusing pid \(peer.pid) uid \(peer.uid)")
        return false
    }

    /// Closes the oldest connection not yet greeted; false when there is none.
    func evictOldestUngreeted(reason: String) -> Bool {
        guard let id = ungreeted.popOldest(isUngreeted: isUngreeted), let victim = connection(id) else { return false }
        counters.evicted += 1
        notice(.evicted, "\(reason): closing \(id) (pid \(victim.peer.pid)), not greeted yet")
        victim.teardown(reason: .evicted)
        return true
    }

    /// Out of descriptors with nobody to evict: frees the reserve, accepts one waiting client and closes it (it sees
    /// the connection closed instead of hanging in the backlog), and takes the reserve back. False when nothing was
    /// accepted that way.
    func refuseWithReserveDescriptor() -> Bool {
        if reserveFD < 0 { reserveFD = open("/dev/null", O_RDONLY | O_CLOEXEC) }  // lost to a race last time
        guard reserveFD >= 0 else { return false }
        close(reserveFD)
        let fd = acceptOne()
        if fd >= 0 { close(fd) }
        reserveFD = open("/dev/null", O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return false }
        counters.refused += 1
        persistence?.refused()
        notice(.refused, "out of descriptors and every connection is greeted: refusing a client")
        return true
    }

    // MARK: the HELLO deadline

    func awaitHello(_ id: ConnectionID) {
        ungreeted.append(id, deadline: .now() + limits.helloDeadline.timeInterval)
        scheduleReaper()
    }

    /// One timer at a time, for the oldest un-greeted connection's deadline.
    private func scheduleReaper() {
        guard !reaperScheduled, let deadline = ungreeted.nextDeadline(isUngreeted: isUngreeted) else { return }
        reaperScheduled = true
        queue.asyncAfter(deadline: deadline) { [weak self] in self?.reapExpired() }
    }

    private func reapExpired() {
        reaperScheduled = false
        let now = DispatchTime.now()
        while let id = ungreeted.popExpired(now: now, isUngreeted: isUngreeted), let victim = connection(id) {
            counters.helloTimeouts += 1
            notice(.helloTimeout, "\(id) (pid \(victim.peer.pid)) sent no accepted HELLO within \(limits.helloDeadline): closing")
            victim.teardown(reason: .helloTimeout)
        }
        scheduleReaper()
    }

    private func isUngreeted(_ id: ConnectionID) -> Bool {
        guard let c = connection(id) else { return false }
        return c.state != .closed && !c.session.isGreeted
    }

    // MARK: the output bound

    /// Called by a connection whenever its unsent output changes. The check runs after the current turn, so no
    /// connection is closed from inside its own read or write.
    func pendingOutputChanged(by delta: Int) {
        totalPendingOutput += delta
        guard totalPendingOutput > limits.maxTotalPendingOutput, !outputCheckScheduled else { return }
        outputCheckScheduled = true
        queue.async { [weak self] in self?.enforceOutputBound() }
    }

    func enforceOutputBound() {
        outputCheckScheduled = false
        let now = ContinuousClock.now
        func rank(_ c: Connection) -> (notDraining: Int, unsent: Int, age: UInt64) {
            let stalled = c.stalledSince.map { now - $0 >= limits.stallThreshold } ?? false
            return (stalled ? 1 : 0, c.pendingOutput, UInt64.max - c.id.rawValue)
        }
        while totalPendingOutput > limits.maxTotalPendingOutput {
            // Not draining first, then the most unsent bytes, then the older connection.
            let victim = openConnections.filter { $0.pendingOutput > 0 }.max { rank($0) < rank($1) }
            guard let victim else { break }
            counters.closedForOutput += 1
            notice(.output, "unsent output of all connections \(totalPendingOutput) bytes is over \(limits.maxTotalPendingOutput): closing \(victim.id) (pid \(victim.peer.pid)), \(victim.pendingOutput) bytes unsent")
            victim.teardown(reason: .output)
        }
    }

    /// An events connection whose client stopped reading passed the per-connection hard limit (it is closed).
    func closedForUnreadEvents(_ connection: Connection) {
        counters.closedForUnreadEvents += 1
        notice(.unreadEvents, "connection \(connection.id) (pid \(connection.peer.pid)): \(connection.pendingOutput) bytes unread, over the hard limit; closing")
    }

    func notice(_ kind: ThrottledNotices.Kind, _ message: String) {
        guard let suppressed = notices.allow(kind, now: .now) else { return }
        logger.warning("\(message)\(suppressed > 0 ? " (\(suppressed) more like it in the last second not logged)" : "")")
    }
}

/// At most one log line per second per kind of closing: a client that opens connections in a loop must not be able
/// to flood the log (the unit lifts journald's rate limit for the audit's sake).
struct ThrottledNotices {
    enum Kind: Hashable { case refused, evicted, helloTimeout, output, unreadEvents }
    private var last: [Kind: (at: ContinuousClock.Instant, suppressed: Int)] = [:]

    /// The number of lines suppressed since the last one when this one may be logged, else nil.
    mutating func allow(_ kind: Kind, now: ContinuousClock.Instant) -> Int? {
        if let entry = last[kind], now - entry.at < .seconds(1) {
            last[kind]?.suppressed += 1
            return nil
        }
        let suppressed = last[kind]?.suppressed ?? 0
        last[kind] = (now, 0)
        return suppressed
    }
}
