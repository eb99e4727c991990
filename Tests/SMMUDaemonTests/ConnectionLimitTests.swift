import Dispatch
import TestSupport
import Foundation
import Glibc
import Testing
@testable import SMMUDaemon

/// The server's bounds on connections (G8) over real sockets, with the echo protocol (a connection is greeted by
/// its first frame). Deadlines are short here, but no test depends on how fast anything runs.
@Suite(.serialized)
struct ConnectionLimitTests {
    /// Sends one frame and reads its echo: afterwards the server has seen the client greeted.
    func greet(_ client: TestClient, _ n: Int) throws {
        try client.write(echoFrames(1, first: n))
        #expect(try client.read(exactly: 16) == echoFrames(1, first: n))
    }

    func waitForClients(_ fixture: EchoServerFixture, _ count: Int) -> Bool {
        eventually(seconds: 10) { fixture.onQueue { fixture.server.clientCount } == count }
    }

    @Test func ungreetedConnectionIsClosedAtTheHelloDeadline() throws {
        var limits = UnixServer.Limits()
        limits.helloDeadline = .milliseconds(200)
        let fixture = try EchoServerFixture(limits: limits)
        defer { fixture.shutdown() }
        let greeted = try TestClient(path: fixture.path)
        try greet(greeted, 1)
        let idle = try TestClient(path: fixture.path)
        #expect(try idle.readToEOF().isEmpty, "closed, with nothing sent")
        #expect(fixture.onQueue { fixture.server.counters.helloTimeouts } == 1)
        // Past the deadline, the greeted connection is still served.
        try greet(greeted, 2)
        #expect(fixture.onQueue { fixture.server.clientCount } == 1)
    }

    @Test func atTheCapTheOldestUngreetedMakesRoomAndOnlyAllGreetedRefuses() throws {
        var limits = UnixServer.Limits()
        limits.maxConnections = 4
        limits.helloDeadline = .seconds(600)
        let fixture = try EchoServerFixture(limits: limits)
        defer { fixture.shutdown() }
        let g1 = try TestClient(path: fixture.path)
        try greet(g1, 1)
        let g2 = try TestClient(path: fixture.path)
        try greet(g2, 2)
        let u1 = try TestClient(path: fixture.path)
        #expect(waitForClients(fixture, 3))
        let u2 = try TestClient(path: fixture.path)
        #expect(waitForClients(fixture, 4))

        // At the cap: the newcomer takes the place of the oldest un-greeted connection, u1.
        let n1 = try TestClient(path: fixture.path)
        try greet(n1, 3)
        #expect(try u1.readToEOF().isEmpty)
        #expect(fixture.onQueue { (fixture.server.clientCount, fixture.server.counters.evicted) } == (4, 1))
        // Then u2's turn.
        let n2 = try TestClient(path: fixture.path)
        try greet(n2, 4)
        #expect(try u2.readToEOF().isEmpty)
        #expect(fixture.onQueue { fixture.server.counters.evicted } == 2)

        // Every open connection is greeted: the next one is closed at once, and counted.
        let refused = try TestClient(path: fixture.path)
        #expect(try refused.readToEOF().isEmpty)
        #expect(fixture.onQueue { (fixture.server.counters.refused, fixture.server.clientCount) } == (1, 4))
        for (i, client) in [g1, g2, n1, n2].enumerated() { try greet(client, 10 + i) }
    }

    @Test func allConnectionsUnsentOutputIsBoundedAndAReaderIsServed() throws {
        var limits = UnixServer.Limits()
        limits.maxPendingOutput = 256 << 10
        limits.maxTotalPendingOutput = 1 << 20
        limits.stallThreshold = .zero
        let fixture = try EchoServerFixture(limits: limits)
        defer { fixture.shutdown() }
        fixture.onQueue { fixture.factory.sessionOutputLimit = 128 << 10 }
        let reader = try TestClient(path: fixture.path)
        try greet(reader, 0)
        // Eight clients ask for 2.5 MiB of answers each and read none: together far over the bound.
        let hogs = try (0..<8).map { _ in try TestClient(path: fixture.path) }
        for hog in hogs { try hog.write(echoFrames(40, kind: 0xB1)) }
        #expect(eventually(seconds: 20) { fixture.onQueue { fixture.server.counters.closedForOutput } >= 1 })
        #expect(eventually(seconds: 20) {
            fixture.onQueue {
                fixture.server.connectionStatuses().allSatisfy { $0.readSuspended || $0.pendingOutput == 0 }
                    && fixture.server.totalPendingOutput <= limits.maxTotalPendingOutput
            }
        })
        let accounted = fixture.onQueue { fixture.server.connectionStatuses().map(\.pendingOutput).reduce(0, +) }
        #expect(accounted == fixture.onQueue { fixture.server.totalPendingOutput }, "the running total matches the connections")
        #expect(accounted <= limits.maxTotalPendingOutput)
        // The client that reads its answers was never a candidate, and is served on.
        for i in 1...20 { try greet(reader, i) }
        let closed = fixture.onQueue { fixture.server.counters.closedForOutput }
        #expect(closed >= 1 && closed < 8)
    }

    @Test func eventsThatAClientNeverReadsAreCutOffAtTheHardLimit() throws {
        var limits = UnixServer.Limits()
        limits.hardPendingOutput = 256 << 10
        let fixture = try EchoServerFixture(limits: limits)
        defer { fixture.shutdown() }
        let subscriber = try TestClient(path: fixture.path)
        try greet(subscriber, 0)
        let id = try #require(fixture.onQueue { fixture.server.connectionStatuses().first?.id })
        // Unsolicited output, as the dispatcher pushes events: the socket buffer fills, then the hard limit closes.
        fixture.onQueue {
            for _ in 0..<400 { fixture.server.send([UInt8](repeating: 0xB0, count: 16 << 10), to: id) }
        }
        #expect(fixture.onQueue { (fixture.server.clientCount, fixture.server.counters.closedForUnreadEvents) } == (0, 1))
        #expect(fixture.onQueue { fixture.server.totalPendingOutput } == 0)
    }
}
