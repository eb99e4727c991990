import PKVM
import SMMUModel

/// Host TLBIVAL under load, in process: the IOTLB is first filled by a miss sweep (about 8,000 live entries of
/// 4 KiB pages), then the host invalidates pages of that sweep one TLBIVAL at a time through the trap handler,
/// as Linux's strict unmap does. Each TLBIVAL removes its entry by probing the slot of the page it names
/// (TLB.swift); before, each one scanned all 8,192 slots while the bank had live entries.
extension InProcessTranslation {
    struct InvalidationRate {
        var nanosecondsEach: Double
        /// Live IOTLB entries when the timed TLBIVALs started (median of the batches).
        var liveEntries: Int
    }

    func tlbivalUnderLoad(seconds: Double) throws(BenchError) -> InvalidationRate {
        let client = ClientIdentity(name: "smmu-bench")
        let configuration = hypervisor.policy.topology.windows[0].configuration
        let address = hypervisor.windows[0].base + configuration.offset(of: .TLBIVAL, index: Stage1Domain.bank)
        let asid = UInt64(Stage1Domain.bank) << 48     // Stage1Domain's TTBR0 ASID
        let batch = 4096
        let budget = UInt64(seconds * 1e9)
        var timed: UInt64 = 0
        var count = 0
        var live: [Int] = []
        var round = 0
        repeat {
            // Refill: a fresh stretch of the sweep, untimed.
            let first = (round * 8192) % (Stage1Domain.missPages - 8192)
            for p in 0..<8192 { _ = translate(Stage1Domain.missIOVA + UInt64(first + p) << 12) }
            live.append(hypervisor.tlbEntryCount)
            let start = monotonicNanoseconds()
            for p in 0..<batch {
                let iova = Stage1Domain.missIOVA + UInt64(first + p * 2) << 12
                let r = hypervisor.hostWrite(address: address, value: iova >> 12 | asid, width: .doubleword, client: client)
                guard r.value != nil else { throw .unexpected("TLBIVAL refused: \(r)") }
            }
            timed += monotonicNanoseconds() - start
            count += batch
            round += 1
        } while timed < budget
        // The invalidations worked: the last batch's pages miss again.
        let before = hypervisor.tlbStatistics.misses
        _ = translate(Stage1Domain.missIOVA + UInt64(((round - 1) * 8192) % (Stage1Domain.missPages - 8192)) << 12)
        guard hypervisor.tlbStatistics.misses == before + 1 else {
            throw .unexpected("a page invalidated by TLBIVAL still hit in the IOTLB")
        }
        return InvalidationRate(nanosecondsEach: Double(timed) / Double(count), liveEntries: live.sorted()[live.count / 2])
    }
}
