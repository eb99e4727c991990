import Foundation
import Testing
import WireProtocol

@testable import SMMUClient

#if canImport(Glibc)
    import Glibc
#endif

/// Protocol v1.1's shared-memory ring against the real daemon: the same answers, policy and audit as the socket.
@Suite(.serialized, .enabled(if: ProcessInfo.processInfo.environment["SMMU_HYPD_BIN"] != nil, "set SMMU_HYPD_BIN to run against the daemon"))
struct RingTransportTests {
    @Test("through the ring: the socket's answers, refusals counted and audited alike, socket-only opcodes FORBIDDEN")
    func sameAnswersAndPolicy() throws {
        let daemon = try RunningDaemon()
        defer { daemon.stop() }
        let (host, hello) = try daemon.connect()
        let ring = try SMMUClientRing(client: host)
        let base = hello.windows[0].base
        for offset: UInt64 in [0x0, 0x20, 0x24, 0x28] {   // sCR0, IDR0..2
            #expect(try ring.read(address: base + offset) == host.read(address: base + offset))
        }
        // A write to a hidden context bank (the hypervisor keeps the last 8 of Tegra234's 128): DENIED on both.
        let hidden = base + hello.windows[0].size / 2 + 127 * UInt64(hello.windows[0].pageSize)
        func denials() throws -> Int {
            let stats = try JSONSerialization.jsonObject(with: Data(host.stats().utf8)) as? [String: Any]
            return stats?["denials"] as? Int ?? -1
        }
        let before = try denials()
        #expect(try ring.write(address: hidden, value: 1) == .denied)
        #expect(try denials() == before + 1, "the ring's refusal is counted (and audited) as the socket's is")
        // A write the policy allows lands: read back over the socket.
        let cb0 = base + hello.windows[0].size / 2
        #expect(try ring.write(address: cb0 + 0x38, value: 0x44) == .ok)     // MAIR0 of bank 0
        #expect(try host.read(address: cb0 + 0x38) == 0x44)
        for request: Request in [.events, .hello(HelloRequest(role: .host, name: "again"))] {
            #expect(try ring.call(request).status == .forbidden)
        }
        // A device's ring translates as its socket does.
        let (device, _) = try daemon.connect(role: .device)
        let deviceRing = try SMMUClientRing(client: device)
        let viaRing = try deviceRing.call(.dma(DMARequest(window: 0, streamID: 0x7F, iova: 0x8000_0000, flags: [])))
        let viaSocket = try device.dma(window: 0, stream: 0x7F, iova: 0x8000_0000)
        #expect(viaRing.status == .fault && viaSocket.fault == 1, "an unidentified stream faults on both")
        // A batch (request_bytes): answered in order, the read after the writes sees the last one, a refusal in
        // the middle answered and counted where it stands.
        let answers = try ring.batch([.write(WriteRequest(address: cb0 + 0x38, value: 7, width: 4)),
                                      .write(WriteRequest(address: hidden, value: 1, width: 4)),
                                      .write(WriteRequest(address: cb0 + 0x38, value: 9, width: 4)),
                                      .read(ReadRequest(address: cb0 + 0x38, width: 4))])
        #expect(answers.map(\.status) == [.ok, .denied, .ok, .ok])
        #expect(try SMMUClient.readValue(answers[3].payload) == 9)
        #expect(try denials() == before + 2)
        // Many round trips in a row stay in order.
        for i in 0..<2000 {
            #expect(try ring.write(address: cb0 + 0x38, value: UInt64(i)) == .ok)
            if i % 500 == 0 { #expect(try ring.read(address: cb0 + 0x38) == UInt64(i)) }
        }
    }

    /// `operations.MEM_READ.OK` from the host's STATS.
    static func memReadsAnswered(_ host: SMMUClient) throws -> Int {
        let stats = try JSONSerialization.jsonObject(with: Data(host.stats().utf8)) as? [String: Any]
        let operations = stats?["operations"] as? [String: Any]
        return (operations?["MEM_READ"] as? [String: Any])?["OK"] as? Int ?? 0
    }

    @Test("a batch whose answers cannot fit the response area: only the requests answered are run, and the next exchange starts clean")
    func batchBoundedByItsAnswers() throws {
        let daemon = try RunningDaemon()
        defer { daemon.stop() }
        let (host, hello) = try daemon.connect()
        let ring = try SMMUClientRing(client: host)
        // 2,048 MEM_READs of 30,000 bytes each (64 KiB of requests): 61 MB of answers for a 64 KiB area. Before the
        // bound the daemon ran them all in one turn of its queue, built every answer in memory (kept the capacity
        // after) and sent the first two: work and memory for answers nobody could get.
        var bytes: [UInt8] = []
        var tag: UInt32 = 1
        while bytes.count + 32 <= 16 + 65536 {
            bytes += Request.memRead(MemReadRequest(address: 0x8000_0000, length: 30_000)).encoded(tag: tag)
            tag += 1
        }
        let before = try Self.memReadsAnswered(host)
        let answers = try ring.exchange(bytes, batch: true)
        #expect(answers.map(\.header.tag) == [1, 2] && answers.allSatisfy { $0.status == .ok && $0.payload.count == 30_000 })
        #expect(try Self.memReadsAnswered(host) == before + 2, "the requests left unanswered were not run")
        // The frames left over are not the start of the next exchange.
        let base = hello.windows[0].base
        #expect(try ring.read(address: base + 0x20) == host.read(address: base + 0x20))
        #expect(try Self.memReadsAnswered(host) == before + 2)
        // A batch that ends inside a frame: the whole frames are answered, the partial one is dropped (not waited
        // for, not the start of the next exchange).
        let read = Request.read(ReadRequest(address: base + 0x20, width: 4)).encoded(tag: 7)
        #expect(try ring.exchange(read + read.prefix(20), batch: true).map(\.header.tag) == [7])
        #expect(try ring.read(address: base + 0x20) == host.read(address: base + 0x20))
        // A batch of small answers still runs whole.
        let small = try ring.batch(Array(repeating: .read(ReadRequest(address: base + 0x20, width: 4)), count: 1000))
        #expect(small.count == 1000 && small.allSatisfy { $0.status == .ok })
    }
}
