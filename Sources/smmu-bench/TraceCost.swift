import Foundation
import Glibc
import PKVM
import SMMUDaemon
import SMMUModel
import WireProtocol

/// What recording a trace costs the request path (docs/trace-format.md), with no socket so that the scheduler's noise
/// on a shared machine does not hide it: pipelined requests into a session of the daemon's own dispatcher, with the
/// trace off, written to /dev/null (the encoding alone) and written to a file (the background writer too), in
/// interleaved rounds; and, with no trace, restart mode's journal of memory reads (MemoryReadLog, which a restart's
/// replay reads back). The DMAs miss the IOTLB and walk tables held in client memory, so the recorder's memory
/// capture runs on every walk.
struct TraceCost {
    final class NoServer: ServerHandle {
        func send(_ bytes: [UInt8], to connection: ConnectionID) {}
    }

    enum Mode: String, CaseIterable {
        case off = "off", devNull = "trace /dev/null", file = "trace file"
        /// No trace; restart mode's journal of memory reads (MemoryReadLog), its payloads taken and dropped per batch.
        case reads = "restart mode's memory reads"
    }

    let translation: InProcessTranslation
    let dispatcher: Dispatcher
    let host: Session
    let device: Session
    let directory: String
    /// Set in mode `.reads`.
    var reads: MemoryReadLog?

    init(directory: String) throws(BenchError) {
        translation = try InProcessTranslation()
        let memory = translation.hypervisor.memory
        // The domain's tables become client memory, as a guest's are (MEM_MAP): same bytes, now read through the
        // observer.
        let pool = InProcessTranslation.tablePool
        let size = Int(pool.upperBound - pool.lowerBound)
        let tables = UnsafeMutableRawPointer.allocate(byteCount: size, alignment: 4096)
        guard let bytes = memory.readBytes(at: pool.lowerBound, count: size) else { throw .unexpected("table pool") }
        bytes.withUnsafeBytes { tables.copyMemory(from: $0.baseAddress!, byteCount: size) }
        do {
            try memory.replace(base: pool.lowerBound, size: UInt64(size), with: tables, release: { tables.deallocate() })
        } catch { throw .unexpected("client tables: \(error)") }
        dispatcher = Dispatcher(hypervisor: translation.hypervisor)
        self.directory = directory
        let server = NoServer()
        host = dispatcher.makeSession(connection: ConnectionID(rawValue: 1), peer: PeerCredentials(pid: 1, uid: 0, gid: 0), server: server)
        device = dispatcher.makeSession(connection: ConnectionID(rawValue: 2), peer: PeerCredentials(pid: 1, uid: 0, gid: 0), server: server)
        var out: [UInt8] = []
        var fds: [Int32] = []
        for (session, role) in [(host, Role.host), (device, Role.device)] {
            _ = Request.hello(HelloRequest(role: role, name: "bench")).encoded(tag: 1).withUnsafeBytes {
                session.receive($0, fds: &fds, output: &out)
            }
        }
    }

    /// 64 requests of each workload, encoded once.
    func batches() -> (registers: [UInt8], dmas: [[UInt8]]) {
        let base = translation.hypervisor.windows[0].base
        let c = MMU500Configuration.tegra234
        var registers: [UInt8] = []
        for i in 0..<32 {
            Request.read(ReadRequest(address: base + c.offset(of: .IDR0), width: 4)).encode(tag: UInt32(2 * i), into: &registers)
            Request.write(WriteRequest(address: base + c.offset(of: .MAIR0, index: 0), value: 0xF404_FF44, width: 4))
                .encode(tag: UInt32(2 * i + 1), into: &registers)
        }
        // 1,024 batches of 64 distinct pages: 65,536 pages, more than the IOTLB holds, so each DMA walks.
        let dmas = (0..<1024).map { b -> [UInt8] in
            var out: [UInt8] = []
            for i in 0..<64 {
                let page = UInt64((b * 64 + i) % Stage1Domain.missPages)
                Request.dma(DMARequest(window: 0, streamID: UInt32(Stage1Domain.stream),
                                       iova: Stage1Domain.missIOVA + page << 12, flags: [])).encode(tag: UInt32(i), into: &out)
            }
            return out
        }
        return (registers, dmas)
    }

    /// Requests per second for `seconds` of one workload.
    func throughput(_ session: Session, _ batches: [[UInt8]], seconds: Double) -> Double {
        var output: [UInt8] = []
        output.reserveCapacity(1 << 16)
        var fds: [Int32] = []
        var requests = 0
        var i = 0
        let start = monotonicNanoseconds()
        let end = start + UInt64(seconds * 1e9)
        var now = start
        while now < end {
            for _ in 0..<16 {
                _ = batches[i].withUnsafeBytes { session.receive($0, fds: &fds, output: &output) }
                _ = reads?.takePending()   // what would be appended to the journal before the answers
                output.removeAll(keepingCapacity: true)
                i = (i + 1) % batches.count
                requests += 64
            }
            now = monotonicNanoseconds()
        }
        return Double(requests) / (Double(now - start) / 1e9)
    }

    mutating func select(_ mode: Mode) throws(BenchError) {
        dispatcher.stopTrace(wait: true)
        MemoryReadLog.detach(from: translation.hypervisor.memory)
        reads = nil
        switch mode {
        case .off: return
        case .reads:
            reads = MemoryReadLog()
            reads?.attach(to: translation.hypervisor.memory)
        case .devNull: if let why = dispatcher.startTrace(path: "/dev/null", maxBytes: 1 << 40, exclusive: false) { throw .unexpected(why) }
        case .file:
            let path = directory + "/cost.smmutrace"
            if let why = dispatcher.startTrace(path: path, maxBytes: 1 << 30, exclusive: false) { throw .unexpected(why) }
        }
    }

    /// Adds one row per workload and mode (the median of `rounds` interleaved rounds) with its ratio to "off".
    mutating func rows(_ report: inout Report, rounds: Int, seconds: Double) throws(BenchError) {
        let (registers, dmas) = batches()
        var rates: [String: [Mode: [Double]]] = [:]
        let workloads: [(String, Session, [[UInt8]])] = [
            ("READ/WRITE", host, [registers]), ("DMA, IOTLB miss, walk in client memory", device, dmas),
        ]
        for _ in 0..<rounds {
            for mode in Mode.allCases {
                try select(mode)
                for (name, session, batch) in workloads {
                    rates[name, default: [:]][mode, default: []].append(throughput(session, batch, seconds: seconds))
                }
                if mode == .devNull || mode == .file, dispatcher.traceStatus?.recording == false {
                    report.failed("\(mode.rawValue)", "the trace ended early: \(dispatcher.traceStatus!)")
                }
            }
        }
        try select(.off)
        try? FileManager.default.removeItem(atPath: directory + "/cost.smmutrace")
        for (name, _, _) in workloads {
            let off = medianOf(rates[name]?[.off] ?? [])
            for mode in Mode.allCases {
                let v = medianOf(rates[name]?[mode] ?? [])
                report.add("in-process \(name) pipelined 64, \(mode == .off ? "trace off" : mode.rawValue)", rate(v),
                           floor: mode == .off ? "" : rate(off), ratio: mode == .off ? "" : ratio(v / off))
            }
        }
    }
}
