import ArmSMMUDriver
import Glibc
import PKVM
import SMMUModel

/// DMA translation with no socket: the daemon's own path (`Hypervisor.dma`: the physical MMU-500's
/// stream match, IOTLB, table walk and the owners' stage-2 filter) on a finalized Tegra234 machine,
/// after the host programmed a stage-1 domain through the trap handler as Linux would.
struct InProcessTranslation {
    static let hostRAM = PhysicalRange(base: 0x8000_0000, size: 512 << 20)
    static let hypervisorRAM = PhysicalRange(base: 0x7F00_0000, size: 4 << 20)
    static let tablePool: Range<UInt64> = 0x8100_0000..<0x8120_0000
    static let dataBase: UInt64 = 0x9000_0000

    let hypervisor: Hypervisor
    let domain: Stage1Domain
    /// The Linux driver on window 0, through the trap handler.
    let linux: ArmSMMU<HypervisorPort>

    init() throws(BenchError) {
        let memory: MemoryMap
        do {
            memory = try MemoryMap(regions: [(Self.hostRAM.base, Self.hostRAM.size),
                                             (Self.hypervisorRAM.base, Self.hypervisorRAM.size)])
        } catch { throw .unexpected("memory map: \(error)") }
        let policy = HypervisorPolicy(topology: .tegra234, hostRAM: [Self.hostRAM], hypervisorRAM: Self.hypervisorRAM)
        do { hypervisor = try Hypervisor(policy: policy, memory: memory, audit: CollectingAuditSink()) } catch {
            throw .unexpected("hypervisor: \(error)")
        }
        guard hypervisor.finalize() else { throw .unexpected("finalization refused") }
        do { domain = try Stage1Domain(memory: memory, tablePool: Self.tablePool, dataBase: Self.dataBase) } catch {
            throw .unexpected("page tables: \(error)")
        }
        linux = try HypervisorPort(hypervisor: hypervisor, window: 0, client: ClientIdentity(name: "smmu-bench")).driver()
        try domain.attach(linux)
        guard case .ok(let pa) = translate(Stage1Domain.hitIOVA), pa == domain.hitPhysical else {
            throw .unexpected("the hit page does not translate: \(translate(Stage1Domain.hitIOVA))")
        }
    }

    @inline(__always) func translate(_ iova: UInt64) -> Outcome<UInt64> {
        hypervisor.dma(window: 0, stream: UInt32(Stage1Domain.stream), iova: iova, access: .read)
    }

    /// Translations per second of wall-clock time, and per second of this thread's CPU time (the
    /// machine is shared: the CPU rate is what the code costs, the wall rate what this run got).
    struct Rate {
        var wall: Double
        var cpu: Double
    }

    /// IOTLB hits: the same page for about `seconds`.
    func hits(seconds: Double) throws(BenchError) -> Rate {
        try run(seconds: seconds, expectHits: true) { i in Stage1Domain.hitIOVA | UInt64(i & 0xFF8) }
    }

    /// IOTLB misses: a sweep over twice the IOTLB's capacity, so every access walks the tables.
    func misses(seconds: Double) throws(BenchError) -> Rate {
        try run(seconds: seconds, expectHits: false) { i in
            Stage1Domain.missIOVA + UInt64(i % Stage1Domain.missPages) << 12
        }
    }

    /// How a sweep of probes runs: each walking from the TTBR; inside `speculating` one by one (the walk cache and
    /// the last-level table decode); or as DMA_PREFETCH runs them, a last-level table's pages at once
    /// (`Hypervisor.probeDMARun`).
    enum ProbeMode { case walked, inRun, leafRuns }

    /// DMA_PREFETCH's speculative probes over the miss sweep's pages, 256 per run as a prefetch asks them.
    /// Probes per second.
    func probes(seconds: Double, mode: ProbeMode) throws(BenchError) -> Rate {
        let budget = UInt64(seconds * 1e9)
        let cpuStart = threadCPUNanoseconds()
        let start = monotonicNanoseconds()
        var count = 0
        var faults = 0
        let stream = UInt32(Stage1Domain.stream)
        repeat {
            for _ in 0..<16 {
                let first = Stage1Domain.missIOVA + UInt64(count % Stage1Domain.missPages) << 12
                func sweep() {
                    var page = 0
                    while page < 256 {
                        let iova = first + UInt64(page) << 12
                        if mode == .leafRuns {
                            let n = hypervisor.probeDMARun(window: 0, stream: stream, iova: iova, access: .read, down: false,
                                                           limit: 256 - page) { _, answer in
                                if answer == nil { faults += 1 }
                                return true
                            }
                            if n > 0 { page += n; continue }
                        }
                        if hypervisor.probeDMA(window: 0, stream: stream, iova: iova, access: .read) == nil { faults += 1 }
                        page += 1
                    }
                }
                if mode == .walked { sweep() } else { hypervisor.speculating(window: 0, stream: stream, sweep) }
                count += 256
            }
        } while monotonicNanoseconds() - start < budget
        let elapsed = Double(monotonicNanoseconds() - start) / 1e9
        let cpu = Double(threadCPUNanoseconds() - cpuStart) / 1e9
        guard faults == 0 else { throw .unexpected("\(faults) of \(count) probes faulted") }
        return Rate(wall: Double(count) / elapsed, cpu: Double(count) / cpu)
    }

    private func run(seconds: Double, expectHits: Bool, _ iova: (Int) -> UInt64) throws(BenchError) -> Rate {
        let before = hypervisor.tlbStatistics
        let budget = UInt64(seconds * 1e9)
        let cpuStart = threadCPUNanoseconds()
        let start = monotonicNanoseconds()
        var count = 0
        var faults = 0
        repeat {
            for _ in 0..<4096 {
                if case .fault = translate(iova(count)) { faults += 1 }
                count += 1
            }
        } while monotonicNanoseconds() - start < budget
        let elapsed = Double(monotonicNanoseconds() - start) / 1e9
        let cpu = Double(threadCPUNanoseconds() - cpuStart) / 1e9
        let after = hypervisor.tlbStatistics
        let hits = after.hits - before.hits
        let misses = after.misses - before.misses
        guard faults == 0 else { throw .unexpected("\(faults) of \(count) translations faulted") }
        // Hits must all hit; the miss sweep may hit now and then (the IOTLB is hashed), but mostly walks.
        let wanted = expectHits ? hits : misses
        guard wanted >= count * (expectHits ? 99 : 80) / 100 else {
            throw .unexpected("expected \(expectHits ? "hits" : "misses"): \(hits) hits, \(misses) misses of \(count)")
        }
        return Rate(wall: Double(count) / elapsed, cpu: Double(count) / cpu)
    }
}

/// This thread's CPU time in nanoseconds.
func threadCPUNanoseconds() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts)
    return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
}
