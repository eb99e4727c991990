import ArgumentParser
import Logging
import Foundation
import SMMUDaemon

#if canImport(Glibc)
import Glibc
#endif

/// The command line of the daemon. Everything else lives in SMMUDaemon.
struct SMMUHypd: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "smmu-hypd",
        abstract: "An emulated pKVM hypervisor owning ARM MMU-500 SMMUs, served over a Unix socket.",
        discussion: "Runs in the foreground. Under systemd (Type=notify) it sends READY=1 once pKVM is finalized, "
            + "takes a socket-activated listener when LISTEN_FDS is set, and logs to stderr (the journal).")

    @Option(name: .long, help: ArgumentHelp("Configuration file (YAML).", discussion:
        "Default: \(DaemonConfiguration.installedPath) if present, else the repository's Config/tegra234.yaml.",
        valueName: "file"))
    var config: String?

    @Option(name: .long, help: ArgumentHelp("Socket path, overriding socket.path.", valueName: "path"))
    var socket: String?

    @Option(name: .long, help: ArgumentHelp("Finalize this many milliseconds after start (finalization.delay_ms).", valueName: "ms"))
    var finalizeDelay: Int?

    @Option(name: .long, help: ArgumentHelp("Finalization mode: 'delay', 'manual' (on an admin FINALIZE) or 'host' (on the host's PROT_FINALIZE).", valueName: "mode"))
    var finalize: DaemonConfiguration.FinalizationMode?

    @Option(name: .long, help: ArgumentHelp("Record a trace of every request to this file, overriding trace.path.", valueName: "file"))
    var trace: String?

    @Option(name: .long, help: ArgumentHelp("The trace's bound in bytes, overriding trace.max_bytes.", valueName: "bytes"))
    var traceMaxBytes: UInt64?

    @Flag(name: .long, help: "Record no trace, whatever trace.path says (a daemon that replays a trace).")
    var noTrace = false

    @Flag(name: .long, help: "No finalization timer: mode delay becomes manual, manual and host stay (a daemon that replays a trace, which says when to finalize).")
    var noFinalizationTimer = false

    @Flag(name: .long, help: "Restart mode (systemd's fd store), whatever fd_store says.")
    var fdStore = false

    @Option(name: .long, help: ArgumentHelp("Log level: trace, debug, info, notice, warning, error, critical.", valueName: "level"))
    var logLevel: Logger.Level = .info

    func run() throws {
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = logLevel
            return handler
        }
        let logger = Logger(label: "smmu-hypd")
        let configuration: DaemonConfiguration
        do {
            configuration = try loadConfiguration()
        } catch {
            fail(error.description, code: 78)  // EX_CONFIG
        }
        let daemon = Daemon(configuration: configuration, logger: logger)
        if let path = config ?? DaemonConfiguration.defaultPath() {
            daemon.configurationText = (try? String(contentsOfFile: path, encoding: .utf8)) ?? ""
        }
        do {
            try daemon.run()
        } catch {
            fail(error.description, code: error.exitCode)
        }
    }

    private func loadConfiguration() throws(ConfigurationError) -> DaemonConfiguration {
        guard let path = config ?? DaemonConfiguration.defaultPath() else {
            throw .unreadable(path: DaemonConfiguration.installedPath, reason: "no configuration file (pass --config)")
        }
        var configuration = try DaemonConfiguration.load(path: path)
        if let socket { configuration.socket.path = socket }
        if let finalizeDelay {
            configuration.finalization.delayMilliseconds = finalizeDelay
            if finalize == nil { configuration.finalization.mode = .delay }
        }
        if let finalize { configuration.finalization.mode = finalize }
        if noFinalizationTimer, configuration.finalization.mode == .delay { configuration.finalization.mode = .manual }
        if let trace { configuration.trace.path = trace }
        if let traceMaxBytes { configuration.trace.maxBytes = traceMaxBytes }
        if noTrace { configuration.trace.path = nil }
        if fdStore { configuration.fdStore = true }
        do {
            try configuration.validate()
        } catch {
            // Name the option rather than the key when an override is what is wrong.
            if case .invalid(let key, let reason) = error, key == "socket.path", socket != nil { throw .invalid(key: "--socket", reason: reason) }
            if case .invalid(let key, let reason) = error, key == "finalization.delay_ms", finalizeDelay != nil { throw .invalid(key: "--finalize-delay", reason: reason) }
            throw error
        }
        return configuration
    }

    private func fail(_ message: String, code: Int32) -> Never {
        let line = "smmu-hypd: " + message + "\n"
        _ = line.withCString { write(STDERR_FILENO, $0, strlen($0)) }
        Glibc.exit(code)
    }
}

extension DaemonConfiguration.FinalizationMode: ExpressibleByArgument {}
extension Logger.Level: @retroactive ExpressibleByArgument {}
