import Glibc
import PKVM
import SMMUDaemon
import SMMUModel
import WireProtocol

/// G8 with a number: how long one request holds the server's serial queue in the worst host state a client
/// can build on Tegra234 (Config/tegra234.yaml: 256 MiB of host RAM, 4 MiB of hypervisor RAM). Each request
/// runs on the daemon's own code path (the dispatcher and the hypervisor), in process, so the time is the
/// queue's, without the socket's. The target is 10 ms, the watchdog's budget being 10 s.
struct WorstCaseRequests {
    static let hostRAM = PhysicalRange(base: 0x8000_0000, size: 256 << 20)
    static let hypervisorRAM = PhysicalRange(base: 0x7F00_0000, size: 4 << 20)
    static let treeBase: UInt64 = 0x8400_0000

    let memory: MemoryMap
    let hypervisor: Hypervisor
    let dispatcher: Dispatcher
    let session: Session
    let client = ClientIdentity(name: "smmu-bench")

    final class Sink: ServerHandle {
        func send(_ bytes: [UInt8], to connection: ConnectionID) {}
    }

    init() throws(BenchError) {
        do {
            memory = try MemoryMap(regions: [(Self.hostRAM.base, Self.hostRAM.size),
                                             (Self.hypervisorRAM.base, Self.hypervisorRAM.size)])
            let policy = HypervisorPolicy(topology: .tegra234, hostRAM: [Self.hostRAM], hypervisorRAM: Self.hypervisorRAM)
            hypervisor = try Hypervisor(policy: policy, memory: memory, audit: CollectingAuditSink())
        } catch { throw .unexpected("hypervisor: \(error)") }
        guard hypervisor.finalize() else { throw .unexpected("finalization refused") }
        dispatcher = Dispatcher(hypervisor: hypervisor)
        session = dispatcher.makeSession(connection: ConnectionID(rawValue: 1), peer: PeerCredentials(pid: 1, uid: 0, gid: 0),
                                         server: Sink())
        var output: [UInt8] = []
        var fds: [Int32] = []
        Request.hello(HelloRequest(role: .admin, name: "bench")).encoded(tag: 1).withUnsafeBytes {
            _ = session.receive($0, fds: &fds, output: &output)
        }
    }

    /// One request's time on the queue, in milliseconds.
    func time(_ body: () -> Void) -> Double {
        let t0 = monotonicNanoseconds()
        body()
        return Double(monotonicNanoseconds() - t0) / 1e6
    }

    private func write(_ w: Int, _ name: RegisterName, _ index: Int, _ value: UInt64, width: AccessWidth = .word) {
        let c = hypervisor.policy.topology.windows[w].configuration
        _ = hypervisor.hostWrite(address: hypervisor.windows[w].base + c.offset(of: name, index: index), value: value,
                                 width: width, client: client)
    }

    /// Every host bank of every instance (600 on Tegra234) enabled over one stage-1 tree of `l2Tables` level-2
    /// tables, each pointing at `l3PerL2` distinct level-3 tables: the red team's shared tree.
    func buildSharedTree(l2Tables: UInt64, l3PerL2: UInt64) {
        let root = Self.treeBase, l1 = Self.treeBase + 0x1000
        _ = memory.write64(l1 | 0b11, at: root)
        for i in 0..<l2Tables {
            let l2 = Self.treeBase + (2 + i) * 0x1000
            _ = memory.write64(l2 | 0b11, at: l1 + i * 8)
            for j in 0..<l3PerL2 {
                _ = memory.write64((Self.treeBase + 0x100_0000 + (i * l3PerL2 + j) * 0x1000) | 0b11, at: l2 + j * 8)
            }
        }
        for (w, window) in hypervisor.windows.enumerated() {
            for bank in 0..<Int(window.contextBanks) {
                write(w, .CBA2R, bank, 1)
                write(w, .CBAR, bank, UInt64(1 << 16 | bank))
                write(w, .TCR, bank, 0x0080_2010)
                write(w, .TTBR0, bank, root, width: .doubleword)
                write(w, .SCTLR, bank, 0x67)
            }
        }
    }

    /// The worst VM_DONATE, VM_DESTROY, host TLB invalidation and DUMP, as report rows.
    func rows(_ report: inout Report) {
        let target = "< 10 ms"
        func row(_ name: String, _ ms: Double) { report.add(name, fixed(ms, 2) + " ms", target: target, pass: ms < 10) }

        // 600 banks over one tree of 2,006 table pages (1 + 1 + 4 L2 + 2,000 L3).
        buildSharedTree(l2Tables: 4, l3PerL2: 500)
        let vm = hypervisor.vmCreate(client: client).value!
        var worst = 0.0
        for i in 0..<UInt64(20) {
            worst = max(worst, time { _ = hypervisor.vmDonate(vm, range: PhysicalRange(base: 0x8700_0000 + i * 0x1000, size: 0x1000), client: client) })
        }
        row("worst VM_DONATE: 600 host banks over one tree of 2,006 table pages", worst)
        // A tree whose scan needs more than the budget: refused (counts as live), in bounded time.
        buildSharedTree(l2Tables: 512, l3PerL2: 1)
        worst = 0
        for i in 0..<UInt64(5) {
            worst = max(worst, time { _ = hypervisor.vmDonate(vm, range: PhysicalRange(base: 0x8710_0000 + i * 0x1000, size: 0x1000), client: client) })
        }
        row("worst VM_DONATE: 600 banks over a tree past the scan budget (refused)", worst)
        row("one queue turn: a 64 KiB read of pipelined refused VM_DONATEs", queueTurn(vm: vm))
        for (w, window) in hypervisor.windows.enumerated() {
            for bank in 0..<Int(window.contextBanks) { write(w, .SCTLR, bank, 0) }
        }
        // The largest donation one call may make, then the VM with (almost) all host RAM, every page touched.
        let big = hypervisor.vmCreate(client: client).value!
        let bigSize = Hypervisor.maxDonationPages * 4096
        let bigBase: UInt64 = 0x8800_0000
        var ok = true
        row("VM_DONATE of \(Hypervisor.maxDonationPages) pages (64 MiB) in one call", time {
            let r = hypervisor.vmDonate(big, range: PhysicalRange(base: bigBase, size: bigSize), client: client); ok = r.value != nil
        })
        let page = [UInt8](repeating: 0xA5, count: 4096)
        for base in stride(from: bigBase, to: bigBase + bigSize, by: 4096) { memory.writeBytes(page, at: base) }
        if ok {
            row("VM_DESTROY of a VM owning the most a VM may (64 MiB), every page written", time {
                _ = hypervisor.vmDestroy(big, client: client)
            })
        } else { report.failed("VM_DESTROY of a VM owning 64 MiB", "the donation was refused", target: target) }

        // Host TLB maintenance with the IOTLB full of a host bank's entries.
        guard fillTLB() > 4096 else { return report.failed("host TLB maintenance", "the IOTLB did not fill", target: target) }
        row("host TLBIALLNSNH, full IOTLB, on every instance", time {
            for w in hypervisor.windows.indices { write(w, .TLBIALLNSNH, 0, 0) }
        })
        fillTLB()
        worst = 0
        for i in 0..<UInt64(64) { worst = max(worst, time { write(0, .TLBIVA, 0, (Stage1Domain.missIOVA >> 12) + i, width: .doubleword) }) }
        row("host TLBIVA, full IOTLB (worst of 64)", worst)
        newerRows(row)

        // DUMP with every register programmed and 16 VMs holding scattered pages.
        buildSharedTree(l2Tables: 1, l3PerL2: 1)
        for n in 0..<16 {
            let v = hypervisor.vmCreate(client: client).value!
            for p in stride(from: UInt64(n), to: 4096, by: 16) {
                _ = hypervisor.vmDonate(v, range: PhysicalRange(base: 0x8C00_0000 + p * 0x2000, size: 0x1000), client: client)
            }
        }
        var output: [UInt8] = []
        var fds: [Int32] = []
        let dump = Request.dump.encoded(tag: 2)
        worst = 0
        for _ in 0..<5 {
            output.removeAll(keepingCapacity: true)
            let t = time { dump.withUnsafeBytes { _ = session.receive($0, fds: &fds, output: &output) } }
            worst = max(worst, t)
        }
        row("DUMP: every register programmed, 16 VMs of 256 scattered pages", worst)
    }

    /// One turn of the serial queue for a host that pipelines a whole read (`UnixServer.Limits.readChunk`, 64 KiB) of
    /// the slowest refusal: what the connection's session does with one received chunk before the queue serves anyone
    /// else (G8 bounds the turn, not only each request).
    private func queueTurn(vm: VMHandle) -> Double {
        let host = greeted(.host, id: 2)
        var output: [UInt8] = []
        var fds: [Int32] = []
        var chunk: [UInt8] = []
        var tag: UInt32 = 2
        while chunk.count + 40 <= UnixServer.Limits().readChunk {
            chunk += Request.vmDonate(VMDonateRequest(vm: vm.rawValue, address: 0x8720_0000, size: 0x1000)).encoded(tag: tag)
            tag += 1
        }
        output.removeAll()
        return time { chunk.withUnsafeBytes { _ = host.receive($0, fds: &fds, output: &output) } }
    }

    /// A root session of the bench's dispatcher, greeted as `role`.
    private func greeted(_ role: Role, id: UInt64) -> Session {
        let s = dispatcher.makeSession(connection: ConnectionID(rawValue: id), peer: PeerCredentials(pid: Int32(id), uid: 0, gid: 0),
                                       server: Sink())
        _ = receive(Request.hello(HelloRequest(role: role, name: "bench-\(role)")).encoded(tag: 1), on: s)
        return s
    }

    /// One call into `session` with `bytes` (the queue's share of a read): its output.
    @discardableResult
    private func receive(_ bytes: [UInt8], on session: Session) -> [UInt8] {
        var output: [UInt8] = []
        var fds: [Int32] = []
        _ = bytes.withUnsafeBytes { session.receive($0, fds: &fds, output: &output) }
        return output
    }

    /// The requests added since the rows above were first measured: DMA_PREFETCH, MC_DMA, STATS, TRACE (G8), on the
    /// benchmark's stage-1 domain (attached by `fillTLB`).
    private func newerRows(_ row: (String, Double) -> Void) {
        let device = greeted(.device, id: 3)
        func prefetch(_ page: UInt64, tag: UInt32) -> [UInt8] {
            Request.dmaPrefetch(DMAPrefetchRequest(
                access: DMARequest(window: 0, streamID: UInt32(Stage1Domain.stream), iova: Stage1Domain.missIOVA + page << 12, flags: []),
                pages: 64 | DMAPrefetchRequest.windowFlag)).encoded(tag: tag)
        }
        for w in hypervisor.windows.indices { write(w, .TLBIALLNSNH, 0, 0) }
        row("DMA_PREFETCH around the access, 64 pages each side, IOTLB empty", time { receive(prefetch(1000, tag: 2), on: device) })
        for w in hypervisor.windows.indices { write(w, .TLBIALLNSNH, 0, 0) }
        var turn: [UInt8] = []
        for i in 0..<UInt64(16) { turn += prefetch(2000 + i * 256, tag: 3 + UInt32(i)) }
        row("one queue turn: 16 such DMA_PREFETCHes, IOTLB empty", time { receive(turn, on: device) })
        if let mc = hypervisor.memoryController {
            let id = UInt32(mc.configuration.clients[0].id)
            let dma = Request.mcDMA(MCDMARequest(client: id, iova: 0x8000_0000, flags: [])).encoded(tag: 30)
            row("MC_DMA", time { receive(dma, on: device) })
        }
        row("STATS (admin), every role's operations counted", time { receive(Request.stats.encoded(tag: 31), on: session) })
        let path = "/tmp/smmu-bench-trace-\(getpid())"
        defer { unlink(path) }
        let start = Request.trace(TraceControlRequest(.start, maxBytes: 1 << 20, path: path)).encoded(tag: 32)
        row("TRACE start (creates the file)", time { receive(start, on: session) })
        let stop = Request.trace(TraceControlRequest(.stop)).encoded(tag: 33)
        row("TRACE stop", time { receive(stop, on: session) })
    }

    /// Translations by a host stream over the benchmark's stage-1 domain (Linux's attach, bank 0 of window 0), on
    /// 8,192 distinct pages: the IOTLB's capacity. Returns how many translated.
    @discardableResult
    private func fillTLB() -> Int {
        guard let domain = try? Stage1Domain(memory: memory, tablePool: 0x8600_0000..<0x8620_0000, dataBase: 0x8620_0000),
              let linux = try? HypervisorPort(hypervisor: hypervisor, window: 0, client: client).driver(),
              (try? domain.attach(linux)) != nil
        else { return 0 }
        var translated = 0
        for i in 0..<UInt64(8192) {
            let iova = Stage1Domain.missIOVA + (i % UInt64(Stage1Domain.missPages)) << 12
            if case .ok = hypervisor.dma(window: 0, stream: UInt32(Stage1Domain.stream), iova: iova, access: .read) {
                translated += 1
            }
        }
        return translated
    }
}
