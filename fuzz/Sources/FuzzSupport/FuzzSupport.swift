// What the fuzz targets share: the input reader, an audit sink that counts, and one hypervisor built
// once per process and put back to its initial state before each input (building one per input cost
// most of each run: two MMU-500 models per window with their TLBs and stream caches).
#if canImport(Glibc)
import Glibc
#endif
import Foundation
import PKVM
import SMMUModel

/// Reads the fuzzer's bytes as numbers; past the end every read is 0.
public struct Bytes {
    public let data: UnsafeBufferPointer<UInt8>
    public var i = 0
    public init(_ data: UnsafeBufferPointer<UInt8>) { self.data = data }
    public var atEnd: Bool { i >= data.count }
    public mutating func u8() -> UInt8 {
        defer { i += 1 }
        return i < data.count ? data[i] : 0
    }
    public mutating func u16() -> UInt16 { UInt16(u8()) | UInt16(u8()) << 8 }
    public mutating func u32() -> UInt32 { UInt32(u16()) | UInt32(u16()) << 16 }
    public mutating func u64() -> UInt64 { UInt64(u32()) | UInt64(u32()) << 32 }
    public mutating func bool() -> Bool { u8() & 1 != 0 }
}

/// Counts audit records (G7's oracle compares them with the hypervisor's denial count).
public final class CountingAuditSink: AuditSink {
    public var count = 0
    public init() {}
    public func record(_ event: AuditEvent) { count += 1 }
}

/// One hypervisor for the whole process. `begin(finalized:)` hands it out in the state a freshly built
/// one would be in (finalized when asked), so a finding reproduces from its input alone. Both states are
/// checkpoints taken once: an input starts from a copy of the register files, ownership and counters instead
/// of building the SMMU models or finalizing again (finalization alone was ~7% of an input).
///
/// With FUZZ_VERIFY_RESET=1 in the environment, every begin is compared with a freshly built hypervisor
/// (DUMP's snapshot, the TLB counters, every byte of RAM): slow, for checking the restore itself over a corpus.
public final class ReusedHypervisor {
    public let policy: HypervisorPolicy
    public let hypervisor: Hypervisor
    public let audit = CountingAuditSink()
    public let verify = ProcessInfo.processInfo.environment["FUZZ_VERIFY_RESET"] == "1"
    let built: Hypervisor.Checkpoint
    let finalized: Hypervisor.Checkpoint
    /// Which checkpoint the hypervisor is at (nil while an input runs on it), and which one the input began from.
    var at: Bool?
    var began: Bool?

    public init(policy: HypervisorPolicy) {
        self.policy = policy
        hypervisor = try! Hypervisor(policy: policy, memory: Self.memory(policy), audit: audit)
        built = hypervisor.checkpoint()!
        hypervisor.finalize()
        finalized = hypervisor.checkpoint()!
        restore(finalized: false)
    }

    static func memory(_ policy: HypervisorPolicy) -> MemoryMap {
        try! MemoryMap(regions: (policy.hostRAM + [policy.hypervisorRAM]).map { ($0.base, $0.size) })
    }

    /// The hypervisor as built (and finalized when asked), for one input.
    public func begin(finalized: Bool) -> Hypervisor {
        if began != nil { end() }
        if at != finalized { restore(finalized: finalized) }
        at = nil
        began = finalized
        audit.count = 0
        if verify { verifyAgainstFresh(finalized: finalized) }
        return hypervisor
    }

    /// Puts the hypervisor back once the input is done (its sessions closed). Done here rather than at
    /// the next `begin` so that what an input allocates is freed within it: libFuzzer runs an input
    /// again, looking for a leak, whenever it returns with more mallocs than frees. Traps when the
    /// input left client memory mapped: the session that mapped it was closed, so that is a finding.
    public func end() {
        guard let finalized = began else { return }
        restore(finalized: finalized)
        began = nil
    }

    private func restore(finalized: Bool) {
        if !hypervisor.restore(finalized ? self.finalized : built) {
            fatalError("client memory still mapped after its session closed: \(hypervisor.memory.replacedRanges)")
        }
        at = finalized
    }

    private func verifyAgainstFresh(finalized: Bool) {
        let fresh = try! Hypervisor(policy: policy, memory: Self.memory(policy), audit: CountingAuditSink())
        if finalized { fresh.finalize() }
        let a = hypervisor.snapshot()
        let b = fresh.snapshot()
        if a != b {
            fatalError("reset state differs from a fresh hypervisor:\n\(a)\n\(b)")
        }
        if hypervisor.tlbStatistics != fresh.tlbStatistics || hypervisor.statistics != fresh.statistics {
            fatalError("reset counters differ from a fresh hypervisor")
        }
        for r in hypervisor.memory.ramRegions {
            guard let bytes = hypervisor.memory.readBytes(at: r.base, count: Int(r.size)), bytes.allSatisfy({ $0 == 0 }) else {
                fatalError("RAM at 0x\(String(r.base, radix: 16)) not zero after reset")
            }
        }
    }
}
