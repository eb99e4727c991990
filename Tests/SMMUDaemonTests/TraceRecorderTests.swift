import Foundation
import PKVM
import SMMUModel
import TestSupport
import Testing
import WireProtocol
@testable import SMMUDaemon

/// The recorder behind the dispatcher, without sockets: what an exchange records of client memory (each value the
/// walk depended on, once, again after the daemon itself wrote client memory), events after the request that raised
/// them, and the bound.
@Suite struct TraceRecorderTests {
    final class Server: ServerHandle {
        func send(_ bytes: [UInt8], to connection: ConnectionID) {}
    }

    let dispatcher: Dispatcher
    let memory: MemoryMap
    let directory: TemporaryDirectory
    /// Client-supplied memory at 0x8000_0000 (one page), as MEM_MAP installs it.
    let clientPage: UnsafeMutableRawPointer

    init() throws {
        let policy = HypervisorPolicy(topology: .generic4K(base: 0x2B40_0000),
                                      hostRAM: [PhysicalRange(base: 0x8000_0000, size: 1 << 20)],
                                      hypervisorRAM: PhysicalRange(base: 0x7F00_0000, size: 1 << 20))
        memory = try MemoryMap(regions: [(0x8000_0000, 1 << 20), (0x7F00_0000, 1 << 20)])
        dispatcher = Dispatcher(hypervisor: try Hypervisor(policy: policy, memory: memory, audit: CollectingAuditSink()))
        directory = try TemporaryDirectory()
        clientPage = UnsafeMutableRawPointer.allocate(byteCount: 4096, alignment: 4096)
        clientPage.initializeMemory(as: UInt8.self, repeating: 0, count: 4096)
        try memory.replace(base: 0x8000_0000, size: 4096, with: clientPage, release: { [clientPage] in clientPage.deallocate() })
    }

    func start(maxBytes: UInt64 = 1 << 20) throws -> (TraceRecorder, String) {
        let path = directory.path + "/t.smmutrace"
        #expect(dispatcher.startTrace(path: path, maxBytes: maxBytes, exclusive: true) == nil)
        return (try #require(dispatcher.trace), path)
    }

    func records(_ path: String) throws -> [TraceRecord] {
        try TraceReader.read([UInt8](try #require(FileManager.default.contents(atPath: path)))).1
    }

    /// One exchange with `body` as what the daemon does while answering it.
    func exchange(_ recorder: TraceRecorder, _ op: Opcode = .dma, _ body: () -> Void) {
        recorder.beginExchange(op, fds: [], outputCount: 0)
        body()
        let frame = Request.dma(DMARequest(window: 0, streamID: 1, iova: 0, flags: [])).encoded(tag: 1)
        frame[16...].withUnsafeBytes {
            recorder.endExchange(session: ConnectionID(rawValue: 1), role: .device, viaRing: false,
                                 header: FrameHeader(decoding: frame)!, payload: $0, output: [])
        }
    }

    @Test("a client descriptor is recorded once while its value holds, again when it changes or the daemon wrote client memory; daemon memory never")
    func memoryIsRecordedOncePerValue() throws {
        let (recorder, path) = try start()
        clientPage.storeBytes(of: UInt64(0x1234), toByteOffset: 8, as: UInt64.self)
        exchange(recorder) { _ = memory.read64(at: 0x8000_0008); _ = memory.read64(at: 0x8000_0008); _ = memory.read64(at: 0x8001_0000) }
        exchange(recorder) { _ = memory.read64(at: 0x8000_0008) }
        clientPage.storeBytes(of: UInt64(0x5678), toByteOffset: 8, as: UInt64.self)   // the client edits its table
        exchange(recorder) { _ = memory.read64(at: 0x8000_0008) }
        exchange(recorder, .memWrite) {}                                                  // the daemon writes client memory
        exchange(recorder) { _ = memory.read64(at: 0x8000_0008) }
        exchange(recorder, .memRead) { _ = memory.readBytes(at: 0x8000_0ff0, count: 0x20) }  // half client, half daemon
        _ = memory.read64(at: 0x8000_0008)                                                // outside any exchange
        recorder.stop(.stopped, wait: true)
        let memoryPerExchange = try records(path).compactMap { r -> [TraceMemory]? in
            if case .exchange(let e) = r { e.memory } else { nil }
        }
        let value = { (v: UInt64) in withUnsafeBytes(of: v.littleEndian) { Array($0) } }
        #expect(memoryPerExchange == [
            [TraceMemory(address: 0x8000_0008, bytes: value(0x1234))],
            [],
            [TraceMemory(address: 0x8000_0008, bytes: value(0x5678))],
            [],
            [TraceMemory(address: 0x8000_0008, bytes: value(0x5678))],
            [TraceMemory(address: 0x8000_0ff0, bytes: Array(repeating: 0, count: 0x10))],
        ])
        #expect(memory.clientReadObserver == nil, "a stopped trace observes nothing")
    }

    @Test("an event sent while a request runs is recorded after that request's exchange")
    func eventsFollowTheirExchange() throws {
        let (recorder, path) = try start()
        let raised = { (level: UInt32) in var b: [UInt8] = []; Event(window: 0, line: 1, level: level).encode(into: &b); return b }
        exchange(recorder) { recorder.event(raised(1), to: ConnectionID(rawValue: 9)) }
        recorder.event(raised(0), to: ConnectionID(rawValue: 9))
        recorder.stop(.stopped, wait: true)
        let records = try records(path)
        #expect(records.map(\.kind) == [.exchange, .event, .event, .end])
        #expect(records[1] == .event(session: 9, frame: raised(1)) && records[2] == .event(session: 9, frame: raised(0)))
    }

    @Test("past max_bytes the trace ends truncated within the bound, and records nothing more")
    func boundEndsTheTrace() throws {
        let (recorder, path) = try start(maxBytes: 4096)
        for _ in 0..<200 { exchange(recorder) {} }
        #expect(!recorder.isRecording && recorder.end == .truncated)
        let bytes = recorder.bytes
        exchange(recorder) {}
        recorder.sessionOpened(ConnectionID(rawValue: 2), peer: PeerCredentials(pid: 1, uid: 0, gid: 0))
        #expect(recorder.bytes == bytes)
        recorder.stop(.stopped, wait: true)
        let data = try #require(FileManager.default.contents(atPath: path))
        #expect(UInt64(data.count) == bytes && bytes <= 4096 && bytes > 4096 - 150)
        #expect(try records(path).last == .end(.truncated))
    }
}
