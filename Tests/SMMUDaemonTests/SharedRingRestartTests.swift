import CSocketShims
import Dispatch
import Foundation
import Testing
import TestSupport
import WireProtocol
@testable import SMMUDaemon

#if canImport(Glibc)
    import Glibc
#endif

/// A ring after a restart, without sockets or systemd (docs/hypervisor-model.md, "Restart and crash survival"): the
/// crash points of one ring request, each with the ring's memory as the old process left it and the journal's RING
/// records replayed, must end with the request applied once and its answer in the ring once.
@Suite(.serialized) struct SharedRingRestartTests {
    /// A greeted host session over a Tegra234 daemon layer, and a ring memfd mapped twice: the ring's mapping (which
    /// its thread unmaps) and the client's view.
    struct Fixture {
        let layer: DispatcherStateImageTests.Layer
        let context: SessionContext
        let queue = DispatchQueue(label: "ring-restart-test")
        let client: UnsafeMutableRawPointer
        let ringMapping: UnsafeMutableRawPointer
        let memfd: Int32

        init() throws {
            layer = try DispatcherStateImageTests.Layer()
            let session = layer.dispatcher.makeSession(connection: ConnectionID(rawValue: 7),
                                                       peer: PeerCredentials(pid: 70, uid: 1000, gid: 1000),
                                                       server: layer.server)
            _ = DispatcherStateImageTests.send(Request.hello(HelloRequest(role: .host, name: "ring")).encoded(tag: 1),
                                               to: session)
            context = try #require(session as? DispatcherSession).sessionContext
            memfd = csock_sealed_memfd("ring-restart", Int(SharedRing.size))
            client = mmap(nil, SharedRing.size, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0)!
            ringMapping = mmap(nil, SharedRing.size, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0)!
        }

        var words: UnsafeMutablePointer<UInt32> { client.assumingMemoryBound(to: UInt32.self) }

        /// The ring as a new process attaches it (during the replay: not served yet).
        func ring() -> SharedRing {
            SharedRing(base: ringMapping, file: FDStore.FileIdentity(fd: memfd)!, queue: queue,
                       dispatcher: layer.dispatcher, context: context)
        }

        /// The client writes request `seq` (one frame) as the protocol says.
        func write(_ frame: [UInt8], seq: UInt32) {
            frame.withUnsafeBytes { (client + SharedRing.requestOffset).copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
            csock_store_release(words + 4, 0)
            csock_store_release(words, seq)
        }

        /// The old process published `answer` for request `seq`.
        func publish(_ answer: [UInt8], seq: UInt32) {
            answer.withUnsafeBytes { (client + SharedRing.responseOffset).copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
            csock_store_release(words + 5, UInt32(answer.count))
            csock_store_release(words + 1, seq)
        }

        var response: [UInt8] {
            Array(UnsafeRawBufferPointer(start: client + SharedRing.responseOffset, count: Int(csock_load_acquire(words + 5))))
        }

        func stop(_ ring: SharedRing) {
            queue.sync { ring.stop() }
            munmap(client, SharedRing.size)
            close(memfd)
        }
    }

    static let hostPage: UInt64 = 0x8010_0000
    static func memWrite(_ value: UInt64, tag: UInt32) -> [UInt8] {
        Request.memWrite(MemWriteRequest(address: hostPage, bytes: value.littleEndianBytes)).encoded(tag: tag)
    }
    static func memRead(tag: UInt32) -> [UInt8] { Request.memRead(MemReadRequest(address: hostPage, length: 8)).encoded(tag: tag) }

    /// MEM_WRITE's answer (OK, no payload), as the old process published it.
    static func writeAnswer(tag: UInt32) -> [UInt8] {
        var out: [UInt8] = []
        ResponseEncoder.append(to: &out, opcode: 0x06, tag: tag, status: .ok)
        return out
    }

    /// The answer frames' (tag, status, payload).
    static func answers(_ bytes: [UInt8]) -> [(UInt32, UInt32, [UInt8])] {
        var out: [(UInt32, UInt32, [UInt8])] = []
        var at = 0
        while at + 16 <= bytes.count {
            let h = bytes.withUnsafeBytes { FrameHeader(decoding: UnsafeRawBufferPointer(rebasing: $0[at...])) }
            out.append((h.tag, UInt32(h.status), Array(bytes[(at + 16)..<(at + 16 + Int(h.length))])))
            at += 16 + Int(h.length)
        }
        return out
    }

    enum CrashPoint: CaseIterable { case beforeCommit, afterCommitBeforePublish, afterPublish, afterPublishDiffering }

    /// Request 1 (MEM_WRITE of 0x1111) was answered long ago; request 2 (MEM_WRITE of 0x2222) is the one the crash
    /// lands on; the client then sends request 3 (MEM_READ) to the new process. Each request is applied once: request
    /// 3 reads 0x2222, the operation counter counts 3 requests, and request 2's answer is the ring's exactly once.
    @Test(arguments: CrashPoint.allCases) func eachCrashPointAppliesTheRequestOnceAndAnswersItOnce(at crash: CrashPoint) throws {
        let f = try Fixture()
        let ring = f.ring()
        let before = f.layer.dispatcher.operationCount
        // Journal: the attach at word 0, then request 1 (its answer published and read by the client).
        ring.replay(seq: 0, request: nil)
        let first = Self.memWrite(0x1111, tag: 1)
        first.withUnsafeBytes { ring.replay(seq: 1, request: $0) }
        f.write(first, seq: 1)
        f.publish(Self.writeAnswer(tag: 1), seq: 1)   // the client has read it
        let second = Self.memWrite(0x2222, tag: 2)
        f.write(second, seq: 2)
        let expected: SharedRing.Resumption
        switch crash {
        case .beforeCommit:   // not journaled: still in the ring, taken by the new thread
            expected = .alreadyPublished(differing: nil)   // request 1's answer, left as it was
        case .afterCommitBeforePublish:
            second.withUnsafeBytes { ring.replay(seq: 2, request: $0) }
            expected = .published
        case .afterPublish:
            second.withUnsafeBytes { ring.replay(seq: 2, request: $0) }
            f.publish(Self.writeAnswer(tag: 2), seq: 2)
            expected = .alreadyPublished(differing: nil)
        case .afterPublishDiffering:   // the client may have read it: left as it is, the difference reported
            second.withUnsafeBytes { ring.replay(seq: 2, request: $0) }
            var other = Self.writeAnswer(tag: 2)
            other[8] = 0xFF
            f.publish(other, seq: 2)
            expected = .alreadyPublished(differing: 0x86)
        }
        let outcome = f.queue.sync { ring.resumeAfterReplay() }
        #expect(outcome == expected, "\(crash): \(outcome)")
        // Request 2 answered (by the replay's publication, the old process, or the new thread), exactly once, OK.
        #expect(eventually { csock_load_acquire(f.words + 1) == 2 }, "\(crash): request 2 answered")
        #expect(Self.answers(f.response).map(\.0) == [2], "\(crash)")
        #expect(Self.answers(f.response).map(\.1) == [crash == .afterPublishDiffering ? 0xFF : 0], "\(crash): not rewritten")
        f.write(Self.memRead(tag: 3), seq: 3)
        csock_futex_wake(f.words)
        #expect(eventually { csock_load_acquire(f.words + 1) == 3 }, "\(crash): the thread serves the next request")
        let read = Self.answers(f.response)
        #expect(read.map(\.0) == [3] && read.first?.2 == UInt64(0x2222).littleEndianBytes, "\(crash): \(read)")
        let counted = f.queue.sync { f.layer.dispatcher.operationCount - before }
        #expect(counted == 3, "\(crash): every request applied once (\(counted) counted)")
        f.stop(ring)
    }
}
