// libFuzzer target: arbitrary register writes and reads, DMAs, memory writes and hypercalls through
// the trap handler of a finalized hypervisor; the invariant checker runs after each donation or stream
// assignment that succeeded and at the end, every DMA's answer must land in its stream owner's memory, and every denial
// must have produced exactly one audit event. A violation is a crash (a finding).
import FuzzSupport
import PKVM
import SMMUModel

let hostRAM = PhysicalRange(base: 0x8000_0000, size: 256 << 10)
/// The generic MMU-500 behind a small memory controller (the Tegra layout: an override and a security register per
/// client in the `sid` window, the bypass configuration in `broadcast`), so the trap rules of both are reached.
let topology: Topology = {
    var t = Topology.generic4K(base: 0x2B40_0000)
    t.memoryController = MemoryControllerConfiguration(sidBase: 0x02C0_0000, broadcastBase: 0x02C1_0000, clients: [
        .init(name: "a", id: 1, smmu: "mmu500", sid: 0x02, override: 0x318),
        .init(name: "b", id: 2, smmu: "mmu500", sid: 0x02, override: 0x338),
        .init(name: "c", id: 3, smmu: "mmu500", sid: 0x05, override: 0x6D0),
        .init(name: "d", id: 4, smmu: "mmu500", sid: 0x00, override: 0x0A8),
    ])
    return t
}()
let mcClients = topology.memoryController!.clients
/// Built once; each input gets it back as new, finalized (see FuzzSupport).
nonisolated(unsafe) let machine = ReusedHypervisor(policy: HypervisorPolicy(
    topology: topology, hostRAM: [hostRAM], hypervisorRAM: PhysicalRange(base: 0x7F00_0000, size: 256 << 10),
    hostDMARanges: [PhysicalRange(base: 0x0802_0000, size: 0x1000)]))

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzTrap(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    var b = Bytes(UnsafeBufferPointer(start: data, count: size))
    let h = machine.begin(finalized: true)
    let audit = machine.audit
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

    func check(_ when: @autoclosure () -> String, sampleDMA: Bool = false) {
        let violations = InvariantChecker(h).check(iovas: [pageIn(hostRAM)], sampleDMA: sampleDMA)
        if !violations.isEmpty { fatalError("invariant broken \(when()): \(violations)") }
        if audit.count != h.statistics.denials { fatalError("denials and audit events disagree \(when())") }
    }

    // The checker runs after each VM_DONATE and VM_ASSIGN_STREAM that succeeded (they move pages and streams), on
    // routing and hidden resources only, and whole (sampled DMAs too, most of an input's time) at the end:
    // what a register or memory write breaks is seen there, or in the same input cut short after it,
    // which libFuzzer's mutations produce. Its bytes are read after every step all the same, so the
    // input format does not depend on it.
    var steps = 0
    while !b.atEnd && steps < 24 {
        steps += 1
        var changed = true
        let width: AccessWidth = b.u8() & 1 == 0 ? .word : .doubleword
        switch b.u8() % 10 {
        case 0, 1:
            _ = h.hostWrite(address: address(), value: b.u8() & 1 == 0 ? UInt64(b.u32()) : b.u64(), width: width, client: client)
            changed = false
        case 2:
            _ = h.hostRead(address: address(), width: width, client: client)
            changed = false
        case 3:
            let iova = b.u8() & 1 == 0 ? pageIn(hostRAM) + UInt64(b.u16() & 0xFF8) : b.u64()
            let stream = UInt32(b.u16())
            let access = DMAAccess(rawValue: UInt32(b.u8() & 7))
            if case .ok(let pa) = h.dma(window: 0, stream: stream, iova: iova, access: access) {
                // The answer itself: G3 (host streams: host pages or a host DMA range) and G4 (a VM's: its pages).
                let owner = h.ownership.owner(ofStream: StreamID(UInt16(truncatingIfNeeded: stream) & window.configuration.streamIDMask), smmu: 0)
                let reached = h.ownership.owner(ofAddress: pa)
                if reached != owner && !(owner == .host && h.policy.hostDMARanges.contains { $0.contains(pa) }) {
                    fatalError("DMA by stream 0x\(String(stream, radix: 16)) (\(owner)) reached 0x\(String(pa, radix: 16)) (\(reached.map { "\($0)" } ?? "no RAM"))")
                }
            }
            changed = false   // TLB and fault registers: the next check translates through them
        case 4:
            if let vm = h.vmCreate(client: client).value { vms.append(vm.rawValue) }
            changed = false
        case 5:
            let vm = vms.isEmpty ? UInt32(b.u8()) : vms[Int(b.u8()) % vms.count]
            changed = h.vmDonate(VMHandle(rawValue: vm), range: PhysicalRange(base: pageIn(hostRAM), size: UInt64(b.u8() % 4 + 1) * 4096), client: client).value != nil
        case 6:
            let vm = vms.isEmpty ? UInt32(b.u8()) : vms[Int(b.u8()) % vms.count]
            changed = h.vmAssignStream(VMHandle(rawValue: vm), window: 0, stream: UInt32(b.u16() & 0x7FFF), client: client).value != nil
        case 7:
            if !vms.isEmpty {
                let i = Int(b.u8()) % vms.count
                _ = h.vmDestroy(VMHandle(rawValue: vms[i]), client: client)
                vms.remove(at: i)
            }
            changed = false
        case 8:
            // The MC: an override or security write (stream IDs near the clients' and the passthrough ID), a read, a
            // bypass write, or a DMA by client whose answer must land in the memory of its stream's owner.
            let c = mcClients[Int(b.u8()) % mcClients.count]
            let pick = b.u8()
            let value = UInt64(pick & 0x80 != 0 ? b.u32() : UInt32(b.u8() & 0x7F) | UInt32(b.u8() & 1) << 8 | UInt32(b.u8() & 1) << 16)
            let base = topology.memoryController!.sidBase
            switch pick % 5 {
            case 0: _ = h.hostWrite(address: base + UInt64(c.overrideOffset), value: value, width: width, client: client)
            case 1: _ = h.hostWrite(address: base + UInt64(c.securityOffset), value: value, width: width, client: client)
            case 2: _ = h.hostRead(address: base + UInt64(b.u16()), width: width, client: client)
            case 3: _ = h.hostWrite(address: topology.memoryController!.broadcastBase + 0x1820, value: value, width: width, client: client)
            default:
                if case .success(let r) = h.memoryControllerDMA(client: UInt32(c.id), iova: pageIn(hostRAM), access: .write),
                   case .ok(let pa) = r.result, case .smmu(_, let s) = r.route {
                    let owner = h.ownership.owner(ofStream: s, smmu: 0)
                    if h.ownership.owner(ofAddress: pa) != owner {
                        fatalError("MC DMA by client \(c.name) (stream \(s), \(owner)) reached 0x\(String(pa, radix: 16))")
                    }
                }
            }
            if !h.memoryControllerViolations().isEmpty { fatalError("MC invariant broken: \(h.memoryControllerViolations())") }
            changed = false
        default:
            _ = h.memWrite(address: pageIn(hostRAM), bytes: [b.u8(), b.u8(), b.u8(), b.u8(), b.u8(), b.u8(), b.u8(), b.u8()], client: client)
            changed = false
        }
        if changed { check("after step \(steps)") } else { _ = pageIn(hostRAM) }
    }
    check("at the end (\(steps) steps)", sampleDMA: true)
    machine.end()
    return 0
}
