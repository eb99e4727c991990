import Testing
import ArmSMMUDriver
import ArmSMMUTestPorts
@testable import SMMUModel

/// The Linux driver on the bare model. Its sequences (probe, reset, attach, TLB maintenance, faults) are
/// `ArmSMMU`'s, in Linux's offsets, through `MMU500Port`; the raw accesses below are the tests' own, at offsets
/// from the model's register table. Every access error fails the test.
struct Driver: LinuxDriverHarness {
    let smmu: MMU500
    var config: MMU500Configuration { smmu.configuration }

    var linux: ArmSMMU<MMU500Port> {
        let port = MMU500Port(smmu) { Issue.record(Comment(rawValue: $0)) }
        return try! ArmSMMU.cfgProbe([port]).get()
    }

    func check(_ condition: Bool, _ what: String) { #expect(condition, Comment(rawValue: what)) }

    func offset(_ name: RegisterName, _ index: Int = 0) -> UInt64 { config.offset(of: name, index: index) }

    func r32(_ name: RegisterName, _ index: Int = 0) -> UInt32 {
        let v = smmu.read(offset: offset(name, index), width: .word)
        #expect(throws: Never.self) { try v.get() }
        return UInt32(truncatingIfNeeded: (try? v.get()) ?? 0)
    }

    func r64(_ name: RegisterName, _ index: Int = 0) -> UInt64 {
        let v = smmu.read(offset: offset(name, index), width: .doubleword)
        #expect(throws: Never.self) { try v.get() }
        return (try? v.get()) ?? 0
    }

    func w32(_ name: RegisterName, _ index: Int, _ value: UInt32) {
        let r = smmu.write(offset: offset(name, index), value: UInt64(value), width: .word)
        #expect(throws: Never.self) { try r.get() }
    }

    func w32(_ name: RegisterName, _ value: UInt32) { w32(name, 0, value) }

    func w64(_ name: RegisterName, _ index: Int, _ value: UInt64) {
        let r = smmu.write(offset: offset(name, index), value: value, width: .doubleword)
        #expect(throws: Never.self) { try r.get() }
    }

    func w64(_ name: RegisterName, _ value: UInt64) { w64(name, 0, value) }
}

/// The error of a write, if any (Result<Void, _> is not Equatable).
func writeError(_ r: Result<Void, AccessError>) -> AccessError? {
    if case .failure(let e) = r { return e }
    return nil
}

extension Array {
    subscript(safe i: Int) -> Element? { indices.contains(i) ? self[i] : nil }
}

/// A machine: RAM at 0x8000_0000 (256 MiB), one MMU-500, a table pool.
struct Machine {
    static let ramBase: UInt64 = 0x8000_0000
    static let ramSize: UInt64 = 256 << 20
    let memory: MemoryMap
    let smmu: MMU500
    var driver: Driver { Driver(smmu: smmu) }
    var nextPool: UInt64 = Machine.ramBase + (128 << 20)

    init(_ configuration: MMU500Configuration = .tegra234, filter: DownstreamFilter? = nil) {
        memory = try! MemoryMap(regions: [(Self.ramBase, Self.ramSize)])
        smmu = MMU500(configuration: configuration, memory: memory, filter: filter)
    }

    /// A table builder with its own 4 MiB of pool.
    mutating func builder(_ stage: PageTableBuilder.Stage, _ granule: PageTableBuilder.Granule = .size4K,
                          inputBits: Int = 48, startLevel: Int? = nil) throws -> PageTableBuilder {
        let pool = nextPool..<(nextPool + (4 << 20))
        nextPool += 4 << 20
        return try PageTableBuilder(memory: memory, stage: stage, granule: granule, inputBits: inputBits,
                                    tablePool: pool, startLevel: startLevel)
    }
}

/// A downstream filter that allows one address range and remembers what it was asked.
final class RangeFilter: DownstreamFilter {
    var allowed: Range<UInt64>
    var asked: [(StreamID, UInt64, MemoryAccessKind)] = []
    init(_ allowed: Range<UInt64>) { self.allowed = allowed }
    func permits(stream: StreamID, address: UInt64, kind: MemoryAccessKind) -> Bool {
        asked.append((stream, address, kind))
        return allowed.contains(address)
    }
}
