import Foundation
import Logging

// Restart mode (config `fd_store: true`, under systemd): the daemon's state survives `systemctl restart` and crashes
// through systemd's fd store. See ServerPersistence and docs/hypervisor-model.md, "Restart and crash survival".
extension Daemon {
    /// Restart mode is on: configured, a service manager to keep descriptors, and (systemd 254 and later say so in
    /// $FDSTORE) a store that keeps any.
    var restartMode: Bool {
        let environment = ProcessInfo.processInfo.environment
        return configuration.fdStore && environment["NOTIFY_SOCKET"] != nil && environment["FDSTORE"].map { (Int($0) ?? 0) > 0 } != false
    }

    /// What a previous process left in the fd store: the newest usable generation (checkpoint and journal) and the
    /// connections' descriptors. Nil when there is nothing to take over; whatever was stored is then closed and
    /// removed (a crash before any journal was stored leaves only connections no state describes).
    func takeOverStore(_ stored: [FDStore.Entry]) -> ServerPersistence.TakeOver? {
        guard restartMode, !stored.isEmpty else {
            for entry in stored { close(entry.fd) }
            return nil
        }
        var problems: [String] = []
        let found = stored.contains { RestartGenerations.parse($0.name) != nil }
            ? ServerPersistence.takeOver(stored: stored, store: SystemdFDStore(), problems: &problems) : nil
        for p in problems { logger.warning("fd store: \(p)") }
        guard let found else {
            logger.error("fd store: \(stored.count) descriptor(s) but no usable journal: starting afresh, stored connections are closed")
            discard(stored.filter { RestartGenerations.parse($0.name) == nil })
            return nil
        }
        return found
    }

    /// In restart mode, the files RAM is backed by (RAMFiles): the stored ones when a generation without a checkpoint
    /// is taken over (its journal is replayed over them), else new ones that `setUpRestart` stores. Nil outside
    /// restart mode (anonymous RAM), or when no memfd can be made.
    func restartRAMFiles(stored: [FDStore.Entry]?) throws(DaemonCore.BuildError) -> [Int32]? {
        guard restartMode else { return nil }
        let policy = try DaemonCore.policy(configuration)
        if let stored, let files = RAMFiles.stored(stored, policy: policy) { return files }
        ramFilesToStore = RAMFiles.create(policy)
        if ramFilesToStore == nil { logger.warning("restart mode: no memfd for RAM (errno \(errno)); checkpoints copy RAM") }
        return ramFilesToStore
    }

    /// Stores the RAM files this process made (before the barrier that follows): once, so every later checkpoint
    /// can leave RAM out.
    private func storeNewRAMFiles() {
        guard let fds = ramFilesToStore else { return }
        RAMFiles.store(fds)
        for fd in fds { close(fd) }
        ramFilesToStore = nil
    }

    /// Closes stored descriptors and removes their names from the store.
    func discard(_ entries: [FDStore.Entry]) {
        for entry in entries { close(entry.fd) }
        for name in Set(entries.map(\.name)) { FDStore.remove(name: name) }
    }

    /// Replays the taken-over journal (after the checkpoint's state, if any, was installed) and serves every stored
    /// connection on (true: state was restored); or, with nothing taken over, starts journal generation 0 and stores it.
    func setUpRestart(server: UnixServer, core: DaemonCore, audit: JournalAuditSink,
                      takeOver: ServerPersistence.TakeOver?, restored: RestoredCheckpoint?) -> Bool {
        guard restartMode else { return false }
        if let t = takeOver {
            server.persistence = ServerPersistence(journal: t.journal, generation: t.generation, logger: logger)
            server.persistence?.journalReads(of: core.hypervisor.memory)
            if ramFilesToStore != nil {
                storeNewRAMFiles()
                if !FDStore.barrier() { logger.warning("fd store: no BARRIER=1 answer; RAM may not survive a crash") }
            }
            let start = ContinuousClock.now
            audit.replaying = true
            do {
                let report = try server.restore(journal: t.journal, stored: t.others, checkpoint: restored) {
                    _ = core.dispatcher.finalize()
                }
                audit.replaying = false
                logger.info("restored from the fd store: generation \(t.generation)\(t.checkpoint == nil ? " (no checkpoint)" : ""), \(report.records) journal records replayed, \(ContinuousClock.now - start) in all; \(report.connections) connection(s) served on, \(report.adopted) adopted, \(report.gone) gone, \(report.remappedClientMemory) client mapping(s), \(report.ringsResumed) ring(s) (\(report.ringAnswersPublished) answer(s) published that the previous process had not); \(core.hypervisor.lifecycle)")
                if report.uncoveredReads + report.mismatchedReads > 0 {
                    logger.error("the replay diverged: \(report.uncoveredReads) memory read(s) the journal did not hold, \(report.mismatchedReads) it held for another address")
                }
                return true
            } catch {
                logger.error("the stored restart journal cannot be replayed (\(error)): starting afresh, stored connections are closed")
                discard(t.others)
                FDStore.remove(name: RestartGenerations.name(.journal, t.generation))
                FDStore.remove(name: RestartGenerations.name(.checkpoint, t.generation))
                // The core may be half replayed: a new process starts clean (Restart=on-failure).
                exit(1)
            }
        }
        do {
            let journal = try RestartJournal.create()
            storeNewRAMFiles()
            FDStore.store([journal.fd], name: RestartGenerations.name(.journal, 0), poll: false)
            if !FDStore.barrier() { logger.warning("fd store: no BARRIER=1 answer; is FileDescriptorStoreMax= set?") }
            server.persistence = ServerPersistence(journal: journal, logger: logger)
            server.persistence?.journalReads(of: core.hypervisor.memory)
            logger.info("restart mode: journal stored in systemd's fd store")
        } catch {
            logger.error("restart mode off: \(error)")
        }
        return false
    }
}
