// libFuzzer target: damaged state images (docs/state-image.md). A reference image of a busy hypervisor is built
// once; each input is a list of edits to its body (a cut, then byte XORs at offsets), decoded without the envelope
// or (one input in eight) resealed with a valid checksum, so the damage reaches the fields. Decoding and restoring
// must never trap, and an image that restores must give a state the invariant checker passes whole (sampled DMAs
// included). A violation is a crash (a finding).
//
// Each image is restored in place (`Hypervisor.restore(image:)`) into one hypervisor built once, put back to its
// built state after each input: building a hypervisor per input (its SMMU models, TLBs, RAM mappings) and tearing
// it down was most of an input. With FUZZ_VERIFY_RESET=1, every input is also restored the daemon's way, into a
// new hypervisor over new RAM, and the two must agree: the same error, or the same state image and snapshot, before
// and after the requests.
import FuzzSupport
@_spi(Fuzzing) import PKVM
import SMMUModel

let hostRAM = PhysicalRange(base: 0x8000_0000, size: 256 << 10)
let hypervisorRAM = PhysicalRange(base: 0x7F00_0000, size: 256 << 10)
let topology: Topology = {
    var t = Topology.generic4K(base: 0x2B40_0000)
    t.memoryController = MemoryControllerConfiguration(sidBase: 0x02C0_0000, broadcastBase: 0x02C1_0000, clients: [
        .init(name: "a", id: 1, smmu: "mmu500", sid: 0x02, override: 0x318),
        .init(name: "b", id: 2, smmu: "mmu500", sid: 0x05, override: 0x338),
    ])
    return t
}()
let policy = HypervisorPolicy(topology: topology, hostRAM: [hostRAM], hypervisorRAM: hypervisorRAM,
                              hypervisorStreams: [0: [StreamID(0x7F)]])

/// The reference: finalized, a host bypass route and a stage-2-less stream, a VM with donated, written pages and a
/// stream, DMAs in the TLB and a recorded fault, an MC override, a MEM_MAP.
let reference: [UInt8] = {
    let memory = try! MemoryMap(regions: [(hostRAM.base, hostRAM.size), (hypervisorRAM.base, hypervisorRAM.size)])
    let h = try! Hypervisor(policy: policy, memory: memory, audit: CountingAuditSink())
    let client = ClientIdentity(name: "fuzz")
    h.finalize()
    let w = topology.windows[0]
    func write(_ name: RegisterName, _ index: Int, _ value: UInt64) {
        _ = h.hostWrite(address: w.base + w.configuration.offset(of: name, index: index), value: value, width: .word, client: client)
    }
    write(.SMR, 0, 0x8000_0010)
    write(.S2CR, 0, 0x0001_0000)   // bypass
    let vm = h.vmCreate(client: client).value!
    _ = h.vmDonate(vm, range: PhysicalRange(base: hostRAM.base + 0x1_0000, size: 0x3000), client: client)
    _ = h.vmAssignStream(vm, window: 0, stream: 0x20, client: client)
    memory.writeBytes([1, 2, 3, 4], at: hostRAM.base + 0x1_0008)
    memory.writeBytes([9], at: hostRAM.base + 0x100)
    _ = h.dma(window: 0, stream: 0x20, iova: hostRAM.base + 0x1_0000, access: .write)
    _ = h.dma(window: 0, stream: 0x20, iova: 0x1000, access: .read)
    _ = h.dma(window: 0, stream: 0x10, iova: hostRAM.base, access: .read)
    let mc = h.memoryController!
    _ = h.hostWrite(address: mc.address(of: .override(0))!, value: 0x05, width: .word, client: client)
    let buffer = UnsafeMutableRawPointer.allocate(byteCount: 0x2000, alignment: 4096)
    _ = h.mapHostMemory(PhysicalRange(base: hostRAM.base + 0x2_0000, size: 0x2000),
                        file: SharedFileRange(device: 1, inode: 2, offset: 0, size: 0x2000), pointer: buffer,
                        release: { buffer.deallocate() },
                        client: client)
    return Array(h.stateImage().encoded().dropFirst(StateImageEnvelope.headerSize))
}()

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzStateImage(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    var b = Bytes(UnsafeBufferPointer(start: data, count: size))
    // The body is edited in one buffer kept across inputs: a copy of the reference per input was an allocation as
    // large as the image, page faults included.
    body.removeAll(keepingCapacity: true)
    body.append(contentsOf: reference)
    let cut = Int(b.u32())
    if cut & 0x8000_0000 != 0 { body.removeLast(body.count - (cut & 0x7FFF_FFFF) % (body.count + 1)) }
    while !b.atEnd {
        let at = Int(b.u32()) % max(body.count, 1)
        let x = b.u8()
        if !body.isEmpty { body[at] ^= x }
    }
    // Bits 30..28 of the first word all set (one input in eight): seal and open the envelope, so its checks stay
    // fuzzed; otherwise decode the body directly, which skips two CRC-32s of the whole body per input and reaches
    // the same fields.
    let image: HypervisorStateImage
    do throws(StateImageError) {
        if cut & 0x7000_0000 == 0x7000_0000 {
            image = try HypervisorStateImage(decoding: StateImageEnvelope.seal(
                magic: HypervisorStateImage.magic, version: HypervisorStateImage.formatVersion, body: body))
        } else {
            image = try HypervisorStateImage(decodingBody: body)
        }
    } catch {
        return 0
    }
    let h = machine.begin(finalized: false)
    defer {
        for r in h.sharedRanges { h.unmapHostMemory(base: r.base) }
        machine.end()
    }
    let outcome: StateImageError?
    do throws(StateImageError) {
        try h.restore(image: image, sharedMemory: attachZeroed)
        outcome = nil
    } catch {
        outcome = error
    }
    let fresh = machine.verify ? FreshRestore(image) : nil
    if let fresh { fresh.compare(outcome, h, "restored") }
    guard outcome == nil else { return 0 }
    exercise(h)
    if let fresh, let f = fresh.hypervisor {
        exercise(f)
        fresh.compare(nil, h, "after requests")
    }
    return 0
}

nonisolated(unsafe) let machine = ReusedHypervisor(policy: policy)
nonisolated(unsafe) var body: [UInt8] = []

/// What a restored state must pass: the invariant checker whole, then a few requests, then the checker again.
func exercise(_ h: Hypervisor) {
    let violations = InvariantChecker(h).check(iovas: [hostRAM.base + 0x1_0000, hostRAM.base + 0x2_0000])
    if !violations.isEmpty { fatalError("a damaged image restored to a broken state: \(violations)") }
    _ = h.dma(window: 0, stream: 0x20, iova: hostRAM.base + 0x1_0000, access: .write)
    _ = h.vmDestroy(VMHandle(rawValue: 1), client: ClientIdentity(name: "fuzz"))
    let after = InvariantChecker(h).check(iovas: [hostRAM.base + 0x1_0000])
    if !after.isEmpty { fatalError("a restored state broke after requests: \(after)") }
}

/// Client memory for each MEM_MAP the image records: zeroed, at most 1 MiB.
func attachZeroed(_ m: HypervisorStateImage.SharedMappingImage) throws(StateImageError) -> SharedMemoryAttachment {
    guard m.range.size <= 1 << 20 else { throw .sharedMemoryUnavailable(base: m.range.base, reason: "too large") }
    let p = UnsafeMutableRawPointer.allocate(byteCount: Int(m.range.size), alignment: 4096)
    p.initializeMemory(as: UInt8.self, repeating: 0, count: Int(m.range.size))
    return SharedMemoryAttachment(pointer: p, release: { p.deallocate() })
}

/// FUZZ_VERIFY_RESET=1: the same image restored as the daemon restores one, into a new hypervisor over new RAM.
final class FreshRestore {
    let hypervisor: Hypervisor?
    let error: StateImageError?

    init(_ image: HypervisorStateImage) {
        let memory = try! MemoryMap(regions: [(hostRAM.base, hostRAM.size), (hypervisorRAM.base, hypervisorRAM.size)])
        do throws(StateImageError) {
            hypervisor = try Hypervisor.restore(policy: policy, memory: memory, audit: CountingAuditSink(), image: image,
                                                sharedMemory: attachZeroed)
            error = nil
        } catch {
            hypervisor = nil
            self.error = error
        }
    }

    /// Traps unless the in-place restore (`error`, `h`) came out as this one did.
    func compare(_ error: StateImageError?, _ h: Hypervisor, _ when: String) {
        guard error == self.error else {
            fatalError("\(when): in place \(error.map { "\($0)" } ?? "restored"), new \(self.error.map { "\($0)" } ?? "restored")")
        }
        guard let f = hypervisor else { return }
        if h.stateImage().encoded() != f.stateImage().encoded() || h.snapshot() != f.snapshot() {
            fatalError("\(when): the state restored in place differs from the one restored into a new hypervisor")
        }
    }
}
