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

    /// Opens the stored journal and replays it (true: state was restored), or starts a new journal and stores it.
    /// Anything else stored without a journal (a crash before the journal was stored) is closed.
    func setUpRestart(server: UnixServer, core: DaemonCore, audit: JournalAuditSink, stored: [FDStore.Entry]) -> Bool {
        guard restartMode else {
            for entry in stored { close(entry.fd) }
            return false
        }
        if let entry = stored.first(where: { $0.name == "journal" }) {
            do {
                let journal = try RestartJournal.open(fd: entry.fd)
                server.persistence = ServerPersistence(journal: journal, logger: logger)
                let start = ContinuousClock.now
                audit.replaying = true
                let report = try server.restore(journal: journal, stored: stored.filter { $0.fd != entry.fd }) {
                    _ = core.dispatcher.finalize()
                }
                audit.replaying = false
                logger.info("restored from the fd store: \(report.records) journal records replayed in \(ContinuousClock.now - start), \(report.connections) connection(s) served on, \(report.adopted) adopted, \(report.gone) gone, \(report.remappedClientMemory) client mapping(s); \(core.hypervisor.lifecycle)")
                return true
            } catch {
                audit.replaying = false
                logger.error("the stored restart journal cannot be used (\(error)): starting afresh, stored connections are closed")
                FDStore.remove(name: "journal")
                server.persistence = nil
                for e in stored where e.fd != entry.fd { close(e.fd) }
                for name in Set(stored.map(\.name)) where name != "journal" { FDStore.remove(name: name) }
                // The core may be half replayed: a new process starts clean (Restart=on-failure).
                exit(1)
            }
        }
        for entry in stored { close(entry.fd) }
        for name in Set(stored.map(\.name)) { FDStore.remove(name: name) }
        do {
            let journal = try RestartJournal.create()
            FDStore.store([journal.fd], name: "journal", poll: false)
            if !FDStore.barrier() { logger.warning("fd store: no BARRIER=1 answer; is FileDescriptorStoreMax= set?") }
            server.persistence = ServerPersistence(journal: journal, logger: logger)
            logger.info("restart mode: journal stored in systemd's fd store")
        } catch {
            logger.error("restart mode off: \(error)")
        }
        return false
    }
}
