import ArgumentParser
import SMMUClient
import WireProtocol

#if canImport(Glibc)
    import Glibc
#endif

/// smmuctl: an operator's and tester's command line for smmu-hypd (protocol v1).
@main
struct SMMUCtl: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "smmuctl",
        abstract: "Talk to smmu-hypd over its Unix socket (protocol v1).",
        discussion: "Numbers accept 0x... hex. The socket defaults to $SMMU_HYPD_SOCKET, else \(SMMUClient.defaultSocketPath).",
        subcommands: [
            Hello.self, Read.self, Write.self, DMA.self, Mem.self, VM.self, Stats.self, Dump.self, Finalize.self,
            Events.self, Probe.self, Trace.self, Replay.self,
        ]
    )

    /// As ArgumentParser's, but `replay` exits 2 on a usage error, as it does on a bad trace (docs/trace-format.md).
    static func main() {
        do {
            var command = try parseAsRoot()
            try command.run()
        } catch {
            if CommandLine.arguments.dropFirst().first == "replay", exitCode(for: error) == .validationFailure {
                printError(fullMessage(for: error))
                Glibc.exit(2)
            }
            exit(withError: error)
        }
    }
}

/// Exit codes: 1 local failure, 2 the daemon refused (non-OK status), 3 probe deferred.
enum ExitCodes {
    static let failure: Int32 = 1
    static let refused: Int32 = 2
    static let deferred: Int32 = 3
}

/// A number on the command line: decimal or 0x hex, `_` allowed as a separator.
struct Number: ExpressibleByArgument, Sendable {
    var value: UInt64
    init?(argument: String) {
        let s = argument.replacingOccurrences(of: "_", with: "").lowercased()
        if s.hasPrefix("0x") {
            guard let v = UInt64(s.dropFirst(2), radix: 16) else { return nil }
            value = v
        } else {
            guard let v = UInt64(s) else { return nil }
            value = v
        }
    }
    var u32: UInt32 { UInt32(truncatingIfNeeded: value) }
}

extension Role: ExpressibleByArgument {
    public init?(argument: String) {
        guard let r = Role.allCases.first(where: { $0.description == argument.lowercased() }) else { return nil }
        self = r
    }
}

/// Options every subcommand shares: where the daemon is and who we say we are.
struct Connection: ParsableArguments {
    @Option(name: .long, help: "The daemon's socket (default: $SMMU_HYPD_SOCKET or \(SMMUClient.defaultSocketPath)).")
    var socket: String?

    @Option(name: .long, help: "HELLO role: host, device or admin (default: what the command needs).")
    var role: Role?

    @Option(name: .long, help: "The client name sent in HELLO.")
    var name: String = "smmuctl"

    @Option(name: .long, help: "Seconds to wait for each answer.")
    var timeout: Int = 30

    var socketPath: String {
        if let socket { return socket }
        if let env = getenv("SMMU_HYPD_SOCKET") { return String(cString: env) }
        return SMMUClient.defaultSocketPath
    }

    /// Connects and greets with `role` (or the command's default).
    func open(defaultRole: Role) throws -> (SMMUClient, HelloResponse) {
        try perform { () throws(SMMUClientError) in
            let client = try SMMUClient(path: socketPath, timeout: .seconds(timeout))
            let hello = try client.hello(role: role ?? defaultRole, name: name)
            return (client, hello)
        }
    }

    /// Connects, runs one call that answers nothing but OK, and prints "OK".
    func callPrintingOK(defaultRole: Role, _ body: (SMMUClient) throws(SMMUClientError) -> Void) throws {
        let (client, _) = try open(defaultRole: defaultRole)
        try perform { () throws(SMMUClientError) in try body(client) }
        print("OK")
    }
}

/// Runs `body`, turning a client error into a message on stderr and an exit code.
func perform<T>(_ body: () throws(SMMUClientError) -> T) throws -> T {
    do { return try body() } catch {
        printError("smmuctl: \(error)")
        if case .status = error { throw ExitCode(ExitCodes.refused) }
        throw ExitCode(ExitCodes.failure)
    }
}

func printError(_ message: String) {
    var line = message + "\n"
    line.withUTF8 { _ = Glibc.write(2, $0.baseAddress, $0.count) }
}

func hex<T: BinaryInteger>(_ v: T) -> String { "0x" + String(v, radix: 16) }

struct Hello: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Greet the daemon and list its SMMU windows.")
    @OptionGroup var connection: Connection

    func run() throws {
        let (_, hello) = try connection.open(defaultRole: .host)
        print("server version \(hello.serverVersion), state \(hello.state.map { "\($0)" } ?? "\(hello.stateValue)")")
        print(TextTable.render(
            header: ["window", "name", "base", "size", "page", "context banks", "SMRs"],
            rows: hello.windows.enumerated().map { i, w in
                ["\(i)", w.name, hex(w.base), hex(w.size), w.pageSize >= 1024 ? "\(w.pageSize / 1024)K" : "\(w.pageSize)",
                 "\(w.numContextBanks)", "\(w.numStreamMatchGroups)"]
            }))
    }
}

struct Read: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Read a register (physical address).")
    @OptionGroup var connection: Connection
    @Argument(help: "Physical address.") var address: Number
    @Option(help: "Access width in bytes (4 or 8).") var width: UInt32 = 4

    func run() throws {
        let (client, _) = try connection.open(defaultRole: .host)
        let value = try perform { () throws(SMMUClientError) in try client.read(address: address.value, width: width) }
        print(hex(value))
    }
}

struct Write: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Write a register (physical address).")
    @OptionGroup var connection: Connection
    @Argument(help: "Physical address.") var address: Number
    @Argument(help: "Value.") var value: Number
    @Option(help: "Access width in bytes (4 or 8).") var width: UInt32 = 4

    func run() throws {
        let (client, _) = try connection.open(defaultRole: .host)
        try perform { () throws(SMMUClientError) in try client.write(address: address.value, value: value.value, width: width) }
        print("OK")
    }
}

struct DMA: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Translate one DMA access of a stream (device role).")
    @OptionGroup var connection: Connection
    @Argument(help: "Window index (from hello).") var window: Number
    @Argument(help: "Stream ID.") var stream: Number
    @Argument(help: "I/O virtual address.") var iova: Number
    @Flag(help: "A write access.") var write = false
    @Flag(help: "An instruction fetch.") var exec = false
    @Flag(help: "A privileged access.") var priv = false

    func run() throws {
        let (client, _) = try connection.open(defaultRole: .device)
        var flags: DMAFlags = []
        if write { flags.insert(.write) }
        if exec { flags.insert(.instructionFetch) }
        if priv { flags.insert(.privileged) }
        let result = try perform { () throws(SMMUClientError) in
            try client.dma(window: window.u32, stream: stream.u32, iova: iova.value, flags: flags)
        }
        if result.fault == 0 {
            print("pa \(hex(result.physicalAddress))")
        } else {
            print("FAULT \(result.fault) (\(DMAFaultName.name(result.fault)))")
            throw ExitCode(ExitCodes.refused)
        }
    }
}

/// The spec's DMA fault names.
enum DMAFaultName {
    static func name(_ code: UInt32) -> String {
        let names = [
            1: "unidentified stream", 2: "stream configured to fault", 3: "translation", 4: "access flag",
            5: "permission", 6: "address size", 7: "ownership", 8: "multiple SMRs match",
        ]
        return names[Int(code)] ?? "unknown"
    }
}
