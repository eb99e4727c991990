import ArmSMMUDriver
import PKVM
import SMMUModel

/// A fixed, deterministic in-process workload for counting instructions (`valgrind --tool=callgrind`, or
/// `perf stat -e instructions` where the machine supports it): each round is one READ of IDR0, the Linux
/// driver's whole attach sequence for context bank 0 (CBA2R, CBAR, TCR2, TCR, TTBRn, MAIRn, SCTLR, S2CR, SMR)
/// through the trap handler, a TLBIVA and a TLBSYNC on context bank 1 (which holds no TLB entries, so the
/// IOTLB's full scan does not drown the register path), and one DMA that hits the IOTLB and one that misses.
/// Run it with two round counts and divide the difference by the difference in rounds: the set-up cancels.
struct FixedWorkload {
    let translation: InProcessTranslation
    /// The attach's writes as the driver made them (recorded once, replayed each round).
    let writes: [PortAccess]
    let base: UInt64
    let idr0: UInt64
    let tlbiva: UInt64
    let tlbsync: UInt64

    init() throws(BenchError) {
        translation = try InProcessTranslation()
        let window = translation.hypervisor.windows[0]
        let c = MMU500Configuration.tegra234
        let log = PortAccessLog()
        let recorder = ArmSMMU(instances: [RecordingPort(translation.linux.instances[0], log: log)],
                               configuration: translation.linux.configuration)
        try translation.domain.attach(recorder)
        writes = log.accesses
        base = window.base
        idr0 = window.base + c.offset(of: .IDR0)
        tlbiva = window.base + c.offset(of: .TLBIVA, index: Stage1Domain.bank + 1)
        tlbsync = window.base + c.offset(of: .TLBSYNC, index: Stage1Domain.bank + 1)
    }

    /// Runs `rounds` rounds; returns how many accesses or DMAs did not succeed (0 expected).
    func run(rounds: Int) -> Int {
        let hypervisor = translation.hypervisor
        let client = ClientIdentity(name: "smmu-bench")
        var failures = 0
        for round in 0..<rounds {
            if hypervisor.hostRead(address: idr0, width: .word, client: client).value == nil { failures += 1 }
            for w in writes where hypervisor.hostWrite(address: base + w.offset, value: w.value,
                                                         width: w.width == 8 ? .doubleword : .word, client: client).value == nil {
                failures += 1
            }
            let page = Stage1Domain.missIOVA + UInt64(round % Stage1Domain.missPages) << 12
            if hypervisor.hostWrite(address: tlbiva, value: page >> 12, width: .doubleword, client: client).value == nil {
                failures += 1
            }
            if hypervisor.hostWrite(address: tlbsync, value: 0, width: .word, client: client).value == nil { failures += 1 }
            if case .fault = translation.translate(Stage1Domain.hitIOVA) { failures += 1 }
            if case .fault = translation.translate(page) { failures += 1 }
        }
        return failures
    }
}
