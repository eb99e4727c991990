import ArmSMMUDriver
import Foundation
import SMMUClient
import SMMUModel
import WireProtocol

/// What the benchmark does to the running daemon besides READ/WRITE: the Linux probe of every
/// window, a stage-1 DMA domain set up by the host, and DMA translations as a device.
struct DaemonScenarios {
    let daemon: DaemonProcess

    /// A greeted connection; waits (up to 20 s) until the daemon has finalized.
    func connect(_ role: Role) throws(BenchError) -> (SMMUClient, HelloResponse) {
        let client = try daemon.connect()
        let deadline = monotonicNanoseconds() + 20_000_000_000
        while true {
            let hello: HelloResponse
            do { hello = try client.hello(role: role, name: "smmu-bench") } catch { throw .client("HELLO as \(role)", error) }
            if hello.state == .finalized { return (client, hello) }
            guard monotonicNanoseconds() < deadline else { throw .unexpected("the daemon did not finalize (state \(hello.stateValue))") }
            client.close()
            usleep(20_000)
            return try connect(role)
        }
    }

    /// Connect, HELLO, then Linux's cfg_probe + reset + SMR mask test of every window. Milliseconds.
    /// `posted`: writes posted as a CPU's MMIO stores are (the default of LinuxProbe); else one round trip each.
    func probeAll(posted: Bool) throws(BenchError) -> (milliseconds: Double, windows: Int, accesses: Int) {
        let start = monotonicNanoseconds()
        let (client, hello) = try connect(.host)
        defer { client.close() }
        let reports: [LinuxProbe.WindowReport]
        do { reports = try LinuxProbe(client: client, options: .init(postedWrites: posted)).run(windows: hello.windows) } catch {
            throw .unexpected("Linux probe: \(error)")
        }
        let ms = Double(monotonicNanoseconds() - start) / 1e6
        for r in reports where !r.syncCompleted || r.readBackSCR0 != r.finalSCR0 {
            throw .unexpected("probe of \(r.window.name): sync \(r.syncCompleted), sCR0 0x\(String(r.readBackSCR0, radix: 16)) "
                              + "after writing 0x\(String(r.finalSCR0, radix: 16))")
        }
        return (ms, reports.count, reports.reduce(0) { $0 + $1.reads + $1.writes })
    }

    /// The host's first RAM range, from the admin's DUMP.
    func hostRAM() throws(BenchError) -> (base: UInt64, size: UInt64) {
        let object = try document(.admin, "DUMP") { c throws(SMMUClientError) in try c.dump() }
        guard let memory = object["memory"] as? [[String: Any]],
              let host = memory.first(where: { $0["owner"] as? String == "host" }),
              let base = (host["base"] as? String).flatMap(Self.hex), let size = (host["size"] as? String).flatMap(Self.hex)
        else { throw .unexpected("no host memory range in DUMP") }
        return (base, size)
    }

    static func hex(_ s: String) -> UInt64? { UInt64(s.hasPrefix("0x") ? String(s.dropFirst(2)) : s, radix: 16) }

    /// The host builds the stage-1 domain's tables in its RAM (MEM_WRITE) and attaches it on window 0.
    func attachDomain(host: SMMUClient, hello: HelloResponse) throws(BenchError) -> Stage1Domain {
        let ram = try hostRAM()
        guard ram.size >= 64 << 20 else { throw .unexpected("host RAM of \(ram.size) bytes: the DMA rows need 64 MiB") }
        let local: MemoryMap
        do { local = try MemoryMap(regions: [(ram.base, ram.size)]) } catch { throw .unexpected("local memory: \(error)") }
        let pool = (ram.base + (16 << 20))..<(ram.base + (17 << 20))
        let domain: Stage1Domain
        do { domain = try Stage1Domain(memory: local, tablePool: pool, dataBase: ram.base + (32 << 20)) } catch {
            throw .unexpected("page tables: \(error)")
        }
        let chunk: UInt64 = 32 << 10
        do {
            for at in stride(from: pool.lowerBound, to: pool.upperBound, by: Int(chunk)) {
                try host.memWrite(address: at, bytes: local.readBytes(at: at, count: Int(chunk)) ?? [])
            }
        } catch { throw .client("writing the DMA domain's tables", error) }
        let port = SMMURegisterPort(client: host, window: hello.windows[0], index: 0)
        let probed: Result<ArmSMMU<SMMURegisterPort>, ArmSMMUConfiguration.ProbeFailure>
        do {
            probed = try ArmSMMU.cfgProbe([port])
            if case .success(let linux) = probed { try domain.attach(linux) }
            try port.complete()
        } catch { throw .unexpected("attaching the DMA domain: \(error)") }
        if case .failure(let f) = probed { throw .unexpected("cfg_probe: \(f)") }
        return domain
    }

    /// Device-side DMA rows: one-outstanding latency of a hit, and pipelined (depth 64) hit and miss rates.
    func dma(domain: Stage1Domain, samples: Int, seconds: Double)
        throws(BenchError) -> (hit: Latency, hitRate: Double, missRate: Double)
    {
        let (device, _) = try connect(.device)
        defer { device.close() }
        let stream = UInt32(Stage1Domain.stream)
        let first: DMAResponse
        do { first = try device.dma(window: 0, stream: stream, iova: Stage1Domain.hitIOVA) } catch { throw .client("DMA", error) }
        guard first.fault == 0, first.physicalAddress == domain.hitPhysical else {
            throw .unexpected("socket DMA: fault \(first.fault), PA 0x\(String(first.physicalAddress, radix: 16))")
        }
        var times = [UInt64](repeating: 0, count: samples)
        do {
            for i in 0..<samples {
                let t0 = monotonicNanoseconds()
                _ = try device.dma(window: 0, stream: stream, iova: Stage1Domain.hitIOVA)
                times[i] = monotonicNanoseconds() - t0
            }
        } catch { throw .client("DMA round trip", error) }
        let before = try tlbCounters()
        let hitRate = try pipelinedRate(device, depth: 64, seconds: seconds, label: "DMA hits") { _ in
            .dma(DMARequest(window: 0, streamID: stream, iova: Stage1Domain.hitIOVA, flags: []))
        }
        let middle = try tlbCounters()
        let missRate = try pipelinedRate(device, depth: 64, seconds: seconds, label: "DMA misses") { i in
            .dma(DMARequest(window: 0, streamID: stream,
                            iova: Stage1Domain.missIOVA + UInt64(i % Stage1Domain.missPages) << 12, flags: []))
        }
        let after = try tlbCounters()
        let hitRun = (hits: middle.hits - before.hits, misses: middle.misses - before.misses)
        let missRun = (hits: after.hits - middle.hits, misses: after.misses - middle.misses)
        guard hitRun.misses * 100 <= hitRun.hits, missRun.hits * 4 <= missRun.misses else {
            throw .unexpected("IOTLB counters: hit run \(hitRun), miss run \(missRun)")
        }
        return (Latency(samples: times), hitRate, missRate)
    }

    /// The IOTLB counters from STATS (`tlb.hits`, `tlb.misses`): the admin's view (a host sees only its own counters).
    func tlbCounters() throws(BenchError) -> (hits: Int, misses: Int) {
        let object = try document(.admin, "STATS") { c throws(SMMUClientError) in try c.stats() }
        guard let tlb = object["tlb"] as? [String: Any], let hits = tlb["hits"] as? Int, let misses = tlb["misses"] as? Int
        else { throw .unexpected("no tlb counters in STATS") }
        return (hits, misses)
    }

    /// A JSON answer (STATS, DUMP) on a connection of its own.
    private func document(_ role: Role, _ what: String, _ call: (SMMUClient) throws(SMMUClientError) -> String)
        throws(BenchError) -> [String: Any]
    {
        let (client, _) = try connect(role)
        defer { client.close() }
        let text: String
        do { text = try call(client) } catch { throw .client(what, error) }
        guard let object = try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any] else {
            throw .unexpected("\(what) is not a JSON object")
        }
        return object
    }
}
