import Glibc
import PKVM
import SMMUDaemon
import SMMUModel
import WireProtocol

/// The cost of a full state image (docs/state-image.md) of a busy Tegra234 hypervisor, in process: a stage-1 domain
/// with a full IOTLB, eight protected VMs with 512 written pages each, and 8 MiB of written host RAM. Times are
/// medians over the rounds, of wall-clock time (the machine is shared: say so when quoting them).
struct StateImageBench {
    static let vms = 8
    static let pagesPerVM = 512
    static let vmBase: UInt64 = 0x9800_0000
    static let hostWritten: UInt64 = 0x9C00_0000
    static let hostWrittenPages = 2048

    let machine: InProcessTranslation

    init() throws(BenchError) {
        machine = try InProcessTranslation()
        let h = machine.hypervisor
        let client = ClientIdentity(name: "smmu-bench")
        for v in 0..<Self.vms {
            guard case .ok(let vm) = h.vmCreate(client: client) else { throw .unexpected("VM_CREATE refused") }
            let base = Self.vmBase + UInt64(v * Self.pagesPerVM) << 12
            let range = PhysicalRange(base: base, size: UInt64(Self.pagesPerVM) << 12)
            guard case .ok = h.vmDonate(vm, range: range, client: client),
                  case .ok = h.vmAssignStream(vm, window: 0, stream: UInt32(0x40 + v), client: client) else {
                throw .unexpected("VM setup refused at 0x\(String(base, radix: 16))")
            }
            for p in 0..<Self.pagesPerVM { h.memory.writeBytes([UInt8](repeating: UInt8(p & 0xFF) | 1, count: 64), at: base + UInt64(p) << 12) }
        }
        // A full IOTLB, last (donations invalidate the host's banks).
        for i in 0..<(2 * 8192) { _ = machine.translate(Stage1Domain.missIOVA + UInt64(i) << 12) }
        for p in 0..<Self.hostWrittenPages {
            h.memory.writeBytes([UInt8](repeating: 0x5A, count: 4096), at: Self.hostWritten + UInt64(p) << 12)
        }
    }

    /// Wall-clock and this thread's CPU seconds of `body` (the CPU time is what the code costs on a shared machine).
    static func seconds(_ body: () throws -> Void) rethrows -> (wall: Double, cpu: Double) {
        func now(_ clock: clockid_t) -> Double {
            var t = timespec()
            clock_gettime(clock, &t)
            return Double(t.tv_sec) + Double(t.tv_nsec) / 1e9
        }
        let w0 = now(CLOCK_MONOTONIC), c0 = now(CLOCK_THREAD_CPUTIME_ID)
        try body()
        return (now(CLOCK_MONOTONIC) - w0, now(CLOCK_THREAD_CPUTIME_ID) - c0)
    }

    func rows(_ report: inout Report, rounds: Int) throws(BenchError) {
        let h = machine.hypervisor
        var encode: [(wall: Double, cpu: Double)] = [], decode = encode, restore = encode, lean = encode
        var bytes: [UInt8] = [], leanBytes: [UInt8] = []
        var image: HypervisorStateImage?
        do {
            for _ in 0..<max(rounds, 3) {
                encode.append(Self.seconds { bytes = h.stateImage().encoded() })
                lean.append(Self.seconds { leanBytes = h.stateImage(includeMemory: false).encoded() })
                decode.append(try Self.seconds { image = try HypervisorStateImage(decoding: bytes) })
                let memory = try MemoryMap(regions: h.memory.ramRegions)
                restore.append(try Self.seconds {
                    _ = try Hypervisor.restore(policy: h.policy, memory: memory, audit: CollectingAuditSink(), image: image!)
                })
            }
        } catch { throw .unexpected("state image: \(error)") }
        let i = image!
        let what = "\(i.vms.count) VMs, \(i.instances.reduce(0) { $0 + $1.physical.tlbEntries.count }) TLB entries, "
            + "\(i.memory?.count ?? 0) RAM pages"
        func ms(_ v: [(wall: Double, cpu: Double)]) -> String {
            fixed(medianOf(v.map(\.wall)) * 1000, 1) + " ms (CPU " + fixed(medianOf(v.map(\.cpu)) * 1000, 1) + " ms)"
        }
        func mb(_ n: Int) -> String { fixed(Double(n) / 1048576, 2) + " MB" }
        report.add("state image, busy Tegra234 (\(what)): size with RAM / without", mb(bytes.count) + " / " + mb(leanBytes.count))
        report.add("state image encode (capture + bytes), with RAM", ms(encode))
        report.add("state image encode (capture + bytes), without RAM", ms(lean))
        report.add("state image decode (checksum + fields), with RAM", ms(decode))
        report.add("state image restore (checks, install, invariant checker), with RAM", ms(restore))
    }
}

/// G8's worst state for a restart checkpoint: every page of host RAM (256 MiB, the shipped Tegra234 configuration's)
/// and hypervisor RAM written. With RAM in memfds (restart mode) the checkpoint's hypervisor image leaves RAM out;
/// with anonymous RAM it would copy all of it (one round: that is the cost restart mode no longer pays).
struct WorstCheckpointBench {
    static let policy = HypervisorPolicy(topology: .tegra234,
                                         hostRAM: [PhysicalRange(base: 0x8000_0000, size: 256 << 20)],
                                         hypervisorRAM: PhysicalRange(base: 0x7F00_0000, size: 4 << 20))

    static func filled(files: [Int32]?) throws(BenchError) -> Hypervisor {
        let memory = MemoryMap()
        do {
            for (i, r) in (policy.hostRAM + [policy.hypervisorRAM]).enumerated() {
                if let files { try memory.addRegion(base: r.base, size: r.size, file: files[i]) } else {
                    try memory.addRegion(base: r.base, size: r.size)
                }
            }
        } catch { throw .unexpected("RAM: \(error)") }
        let h: Hypervisor
        do { h = try Hypervisor(policy: policy, memory: memory, audit: CollectingAuditSink()) } catch {
            throw .unexpected("policy: \(error)")
        }
        guard h.finalize() else { throw .unexpected("finalization refused") }
        for r in memory.ramRegions {
            for offset in stride(from: UInt64(0), to: r.size, by: Int(MemoryMap.pageSize)) {
                memory.write64(0xA5A5_0000_0000_0000 | offset, at: r.base + offset)
            }
        }
        return h
    }

    func rows(_ report: inout Report, rounds: Int) throws(BenchError) {
        guard let files = RAMFiles.create(Self.policy) else { throw .unexpected("memfd: errno \(errno)") }
        defer { for fd in files { close(fd) } }
        let inFiles = try Self.filled(files: files)
        var lean: [(wall: Double, cpu: Double)] = []
        var leanBytes = 0
        for _ in 0..<max(rounds, 3) {
            lean.append(StateImageBench.seconds { leanBytes = inFiles.checkpointImage().encoded().count })
        }
        let anonymous = try Self.filled(files: nil)
        var copyBytes = 0
        let copy = StateImageBench.seconds { copyBytes = anonymous.checkpointImage().encoded().count }
        func mb(_ n: Int) -> String { fixed(Double(n) / 1048576, 2) + " MB" }
        report.add("checkpoint hypervisor image, worst state (all 260 MiB of RAM written), RAM in memfds: size, encode",
                   mb(leanBytes) + ", " + fixed(medianOf(lean.map(\.wall)) * 1000, 2) + " ms (CPU "
                       + fixed(medianOf(lean.map(\.cpu)) * 1000, 2) + " ms)")
        report.add("checkpoint hypervisor image, worst state, anonymous RAM (before restart mode's memfds): size, encode",
                   mb(copyBytes) + ", " + fixed(copy.wall * 1000, 0) + " ms (CPU " + fixed(copy.cpu * 1000, 0) + " ms)")
        let (pendingBytes, pending) = pendingInputImage(inFiles)
        report.add("checkpoint dispatcher image, worst input restart mode keeps (1 MiB held back, 1,024 connections each with 15 bytes of a header): size, encode",
                   mb(pendingBytes) + ", " + fixed(pending.wall * 1000, 2) + " ms (CPU " + fixed(pending.cpu * 1000, 2) + " ms)")
    }

    /// The dispatcher's part of a checkpoint with the most input read but not run that restart mode lets connections
    /// leave (InputTake, G8): every connection the limits allow (1,024) greeted, 16 of them with a 64 KiB MEM_WRITE
    /// held back after a STATS spent their turn (1 MiB, `ServerPersistence.maxHeldInput`), the others with 15 bytes
    /// of a header whose rest a message with descriptors cut off. (Before restart mode took whole frames only, each
    /// could hold a 64 KiB partial frame: 64 MB, about 0.2 s to encode.)
    func pendingInputImage(_ hypervisor: Hypervisor) -> (Int, (wall: Double, cpu: Double)) {
        final class Sink: ServerHandle { func send(_ bytes: [UInt8], to connection: ConnectionID) {} }
        let dispatcher = Dispatcher(hypervisor: hypervisor)
        let server = Sink()
        let write = Request.memWrite(MemWriteRequest(address: 0, bytes: [UInt8](repeating: 0, count: 65536 - 16))).encoded(tag: 2)
        let held = Request.stats.encoded(tag: 1) + write
        let header = Array(Request.read(ReadRequest(address: 0, width: 4)).encoded(tag: 3).prefix(15))
        var sessions: [(session: Session, output: [UInt8])] = []
        for n in 0..<1024 {
            let s = dispatcher.makeSession(connection: ConnectionID(rawValue: UInt64(n + 1)),
                                           peer: PeerCredentials(pid: Int32(n + 1), uid: 0, gid: 0), server: server)
            var output: [UInt8] = []
            var fds: [Int32] = []
            (Request.hello(HelloRequest(role: .host, name: "h")).encoded(tag: 0) + (n < 16 ? held : header)).withUnsafeBytes {
                _ = s.receive($0, fds: &fds, output: &output)
            }
            sessions.append((s, []))
        }
        var size = 0
        let t = StateImageBench.seconds {
            size = dispatcher.stateImage(sessions: sessions, serverCounters: ConnectionCounters(), audit: nil).encoded().count
        }
        return (size, t)
    }
}
