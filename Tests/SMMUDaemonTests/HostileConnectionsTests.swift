import Foundation
import TestSupport
import Glibc
import Testing
@testable import SMMUDaemon

/// G8 against the real daemon: connections that never say HELLO must not keep anyone else out, whether the
/// connection cap or the descriptor limit is what they run into.
@Suite(.serialized)
struct HostileConnectionsTests {
    /// niso1's first instance on Tegra234: sCR0.
    static let tegraSCR0: UInt64 = 0x0800_0000

    /// The Tegra234 config with a HELLO deadline of `helloTimeout` ms, in `directory`.
    func config(helloTimeout: Int = 5000, in directory: TemporaryDirectory) throws -> String {
        let yaml = try String(contentsOfFile: repositoryRoot + "/Config/tegra234.yaml", encoding: .utf8)
            .replacingOccurrences(of: "hello_timeout_ms: 5000", with: "hello_timeout_ms: \(helloTimeout)")
        #expect(yaml.contains("hello_timeout_ms: \(helloTimeout)"))
        let path = directory.path + "/limits.yaml"
        try yaml.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    /// HELLO as host and one READ, both answered OK; returns the client, still connected.
    @discardableResult
    func served(_ daemon: DaemonProcess, name: String) throws -> TestClient {
        let client = try daemon.connect()
        try client.write(Frame.hello(role: 1, name: name) + Frame.read(address: Self.tegraSCR0, tag: 2))
        let hello = try Frame.response(from: client)
        #expect(hello.opcode == 0x81 && hello.status == 0)
        let read = try Frame.response(from: client)
        #expect(read.opcode == 0x82 && read.tag == 2 && read.status == 0 && read.payload.count == 8)
        return client
    }

    /// The admin's STATS "connections" object.
    func connectionStats(_ daemon: DaemonProcess) throws -> [String: Int] {
        let admin = try daemon.connect()
        try admin.write(Frame.hello(role: 3, name: "operator") + Frame.request(0x20, tag: 5))
        _ = try Frame.response(from: admin)
        let stats = try Frame.response(from: admin)
        #expect(stats.opcode == 0xA0 && stats.status == 0)
        let object = try JSONSerialization.jsonObject(with: Data(stats.payload)) as? [String: Any]
        return object?["connections"] as? [String: Int] ?? [:]
    }

    @Test func thousandIdleConnectionsDoNotKeepANewClientOut() throws {
        #expect(raiseDescriptorLimit() >= 1100, "the test needs a descriptor per connection")
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        // The default cap (1024) and a HELLO deadline long enough that every idle connection is still open.
        let daemon = try DaemonProcess(arguments: ["--finalize-delay", "0"],
                                       config: try config(helloTimeout: 600_000, in: dir))
        #expect(daemon.notify.wait(for: "READY=1") != nil)
        let hostile = try (0..<1000).map { _ in try daemon.connect() }
        let client = try served(daemon, name: "after-the-flood")
        let connections = try connectionStats(daemon)
        #expect(connections["open"] == 1002, "\(connections)")
        #expect(connections["evicted_ungreeted"] == 0 && connections["refused"] == 0 && connections["hello_timeouts"] == 0)
        #expect(hostile.count == 1000 && !client.isClosed)
        #expect(daemon.stop() == 0)
    }

    @Test func outOfDescriptorsTheOldestIdleConnectionMakesRoom() throws {
        raiseDescriptorLimit()
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        // 64 descriptors for a cap of 1024: accept() fails with EMFILE long before the cap.
        let daemon = try DaemonProcess(arguments: ["--finalize-delay", "0"],
                                       config: try config(helloTimeout: 600_000, in: dir),
                                       launcher: { _ in ["/usr/bin/prlimit", "--nofile=64"] })
        #expect(daemon.notify.wait(for: "READY=1") != nil)
        let hostile = try (0..<300).map { _ in try daemon.connect() }
        try served(daemon, name: "after-emfile")
        let connections = try connectionStats(daemon)
        #expect((connections["evicted_ungreeted"] ?? 0) >= 300 - 64, "\(connections)")
        #expect(hostile.count == 300)
        #expect(daemon.stop() == 0)
        #expect(daemon.standardError().contains("descriptor limit 64 is below limits.max_connections"))
    }

    @Test func outOfDescriptorsWithEveryoneGreetedTheNewcomerIsClosedAndTheListenerLives() throws {
        raiseDescriptorLimit()
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let daemon = try DaemonProcess(arguments: ["--finalize-delay", "0"], config: try config(in: dir),
                                       launcher: { _ in ["/usr/bin/prlimit", "--nofile=64"] })
        #expect(daemon.notify.wait(for: "READY=1") != nil)
        let admin = try daemon.connect()
        try admin.write(Frame.hello(role: 3, name: "operator"))
        #expect(try Frame.response(from: admin).status == 0)
        // Greeted hosts until the daemon has no descriptor left: the next one is accepted and closed at once.
        var greeted: [TestClient] = []
        var refused = false
        for i in 0..<100 {
            let client = try daemon.connect()
            try? client.write(Frame.hello(role: 1, name: "host\(i)"))
            guard let hello = try? Frame.response(from: client), hello.status == 0 else {
                refused = true
                break
            }
            greeted.append(client)
        }
        #expect(refused && greeted.count < 64, "greeted \(greeted.count)")
        func connections() throws -> [String: Int] {
            try admin.write(Frame.request(0x20, tag: 5))
            let stats = try Frame.response(from: admin)
            return (try JSONSerialization.jsonObject(with: Data(stats.payload)) as? [String: Any])?["connections"] as? [String: Int] ?? [:]
        }
        let before = try connections()
        #expect((before["refused"] ?? 0) >= 1, "\(before)")
        // Once the daemon has closed a connection and its descriptor is free, the listener serves the next client.
        greeted.removeLast().close()
        #expect(eventually { (try? connections())?["open"] == (before["open"] ?? 0) - 1 })
        try served(daemon, name: "after-refusal")
        #expect(daemon.stop() == 0)
    }
}
