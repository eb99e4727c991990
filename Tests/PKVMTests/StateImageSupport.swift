import Testing
@testable import PKVM
import SMMUModel
import TestSupport

/// A busy machine for state-image tests, and a restored copy of it.
extension Machine {
    /// What the Linux driver and the host leave: both niso1 instances and iso reset, a stage-1 domain routing stream
    /// 0x0E with live TLB entries and a pending context fault, a global fault, two protected VMs with donated and
    /// written pages (one with a stream on each of two SMMUs), an MC override the host wrote, a MEM_MAP with data in
    /// it, and a few denials.
    static func busy() throws -> (machine: Machine, shared: [UInt64: UnsafeMutableRawBufferPointer]) {
        let m = Machine(hypervisorStreams: [2: [StreamID(0x7F0)]])
        let d = m.driver(0, 1)
        d.reset()
        m.driver(2).reset()
        let tables = m.tables()
        try tables.map4K(0x1000_0000, to: hostData)
        try tables.map4K(0x1000_1000, to: hostData + 0x5000)
        d.attachStage1(bank: 3, ttbr0: tables.root)
        d.route(smr: 0, stream: 0x0E, mask: 0x7F80, toBank: 3)
        let vm1 = m.protectedVM(stream: 0x15, window: 0, base: vmData, pages: 4)
        #expect(m.hv.vmAssignStream(vm1, window: 3, stream: 0x21, client: m.client).value != nil)
        m.vmWrites(Array("vm1's secret".utf8), at: vmData + 0x1008)
        _ = m.protectedVM(stream: 0x30, window: 2, base: vmData + 0x10_0000, pages: 2)
        #expect(m.hv.dma(window: 0, stream: 0x15, iova: vmData + 8, access: .write).physicalAddress == vmData + 8)
        #expect(m.hv.dma(window: 2, stream: 0x30, iova: 0x1000, access: .write).fault != nil, "a VM fault, hidden from the host")
        _ = m.hv.vmCreate(client: m.client)   // an empty VM too
        for w in [0, 1] {
            #expect(m.hv.dma(window: w, stream: 0x0E, iova: 0x1000_0010, access: .write).physicalAddress == hostData + 0x10)
            #expect(m.hv.dma(window: w, stream: 0x0E, iova: 0x1000_1010, access: .read).physicalAddress == hostData + 0x5010)
        }
        #expect(m.hv.dma(window: 0, stream: 0x0E, iova: 0x2000_0000, access: .read).fault == .translation)
        #expect(m.hv.dma(window: 2, stream: 0x55, iova: 0x1000, access: .read).fault == .unidentifiedStream)
        let mc = m.hv.memoryController!
        let host = mc.configuration.clients.indices.first { m.hv.owner(ofMemoryClient: $0, in: mc) == .host }!
        let sibling = mc.configuration.clients.first { $0.smmu == mc.configuration.clients[host].smmu
            && $0.sid != mc.configuration.clients[host].sid }!
        #expect(m.hv.hostWrite(address: mc.address(of: .override(host))!, value: UInt64(sibling.sid), width: .word,
                               client: m.client).value != nil)
        let (mapped, buffer) = m.mapShared(at: hostData + 0x40_0000, size: 0x2000, inode: 7)
        #expect(mapped.value != nil)
        buffer.storeBytes(of: 0xC0FFEE, toByteOffset: 16, as: UInt32.self)
        _ = expectDenied(m.hv.memRead(address: vmData, length: 8, client: m.client), .hostMemoryAccess)
        _ = expectDenied(m.driver(0).write(.SMR, 119 + 1, 0x8000_0015), .hiddenStreamMatchGroup)
        #expect(m.hv.memWrite(address: hostData + 0x100, bytes: [1, 2, 3], client: m.client).value != nil)
        return (m, [hostData + 0x40_0000: buffer])
    }

    /// A hypervisor restored from `image` over a fresh memory map of the same regions; MEM_MAPped memory comes from
    /// copies of `shared` (another mapping of the same file bytes, as a restarted daemon would make).
    func restored(from image: HypervisorStateImage, shared: [UInt64: UnsafeMutableRawBufferPointer] = [:],
                  epochFloor: UInt64 = 0) throws(StateImageError) -> (hv: Hypervisor, audit: CollectingAuditSink) {
        let memory = try! MemoryMap(regions: self.memory.ramRegions)
        let audit = CollectingAuditSink()
        let hv = try Hypervisor.restore(policy: hv.policy, memory: memory, audit: audit, image: image,
                                        epochFloor: epochFloor) { m throws(StateImageError) in
            guard let original = shared[m.range.base] else {
                throw .sharedMemoryUnavailable(base: m.range.base, reason: "the test has no such file")
            }
            let copy = UnsafeMutableRawBufferPointer.allocate(byteCount: original.count, alignment: 4096)
            copy.copyMemory(from: UnsafeRawBufferPointer(original))
            return SharedMemoryAttachment(pointer: copy.baseAddress!, release: { copy.deallocate() })
        }
        return (hv, audit)
    }
}

/// One random request, as a host, a device or the MC would send it, and its answer in words (values included).
struct RandomRequests {
    var rng: SplitMix64
    static let registers: [RegisterName] = [.SMR, .S2CR, .CBAR, .CBA2R, .sCR0, .SCTLR, .TCR, .TTBR0, .TLBIVMID,
                                            .TLBIALLNSNH, .TLBIVAL, .FSR, .FAR, .sGFSR, .sGFAR, .FSRRESTORE, .RESUME,
                                            .sTLBGSYNC, .IDR0, .IDR1]

    mutating func next(_ hv: Hypervisor, client: ClientIdentity) -> String {
        let streams: [UInt32] = [0x0E, 0x8E, 0x15, 0x21, 0x30, 0x7F0, 0x55, 0]
        let addresses: [UInt64] = [0x1000_0000, 0x1000_1008, 0x2000_0000, vmData, vmData + 0x1008, hostData,
                                   hostData + 0x40_0010, hypervisorRAM.base, 0x1000]
        let access: DMAAccess = Bool.random(using: &rng) ? .read : .write
        switch Int.random(in: 0..<12, using: &rng) {
        case 0, 1, 2:
            let name = Self.registers.randomElement(using: &rng)!
            let d = RegisterMap.descriptor(name)
            let index = d.indexing == .none ? 0 : Int.random(in: 0..<128, using: &rng)
            let w = Int.random(in: 0..<5, using: &rng)
            let address = hv.policy.topology.windows[w].base
                + hv.policy.topology.windows[w].configuration.offset(of: name, index: index)
            if Bool.random(using: &rng) {
                return "read \(hv.hostRead(address: address, width: d.width, client: client))"
            }
            var value = rng.next() & d.width.mask
            if name == .SMR { value = 1 << 31 | UInt64(streams.randomElement(using: &rng)!) }
            if name == .S2CR { value = UInt64.random(in: 0...2, using: &rng) << 16 | UInt64.random(in: 0...8, using: &rng) }
            return "write \(hv.hostWrite(address: address, value: value, width: d.width, client: client))"
        case 3, 4, 5:
            return "dma \(hv.dma(window: Int.random(in: 0..<5, using: &rng), stream: streams.randomElement(using: &rng)!, iova: addresses.randomElement(using: &rng)! + UInt64.random(in: 0..<64, using: &rng) * 8, access: access))"
        case 6:
            let a = addresses.randomElement(using: &rng)!
            if Bool.random(using: &rng) { return "memRead \(hv.memRead(address: a, length: 16, client: client))" }
            return "memWrite \(hv.memWrite(address: a, bytes: [UInt8(truncatingIfNeeded: rng.next())], client: client))"
        case 7:
            guard Int.random(in: 0..<8, using: &rng) == 0 else { return "read \(hv.hostRead(address: 0x0800_0000, width: .word, client: client))" }
            return "create \(hv.vmCreate(client: client))"
        case 8:
            let vm = VMHandle(rawValue: UInt32.random(in: 1...5, using: &rng))
            let base = vmData + UInt64.random(in: 0..<0x300, using: &rng) * 4096
            return "donate \(hv.vmDonate(vm, range: PhysicalRange(base: base, size: 4096 * UInt64.random(in: 1...3, using: &rng)), client: client))"
        case 9:
            let vm = VMHandle(rawValue: UInt32.random(in: 1...5, using: &rng))
            return "assign \(hv.vmAssignStream(vm, window: Int.random(in: 0..<5, using: &rng), stream: streams.randomElement(using: &rng)! ^ 1, client: client))"
        case 10:
            if Int.random(in: 0..<4, using: &rng) == 0 {
                return "destroy \(hv.vmDestroy(VMHandle(rawValue: UInt32.random(in: 1...5, using: &rng)), client: client))"
            }
            let mc = hv.memoryController!
            return "mcDMA \(hv.memoryControllerDMA(client: UInt32(mc.configuration.clients.randomElement(using: &rng)!.id), iova: addresses.randomElement(using: &rng)!, access: access))"
        default:
            let mc = hv.memoryController!
            let n = Int.random(in: 0..<mc.configuration.clients.count, using: &rng)
            let register: MemoryControllerRegister = Bool.random(using: &rng) ? .override(n) : .security(n)
            return "mc \(hv.hostWrite(address: mc.address(of: register)!, value: rng.next() & 0x1_01FF, width: .word, client: client))"
        }
    }
}

/// Where two images differ, in words (readable failures instead of two whole images).
func differences(_ a: HypervisorStateImage, _ b: HypervisorStateImage) -> [String] {
    var out: [String] = []
    func check<T: Equatable>(_ name: String, _ x: T, _ y: T) { if x != y { out.append(name) } }
    check("configuration", a.configuration, b.configuration)
    check("lifecycle", a.lifecycle, b.lifecycle)
    check("translationEpoch \(a.translationEpoch) \(b.translationEpoch)", a.translationEpoch, b.translationEpoch)
    check("nextVM", a.nextVM, b.nextVM)
    check("statistics \(a.statistics) \(b.statistics)", a.statistics, b.statistics)
    for (i, (x, y)) in zip(a.instances, b.instances).enumerated() {
        for (which, p, q) in [("physical", x.physical, y.physical), ("virtual", x.virtual, y.virtual)] {
            for (k, (r, s)) in zip(p.registers, q.registers).enumerated() where r != s {
                out.append("instance \(i) \(which) register slot \(k): 0x\(String(r, radix: 16)) 0x\(String(s, radix: 16))")
            }
            check("instance \(i) \(which) TLB entries (\(p.tlbEntries.count), \(q.tlbEntries.count))", p.tlbEntries, q.tlbEntries)
            check("instance \(i) \(which) TLB counters", [p.tlbHits, p.tlbMisses, p.directVAInvalidations, p.scannedVAInvalidations],
                  [q.tlbHits, q.tlbMisses, q.directVAInvalidations, q.scannedVAInvalidations])
        }
        check("instance \(i) reserved SMRs", x.reservedSMRUse, y.reservedSMRUse)
        check("instance \(i) reserved banks", x.reservedContextBankUse, y.reservedContextBankUse)
    }
    check("memoryController", a.memoryController, b.memoryController)
    check("streamOwners", a.streamOwners, b.streamOwners)
    check("pageCodes", a.pageCodes, b.pageCodes)
    check("freeHypervisorPages", a.freeHypervisorPages, b.freeHypervisorPages)
    check("vms", a.vms, b.vms)
    check("sharedMappings", a.sharedMappings, b.sharedMappings)
    check("memory (\(a.memory?.count ?? -1) pages, \(b.memory?.count ?? -1))", a.memory, b.memory)
    return Array(out.prefix(20))
}
