import CSocketShims
import TestSupport
import Dispatch
import Foundation
import Glibc
import Testing
@testable import SMMUDaemon

/// The transport over real AF_UNIX sockets, with the echo protocol of the test target.
@Suite(.serialized)
struct UnixServerTests {
    @Test func pipelinedFramesAreAnsweredInOrder() throws {
        let fixture = try EchoServerFixture()
        defer { fixture.shutdown() }
        let client = try TestClient(path: fixture.path)
        let request = echoFrames(20_000)  // 320 KB in one write: many receive calls, several send calls
        try client.write(request)
        #expect(try client.read(exactly: request.count) == request)
    }

    @Test func partialFramesAcrossWritesAreReassembled() throws {
        let fixture = try EchoServerFixture()
        defer { fixture.shutdown() }
        let client = try TestClient(path: fixture.path)
        let request = echoFrames(3)
        for byte in request {
            try client.write([byte])
        }
        #expect(try client.read(exactly: request.count) == request)
    }

    @Test func manyClientsAtOnceEachGetTheirOwnAnswers() throws {
        let fixture = try EchoServerFixture()
        defer { fixture.shutdown() }
        let clients = try (0..<64).map { _ in try TestClient(path: fixture.path) }
        #expect(eventually { fixture.onQueue { fixture.server.clientCount } == 64 })
        for (i, client) in clients.enumerated() { try client.write(echoFrames(200, first: i * 1000)) }
        for (i, client) in clients.enumerated() {
            #expect(try client.read(exactly: 200 * 16) == echoFrames(200, first: i * 1000))
        }
        let peers = fixture.onQueue { fixture.server.connectionStatuses().map(\.peer) }
        #expect(peers.allSatisfy { $0.pid == getpid() && $0.uid == getuid() && $0.gid == getgid() })
    }

    @Test func clientThatNeverReadsIsThrottledAndOthersAreServed() throws {
        var limits = UnixServer.Limits()
        limits.maxPendingOutput = 256 << 10
        let fixture = try EchoServerFixture(limits: limits)
        defer { fixture.shutdown() }
        let hog = try TestClient(path: fixture.path)
        var sent = fillUntilServerStopsReading(hog, fixture)
        let status = try #require(fixture.onQueue { fixture.server.connectionStatuses().first })
        #expect(status.readSuspended)
        #expect(status.peakPendingOutput <= limits.maxPendingOutput + limits.readChunk)
        // Another client is served meanwhile.
        let other = try TestClient(path: fixture.path)
        try other.write(echoFrames(10))
        #expect(try other.read(exactly: 160) == echoFrames(10))
        // Nothing was dropped: once the hog reads, it gets every answer in order.
        if sent.count % 16 != 0 {  // complete the last frame the socket took only part of
            let rest = Array(echoFrames(1, first: sent.count / 16)[(sent.count % 16)...])
            try hog.write(rest)
            sent += rest
        }
        #expect(try hog.read(exactly: sent.count) == sent)
    }

    /// A server whose answers back up: one client asks for 400 x 64 KiB answers (25 MiB from 6.4 KB of requests)
    /// and reads none of them, until the server stops reading it.
    static let throttledLimits: UnixServer.Limits = {
        var limits = UnixServer.Limits()
        limits.maxPendingOutput = 256 << 10
        return limits
    }()

    func throttledClient() throws -> (EchoServerFixture, TestClient) {
        let fixture = try EchoServerFixture(limits: Self.throttledLimits)
        fixture.onQueue { fixture.factory.sessionOutputLimit = 128 << 10 }
        let client = try TestClient(path: fixture.path)
        try client.write(echoFrames(400, kind: 0xB1))
        #expect(eventually { fixture.onQueue { fixture.server.connectionStatuses().first?.readSuspended ?? false } })
        return (fixture, client)
    }

    @Test func sessionHoldingLargeAnswersStaysBounded() throws {
        let (fixture, client) = try throttledClient()
        defer { fixture.shutdown() }
        let limits = Self.throttledLimits
        let peak = fixture.onQueue { fixture.server.connectionStatuses().first?.peakPendingOutput ?? 0 }
        #expect(peak <= limits.maxPendingOutput + (128 << 10) + EchoSession.bigAnswer + 16)
        let answer = try client.read(exactly: 400 * (16 + EchoSession.bigAnswer))
        #expect(Array(answer[(16 + EchoSession.bigAnswer)..<(32 + EchoSession.bigAnswer)]) == echoFrames(1, first: 1, kind: 0xB1))
        try client.write(echoFrames(1))
        #expect(try client.read(exactly: 16) == echoFrames(1))
    }

    @Test func throttledClientThatHangsUpIsReclaimed() throws {
        // Reading is off while the answers back up, so the server cannot learn of the hang-up by reading: it must
        // still close the connection and serve the next client.
        let (fixture, client) = try throttledClient()
        defer { fixture.shutdown() }
        client.close()
        #expect(eventually { fixture.onQueue { fixture.server.clientCount == 0 && fixture.factory.closedSessions == 1 } })
        let other = try TestClient(path: fixture.path)
        try other.write(echoFrames(3))
        #expect(try other.read(exactly: 48) == echoFrames(3))
    }

    @Test func clientKilledMidFrameAffectsNobody() throws {
        let fixture = try EchoServerFixture()
        defer { fixture.shutdown() }
        let steady = try TestClient(path: fixture.path)
        let dying = try TestClient(path: fixture.path)
        try dying.write(Array(echoFrames(2)[0..<24]))  // one frame and a half
        try steady.write(echoFrames(5))
        dying.close()
        #expect(try steady.read(exactly: 80) == echoFrames(5))
        #expect(eventually { fixture.onQueue { fixture.server.clientCount == 1 && fixture.factory.closedSessions == 1 } })
        try steady.write(echoFrames(5, first: 5))
        #expect(try steady.read(exactly: 80) == echoFrames(5, first: 5))
    }

    @Test func thousandConnectionsLeakNoDescriptors() throws {
        let fixture = try EchoServerFixture()
        defer { fixture.shutdown() }
        let warmup = try TestClient(path: fixture.path)
        try warmup.write(echoFrames(1))
        _ = try warmup.read(exactly: 16)
        warmup.close()
        #expect(eventually { fixture.onQueue { fixture.server.clientCount } == 0 })
        let before = openDescriptorCount()
        for i in 0..<1000 {
            let client = try TestClient(path: fixture.path)
            if i % 2 == 0 {
                try client.write(echoFrames(1, first: i))
                #expect(try client.read(exactly: 16) == echoFrames(1, first: i))
            }
            client.close()
        }
        // The last connections may still be waiting to be accepted when the count first reads 0: wait for every
        // session to have been made and closed.
        #expect(eventually { fixture.onQueue { fixture.factory.closedSessions == 1001 && fixture.server.clientCount == 0 } })
        #expect(eventually { openDescriptorCount() <= before + 4 }, "descriptors before: \(before), after: \(openDescriptorCount())")
    }

    @Test func passedDescriptorsAreClosedUnlessTheSessionKeepsThem() throws {
        let fixture = try EchoServerFixture()
        defer { fixture.shutdown() }
        for keep in [false, true] {
            let client = try TestClient(path: fixture.path)
            var pipeFDs: [Int32] = [0, 0]
            #expect(pipe(&pipeFDs) == 0)
            let frame = echoFrames(1, kind: keep ? 0xFD : 0x01)
            let n = frame.withUnsafeBytes { raw in
                [pipeFDs[1]].withUnsafeBufferPointer { csock_send_with_fds(client.fd, raw.baseAddress, raw.count, $0.baseAddress, 1, Int32(MSG_NOSIGNAL)) }
            }
            #expect(n == 16)
            close(pipeFDs[1])
            #expect(try client.read(exactly: 16) == frame)
            // The read end sees EOF only once every copy of the write end is closed.
            #expect(readEndSeesEOF(pipeFDs[0], within: keep ? 300 : 5000) == !keep)
            if keep {
                client.close()  // the session closes what it kept
                #expect(readEndSeesEOF(pipeFDs[0], within: 5000))
            }
            close(pipeFDs[0])
        }
    }

    @Test func sessionCanCloseAfterItsAnswersAreSent() throws {
        let fixture = try EchoServerFixture()
        defer { fixture.shutdown() }
        let client = try TestClient(path: fixture.path)
        let request = echoFrames(3) + echoFrames(1, first: 3, kind: 0xCC) + echoFrames(2, first: 4)
        try client.write(request)
        #expect(try client.readToEOF() == Array(request[0..<64]))
    }

    @Test func shutdownAnswersWhatWasReadThenClosesAndRemovesTheSocket() throws {
        let fixture = try EchoServerFixture()
        let client = try TestClient(path: fixture.path)
        let request = echoFrames(5000)
        try client.write(request)
        #expect(eventually { fixture.onQueue { fixture.server.connectionStatuses().first?.bytesReceived ?? 0 } == UInt64(request.count) })
        let completed = DispatchSemaphore(value: 0)
        fixture.server.queue.async { fixture.server.beginShutdown { completed.signal() } }
        #expect(try client.readToEOF() == request)
        #expect(completed.wait(timeout: .now() + 5) == .success)
        #expect(access(fixture.path, F_OK) != 0)
        #expect((try? TestClient(path: fixture.path)) == nil)
        fixture.directory.remove()
    }

    @Test func shutdownDoesNotWaitForeverOnAClientThatNeverReads() throws {
        var limits = UnixServer.Limits()
        limits.maxPendingOutput = 64 << 10
        limits.shutdownGrace = .milliseconds(300)
        let fixture = try EchoServerFixture(limits: limits)
        let hog = try TestClient(path: fixture.path)
        _ = fillUntilServerStopsReading(hog, fixture)
        #expect(eventually { fixture.onQueue { fixture.server.connectionStatuses().first?.readSuspended ?? false } })
        let completed = DispatchSemaphore(value: 0)
        fixture.server.queue.async { fixture.server.beginShutdown { completed.signal() } }
        #expect(completed.wait(timeout: .now() + 5) == .success)
        fixture.directory.remove()
    }

    /// Writes frames without blocking until the server has suspended reading this client and the socket has taken
    /// nothing for 200 ms since (so slow builds, e.g. under TSan, do not stop early); returns what it took.
    private func fillUntilServerStopsReading(_ client: TestClient, _ fixture: EchoServerFixture) -> [UInt8] {
        var sent: [UInt8] = []
        var stalledSince = Date()
        let deadline = Date().addingTimeInterval(30)
        while sent.count < 64 << 20, Date() < deadline {
            let chunk = echoFrames(4096, first: sent.count / 16)
            let n = client.writeNonBlocking(chunk)
            if n > 0 {
                sent += chunk[0..<n]
                stalledSince = Date()
                continue
            }
            if Date().timeIntervalSince(stalledSince) > 0.2,
               fixture.onQueue({ fixture.server.connectionStatuses().first?.readSuspended ?? false }) {
                break
            }
            usleep(10_000)
        }
        #expect(sent.count < 64 << 20, "the server kept reading from a client that never reads")
        return sent
    }

    private func readEndSeesEOF(_ fd: Int32, within milliseconds: Int32) -> Bool {
        var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        guard poll(&pfd, 1, milliseconds) == 1 else { return false }
        var byte: UInt8 = 0
        return Glibc.read(fd, &byte, 1) == 0
    }
}
