import CSocketShims
import Foundation
import TestSupport
import Glibc
import Testing
@testable import SMMUDaemon

/// The smmu-hypd executable as a child process: readiness (G1), signals, configuration errors, socket activation.
@Suite(.serialized)
struct DaemonProcessTests {
    static let host: UInt32 = 1
    static let admin: UInt32 = 3
    /// niso1's first instance on Tegra234: sCR0 (GR0 offset 0).
    static let tegraSCR0: UInt64 = 0x0800_0000

    @Test func readsAreDeferredAndReadyIsWithheldUntilFinalization() throws {
        let daemon = try DaemonProcess(arguments: ["--finalize-delay", "700"])
        let client = try daemon.connect()
        try client.write(Frame.hello(role: Self.host, name: "g1-test") + Frame.read(address: Self.tegraSCR0, tag: 2))
        let hello = try Frame.response(from: client)
        #expect(hello.opcode == 0x81 && hello.status == 0)
        let state = hello.payload.count >= 8 ? UInt32(hello.payload[4]) : 99
        let read = try Frame.response(from: client)
        let answeredAt = Date().timeIntervalSince(daemon.started)
        #expect(!daemon.notify.sawReady, "READY=1 before finalization")
        if answeredAt < 0.6 {  // still inside the delay: not finalized
            #expect(state == 0)
            #expect(read.opcode == 0x82 && read.status == 1, "READ before finalization must be DEFERRED")
            #expect(read.payload == [UInt8](repeating: 0, count: 8))
        }
        let ready = try #require(daemon.notify.wait(for: "READY=1"))
        #expect(Date().timeIntervalSince(daemon.started) >= 0.7)
        #expect(ready.contains("STATUS=finalized"))
        try client.write(Frame.hello(role: Self.host, name: "after", tag: 3))
        let after = try Frame.response(from: client)
        #expect(after.tag == 3)
        #expect(daemon.stop() == 0)
    }

    @Test func manualFinalizationWaitsForAdminFinalize() throws {
        let daemon = try DaemonProcess(arguments: ["--finalize", "manual"])
        let client = try daemon.connect()
        #expect(daemon.notify.wait(for: "READY=1", seconds: 0.8) == nil)
        try client.write(Frame.hello(role: Self.admin, name: "operator") + Frame.request(0x22, tag: 9))
        _ = try Frame.response(from: client)
        let finalize = try Frame.response(from: client)
        #expect(finalize.opcode == 0xA2 && finalize.tag == 9 && finalize.status == 0)
        #expect(daemon.notify.wait(for: "READY=1") != nil)
        #expect(daemon.stop() == 0)
    }

    /// `--finalize host`: the host's own PROT_FINALIZE (a guest kernel's finalize_pkvm() under QEMU) is what
    /// finalizes, and READY=1 follows it; the host's register access before it is DEFERRED, a second PROT_FINALIZE
    /// is DENIED, and STATS says who finalized.
    @Test func hostFinalizationIsWhatMakesTheDaemonReady() throws {
        let daemon = try DaemonProcess(arguments: ["--finalize", "host"])
        let client = try daemon.connect()
        try client.write(Frame.hello(role: Self.host, name: "guest-pkvm") + Frame.read(address: Self.tegraSCR0, tag: 2))
        #expect(try Frame.response(from: client).status == 0)
        #expect(try Frame.response(from: client).status == 1, "READ before the host finalized must be DEFERRED")
        #expect(daemon.notify.wait(for: "READY=1", seconds: 0.8) == nil, "READY=1 before the host finalized")
        try client.write(Frame.request(0x25, tag: 3))
        let finalize = try Frame.response(from: client)
        #expect(finalize.opcode == 0xA5 && finalize.tag == 3 && finalize.status == 0)
        #expect(daemon.notify.wait(for: "READY=1") != nil)
        try client.write(Frame.request(0x25, tag: 4) + Frame.request(0x20, tag: 5))
        #expect(try Frame.response(from: client).status == 2, "a second PROT_FINALIZE must be DENIED")
        let stats = try Frame.response(from: client)
        let json = try #require(try JSONSerialization.jsonObject(with: Data(stats.payload)) as? [String: Any])
        let by = try #require(json["finalized_by"] as? [String: Any])
        #expect(by["by"] as? String == "host" && by["client"] as? String == "guest-pkvm")
        #expect((json["denials_by_rule"] as? [String: Int])?["G1.finalize-repeated"] == 1)
        #expect(daemon.stop() == 0)
    }

    /// In the other modes the host may not finalize: DENIED, and the daemon still finalizes on its own terms.
    @Test func hostFinalizationIsDeniedUnlessConfigured() throws {
        let daemon = try DaemonProcess(arguments: ["--finalize", "manual"])
        let client = try daemon.connect()
        try client.write(Frame.hello(role: Self.host, name: "early-guest") + Frame.request(0x25, tag: 2))
        #expect(try Frame.response(from: client).status == 0)
        #expect(try Frame.response(from: client).status == 2, "PROT_FINALIZE without finalization.mode host")
        #expect(daemon.notify.wait(for: "READY=1", seconds: 0.5) == nil)
        #expect(daemon.stop() == 0)
    }

    /// Restart mode (`fd_store: true`, the shipped configurations', or `--fd-store`): under a service manager the daemon stores its journal, its
    /// first checkpoint and each connection (FDSTORE=1 with a name), and waits for BARRIER=1's answer, which is the receiver closing the
    /// descriptor the barrier sent. A receiver that never closes it would leave the daemon waiting 5 s and warning.
    @Test func restartModeStoresTheJournalAndConnectionsAndItsBarrierIsAnswered() throws {
        let daemon = try DaemonProcess(arguments: ["--finalize-delay", "0", "--fd-store"])
        #expect(daemon.notify.wait(for: "READY=1") != nil)
        let client = try daemon.connect()
        try client.write(Frame.hello(role: Self.host, name: "stored"))
        #expect(try Frame.response(from: client).status == 0)
        #expect(daemon.notify.wait(for: "FDNAME=c.1") != nil, "the connection is stored")
        let journal = try #require(daemon.notify.received.first { $0.contains("FDNAME=journal.0") })
        #expect(journal.contains("FDSTORE=1"))
        // RAM (host RAM, then hypervisor RAM) is stored first, once, with journal 0 (RAMFiles). A fresh start then
        // moves to generation 1 at once: checkpoint 1 (the configuration's state) and its journal are stored,
        // confirmed by a barrier, and generation 0 is removed.
        let names = daemon.notify.received.compactMap { d in d.split(separator: "\n").first { $0.hasPrefix("FDNAME=") } }
        #expect(Array(names.prefix(6)) == ["FDNAME=ram.0", "FDNAME=ram.1", "FDNAME=journal.0", "FDNAME=checkpoint.1",
                                           "FDNAME=journal.1", "FDNAME=journal.0"])
        #expect(names.filter { $0.hasPrefix("FDNAME=ram.") }.count == 2, "RAM is stored once")
        #expect(daemon.notify.received.contains { $0.contains("FDSTOREREMOVE=1") && $0.contains("FDNAME=journal.0") })
        #expect(daemon.notify.barriers >= 2)
        #expect(Date().timeIntervalSince(daemon.started) < 5, "BARRIER=1 was not answered at once")
        #expect(daemon.stop() == 0)
    }

    /// systemd 254 and later say how many descriptors the unit may store ($FDSTORE): none means no restart mode,
    /// since a stop that leaves connections to a store that keeps nothing would drop their unsent answers.
    @Test func noFileDescriptorStoreMeansNoRestartMode() throws {
        let daemon = try DaemonProcess(arguments: ["--finalize-delay", "0", "--fd-store"], environment: ["FDSTORE": "0"])
        #expect(daemon.notify.wait(for: "READY=1") != nil)
        #expect(daemon.stop() == 0)
        #expect(!daemon.notify.received.contains { $0.contains("FDSTORE=1") })
        #expect(daemon.notify.barriers == 0)
    }

    /// RING is served in restart mode too (its requests are journaled before they are applied: docs/hypervisor-model.md,
    /// "Restart and crash survival"), as with restart mode off ($FDSTORE=0): a request through the ring gets the
    /// answer the socket gives the same request. (Surviving restarts and kill -9: scripts/systemd-restart-test.sh.)
    @Test(arguments: [true, false]) func ringIsServedInRestartModeAsWithout(restartMode: Bool) throws {
        let daemon = try DaemonProcess(arguments: ["--finalize-delay", "0", "--fd-store"],
                                       environment: restartMode ? [:] : ["FDSTORE": "0"])
        #expect(daemon.notify.wait(for: "READY=1") != nil)
        let client = try daemon.connect()
        try client.write(Frame.hello(role: Self.host, name: "ring"))
        #expect(try Frame.response(from: client).status == 0)
        let memfd = csock_sealed_memfd("ring", 0x23000)
        #expect(memfd >= 0)
        defer { close(memfd) }
        let frame = Frame.request(0x0B, tag: 5)
        let sent = frame.withUnsafeBytes { raw in
            [memfd].withUnsafeBufferPointer { csock_send_with_fds(client.fd, raw.baseAddress, raw.count, $0.baseAddress, 1, Int32(MSG_NOSIGNAL)) }
        }
        #expect(sent == frame.count)
        let answer = try Frame.response(from: client)
        #expect(answer.opcode == 0x8B && answer.tag == 5)
        #expect(answer.status == 0, "RING accepted")
        if restartMode { #expect(daemon.notify.wait(for: "FDNAME=c.1") != nil, "the ring's file is stored with the connection") }
        try client.write(Frame.read(address: 0, tag: 6))
        let bySocket = try Frame.response(from: client)
        let base = try #require(mmap(nil, 0x23000, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0))
        defer { munmap(base, 0x23000) }
        let request = Frame.read(address: 0, tag: 7)
        request.withUnsafeBytes { (base + 0x1000).copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
        let words = base.assumingMemoryBound(to: UInt32.self)
        csock_store_release(words, 1)
        csock_futex_wake(words)
        #expect(eventually { csock_load_acquire(words + 1) == 1 }, "the ring answered")
        let length = Int(csock_load_acquire(words + 5))
        let ringAnswer = Array(UnsafeRawBufferPointer(start: base + 0x12000, count: length))
        #expect(length == 16 + bySocket.payload.count)
        #expect(ringAnswer.count >= 16 && ringAnswer[3] == 0x82 && ringAnswer[4] == 7)
        #expect(Array(ringAnswer[8..<12]) == Frame.le(UInt64(bySocket.status), 4) && Array(ringAnswer[16...]) == bySocket.payload,
                "the ring's answer is the socket's")
        #expect(daemon.stop() == 0)
    }

    @Test func sigtermSendsStoppingAnswersAndExitsZero() throws {
        let daemon = try DaemonProcess(arguments: ["--finalize-delay", "0"])
        #expect(daemon.notify.wait(for: "READY=1") != nil)
        let client = try daemon.connect()
        try client.write(Frame.hello(role: Self.host, name: "stopper"))
        #expect(try Frame.response(from: client).status == 0)
        kill(daemon.process.processIdentifier, SIGTERM)
        #expect(daemon.notify.wait(for: "STOPPING=1") != nil)
        #expect(try client.readToEOF().isEmpty, "the connection is closed, nothing else sent")
        #expect(daemon.waitForExit() == 0)
        #expect(access(daemon.socketPath, F_OK) != 0, "the socket file is removed")
        #expect(daemon.standardError().contains("stopped"))
    }

    @Test func sigintStopsLikeSigterm() throws {
        let daemon = try DaemonProcess(arguments: ["--finalize-delay", "0"])
        #expect(daemon.notify.wait(for: "READY=1") != nil)
        #expect(daemon.stop(signal: SIGINT) == 0)
        #expect(daemon.notify.wait(for: "STOPPING=1") != nil)
    }

    @Test func badConfigurationExits78NamingTheKey() throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let yaml = try String(contentsOfFile: repositoryRoot + "/Config/tegra234.yaml", encoding: .utf8)
            .replacingOccurrences(of: "reserved_smrs: 8", with: "reserved_smrs: 300")
        try yaml.write(toFile: dir.path + "/bad.yaml", atomically: true, encoding: .utf8)
        let daemon = try DaemonProcess(config: dir.path + "/bad.yaml")
        #expect(daemon.waitForExit() == 78)
        #expect(daemon.standardError().contains("config error: hypervisor.reserved_smrs: must be between 0 and 127"))
        #expect(!daemon.notify.sawReady)
    }

    @Test func liveSocketMakesASecondDaemonRefuseToStart() throws {
        let first = try DaemonProcess(arguments: ["--finalize-delay", "0"])
        _ = try first.connect()
        let second = try DaemonProcess(arguments: ["--finalize-delay", "0"], socketPath: first.socketPath)
        let status = second.waitForExit()
        #expect(status != nil && status != 0)
        #expect(second.standardError().contains("in use"))
        // The first daemon still serves.
        let client = try first.connect()
        try client.write(Frame.hello(role: Self.host, name: "still-there"))
        #expect(try Frame.response(from: client).status == 0)
        #expect(first.stop() == 0)
    }

    @Test func staleSocketFromAKilledDaemonIsReplaced() throws {
        let first = try DaemonProcess(arguments: ["--finalize-delay", "0"])
        _ = try first.connect()
        #expect(first.stop(signal: SIGKILL) == nil || !first.process.isRunning)
        #expect(access(first.socketPath, F_OK) == 0, "SIGKILL leaves the socket file behind")
        let second = try DaemonProcess(arguments: ["--finalize-delay", "0"], socketPath: first.socketPath)
        #expect(second.notify.wait(for: "READY=1") != nil)
        _ = try second.connect()
        #expect(second.stop() == 0)
    }

    @Test(.enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/systemd-socket-activate")))
    func socketActivationUsesThePassedSocket() throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let activated = dir.path + "/activated.sock"
        // The daemon's own --socket path must stay unused: the listener comes from LISTEN_FDS.
        let daemon = try DaemonProcess(arguments: ["--finalize-delay", "0"],
                                       launcher: { notify in ["/usr/bin/systemd-socket-activate", "-l", activated, "--fdname=smmu-hypd", "-E", "NOTIFY_SOCKET=\(notify)"] })
        #expect(eventually { access(activated, F_OK) == 0 })
        let client = try TestClient(path: activated)  // connecting starts the daemon
        try client.write(Frame.hello(role: Self.host, name: "activated"))
        #expect(try Frame.response(from: client).status == 0)
        #expect(daemon.notify.wait(for: "READY=1") != nil)
        #expect(access(daemon.socketPath, F_OK) != 0, "the daemon must not bind its own socket")
        #expect(daemon.stop() == 0)
        #expect(daemon.standardError().contains("socket activation: using fd 3 (smmu-hypd)"))
    }

    @Test func watchdogIsPingedAtHalfTheInterval() throws {
        let daemon = try DaemonProcess(arguments: ["--finalize-delay", "0"], environment: ["WATCHDOG_USEC": "400000"])
        // WATCHDOG_PID unset: the variable is meant for this process.
        #expect(daemon.notify.wait(for: "WATCHDOG=1", seconds: 3) != nil)
        #expect(daemon.stop() == 0)
    }
}
