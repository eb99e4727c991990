import Dispatch
import Logging
import PKVM
import SMMUModel
import Testing
import TestSupport
@testable import SMMUDaemon

#if canImport(Glibc)
    import Glibc
#endif

/// Restart mode's RAM in stored memfds (RAMFiles): a checkpoint does not copy RAM, so its size is bounded
/// whatever a client wrote (G8), and a restore maps the files back, so RAM written before and after the checkpoint
/// both survive.
@Suite struct RAMFilesTests {
    final class Server: ServerHandle {
        func send(_ bytes: [UInt8], to connection: ConnectionID) {}
    }

    static func configuration() throws -> DaemonConfiguration {
        try DaemonConfiguration.load(path: repositoryRoot + "/Config/tegra234.yaml")
    }

    static func sink() -> JournalAuditSink {
        JournalAuditSink(burst: 8, summaryInterval: .seconds(3600), queue: DispatchQueue(label: "ram-files"),
                         destination: .init(journal: { _ in true }, fallback: { _ in true }))
    }

    /// The shipped configuration's core, RAM in new memfds when `files`.
    static func core(files: Bool) throws -> (DaemonCore, [Int32]) {
        let config = try configuration()
        let fds = files ? try #require(RAMFiles.create(try DaemonCore.policy(config))) : []
        let core = try DaemonCore.make(config, audit: sink(), ramFiles: files ? fds : nil)
        core.hypervisor.finalize()
        return (core, fds)
    }

    /// The checkpoint the daemon would write for `core` with `sessions` open.
    static func checkpoint(_ core: DaemonCore, sessions: [Session], audit: JournalAuditSink) -> Checkpoint {
        let image = core.dispatcher.stateImage(sessions: sessions.map { ($0, []) }, serverCounters: ConnectionCounters(),
                                               audit: audit)
        return Checkpoint(generation: 1, nextConnection: UInt64(sessions.count + 1), connections: [],
                          hypervisor: core.hypervisor.checkpointImage().encoded(), dispatcher: image.encoded())
    }

    /// One 8-byte non-zero store into every page of every RAM region (host and hypervisor): the most RAM a client
    /// can make a checkpoint carry. Returns the pages written.
    @discardableResult
    static func fill(_ memory: MemoryMap, every stride: UInt64 = MemoryMap.pageSize) -> Int {
        var pages = 0
        for r in memory.ramRegions {
            for offset in Swift.stride(from: UInt64(0), to: r.size, by: Int(stride)) {
                memory.write64(0xA5A5_0000_0000_0000 | (r.base + offset), at: r.base + offset)
                pages += 1
            }
        }
        return pages
    }

    /// The worst state: every page of host RAM and hypervisor RAM non-zero, 64 connections. The checkpoint's encoded
    /// size is the same as with RAM all zeros (it carries no RAM), and small; anonymous RAM (outside restart mode's
    /// files) would be copied, which is what this would catch.
    @Test func aCheckpointsSizeDoesNotDependOnRAM() throws {
        let (core, fds) = try Self.core(files: true)
        defer { for fd in fds { close(fd) } }
        let audit = Self.sink()
        let server = Server()
        let sessions = (0..<64).map {
            core.dispatcher.makeSession(connection: ConnectionID(rawValue: UInt64($0 + 1)),
                                        peer: PeerCredentials(pid: 100 + Int32($0), uid: 0, gid: 0), server: server)
        }
        let empty = Self.checkpoint(core, sessions: sessions, audit: audit).encoded().count
        let pages = Self.fill(core.hypervisor.memory)
        let ramBytes = core.hypervisor.memory.ramRegions.reduce(0) { $0 + Int($1.size) }
        #expect(pages * Int(MemoryMap.pageSize) == ramBytes)
        let full = Self.checkpoint(core, sessions: sessions, audit: audit)
        #expect(full.encoded().count == empty, "RAM contents must not reach the checkpoint")
        #expect(full.encoded().count < 1 << 20, "Tegra234's registers, ownership and 64 sessions: a few hundred KiB")
        #expect(try HypervisorStateImage(decoding: full.hypervisor).memory == nil)
        // The RAM is in the files (what the next process maps).
        var v: UInt64 = 0
        let last = core.hypervisor.policy.hypervisorRAM  // the last file's region
        _ = withUnsafeMutableBytes(of: &v) { pread(fds[fds.count - 1], $0.baseAddress, 8, off_t(last.size - 4096)) }
        #expect(v == 0xA5A5_0000_0000_0000 | (last.base + last.size - 4096))

        // Anonymous RAM: the image copies every non-zero page (the G8 breach this design removes).
        let (anonymous, _) = try Self.core(files: false)
        let before = Self.checkpoint(anonymous, sessions: [], audit: audit).encoded().count
        let written = Self.fill(anonymous.hypervisor.memory, every: 64 * MemoryMap.pageSize)
        let after = Self.checkpoint(anonymous, sessions: [], audit: audit).encoded().count
        #expect(after - before >= written * Int(MemoryMap.pageSize))
    }

    /// RAM written before the checkpoint and after it are both there once the checkpoint is restored over the stored
    /// files; the rest of the state is the checkpoint's. Without the files the checkpoint is refused, not restored
    /// over zeroed RAM.
    @Test func aRestoredCheckpointMapsTheStoredRAM() throws {
        let config = try Self.configuration()
        let (core, fds) = try Self.core(files: true)
        defer { for fd in fds { close(fd) } }
        let host = try #require(core.hypervisor.policy.hostRAM.first)
        let hyp = core.hypervisor.policy.hypervisorRAM
        let memory = core.hypervisor.memory
        memory.write64(0x1111, at: host.base + 0x10_0000)
        memory.write64(0x2222, at: hyp.base + 0x2000)
        let vm = try #require(core.hypervisor.vmCreate(client: ClientIdentity(name: "t")).value)
        let checkpoint = Self.checkpoint(core, sessions: [], audit: Self.sink())
        memory.write64(0x3333, at: host.base + 0x20_0000)
        memory.write64(0x4444, at: host.base + 0x10_0000)
        // A scrub of a whole page punches it out of the (sealed) file: freed, not just zeroed.
        func blocks(_ fd: Int32) -> Int {
            var st = stat()
            return fstat(fd, &st) == 0 ? Int(st.st_blocks) : -1
        }
        let before = blocks(fds[fds.count - 1])
        #expect(memory.zero(at: hyp.base + 0x2000, count: 4096))
        #expect(blocks(fds[fds.count - 1]) == before - 8, "MADV_REMOVE gives the page's 4 KiB back")

        let entries = fds.enumerated().map { i, fd in
            FDStore.Entry(fd: fd, name: RAMFiles.name(i), identity: FDStore.FileIdentity(fd: fd)!)
        }
        let daemon = Daemon(configuration: config, logger: Logger(label: "test"))
        let (restored, _) = try daemon.restoreCore(checkpoint, stored: entries, audit: Self.sink())
        ReplayMappings.finish()
        let m = restored.hypervisor.memory
        #expect(m.isFileBacked)
        #expect(m.read64(at: host.base + 0x10_0000) == 0x4444)
        #expect(m.read64(at: host.base + 0x20_0000) == 0x3333)
        #expect(m.read64(at: hyp.base + 0x2000) == 0)
        var expected = try HypervisorStateImage(decoding: checkpoint.hypervisor)
        expected.translationEpoch += 1
        #expect(restored.hypervisor.stateImage(includeMemory: false) == expected, "VM \(vm) and the rest as checkpointed")
        // The restored map writes into the same files.
        m.write64(0x5555, at: host.base + 0x30_0000)
        #expect(memory.read64(at: host.base + 0x30_0000) == 0x5555)

        #expect(throws: StateImageError.self) {
            _ = try daemon.restoreCore(checkpoint, stored: Array(entries.dropLast()), audit: Self.sink())
        }
        ReplayMappings.finish()
    }
}
