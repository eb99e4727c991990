import Foundation
import PKVM
import SMMUModel
import Testing
import WireProtocol
@testable import SMMUDaemon

/// The dispatcher and a session without sockets: bytes in, response frames out.
@Suite struct DispatcherTests {
    final class Server: ServerHandle {
        var sent: [(ConnectionID, [UInt8])] = []
        func send(_ bytes: [UInt8], to connection: ConnectionID) { sent.append((connection, bytes)) }
    }

    let dispatcher: Dispatcher
    let session: Session
    let audit = CollectingAuditSink()
    static let base: UInt64 = 0x2B40_0000

    init() throws {
        let policy = HypervisorPolicy(topology: .generic4K(base: Self.base),
                                      hostRAM: [PhysicalRange(base: 0x8000_0000, size: 1 << 20)],
                                      hypervisorRAM: PhysicalRange(base: 0x7F00_0000, size: 1 << 20))
        let memory = try MemoryMap(regions: [(0x8000_0000, 1 << 20), (0x7F00_0000, 1 << 20)])
        dispatcher = Dispatcher(hypervisor: try Hypervisor(policy: policy, memory: memory, audit: audit),
                                roles: DaemonConfiguration.Roles(device: .init(uids: [1000])))
        session = dispatcher.makeSession(connection: ConnectionID(rawValue: 1),
                                         peer: PeerCredentials(pid: 42, uid: 1000, gid: 1000), server: Server())
    }

    /// Sends `requests` (on the test's session unless another is given) and returns the response headers with their
    /// payloads.
    func exchange(_ requests: [UInt8], fds: [Int32] = [], on other: Session? = nil) -> (verdict: SessionVerdict, frames: [(FrameHeader, [UInt8])]) {
        var output: [UInt8] = []
        var fds = fds
        let verdict = requests.withUnsafeBytes { (other ?? session).receive($0, fds: &fds, output: &output) }
        return (verdict, responseFrames(output))
    }

    func request(_ r: Request, tag: UInt32 = 7) -> [UInt8] { r.encoded(tag: tag) }

    @Test func rolesAreCheckedAgainstTheAllowList() {
        // uid 1000 may be a device, not a host.
        var r = exchange(request(.hello(HelloRequest(role: .host, name: "vmm"))))
        #expect(r.frames.map { $0.0.statusCode } == [.forbidden])
        r = exchange(request(.read(ReadRequest(address: Self.base + 0x20, width: 4))))
        #expect(r.frames.map { $0.0.statusCode } == [.forbidden], "not greeted yet")
        r = exchange(request(.hello(HelloRequest(role: .device, name: "dma"))))
        #expect(r.frames.map { $0.0.statusCode } == [.ok])
        #expect(r.frames.first?.0.opcode == Opcode.hello.responseCode)
        r = exchange(request(.read(ReadRequest(address: Self.base + 0x20, width: 4))))
        #expect(r.frames.map { $0.0.statusCode } == [.forbidden], "READ is the host's")
        #expect(r.frames.first?.1.count == 8, "READ answers carry their 8 bytes whatever the status")
        r = exchange(request(.hello(HelloRequest(role: .device, name: "again"))))
        #expect(r.frames.map { $0.0.statusCode } == [.forbidden], "a second HELLO")
    }

    @Test func pipelinedAnswersKeepOrderAndTags() {
        _ = exchange(request(.hello(HelloRequest(role: .device, name: "dma"))))
        var bytes: [UInt8] = []
        for tag in UInt32(1)...50 {
            bytes += request(.dma(DMARequest(window: 0, streamID: tag, iova: 0x1000, flags: [])), tag: tag)
        }
        let r = exchange(bytes)
        #expect(r.frames.map(\.0.tag) == Array(1...50))
        // Not finalized, the SMMU is at reset (CLIENTPD: bypass), but the owners' stage-2 still applies:
        // 0x1000 is no host page, so every answer is a FAULT carrying its 16 bytes.
        #expect(r.frames.allSatisfy { $0.0.statusCode == .fault && $0.1.count == 16 })
    }

    @Test func oversizedMemReadIsInvalidNotAnOversizedFrame() {
        let host = Dispatcher.permits(.memRead, for: .host)
        #expect(host)
        dispatcher.hypervisor.finalize()
        let root = dispatcher.makeSession(connection: ConnectionID(rawValue: 2), peer: PeerCredentials(pid: 1, uid: 0, gid: 0),
                                          server: Server())
        var output: [UInt8] = []
        var fds: [Int32] = []
        let bytes = request(.hello(HelloRequest(role: .host, name: "host")), tag: 1)
            + request(.memRead(MemReadRequest(address: 0x8000_0000, length: UInt32(MemReadRequest.maxLength + 1))), tag: 2)
            + request(.memRead(MemReadRequest(address: 0x8000_0000, length: UInt32(MemReadRequest.maxLength))), tag: 3)
        _ = bytes.withUnsafeBytes { root.receive($0, fds: &fds, output: &output) }
        var decoder = FrameDecoder(mode: .responses)
        decoder.append(output)
        var statuses: [Status?] = []
        var lengths: [UInt32] = []
        while let done = decoder.next({ v, _ -> Bool in
            guard case .message(let h) = v else { return false }
            statuses.append(h.statusCode)
            lengths.append(h.length)
            return true
        }), done {}
        #expect(statuses == [.ok, .invalid, .ok])
        #expect(lengths.last == UInt32(MemReadRequest.maxLength))
    }

    @Test func memMapWithoutADescriptorIsMalformedAndCloses() {
        let root = dispatcher.makeSession(connection: ConnectionID(rawValue: 3), peer: PeerCredentials(pid: 1, uid: 0, gid: 0),
                                          server: Server())
        var output: [UInt8] = []
        var fds: [Int32] = []
        let bytes = request(.hello(HelloRequest(role: .host, name: "host")), tag: 1)
            + request(.memMap(MemMapRequest(address: 0x8000_0000, size: 0x1000, offset: 0)), tag: 2)
        let verdict = bytes.withUnsafeBytes { root.receive($0, fds: &fds, output: &output) }
        #expect(verdict == .closeAfterFlush)
        let hello = FrameHeader(decoding: output)
        #expect(hello?.statusCode == .ok)
        let second = FrameHeader(decoding: Array(output[(16 + Int(hello?.length ?? 0))...]))
        #expect(second?.statusCode == .malformed)
        #expect(second?.opcode == Opcode.memMap.responseCode && second?.tag == 2)
    }

    @Test("a HELLO name's control characters never reach a log line or audit message: a newline would forge a journal line")
    func helloNameIsPrintable() {
        dispatcher.hypervisor.finalize()
        let s = dispatcher.makeSession(connection: ConnectionID(rawValue: 30), peer: PeerCredentials(pid: 7, uid: 0, gid: 0),
                                       server: Server())
        #expect(exchange(request(.hello(HelloRequest(role: .host, name: "vmm\n<0>forged\u{7}"))), on: s).frames.first?.0.statusCode == .ok)
        // Hypervisor RAM is no host page: DENIED and audited under the session's name.
        let denied = exchange(request(.memWrite(MemWriteRequest(address: 0x7F00_0000, bytes: [1]))), on: s)
        #expect(denied.frames.first?.0.statusCode == .denied)
        #expect(audit.events.last?.client.name == "vmm?<0>forged?")
        #expect(DispatcherSession.printable("ünïcode ok") == "ünïcode ok")
    }

    /// A root peer's session greeted as `role`.
    func greeted(_ role: Role, id: UInt64) -> Session {
        let s = dispatcher.makeSession(connection: ConnectionID(rawValue: id), peer: PeerCredentials(pid: Int32(id), uid: 0, gid: 0),
                                       server: Server())
        #expect(exchange(request(.hello(HelloRequest(role: role, name: "\(role)"))), on: s).frames.first?.0.statusCode == .ok)
        return s
    }

    func stats(on s: Session) throws -> [String: Any] {
        let answer = try #require(exchange(request(.stats), on: s).frames.first)
        #expect(answer.0.statusCode == .ok)
        return try #require(try JSONSerialization.jsonObject(with: Data(answer.1)) as? [String: Any])
    }

    @Test func hostStatisticsShowOnlyWhatIsTheHosts() throws {
        dispatcher.hypervisor.finalize()
        let host = greeted(.host, id: 10)
        let device = greeted(.device, id: 11)
        let admin = greeted(.admin, id: 12)
        // A protected VM gets stream 0x20; a device faults on it (no page donated) and on host stream 0x10.
        let vm = exchange(request(.vmCreate), on: host).frames.first
        #expect(vm?.0.statusCode == .ok)
        let handle = vm.map { UInt32($0.1[0]) | UInt32($0.1[1]) << 8 } ?? 0
        let assigned = exchange(request(.vmAssignStream(VMAssignStreamRequest(vm: handle, window: 0, streamID: 0x20))), on: host)
        #expect(assigned.frames.first?.0.statusCode == .ok)
        for stream: UInt32 in [0x20, 0x20, 0x10] {
            let dma = exchange(request(.dma(DMARequest(window: 0, streamID: stream, iova: 0x1000, flags: []))), on: device)
            #expect(dma.frames.first?.0.statusCode == .fault)
        }

        let h = try stats(on: host)
        let faults = try #require(h["faults_by_kind"] as? [String: Int])
        #expect(faults.values.reduce(0, +) == 1, "only the host stream's fault: \(faults)")
        #expect(h["dma_translations"] as? Int == 1)
        #expect(h["tlb"] == nil && h["dma_by_owner"] == nil && h["operations_by_role"] == nil && h["framing"] == nil)
        let ops = try #require(h["operations"] as? [String: [String: Int]])
        #expect(ops["DMA"] == nil, "a device's answers are not the host's: \(ops)")
        #expect(ops["VM_ASSIGN_STREAM"]?["OK"] == 1)
        #expect(h["denials"] as? Int == dispatcher.hypervisor.statistics.denials)
        #expect((h["connections"] as? [String: Int])?["open"] != nil)

        let a = try stats(on: admin)
        let all = try #require(a["faults_by_kind"] as? [String: Int])
        #expect(all.values.reduce(0, +) == 3)
        #expect(a["dma_translations"] as? Int == 3)
        #expect(a["tlb"] != nil)
        let byOwner = try #require(a["dma_by_owner"] as? [String: [String: Any]])
        #expect(byOwner["vm_and_hypervisor"]?["translations"] as? Int == 2)
        #expect((a["operations"] as? [String: [String: Int]])?["DMA"]?["FAULT"] == 3)
        #expect((a["operations_by_role"] as? [String: Any])?["device"] != nil)
    }
}
