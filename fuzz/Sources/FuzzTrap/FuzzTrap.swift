// libFuzzer target: arbitrary register writes and reads, DMAs, memory writes and hypercalls through
// the trap handler of a finalized hypervisor; the invariant checker runs after every step, and every
// denial must have produced exactly one audit event. A violation is a crash (a finding).
import Hypervisor
import SMMUModel

struct Bytes {
    let data: UnsafeBufferPointer<UInt8>
    var i = 0
    var atEnd: Bool { i >= data.count }
    mutating func u8() -> UInt8 {
        defer { i += 1 }
        return i < data.count ? data[i] : 0
    }
    mutating func u16() -> UInt16 { UInt16(u8()) | UInt16(u8()) << 8 }
    mutating func u32() -> UInt32 { UInt32(u16()) | UInt32(u16()) << 16 }
    mutating func u64() -> UInt64 { UInt64(u32()) | UInt64(u32()) << 32 }
}

let hostRAM = PhysicalRange(base: 0x8000_0000, size: 4 << 20)

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzTrap(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    var b = Bytes(data: UnsafeBufferPointer(start: data, count: size))
    let topology = Topology.generic4K(base: 0x2B40_0000)
    let policy = HypervisorPolicy(
        topology: topology, hostRAM: [hostRAM], hypervisorRAM: PhysicalRange(base: 0x7F00_0000, size: 1 << 20),
        hostDMARanges: [PhysicalRange(base: 0x0802_0000, size: 0x1000)])
    let audit = CollectingAuditSink()
    let h = try! Hypervisor(policy: policy, memory: try! MemoryMap(regions: [(hostRAM.base, hostRAM.size), (0x7F00_0000, 1 << 20)]),
                            audit: audit)
    h.finalize()
    let client = ClientIdentity(name: "fuzz")
    let window = topology.windows[0]
    let registers = RegisterMap.all
    var vms: [UInt32] = []

    func address() -> UInt64 {
        // Mostly real registers (any index, hidden ones included), sometimes any offset.
        let pick = b.u8()
        if pick & 0x80 != 0 { return window.base + UInt64(b.u32()) % window.size }
        let d = registers[Int(pick) % registers.count]
        let index = Int(b.u8()) % max(1, d.space == .contextBank ? window.configuration.numContextBanks : d.count)
        return window.base + window.configuration.offset(of: d.name, index: index) + (b.u8() & 1 == 0 ? 0 : 4)
    }
    func pageIn(_ r: PhysicalRange) -> UInt64 { r.base + UInt64(b.u16()) % (r.size / 4096) * 4096 }

    var steps = 0
    while !b.atEnd && steps < 24 {
        steps += 1
        let width: AccessWidth = b.u8() & 1 == 0 ? .word : .doubleword
        switch b.u8() % 9 {
        case 0, 1:
            _ = h.hostWrite(address: address(), value: b.u8() & 1 == 0 ? UInt64(b.u32()) : b.u64(), width: width, client: client)
        case 2:
            _ = h.hostRead(address: address(), width: width, client: client)
        case 3:
            let iova = b.u8() & 1 == 0 ? pageIn(hostRAM) + UInt64(b.u16() & 0xFF8) : b.u64()
            _ = h.dma(window: 0, stream: UInt32(b.u16()), iova: iova, access: DMAAccess(rawValue: UInt32(b.u8() & 7)))
        case 4:
            if let vm = h.vmCreate(client: client).value { vms.append(vm.rawValue) }
        case 5:
            let vm = vms.isEmpty ? UInt32(b.u8()) : vms[Int(b.u8()) % vms.count]
            _ = h.vmDonate(VMHandle(rawValue: vm), range: PhysicalRange(base: pageIn(hostRAM), size: UInt64(b.u8() % 4 + 1) * 4096), client: client)
        case 6:
            let vm = vms.isEmpty ? UInt32(b.u8()) : vms[Int(b.u8()) % vms.count]
            _ = h.vmAssignStream(VMHandle(rawValue: vm), window: 0, stream: UInt32(b.u16() & 0x7FFF), client: client)
        case 7:
            if !vms.isEmpty {
                let i = Int(b.u8()) % vms.count
                _ = h.vmDestroy(VMHandle(rawValue: vms[i]), client: client)
                vms.remove(at: i)
            }
        default:
            _ = h.memWrite(address: pageIn(hostRAM), bytes: [b.u8(), b.u8(), b.u8(), b.u8(), b.u8(), b.u8(), b.u8(), b.u8()], client: client)
        }
        let violations = InvariantChecker(h).check(iovas: [pageIn(hostRAM)])
        precondition(violations.isEmpty, "invariant broken after step \(steps): \(violations)")
        precondition(audit.events.count == h.statistics.denials, "denials and audit events disagree")
    }
    return 0
}
