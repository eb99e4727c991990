import Foundation
import TestSupport
import Testing
@testable import SMMUDaemon

struct DaemonConfigurationTests {
    static let minimal = """
        topology: generic4k
        memory:
          host_ram: [{base: 0x80000000, size: 0x10000000}]
          hypervisor_ram: {base: 0x7f000000, size: 0x00400000}
        """

    @Test func tegra234FileDecodesWithHexAndOctal() throws {
        let config = try DaemonConfiguration.load(path: repositoryRoot + "/Config/tegra234.yaml")
        #expect(config.topology == .tegra234)
        #expect(config.memory.hostRAM == [.init(base: 0x8000_0000, size: 0x1000_0000)])
        #expect(config.memory.hypervisorRAM == .init(base: 0x7f00_0000, size: 0x40_0000))
        #expect(config.socket.mode == 0o660)
        #expect(config.socket.path == "/run/smmu-hypd/smmu-hypd.sock")
        #expect(config.finalization == .init(mode: .delay, delayMilliseconds: 200))
        #expect(config.hypervisor.reservedContextBanks == 8 && config.hypervisor.reservedSMRs == 8)
        #expect(config.audit == .init(burst: 64, summaryIntervalMilliseconds: 1000, maxRecordsPerSecond: 200))
        #expect(config.limits == .init(maxConnections: 1024, helloTimeoutMilliseconds: 5000, maxBufferedOutput: 64 << 20))
        #expect(config.watchdog)
    }

    @Test(arguments: ["generic4k.yaml", "qemu-virt.yaml"])
    func otherShippedConfigsAreValid(file: String) throws {
        let path = repositoryRoot + "/Config/" + file
        guard FileManager.default.fileExists(atPath: path) else { return }
        _ = try DaemonConfiguration.load(path: path)
    }

    @Test func omittedSectionsTakeDefaults() throws {
        let config = try DaemonConfiguration.parse(yaml: Self.minimal)
        #expect(config.finalization.mode == .delay)
        #expect(config.roles.admin == .init())
        #expect(config.memory.hostDMARanges.isEmpty)
        #expect(config.limits == .init(maxConnections: 1024, helloTimeoutMilliseconds: 5000, maxBufferedOutput: 64 << 20))
        #expect(config.audit.maxRecordsPerSecond == 200)
    }

    @Test func traceSectionDecodesAndIsChecked() throws {
        #expect(try DaemonConfiguration.parse(yaml: Self.minimal).trace == .init(path: nil, maxBytes: 64 << 20))
        let traced = try DaemonConfiguration.parse(yaml: Self.minimal + "\ntrace: { path: /var/lib/smmu-hypd/boot.smmutrace, max_bytes: 0x40000 }")
        #expect(traced.trace == .init(path: "/var/lib/smmu-hypd/boot.smmutrace", maxBytes: 0x40000))
        #expect(throws: ConfigurationError.invalid(key: "trace.path", reason: "must be an absolute path")) {
            try DaemonConfiguration.parse(yaml: Self.minimal + "\ntrace: { path: boot.smmutrace }")
        }
        #expect(throws: ConfigurationError.self) { try DaemonConfiguration.parse(yaml: Self.minimal + "\ntrace: { max_bytes: 100 }") }
        #expect(throws: ConfigurationError.self) { try DaemonConfiguration.parse(yaml: Self.minimal + "\ntrace: { bytes: 100 }") }
    }

    @Test func limitsDecode() throws {
        let config = try DaemonConfiguration.parse(yaml: Self.minimal + "\nlimits: {max_connections: 64, hello_timeout_ms: 250, max_buffered_output: 0x200000}")
        #expect(config.limits == .init(maxConnections: 64, helloTimeoutMilliseconds: 250, maxBufferedOutput: 2 << 20))
    }

    @Test(arguments: [("0660", UInt32(0o660)), ("\"0660\"", 0o660), ("0o600", 0o600), ("\"640\"", 0o640)])
    func socketModeIsOctalHoweverWritten(text: String, expected: UInt32) throws {
        let config = try DaemonConfiguration.parse(yaml: Self.minimal + "\nsocket: {path: /tmp/x.sock, mode: \(text)}")
        #expect(config.socket.mode == expected)
    }

    @Test func hypervisorStreamsDecode() throws {
        let config = try DaemonConfiguration.parse(yaml: Self.minimal + "\nhypervisor: {hypervisor_streams: [{smmu: niso1, streams: [0x10, 17]}]}")
        #expect(config.hypervisor.hypervisorStreams == [.init(smmu: "niso1", streams: [0x10, 0x11])])
    }

    @Test func rolesPermitRootListedUidsAndGids() throws {
        let config = try DaemonConfiguration.parse(yaml: Self.minimal + "\nroles: {host: {uids: [1000], gids: [27]}}")
        #expect(config.roles.host.permits(.init(pid: 1, uid: 0, gid: 0)))
        #expect(config.roles.host.permits(.init(pid: 1, uid: 1000, gid: 1000)))
        #expect(config.roles.host.permits(.init(pid: 1, uid: 1001, gid: 27)))
        #expect(!config.roles.host.permits(.init(pid: 1, uid: 1001, gid: 1001)))
        #expect(!config.roles.admin.permits(.init(pid: 1, uid: 1000, gid: 27)))
    }

    /// Each broken file must fail with a message naming the key.
    @Test(arguments: [
        ("size: 0x10000000}]", "size: 0x1001}]", "config error: memory.host_ram[0].size: must be a non-zero multiple of 4096"),
        ("size: 0x10000000}]", "size: 0}]", "config error: memory.host_ram[0].size: must be a non-zero multiple of 4096"),
        ("base: 0x80000000,", "base: 0x80000010,", "config error: memory.host_ram[0].base: must be a multiple of 4096"),
        ("base: 0x7f000000,", "base: 0x80000000,", "config error: memory.hypervisor_ram: overlaps memory.host_ram[0]"),
        ("topology: generic4k", "topology: tegra999", "config error: topology:"),
        ("topology: generic4k", "topology: generic4k\nwatchdgo: true", "config error: watchdgo: unknown key"),
        ("size: 0x10000000}]", "size: 0x10000000, bsae: 1}]", "config error: memory.host_ram[0].bsae: unknown key"),
        ("size: 0x10000000}]", "size: -4096}]", "config error: memory.host_ram[0].size: expected a non-negative integer"),
        ("size: 0x10000000}]", "size: 0xFFFFFFFFFFFFF000}]", "config error: memory.host_ram[0].size: the range must end below 2^48"),
        ("  hypervisor_ram: {base: 0x7f000000, size: 0x00400000}", "", "config error: memory.hypervisor_ram: missing"),
        ("topology: generic4k", "topology: generic4k\nsocket: {mode: 0999}", "config error: socket.mode: must be an octal file mode"),
        ("topology: generic4k", "topology: generic4k\nsocket: {path: relative.sock}", "config error: socket.path: must be an absolute path"),
        ("topology: generic4k", "topology: generic4k\nfinalization: {mode: later}", "config error: finalization.mode:"),
        ("topology: generic4k", "topology: generic4k\nfinalization: {delay_ms: -1}", "config error: finalization.delay_ms: must be between 0 and 600000"),
        ("topology: generic4k", "topology: generic4k\naudit: {burst: 0}", "config error: audit.burst: must be between"),
        ("topology: generic4k", "topology: generic4k\naudit: {max_records_per_second: 301}", "config error: audit.max_records_per_second: must be between 1 and 300"),
        ("topology: generic4k", "topology: generic4k\naudit: {max_record_per_second: 10}", "config error: audit.max_record_per_second: unknown key"),
        ("topology: generic4k", "topology: generic4k\nlimits: {max_connections: 0}", "config error: limits.max_connections: must be between"),
        ("topology: generic4k", "topology: generic4k\nlimits: {hello_timeout_ms: 5}", "config error: limits.hello_timeout_ms: must be between"),
        ("topology: generic4k", "topology: generic4k\nlimits: {max_buffered_output: 4096}", "config error: limits.max_buffered_output: must be between"),
        ("topology: generic4k", "topology: generic4k\nlimits: {max_conections: 10}", "config error: limits.max_conections: unknown key"),
        ("topology: generic4k", "topology: generic4k\nhypervisor: {reserved_smrs: 128}", "config error: hypervisor.reserved_smrs: must be between 0 and 127"),
        ("topology: generic4k", "topology: generic4k\nhypervisor: {hypervisor_streams: [{smmu: a, streams: [0x10000]}]}",
         "config error: hypervisor.hypervisor_streams[0].streams[0]: stream ID 0x10000 is over 16 bits"),
        ("topology: generic4k", "topology: generic4k\nroles: {host: {uids: [root]}}", "config error: roles.host.uids[0]: expected a non-negative integer"),
        ("topology: generic4k", "topology: generic4k\nwatchdog: [", "config error: YAML"),
    ])
    func brokenConfigNamesTheKey(original: String, replacement: String, message: String) {
        let yaml = Self.minimal.replacingOccurrences(of: original, with: replacement)
        #expect(yaml != Self.minimal)
        do {
            _ = try DaemonConfiguration.parse(yaml: yaml)
            Issue.record("accepted: \(yaml)")
        } catch {
            #expect(error.description.hasPrefix(message), "got: \(error.description)")
        }
    }

    @Test(arguments: [
        ("[{base: 0x7f100000, size: 0x1000}]", 0, "memory.hypervisor_ram"),
        // A DMA range over host RAM would keep host streams on a page after it is donated (G4).
        ("[{base: 0x08020000, size: 0x1000}, {base: 0x8fff0000, size: 0x20000}]", 1, "memory.host_ram[0]"),
        ("[{base: 0x7ffff000, size: 0x2000}]", 0, "memory.host_ram[0]"),
    ])
    func hostDMARangeMayNotOverlapRAM(ranges: String, index: Int, ram: String) {
        let yaml = Self.minimal + "\n  host_dma_ranges: \(ranges)"
        #expect(throws: ConfigurationError.invalid(key: "memory.host_dma_ranges[\(index)]", reason: "overlaps \(ram)")) {
            try DaemonConfiguration.parse(yaml: yaml)
        }
    }

    @Test func missingFileIsReported() {
        #expect(throws: ConfigurationError.self) { try DaemonConfiguration.load(path: "/nonexistent/smmu-hypd.yaml") }
    }
}
