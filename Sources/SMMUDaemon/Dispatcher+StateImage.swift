#if canImport(Glibc)
import Glibc
#endif
import PKVM
import WireProtocol

/// Capturing and applying the daemon layer's state image (docs/state-image.md, "Daemon layer"). Pure: no
/// descriptor is touched here; the restart path owns sockets and files and hands them back by session id.
extension Dispatcher {
    /// The daemon layer's state now.
    /// - Parameters:
    ///   - sessions: every open connection's session with its unsent output (the server's table: the dispatcher
    ///     keeps none).
    ///   - serverCounters: the server's admission counters.
    ///   - audit: the journal sink, when the daemon has one.
    public func stateImage(sessions: [(session: Session, output: [UInt8])], serverCounters: ConnectionCounters,
                           audit: JournalAuditSink?) -> DispatcherStateImage {
        var operations: [DispatcherStateImage.OperationCount] = []
        let statuses = DispatcherStatistics.statuses
        for (slot, counts) in stats.operations.enumerated() {
            for (i, n) in counts.enumerated() where n != 0 {
                operations.append(.init(roleSlot: slot, opcode: UInt8(i / statuses), status: UInt32(i % statuses), count: n))
            }
        }
        let images = sessions.compactMap { s in (s.session as? DispatcherSession)?.stateImage(output: s.output) }
        return DispatcherStateImage(
            operations: operations, connectionsOpened: stats.connectionsOpened, connectionsOpen: stats.connectionsOpen,
            unsupported: stats.unsupported, malformed: stats.malformed, serverCounters: serverCounters,
            interruptLines: events.lastSentLines, sessions: images.sorted { $0.id < $1.id },
            audit: audit?.stateImage(), finalizedBy: finalizedBy)
    }

    /// Applies the image's counters and EVENTS state to this (fresh) dispatcher, whose hypervisor has been restored,
    /// and returns one session per recorded connection, each with the output it still has to send. The caller
    /// attaches each to its connection's socket, sets the server's counters (`image.serverCounters`), restores the
    /// audit sink (`JournalAuditSink.restore`) and attaches again what needs a file: `reattachEpochPage` and
    /// `reattachRing` for the sessions that say so. Refused (nothing changed) when the image does not fit the
    /// hypervisor: another number of windows or interrupt lines, or MEM_MAPs the hypervisor does not have; and refused
    /// (`configurationMismatch`) when a session holds a role the configuration no longer grants its peer.
    public func restore(_ image: DispatcherStateImage) throws(StateImageError) -> [(session: Session, output: [UInt8])] {
        let mapped = Set(hypervisor.sharedRanges.map(\.base))
        let claimed = image.sessions.flatMap(\.mappedBases)
        guard Set(claimed) == mapped, claimed.count == mapped.count else {
            throw .corrupt(reason: "the sessions' MEM_MAPs are not the hypervisor's client mappings")
        }
        // A role is kept only while the configuration still grants it to that peer (HELLO's check, again).
        for s in image.sessions {
            if let role = s.role, !roles.permits(role, s.peer) {
                throw .configurationMismatch(reason: "session #\(s.id) (uid \(s.peer.uid)) holds role \(role), which the configuration no longer grants it")
            }
        }
        guard image.connectionsOpen == image.sessions.count else {
            throw .corrupt(reason: "\(image.connectionsOpen) connections counted open, \(image.sessions.count) sessions")
        }
        let subscribers = image.sessions.filter(\.subscribed).map { ConnectionID(rawValue: $0.id) }
        guard events.restore(subscribers: subscribers, lines: image.interruptLines) else {
            throw .corrupt(reason: "the interrupt lines do not match the hypervisor's windows")
        }
        var restored = DispatcherStatistics()
        for o in image.operations where o.roleSlot < restored.operations.count && Int(o.status) < DispatcherStatistics.statuses {
            restored.operations[o.roleSlot][Int(o.opcode) * DispatcherStatistics.statuses + Int(o.status)] = o.count
        }
        restored.connectionsOpened = image.connectionsOpened
        restored.connectionsOpen = image.connectionsOpen
        restored.unsupported = image.unsupported
        restored.malformed = image.malformed
        stats = restored
        finalizedBy = image.finalizedBy
        return image.sessions.map { (DispatcherSession(restoring: $0, dispatcher: self), $0.output) }
    }

    /// Shares a restored session's epoch page again (its DMA_EPOCH file): the page shows the current epoch at once.
    public func reattachEpochPage(fd: Int32, session: Session) -> Bool {
        guard let s = session as? DispatcherSession else { return false }
        return attachEpochPage(fd: fd, connection: s.connection).0 == .ok
    }

    /// Serves a restored session's ring (its RING file) again. Needs the server set (`makeSession` or `adopt`).
    /// `answered`: the request word the ring was answered up to; `ended`: a malformed frame had ended it.
    public func reattachRing(fd: Int32, session: Session, answered: UInt32? = nil, ended: Bool = false) -> Bool {
        guard let s = session as? DispatcherSession, attachRing(fd: fd, context: s.sessionContext) == .ok else { return false }
        let ring = rings[s.sessionContext.connection]
        if let answered { ring?.replay(seq: answered, request: nil, ended: ended) }
        return true
    }

    /// The highest epoch any device connection may have seen: the largest value in the epoch pages they kept (each
    /// `fd` a DMA_EPOCH file, read at offset 0). Pass it as `Hypervisor.restore`'s `epochFloor`, before the pages are
    /// attached again: changes after the last image may have advanced the epoch past the image's.
    public static func epochFloor(pageFDs: [Int32]) -> UInt64 {
        var highest: UInt64 = 0
        for fd in pageFDs {
            var value: UInt64 = 0
            if pread(fd, &value, 8, 0) == 8 { highest = max(highest, UInt64(littleEndian: value)) }
        }
        return highest
    }

    /// The server restored sessions belong to (what `makeSession` records for a new one).
    public func adopt(server: ServerHandle) { self.server = server }
}
