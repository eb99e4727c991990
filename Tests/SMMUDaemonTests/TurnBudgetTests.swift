import Testing
import WireProtocol
@testable import SMMUDaemon

/// G8 per turn of the serial queue (`TurnBudget`): a session answers at most one turn's worth of pipelined requests
/// per call and holds back the rest, so a client that pipelines the slowest requests cannot hold the queue for their
/// sum (one 64 KiB read of refused VM_DONATEs was 1,638 of them, seconds of queue time, before the budget).
@Suite struct TurnBudgetTests {
    let dispatcher: Dispatcher
    let host: Session
    static let base = DispatcherTests.base

    /// DispatcherTests' hypervisor (generic MMU-500, 1 MiB of host RAM), finalized, and a host session.
    init() throws {
        dispatcher = try DispatcherTests().dispatcher
        dispatcher.hypervisor.finalize()
        host = dispatcher.makeSession(connection: ConnectionID(rawValue: 9), peer: PeerCredentials(pid: 1, uid: 0, gid: 0),
                                      server: DispatcherTests.Server())
        #expect(receive(Request.hello(HelloRequest(role: .host, name: "host")).encoded(tag: 0)).first?.0.statusCode == .ok)
    }

    func receive(_ bytes: [UInt8]) -> [(FrameHeader, [UInt8])] {
        var output: [UInt8] = []
        var fds: [Int32] = []
        _ = bytes.withUnsafeBytes { host.receive($0, fds: &fds, output: &output) }
        return responseFrames(output)
    }

    /// Resumes the held-back input until none is left: the answers of each call.
    func resumeAll() -> [[(FrameHeader, [UInt8])]] {
        var calls: [[(FrameHeader, [UInt8])]] = []
        while host.hasPendingInput && calls.count < 10_000 {
            var output: [UInt8] = []
            _ = host.resumeInput(output: &output)
            calls.append(responseFrames(output))
        }
        return calls
    }

    @Test("pipelined hypercalls run one per turn, the rest held back and answered later, in order")
    func heaviestRequestsOnePerTurn() {
        var bytes: [UInt8] = []
        for tag in UInt32(1)...20 { bytes += Request.vmCreate.encoded(tag: tag) }
        bytes += Request.read(ReadRequest(address: Self.base, width: 4)).encoded(tag: 21)
        let first = receive(bytes)
        #expect(first.map(\.0.tag) == [1], "one VM_CREATE in the turn of the read that brought them all")
        #expect(host.hasPendingInput)
        let later = resumeAll()
        #expect(later.count == 20)
        #expect(later.allSatisfy { !$0.isEmpty })
        #expect((first + later.flatMap { $0 }).map(\.0.tag) == Array(1...21), "every request answered once, in order")
        #expect(later.last?.map(\.0.tag) == [21], "a hypercall spends the rest of its turn")
    }

    @Test("register accesses: 256 per turn; a flood of unsupported opcodes is bounded alike")
    func cheapRequestsPerTurn() {
        var bytes: [UInt8] = []
        for tag in UInt32(1)...600 { bytes += Request.read(ReadRequest(address: Self.base, width: 4)).encoded(tag: tag) }
        #expect(receive(bytes).count == TurnBudget.units)
        #expect(resumeAll().map(\.count) == [256, 88])
        var unsupported: [UInt8] = []
        for tag in UInt32(1)...300 {
            unsupported += FrameHeader(opcode: 0x7E, tag: tag, status: 0, length: 0).encoded
        }
        let answers = receive(unsupported)
        #expect(answers.count == TurnBudget.units && answers.allSatisfy { $0.0.statusCode == .unsupported })
        #expect(resumeAll().map(\.count) == [44])
    }

    @Test("a turn holds at most 16 MEM_READs, MEM_WRITEs or prefetches, and one STATS")
    func middleClassPerTurn() {
        var bytes: [UInt8] = []
        for tag in UInt32(1)...40 { bytes += Request.memRead(MemReadRequest(address: 0x8000_0000, length: 4096)).encoded(tag: tag) }
        let first = receive(bytes)
        #expect(first.count == 16 && first.allSatisfy { $0.0.statusCode == .ok && $0.1.count == 4096 })
        #expect(resumeAll().map(\.count) == [16, 8])
        let stats = Request.stats.encoded(tag: 1) + Request.stats.encoded(tag: 2)
        #expect(receive(stats).count == 1, "the admin's STATS JSON takes milliseconds: a turn of its own")
        #expect(resumeAll().map(\.count) == [1])
    }

    @Test("an event's fan-out is charged to the turn: a write that reaches 300 EVENTS connections ends its turn")
    func eventFanOutPerTurn() {
        let server = DispatcherTests.Server()
        func session(_ id: UInt64, _ role: Role) -> Session {
            let s = dispatcher.makeSession(connection: ConnectionID(rawValue: id), peer: PeerCredentials(pid: Int32(id), uid: 0, gid: 0),
                                           server: server)
            var output: [UInt8] = []
            var fds: [Int32] = []
            _ = Request.hello(HelloRequest(role: role, name: "\(role)")).encoded(tag: 0).withUnsafeBytes { s.receive($0, fds: &fds, output: &output) }
            return s
        }
        func send(_ r: Request, to s: Session) -> [(FrameHeader, [UInt8])] {
            var output: [UInt8] = []
            var fds: [Int32] = []
            _ = r.encoded(tag: 1).withUnsafeBytes { s.receive($0, fds: &fds, output: &output) }
            return responseFrames(output)
        }
        let sCR0 = Self.base, usfcfg: UInt64 = 1 << 10, gfie: UInt64 = 1 << 2
        #expect(receive(Request.write(WriteRequest(address: sCR0, value: usfcfg | gfie, width: 4)).encoded(tag: 1)).first?.0.statusCode == .ok)
        // An unidentified stream's DMA: a global fault in the host's sGFSR, so GFIE drives the global line.
        let device = session(100, .device)
        #expect(send(.dma(DMARequest(window: 0, streamID: 0x7F, iova: 0x8000_0000, flags: [])), to: device).first?.0.statusCode == .fault)
        for n in UInt64(0)..<300 {
            #expect(send(.events, to: session(200 + n, .host)).first?.0.statusCode == .ok)
        }
        server.sent.removeAll()
        var bytes: [UInt8] = []
        for tag in UInt32(1)...10 {
            bytes += Request.write(WriteRequest(address: sCR0, value: usfcfg | (tag % 2 == 0 ? gfie : 0), width: 4)).encoded(tag: tag)
        }
        #expect(receive(bytes).count == 1, "one write reached 300 subscribers: the turn is spent")
        #expect(server.sent.count == 300)
        #expect(resumeAll().map(\.count) == Array(repeating: 1, count: 9))
        #expect(server.sent.count == 3000, "every subscriber heard every toggle")
    }
}
