import Dispatch
import Foundation
import Glibc
import Logging
import PKVM
import SMMUModel
import Testing
import TestSupport
import WireProtocol
@testable import SMMUDaemon

/// G8 for checkpoints: in restart mode the dispatcher's state image does not grow with what clients leave unsent
/// (InputTake). The attack: many greeted connections each holding most of a 64 KiB frame, which the daemon used to
/// read into their sessions, so that every checkpoint copied and encoded all of it (64 MB for 1,024 connections).
struct RestartInputBoundTests {
    @Test func aCheckpointCarriesNoHalfSentFrames() throws {
        let hostRAM = PhysicalRange(base: 0x8000_0000, size: 16 << 20)
        let policy = HypervisorPolicy(topology: .tegra234, hostRAM: [hostRAM],
                                      hypervisorRAM: PhysicalRange(base: 0x7F00_0000, size: 4 << 20))
        let memory = try MemoryMap(regions: [(hostRAM.base, hostRAM.size), (0x7F00_0000, 4 << 20)])
        let dispatcher = Dispatcher(hypervisor: try Hypervisor(policy: policy, memory: memory, audit: CollectingAuditSink()))
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let path = directory.path + "/s.sock"
        let server = try UnixServer(listener: try ListeningSocket.bind(path: path, mode: 0o660), sessionFactory: dispatcher)
        let store = CheckpointTests.TableStore()
        server.persistence = ServerPersistence(journal: try RestartJournal.create(capacity: 64 << 20), store: store,
                                               logger: Logger(label: "test"))
        server.start()
        defer {
            let done = DispatchSemaphore(value: 0)
            server.queue.async { server.beginShutdown { done.signal() } }
            _ = done.wait(timeout: .now() + 10)
        }

        let count = 64
        let hello = Request.hello(HelloRequest(role: .host, name: "h")).encoded(tag: 1)
        let write = Request.memWrite(MemWriteRequest(address: hostRAM.base, bytes: [UInt8](repeating: 0x5A, count: 65536 - 16)))
            .encoded(tag: 2)
        let sentFirst = 60_000
        var clients: [TestClient] = []
        for _ in 0..<count {
            let c = try TestClient(path: path)
            try c.write(hello + write.prefix(sentFirst))
            let answer = FrameHeader(decoding: try c.read(exactly: FrameHeader.size).withUnsafeBytes { $0 })
            _ = try c.read(exactly: Int(answer.length))  // HELLO's answer: the connection is greeted
            clients.append(c)
        }
        // Give the daemon every chance to read what the sockets hold.
        Thread.sleep(forTimeInterval: 0.3)
        let (imageBytes, held) = server.queue.sync {
            let sessions = server.openConnections.sorted { $0.id.rawValue < $1.id.rawValue }.map { ($0.session, [UInt8]()) }
            let image = dispatcher.stateImage(sessions: sessions, serverCounters: server.counters, audit: nil).encoded()
            return (image.count, server.persistence!.heldInput)
        }
        // Before InputTake: 64 x 60,000 bytes of partial frames (3.8 MB). Now partial frames are held only while all
        // connections' held input stays under its bound (1 MiB: 17 of them); the others wait in the sockets, their
        // connections polled edge-triggered (level-triggered polling would report those bytes without end).
        let bound = ServerPersistence.maxHeldInput
        #expect(held <= bound && held == bound / sentFirst * sentFirst)
        #expect(imageBytes < bound + 32 << 10, "dispatcher image \(imageBytes) bytes")
        #expect(server.queue.sync { server.openConnections.filter(\.awaitingFrame).count } == count - bound / sentFirst)

        // A pipelining client: read a turn's worth at a time, every request is answered once, in order.
        let pipelining = try TestClient(path: path)
        let reads = (0..<3000).flatMap { Request.read(ReadRequest(address: 0x1200_0000, width: 4)).encoded(tag: UInt32(10 + $0)) }
        try pipelining.write(hello + reads)
        var tags: [UInt32] = []
        while tags.count < 3001 {
            let h = FrameHeader(decoding: try pipelining.read(exactly: FrameHeader.size).withUnsafeBytes { $0 })
            _ = try pipelining.read(exactly: Int(h.length))
            tags.append(h.tag)
        }
        #expect(tags == [1] + (0..<3000).map { UInt32(10 + $0) })
        #expect(server.queue.sync { server.persistence!.heldInput } == held)

        // A peer that shuts down with half a frame sent gets what it was owed and its connection closed, as before.
        let leaving = try TestClient(path: path)
        try leaving.write(hello + write.prefix(sentFirst))
        #expect(shutdown(leaving.fd, Int32(SHUT_WR)) == 0)
        let owed = responseFrames(try leaving.readToEOF())
        #expect(owed.map(\.0.tag) == [1])

        // The frames are whole once the rest comes: each is answered, nothing was lost.
        for c in clients { try c.write(Array(write.dropFirst(sentFirst))) }
        for c in clients {
            let header = FrameHeader(decoding: try c.read(exactly: FrameHeader.size).withUnsafeBytes { $0 })
            #expect(header.tag == 2)  // the MEM_WRITE's answer
            _ = try c.read(exactly: Int(header.length))
        }
        #expect(server.queue.sync { server.persistence!.heldInput } == 0)

        // A sender with a small SO_SNDBUF writing 7 bytes at a time and waiting for POLLOUT between writes, as Python's
        // `sendall` with a timeout does: a Unix socket polls writable only while its queued writes take under a
        // quarter of the buffer, one or two such writes, less than one frame, so the daemon must take a frame's start
        // (under the bound) or both wait for ever.
        let small = try TestClient(path: path)
        var size: Int32 = 4096
        #expect(setsockopt(small.fd, SOL_SOCKET, SO_SNDBUF, &size, socklen_t(MemoryLayout<Int32>.size)) == 0)
        let stream = hello + (0..<200).flatMap { Request.read(ReadRequest(address: 0x1200_0000, width: 4)).encoded(tag: UInt32(100 + $0)) }
        var stalled = false
        for start in stride(from: 0, to: stream.count, by: 7) {
            var writable = pollfd(fd: small.fd, events: Int16(POLLOUT), revents: 0)
            guard poll(&writable, 1, 5000) == 1 else { stalled = true; break }
            try small.write(Array(stream[start..<min(start + 7, stream.count)]))
        }
        #expect(!stalled, "the sender never became writable again")
        var smallTags: [UInt32] = []
        while !stalled, smallTags.count < 201 {
            let h = FrameHeader(decoding: try small.read(exactly: FrameHeader.size).withUnsafeBytes { $0 })
            _ = try small.read(exactly: Int(h.length))
            smallTags.append(h.tag)
        }
        #expect(stalled || smallTags == [1] + (0..<200).map { UInt32(100 + $0) })
    }
}
