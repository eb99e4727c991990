import Dispatch
import Foundation
import PKVM
import Logging

/// The daemon's lifecycle: `booting -> not finalized -> finalized -> stopping`. Opens or adopts the socket, builds
/// the core, finalizes after the configured delay (or on an admin FINALIZE), tells systemd READY=1 only then (G1),
/// keeps STATUS= current, pings the watchdog, and on SIGTERM/SIGINT sends STOPPING=1, answers what was read,
/// closes every connection and exits 0.
public final class Daemon: @unchecked Sendable {  // invariant: mutable state only on `queue`
    /// Why the daemon could not start; `exitCode` follows sysexits.h.
    public enum StartError: Error, CustomStringConvertible {
        case configuration(String)
        case socket(String)
        public var description: String {
            switch self {
            case .configuration(let m), .socket(let m): m
            }
        }
        public var exitCode: Int32 {
            switch self {
            case .configuration: 78  // EX_CONFIG
            case .socket: 69  // EX_UNAVAILABLE
            }
        }
    }

    public let configuration: DaemonConfiguration
    /// The configuration file's text, which a trace keeps in its header (docs/trace-format.md).
    public var configurationText = ""
    public let queue = DispatchQueue(label: "smmu-hypd")
    let logger: Logger
    private var core: DaemonCore?
    /// Restart mode's RAM files made by this process, until `setUpRestart` stores them (RAMFiles).
    var ramFilesToStore: [Int32]?
    private var server: UnixServer?
    private var audit: JournalAuditSink?
    private var timers: [DispatchSourceTimer] = []
    private var signalSources: [DispatchSourceSignal] = []
    private var readySent = false
    private var stopping = false
    private var lastStatus = ""

    public init(configuration: DaemonConfiguration, logger: Logger) {
        self.configuration = configuration
        self.logger = logger
    }

    /// Sets everything up, then serves until a signal stops it (exit 0). Throws only if it cannot start.
    public func run() throws(StartError) -> Never {
        signal(SIGPIPE, SIG_IGN)
        signal(SIGTERM, SIG_IGN)  // handled by Dispatch signal sources below
        signal(SIGINT, SIG_IGN)
        let started: Result<Void, StartError> = queue.sync {
            do throws(StartError) {
                try startOnQueue()
                return .success(())
            } catch {
                return .failure(error)
            }
        }
        try started.get()
        dispatchMain()
    }

    private func startOnQueue() throws(StartError) {
        let audit = JournalAuditSink(burst: configuration.audit.burst,
                                     summaryInterval: .milliseconds(configuration.audit.summaryIntervalMilliseconds),
                                     maxRecordsPerSecond: configuration.audit.maxRecordsPerSecond, queue: queue)
        let (listener, stored) = try openListener()
        var takeOver = takeOverStore(stored)
        var restored: RestoredCheckpoint?
        var core: DaemonCore?
        if let t = takeOver, let checkpoint = t.checkpoint {
            do {
                let start = ContinuousClock.now
                (core, restored) = try restoreCore(checkpoint, stored: t.others, audit: audit)
                logger.info("checkpoint \(t.generation) restored in \(ContinuousClock.now - start)")
            } catch {
                ReplayMappings.finish()
                for fd in ramFilesToStore ?? [] { close(fd) }
                ramFilesToStore = nil
                logger.error("the stored checkpoint cannot be restored (\(error)): starting afresh, stored connections are closed")
                discard(t.others)
                FDStore.remove(name: RestartGenerations.name(.journal, t.generation))
                FDStore.remove(name: RestartGenerations.name(.checkpoint, t.generation))
                takeOver = nil
            }
        }
        if core == nil {
            do {
                core = try DaemonCore.make(configuration, audit: audit,
                                           ramFiles: try restartRAMFiles(stored: takeOver?.others))
            } catch {
                throw .configuration("config error: \(error)")
            }
        }
        guard let core else { preconditionFailure("made above") }
        raiseDescriptorLimit()
        var limits = UnixServer.Limits()
        limits.maxConnections = configuration.limits.maxConnections
        limits.helloDeadline = .milliseconds(configuration.limits.helloTimeoutMilliseconds)
        limits.maxTotalPendingOutput = configuration.limits.maxBufferedOutput
        let server: UnixServer
        do {
            server = try UnixServer(listener: listener, sessionFactory: core.dispatcher, queue: queue, limits: limits,
                                    logger: logger)
        } catch {
            throw .socket("cannot poll connections: \(error)")
        }
        if let why = core.dispatcher.startConfiguredTrace(configuration.trace, text: configurationText) {
            throw .configuration("trace: \(why)")
        }
        if let path = configuration.trace.path { logger.info("recording a trace to \(path), at most \(configuration.trace.maxBytes) bytes") }
        self.core = core
        self.server = server
        self.audit = audit
        installSignalHandlers()   // before anything a client can observe: a stop request is never lost
        let restoredState = setUpRestart(server: server, core: core, audit: audit, takeOver: takeOver, restored: restored)
        server.afterInput = { [unowned self, unowned server] in checkpointIfDue(core: core, server: server, audit: audit) }
        // A fresh start: checkpoint 1 holds the configuration's state, so a restart under another configuration is
        // refused (the checkpoint records it) rather than replaying this input under that one.
        if !restoredState { checkpointIfDue(core: core, server: server, audit: audit, force: true) }
        core.dispatcher.onFinalized = { [unowned self] in self.finalized() }
        audit.start()
        server.start()
        if core.hypervisor.lifecycle == .notFinalized {
            scheduleFinalization()
        } else if restoredState {
            // Serving again (the listener and the poller start on this queue next): now systemd hears READY=1.
            queue.async { [self] in finalized() }
        }
        startTimers()
        logger.info("serving on \(listener.path ?? "socket-activated fd \(listener.fd)"); finalization \(core.hypervisor.lifecycle != .notFinalized ? "done (restored)" : finalizationPlan)")
        publishStatus()
    }

    /// Socket activation when systemd passed a listening AF_UNIX stream socket, else our own bind; and what the fd
    /// store handed back (every other descriptor passed).
    private func openListener() throws(StartError) -> (ListeningSocket, [FDStore.Entry]) {
        let passed: [Systemd.ListenFD]
        do {
            passed = try Systemd.listenFDs()
        } catch {
            throw .socket("socket activation: \(error)")
        }
        if !passed.isEmpty {
            guard let fd = passed.first(where: { Systemd.isUnixStreamListener($0.fd) }) else {
                throw .socket("socket activation passed \(passed.count) fd(s), none a listening AF_UNIX SOCK_STREAM socket")
            }
            let others = passed.filter { $0.fd != fd.fd }
            guard configuration.fdStore else {
                for other in others { close(other.fd) }
                logger.info("socket activation: using fd \(fd.fd) (\(fd.name))")
                return (ListeningSocket.adopt(fd: fd.fd), [])
            }
            logger.info("socket activation: using fd \(fd.fd) (\(fd.name)); \(others.count) descriptor(s) from the fd store")
            return (ListeningSocket.adopt(fd: fd.fd), FDStore.entries(from: others, excluding: fd.name))
        }
        do {
            return (try ListeningSocket.bind(path: configuration.socket.path, mode: configuration.socket.mode), [])
        } catch {
            throw .socket("socket: \(error)")
        }
    }

    /// Raises the soft descriptor limit to the hard one, as systemd recommends for a daemon that needs many (the
    /// soft default of 1,024 exists for select(), which this daemon does not use). Warns when even the hard limit
    /// is below the connection cap: the server then evicts or refuses on EMFILE rather than at the cap.
    private func raiseDescriptorLimit() {
        var limit = rlimit()
        guard getrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return }
        if limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max
            _ = setrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limit)
        }
        let wanted = rlim_t(configuration.limits.maxConnections + Self.descriptorHeadroom)
        if limit.rlim_cur < wanted {
            logger.warning("descriptor limit \(limit.rlim_cur) is below limits.max_connections + \(Self.descriptorHeadroom) = \(wanted); raise LimitNOFILE= or lower the cap")
        }
    }

    /// Descriptors the daemon needs besides its connections: listener, epoll, eventfd, journal, stdio, the reserve,
    /// and those a MEM_MAP request passes in for a moment.
    static let descriptorHeadroom = 64

    private var finalizationPlan: String {
        switch configuration.finalization.mode {
        case .delay: "in \(configuration.finalization.delayMilliseconds) ms"
        case .manual: "on admin FINALIZE"
        case .host: "on the host's PROT_FINALIZE (or an admin FINALIZE)"
        }
    }

    private func scheduleFinalization() {
        guard configuration.finalization.mode == .delay else { return }
        queue.asyncAfter(deadline: .now() + .milliseconds(configuration.finalization.delayMilliseconds)) { [self] in
            guard !stopping, let core else { return }
            // READY=1 follows from `onFinalized`, the one path for the timer and an admin FINALIZE alike.
            server?.persistence?.finalizing()
            if !core.dispatcher.finalize() { logger.error("finalization failed; still not finalized") }
        }
    }

    /// Finalization completed: now, and only now, systemd hears READY=1 (G1).
    private func finalized() {
        guard !readySent, !stopping else { return }
        readySent = true
        Systemd.notify(.ready, .status(statusLine()))
        lastStatus = statusLine()
        logger.info("pKVM finalized; READY=1 (finalized by \(core?.dispatcher.finalizedBy?.description ?? "?"))")
    }

    private func startTimers() {
        let status = DispatchSource.makeTimerSource(queue: queue)
        status.schedule(deadline: .now() + 1, repeating: 1)
        status.setEventHandler { [unowned self] in self.publishStatus() }
        status.resume()
        timers.append(status)
        guard configuration.watchdog, let interval = Systemd.watchdogInterval() else { return }
        let half = interval / 2
        let watchdog = DispatchSource.makeTimerSource(queue: queue)
        watchdog.schedule(deadline: .now() + half.timeInterval, repeating: half.timeInterval)
        // Pinged from the server queue: a wedged queue stops the pings and systemd restarts the daemon.
        watchdog.setEventHandler { Systemd.notify(.watchdog) }
        watchdog.resume()
        timers.append(watchdog)
        logger.info("watchdog: pinging every \(half)")
    }

    private func statusLine() -> String {
        guard let core, let server else { return "booting" }
        return "\(core.hypervisor.lifecycle); clients \(server.clientCount); operations \(core.dispatcher.operationCount); denials \(core.hypervisor.statistics.denials)"
    }

    private func publishStatus() {
        let line = statusLine()
        guard line != lastStatus else { return }
        lastStatus = line
        Systemd.notify(.status(line))
    }

    private func installSignalHandlers() {
        for sig in [SIGTERM, SIGINT] {
            let source = DispatchSource.makeSignalSource(signal: sig, queue: queue)
            source.setEventHandler { [unowned self] in self.stop(signal: sig) }
            source.resume()
            signalSources.append(source)
        }
    }

    /// STOPPING=1, no new work, answer what was read, close, exit 0.
    private func stop(signal: Int32) {
        guard !stopping, let core, let server else { return }
        stopping = true
        logger.info("signal \(signal): stopping")
        Systemd.notify(.stopping, .status("stopping"))
        if server.persistence != nil {
            // Everything is in the fd store already: exit without closing a connection. On `systemctl restart` the
            // next process serves them on; on `systemctl stop` systemd drops the store, which closes them. A trace
            // being recorded ends here with its end record (a trace does not span processes: docs/trace-format.md).
            audit?.stop()
            core.dispatcher.stopTrace(wait: true)
            for timer in timers { timer.cancel() }
            server.removeSocketFile()
            logger.info("stopped; connections and state left in the fd store")
            exit(0)
        }
        core.hypervisor.beginStopping()
        server.beginShutdown { [self] in
            audit?.stop()
            core.dispatcher.stopTrace(wait: true)
            for timer in timers { timer.cancel() }
            logger.info("stopped")
            exit(0)
        }
    }
}
