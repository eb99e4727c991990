import Testing
@testable import PKVM
import SMMUModel

// The machine every test attacks: Tegra234 (niso1 pair at windows 0 and 1, iso, niso0 pair), host RAM
// 0x80000000 + 256 MiB, hypervisor RAM 0x7f000000 + 4 MiB, the default 8 context banks and 8 SMRs
// reserved per instance, finalization by explicit call.

let hostRAM = PhysicalRange(base: 0x8000_0000, size: 256 << 20)
let hypervisorRAM = PhysicalRange(base: 0x7F00_0000, size: 4 << 20)
/// Where host tests carve page tables (inside host RAM).
let hostTablePool: Range<UInt64> = 0x8100_0000..<0x8200_0000
/// Host data pages DMA targets.
let hostData: UInt64 = 0x8800_0000
/// Pages tests donate to VMs.
let vmData: UInt64 = 0x8A00_0000

/// A finalized (or not) hypervisor over simulated memory, with an audit sink the tests read.
final class Machine {
    let memory: MemoryMap
    let audit = CollectingAuditSink()
    let hv: Hypervisor
    let client = ClientIdentity(name: "hvtest-host", pid: 4242, uid: 1000)
    private var nextTablePool = hostTablePool.lowerBound

    init(finalized: Bool = true, hypervisorStreams: [Int: [StreamID]] = [:], hostDMARanges: [PhysicalRange] = [],
         hostFinalizes: Bool = false) {
        memory = try! MemoryMap(regions: [(hostRAM.base, hostRAM.size), (hypervisorRAM.base, hypervisorRAM.size)])
        let policy = HypervisorPolicy(topology: .tegra234, hostRAM: [hostRAM], hypervisorRAM: hypervisorRAM,
                                      hostDMARanges: hostDMARanges, hypervisorStreams: hypervisorStreams,
                                      hostFinalizes: hostFinalizes)
        hv = try! Hypervisor(policy: policy, memory: memory, audit: audit)
        if finalized { #expect(hv.finalize()) }
    }

    func driver(_ windows: Int...) -> LinuxDriver { LinuxDriver(machine: self, windows: windows.isEmpty ? [0] : windows) }

    func physical(_ w: Int) -> MMU500 { hv.instances[w].physical }
    func virtual(_ w: Int) -> MMU500 { hv.instances[w].virtual }

    /// A fresh stage-1 (or stage-2) table builder in its own 1 MiB of host RAM.
    func tables(_ stage: PageTableBuilder.Stage = .stage1) -> PageTableBuilder {
        let pool = nextTablePool..<(nextTablePool + 0x10_0000)
        nextTablePool += 0x10_0000
        return try! PageTableBuilder(memory: memory, stage: stage, tablePool: pool)
    }

    /// Every register of every instance, physical and virtual, plus live TLB entries: what a
    /// refused access must leave exactly as it was.
    struct State: Equatable {
        var registers: [[UInt64]]
        var tlbEntries: [Int]
    }

    func state() -> State {
        var regs: [[UInt64]] = []
        var tlb: [Int] = []
        for instance in hv.instances {
            regs.append(instance.physical.registers().map(\.value))
            regs.append(instance.virtual.registers().map(\.value))
            tlb.append(instance.physical.tlbEntryCount)
        }
        return State(registers: regs, tlbEntries: tlb)
    }

    /// Registers that differ between two states, named, for readable failures.
    func differences(_ a: State, _ b: State) -> [String] {
        var out: [String] = []
        for (i, instance) in hv.instances.enumerated() {
            for (k, mmu) in [(2 * i, instance.physical), (2 * i + 1, instance.virtual)] {
                let locations = mmu.registers().map(\.location)
                for j in locations.indices where a.registers[k][j] != b.registers[k][j] {
                    out.append("\(instance.window.name)\(k % 2 == 0 ? "" : "(virtual)").\(locations[j]): "
                               + "0x\(String(a.registers[k][j], radix: 16)) -> 0x\(String(b.registers[k][j], radix: 16))")
                }
            }
        }
        return out
    }

    /// A protected VM owning `pages` host pages from `base`, with `stream` of window `w`'s logical SMMU.
    func protectedVM(stream: UInt32, window w: Int = 0, base: UInt64 = vmData, pages: Int = 1) -> VMHandle {
        let vm = hv.vmCreate(client: client).value!
        let donated = hv.vmDonate(vm, range: PhysicalRange(base: base, size: UInt64(pages) * 4096), client: client)
        #expect(donated.value != nil, "donation failed")
        let assigned = hv.vmAssignStream(vm, window: w, stream: stream, client: client)
        #expect(assigned.value != nil, "assignment failed")
        return vm
    }

    /// The VM's context bank on window w (a reserved bank), as the hypervisor recorded it.
    func contextBank(of vm: VMHandle, window w: Int) -> Int? {
        hv.instances[w].reservedContextBankUse.first { $0.value == vm }?.key
    }

    /// Writes `bytes` as the VM itself would (its own memory, not through the host).
    func vmWrites(_ bytes: [UInt8], at address: UInt64) { #expect(memory.writeBytes(bytes, at: address)) }

    /// A client's shared memory as MEM_MAP gives it to the hypervisor: `size` bytes of a file (its identity
    /// `inode`, from `offset`), here ordinary memory the test can read and write as the client would.
    func mapShared(at base: UInt64, size: UInt64 = 4096, inode: UInt64 = 1, offset: UInt64 = 0)
        -> (result: Outcome<Void>, client: UnsafeMutableRawBufferPointer) {
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: Int(size), alignment: 4096)
        buffer.initializeMemory(as: UInt8.self, repeating: 0)
        let file = SharedFileRange(device: 1, inode: inode, offset: offset, size: size)
        let result = hv.mapHostMemory(PhysicalRange(base: base, size: size), file: file, pointer: buffer.baseAddress!,
                                      release: {}, client: client)
        return (result, buffer)   // the test owns the buffer (the client's side of the file); it is never freed
    }
}

/// Any outcome may carry a denial.
protocol Deniable {
    var deniedEvent: AuditEvent? { get }
    var summary: String { get }
}

extension Outcome: Deniable {
    var deniedEvent: AuditEvent? { if case .denied(let e) = self { e } else { nil } }
    var summary: String { description }
}

/// Expects a denial by `rule` and returns its event.
@discardableResult
func expectDenied(_ result: some Deniable, _ rule: TrapRule,
                  sourceLocation: SourceLocation = #_sourceLocation) -> AuditEvent? {
    guard let event = result.deniedEvent else {
        Issue.record("expected DENIED (\(rule.rawValue)), got \(result.summary)", sourceLocation: sourceLocation)
        return nil
    }
    #expect(event.rule == rule, sourceLocation: sourceLocation)
    return event
}

extension Outcome where Value == UInt64 {
    /// A DMA's physical address, when it translated.
    var physicalAddress: UInt64? { value }
    var fault: DMAFault? {
        if case .fault(let f) = self { return f }
        return nil
    }
}

extension PageTableBuilder.Attributes {
    /// What Linux's io-pgtable writes for IOMMU_READ | IOMMU_WRITE without IOMMU_PRIV (AP unprivileged):
    /// devices' transactions are unprivileged.
    static let linuxReadWrite = PageTableBuilder.Attributes(user: true)
}

extension PageTableBuilder {
    /// One 4 KiB mapping as Linux makes it.
    func map4K(_ va: UInt64, to pa: UInt64) throws { try map(va, to: pa, size: 4096, attributes: .linuxReadWrite) }
}
