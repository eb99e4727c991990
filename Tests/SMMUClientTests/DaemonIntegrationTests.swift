import Foundation
import Testing
import WireProtocol
import CSocketShims
import TestSupport

@testable import SMMUClient

#if canImport(Glibc)
    import Glibc
#endif

/// The real daemon, started from $SMMU_HYPD_BIN on a private socket with the Tegra234 config.
/// These tests run only when SMMU_HYPD_BIN is set (e.g. SMMU_HYPD_BIN=.build/debug/smmu-hypd).
final class RunningDaemon: DaemonChild {
    init() throws {
        try super.init(
            binary: DaemonBinary.fromEnvironment, directory: TemporaryDirectory(), arguments: ["--finalize-delay", "0"],
            captureStandardError: false)
        let deadline = Date().addingTimeInterval(20)
        while Date() < deadline {
            if let client = try? SMMUClient(path: socketPath, timeout: .seconds(5)),
                let hello = try? client.hello(role: .host, name: "swift-wait"), hello.state == .finalized
            {
                return
            }
            usleep(50_000)
        }
        stop()
        throw SMMUClientError.timedOut
    }

    func connect(role: Role = .host) throws -> (SMMUClient, HelloResponse) {
        let client = try SMMUClient(path: socketPath, timeout: .seconds(30))
        return (client, try client.hello(role: role, name: "swift-integration"))
    }
}

@Suite(.serialized, .enabled(if: ProcessInfo.processInfo.environment["SMMU_HYPD_BIN"] != nil, "set SMMU_HYPD_BIN to run against the daemon"))
struct DaemonIntegrationTests {
    @Test("the Linux probe and reset succeed on every Tegra234 window, seeing the host's 120 banks and SMRs")
    func linuxProbe() throws {
        let daemon = try RunningDaemon()
        defer { daemon.stop() }
        let (client, hello) = try daemon.connect()
        #expect(hello.windows.count == 5)
        let reports = try LinuxProbe(client: client).run(windows: hello.windows)
        for r in reports {
            #expect(r.configuration.numContextBanks == 120 && r.configuration.numMappingGroups == 120, "\(r.deviceName)")
            #expect(r.lines.contains("\t120 context banks (0 stage-2 only)"))
            #expect(r.lines.contains("\tSupported page sizes: 0x61311000"))
            #expect(!r.lines.contains { $0.contains("differs from mapped region") })
            #expect(r.syncCompleted && r.readBackSCR0 == r.finalSCR0)
            #expect(r.finalSCR0 & (1 << 10) != 0 && r.finalSCR0 & 1 == 0)  // USFCFG set, CLIENTPD clear
            #expect(r.streamIDMask == 0x7FFF && r.smrMaskMask == 0x7FFF)
        }
        // A bank the hypervisor keeps is not the host's to write.
        let cb127 = hello.windows[0].base + 0x80_0000 + 127 * 0x1_0000
        #expect(throws: SMMUClientError.status(.denied)) { try client.write(address: cb127, value: 1) }
    }

    @Test("10,000 pipelined READs come back OK and in order")
    func pipelinedReads() throws {
        let daemon = try RunningDaemon()
        defer { daemon.stop() }
        let (client, hello) = try daemon.connect()
        let idr1 = hello.windows[0].base + 0x24
        let count = 10_000
        var bytes: [UInt8] = []
        for i in 0..<count { Request.read(ReadRequest(address: idr1, width: 4)).encode(tag: UInt32(1_000 + i), into: &bytes) }
        var i = 0
        var bad = 0
        let start = ContinuousClock.now
        try client.exchange(bytes, responses: count) { header, payload throws(SMMUClientError) in
            if header.tag != UInt32(1_000 + i) || header.statusCode != .ok || payload.loadLE(UInt32.self, at: 0) & 0xFF != 120 {
                bad += 1
            }
            i += 1
        }
        let elapsed = ContinuousClock.now - start
        #expect(i == count && bad == 0)
        print("pipelined READ: \(count) in \(elapsed)")
    }

    @Test("an EVENTS connection sees the global fault line rise on a DMA fault and fall on the W1C")
    func events() throws {
        let daemon = try RunningDaemon()
        defer { daemon.stop() }
        let (host, hello) = try daemon.connect()
        let base = hello.windows[1].base
        try host.write(address: base, value: 0x0020_1C36)  // sCR0: GFIE, USFCFG
        try host.write(address: base + 0x48, value: 0xFFFF_FFFF)  // sGFSR W1C
        let (listener, _) = try daemon.connect()
        let stream = try listener.events()
        let (device, _) = try daemon.connect(role: .device)
        #expect(try device.dma(window: 1, stream: 0x55, iova: 0x1000).fault == 1)
        func waitFor(_ wanted: Event) throws -> Bool {
            for _ in 0..<64 {
                guard let e = try stream.next(timeout: .seconds(5)) else { return false }
                if e == wanted { return true }
            }
            return false
        }
        #expect(try waitFor(Event(window: 1, line: 0, level: 1)))
        try host.write(address: base + 0x48, value: try host.read(address: base + 0x48))
        #expect(try waitFor(Event(window: 1, line: 0, level: 0)))
    }

    @Test("MEM_MAP lends the client's sealed memfd: the daemon reads and writes the client's bytes")
    func memMap() throws {
        let daemon = try RunningDaemon()
        defer { daemon.stop() }
        let (client, _) = try daemon.connect()
        let file = try SMMUClient.makeSharedMemory(size: 0x20_0000)
        defer { close(file) }
        let marker = Array("from the client's file".utf8)
        #expect(pwrite(file, marker, marker.count, 0x1_0000 + 0x40) == marker.count)
        // Bytes [0x10000, 0x10000 + 1 MiB) of the file become host RAM at 0x80100000.
        try client.memMap(address: 0x8010_0000, size: 0x10_0000, offset: 0x1_0000, fd: file)
        #expect(try client.memRead(address: 0x8010_0040, length: marker.count) == marker)
        try client.memWrite(address: 0x8010_1000, bytes: [0xDE, 0xAD, 0xBE, 0xEF])
        var back = [UInt8](repeating: 0, count: 4)
        #expect(pread(file, &back, 4, 0x1_0000 + 0x1000) == 4)
        #expect(back == [0xDE, 0xAD, 0xBE, 0xEF])
        // The seal holds: the client cannot shrink the file under the daemon's mapping (the red team's SIGBUS).
        #expect(ftruncate(file, 0) == -1 && errno == EPERM)
        #expect(try client.memRead(address: 0x8010_0040, length: marker.count) == marker)
        // Without the descriptor, or with two, the request is MALFORMED and the connection closes.
        for fds in [[], [file, file]] {
            let (other, _) = try daemon.connect()
            try other.sendRaw(Request.memMap(MemMapRequest(address: 0x8020_0000, size: 0x1000, offset: 0)).encoded(tag: 7),
                              fds: fds)
            #expect(try other.receiveFrame().status == .malformed, "\(fds.count) descriptors")
            #expect(try other.waitForClose())
        }
    }

    /// The red team's crash: MEM_MAP of a file shorter than the range, or one that shrinks afterwards, then a
    /// MEM_READ (or a walk, or a scrub) of it: SIGBUS killed the daemon and every client with it. Every such
    /// file is refused now, and the daemon and its other clients go on.
    @Test("MEM_MAP of a file that is or could become too short is INVALID; nobody is hurt")
    func memMapOfAShortOrShrinkableFileIsRefused() throws {
        let daemon = try RunningDaemon()
        defer { daemon.stop() }
        let (client, _) = try daemon.connect()
        let (bystander, _) = try daemon.connect()
        func refused(_ fd: Int32, size: UInt64 = 0x4000, offset: UInt64 = 0, _ what: String) {
            #expect(throws: SMMUClientError.status(.invalid), "\(what)") {
                try client.memMap(address: 0x8030_0000, size: size, offset: offset, fd: fd)
            }
        }
        let unsealed = csock_memfd("unsealed")
        defer { close(unsealed) }
        #expect(ftruncate(unsealed, 0x4000) == 0)
        refused(unsealed, "an unsealed memfd could be truncated later")
        let short = try SMMUClient.makeSharedMemory(size: 0x1000)
        defer { close(short) }
        refused(short, "a sealed memfd shorter than the range")
        refused(short, size: 0x1000, offset: 0x1000, "a range past the end of a sealed memfd")
        var template = Array("/tmp/smmu-ram-XXXXXX".utf8CString)
        let plain = mkstemp(&template)
        template.withUnsafeBufferPointer { _ = unlink($0.baseAddress!) }
        defer { close(plain) }
        #expect(ftruncate(plain, 0x4000) == 0)
        refused(plain, "a plain file cannot be sealed")
        let writeSealed = csock_memfd("write-sealed")
        defer { close(writeSealed) }
        #expect(ftruncate(writeSealed, 0x4000) == 0 && csock_add_seals(writeSealed, CSOCK_SEAL_SHRINK | CSOCK_SEAL_WRITE) == 0)
        refused(writeSealed, "a write-sealed memfd cannot be mapped writable")
        // Nothing was mapped: the range is the daemon's own memory, and both clients are served.
        #expect(try client.memRead(address: 0x8030_0000, length: 4) == [0, 0, 0, 0])
        #expect(try bystander.memRead(address: 0x8030_0000, length: 4) == [0, 0, 0, 0])
        // One memfd at two addresses is an alias, refused (DENIED, audited).
        let ram = try SMMUClient.makeSharedMemory(size: 0x4000)
        defer { close(ram) }
        try client.memMap(address: 0x8030_0000, size: 0x4000, offset: 0, fd: ram)
        #expect(throws: SMMUClientError.status(.denied)) {
            try bystander.memMap(address: 0x8040_0000, size: 0x1000, offset: 0x3000, fd: ram)
        }
        // And a mapped page cannot be donated (the host keeps its own mapping of it).
        let vm = try client.vmCreate()
        #expect(throws: SMMUClientError.status(.denied)) { try client.vmDonate(vm: vm, address: 0x8030_1000, size: 0x1000) }
        try client.vmDonate(vm: vm, address: 0x8050_0000, size: 0x1000)
        #expect(throws: SMMUClientError.status(.denied)) {
            try bystander.memMap(address: 0x8050_0000, size: 0x1000, offset: 0, fd: try SMMUClient.makeSharedMemory(size: 0x1000))
        }
        #expect(try bystander.memRead(address: 0x8030_0000, length: 4) == [0, 0, 0, 0])
    }

    @Test("a host's STATS show only its own streams' DMA and faults; the admin's show a protected VM's too")
    func statsByRole() throws {
        let daemon = try RunningDaemon()
        defer { daemon.stop() }
        let (host, _) = try daemon.connect()
        let vm = try host.vmCreate()
        try host.vmAssignStream(vm: vm, window: 0, stream: 0x30)
        let (device, _) = try daemon.connect(role: .device)
        for _ in 0..<3 { #expect(try device.dma(window: 0, stream: 0x30, iova: 0x1000).fault != 0, "nothing donated: the VM's DMA faults") }
        #expect(try device.dma(window: 0, stream: 0x31, iova: 0x1000).fault != 0, "a host stream no SMR matches")
        func object(_ text: String) -> [String: Any] {
            (try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any]) ?? [:]
        }
        let mine = object(try host.stats())
        #expect(mine["dma_translations"] as? Int == 1)
        #expect((mine["faults_by_kind"] as? [String: Int])?.values.reduce(0, +) == 1)
        #expect(mine["tlb"] == nil && mine["dma_by_owner"] == nil)
        #expect((mine["operations"] as? [String: Any])?["DMA"] == nil)
        let (admin, _) = try daemon.connect(role: .admin)
        let all = object(try admin.stats())
        #expect(all["dma_translations"] as? Int == 4)
        #expect((all["faults_by_kind"] as? [String: Int])?.values.reduce(0, +) == 4)
        #expect(all["tlb"] != nil)
    }
}
