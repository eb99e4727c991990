import Glibc
import Logging
import PKVM

/// Checkpoints in restart mode (docs/hypervisor-model.md, "Restart and crash survival"): every
/// `checkpointJournalBytes` of journal the daemon writes its whole state to a sealed file and starts a new journal,
/// so a restart replays at most that much input, whatever the daemon's history.
extension Daemon {
    /// The journal bytes after which a checkpoint is taken. Replay runs at roughly the speed requests are served, so
    /// this bounds a restart's replay to well under a second of input; a checkpoint of a busy Tegra234 state costs a
    /// few milliseconds (the log's "checkpoint" lines and scripts/systemd-restart-test.sh print it).
    static let checkpointJournalBytes = 4 << 20

    /// The core in the state the taken-over checkpoint holds, and the sessions to attach to their sockets. Throws
    /// when the checkpoint cannot be restored (damaged, or taken under another configuration).
    func restoreCore(_ checkpoint: Checkpoint, stored: [FDStore.Entry],
                     audit: JournalAuditSink) throws(StateImageError) -> (DaemonCore, RestoredCheckpoint) {
        let hypervisorImage = try HypervisorStateImage(decoding: checkpoint.hypervisor)
        let dispatcherImage = try DispatcherStateImage(decoding: checkpoint.dispatcher)
        var byIdentity: [FDStore.FileIdentity: Int32] = [:]
        for entry in stored { byIdentity[entry.identity] = entry.fd }
        // The epoch a client may have seen last is in its page: the restored epoch continues after it.
        let epochFloor = Dispatcher.epochFloor(pageFDs: checkpoint.connections.compactMap { $0.epochPage.flatMap { byIdentity[$0] } })
        // Client memory is mapped private until the journal after the checkpoint has been replayed (ReplayMappings).
        ReplayMappings.begin()
        // RAM is the stored files' (restart mode's RAMFiles): live, so ahead of the checkpoint; the journal's replay
        // writes the same bytes again in the same order. An image that carries RAM (an older checkpoint) puts it into
        // them instead.
        let ramFiles = try self.ramFiles(stored: stored, image: hypervisorImage)
        let core = try DaemonCore.restore(configuration, audit: audit, image: hypervisorImage, epochFloor: epochFloor,
                                          ramFiles: ramFiles) {
            m throws(StateImageError) in
            guard let fd = byIdentity[FDStore.FileIdentity(device: m.file.device, inode: m.file.inode)] else {
                throw .sharedMemoryUnavailable(base: m.range.base, reason: "its file is not in the fd store")
            }
            switch SharedMemoryFile.map(fd: fd, offset: m.file.offset, size: m.file.size) {
            case .success(let file): return SharedMemoryAttachment(pointer: file.pointer, release: { file.unmap() })
            case .failure(let why): throw .sharedMemoryUnavailable(base: m.range.base, reason: "\(why)")
            }
        }
        let sessions = try core.dispatcher.restore(dispatcherImage)
        if let a = dispatcherImage.audit { audit.restore(a) }
        return (core, RestoredCheckpoint(checkpoint: checkpoint, image: dispatcherImage, sessions: sessions,
                                         dispatcher: core.dispatcher))
    }

    /// The stored RAM files for a checkpoint; nil (fresh RAM) only when the image carries RAM itself.
    private func ramFiles(stored: [FDStore.Entry], image: HypervisorStateImage) throws(StateImageError) -> [Int32]? {
        let policy: HypervisorPolicy
        do { policy = try DaemonCore.policy(configuration) } catch {
            throw .configurationMismatch(reason: "the configuration cannot be built: \(error)")
        }
        if let files = RAMFiles.stored(stored, policy: policy) { return files }
        guard image.memory != nil else {
            throw .corrupt(reason: "the checkpoint leaves RAM to the stored RAM files, and they are not all stored")
        }
        ramFilesToStore = RAMFiles.create(policy)
        return ramFilesToStore
    }

    /// Takes a checkpoint when the journal has passed the bound; called at a request boundary (after a batch of
    /// input). On any failure the daemon stays on its journal (which still fills to its capacity).
    /// `force`: take one whatever the journal holds (at a fresh start, so that every journal follows a checkpoint
    /// that records the configuration it was taken under).
    func checkpointIfDue(core: DaemonCore, server: UnixServer, audit: JournalAuditSink, force: Bool = false) {
        guard let persistence = server.persistence, !persistence.disabled, !persistence.replaying,
              !server.isShuttingDown, force || persistence.journal.committed >= Self.checkpointJournalBytes else { return }
        let start = ContinuousClock.now
        let startCPU = Self.threadCPUTime()
        let generation = persistence.generation + 1
        guard let connections = server.checkpointConnections(epochFiles: core.dispatcher.epochPages?.files ?? [:],
                                                             rings: core.dispatcher.rings) else {
            return
        }
        let sessions = server.openConnections.sorted { $0.id.rawValue < $1.id.rawValue }.map { ($0.session, [UInt8]()) }
        let dispatcherImage = core.dispatcher.stateImage(sessions: sessions, serverCounters: server.counters, audit: audit)
        let dispatcherCaptured = ContinuousClock.now
        let hypervisorImage = core.hypervisor.checkpointImage()
        let captured = ContinuousClock.now
        let checkpoint = Checkpoint(generation: generation, nextConnection: server.nextID, connections: connections,
                                    hypervisor: hypervisorImage.encoded(), dispatcher: dispatcherImage.encoded())
        let encoded = ContinuousClock.now
        let encodedCPU = Self.threadCPUTime()
        let fd: Int32
        let next: RestartJournal
        do {
            fd = try checkpoint.sealedFile()
            next = try RestartJournal.create()
        } catch {
            logger.error("checkpoint: \(error); staying on journal generation \(persistence.generation)")
            return
        }
        let journaled = persistence.journal.committed
        let reads = persistence.readsBytes
        let moved = persistence.advance(checkpoint: fd, journal: next)
        close(fd)
        let end = ContinuousClock.now
        if moved {
            logger.info("checkpoint \(generation): \(checkpoint.hypervisor.count + checkpoint.dispatcher.count) bytes, \(connections.count) connection(s), after \(journaled) journal bytes (\(reads) of memory reads); capture and encode \(ms(encoded - start)) ms (capture \(ms(captured - start)) ms, of which the dispatcher's \(ms(dispatcherCaptured - start)) ms; \(hypervisorImage.memory?.count ?? 0) RAM pages; \(ms(encodedCPU - startCPU)) ms of CPU), file and store \(ms(end - encoded)) ms (\(ms(Self.threadCPUTime() - encodedCPU)) ms of CPU)")
        }
    }

    /// This thread's CPU time: what a checkpoint costs, apart from waiting for a core on a loaded machine.
    static func threadCPUTime() -> Duration {
        var t = timespec()
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t)
        return .seconds(t.tv_sec) + .nanoseconds(t.tv_nsec)
    }

    private func ms(_ d: Duration) -> String {
        let (s, a) = d.components
        return String(format: "%.2f", Double(s) * 1000 + Double(a) / 1e15)
    }
}
