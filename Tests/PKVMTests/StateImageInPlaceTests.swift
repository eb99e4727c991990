import Testing
@testable import PKVM
import SMMUModel
import TestSupport

/// `Hypervisor.restore(image:)`, a restore into a hypervisor that already ran (the fuzzer's way): the result is the
/// restore into a new hypervisor's, whatever the old state was, and a refused image leaves no client memory behind.
@Suite struct StateImageInPlaceTests {
    /// Client memory for a restore: copies of the busy machine's buffers, and a count of releases.
    final class Attachments {
        let shared: [UInt64: UnsafeMutableRawBufferPointer]
        var released = 0
        init(_ shared: [UInt64: UnsafeMutableRawBufferPointer]) { self.shared = shared }

        func attach(_ m: HypervisorStateImage.SharedMappingImage) throws(StateImageError) -> SharedMemoryAttachment {
            guard let original = shared[m.range.base] else {
                throw .sharedMemoryUnavailable(base: m.range.base, reason: "the test has no such file")
            }
            let copy = UnsafeMutableRawBufferPointer.allocate(byteCount: original.count, alignment: 4096)
            copy.copyMemory(from: UnsafeRawBufferPointer(original))
            return SharedMemoryAttachment(pointer: copy.baseAddress!, release: { [self] in
                released += 1
                copy.deallocate()
            })
        }
    }

    /// A busy machine taken elsewhere by random requests, with a VM more and a MEM_MAP of its own whose release is
    /// counted: everything a restore in place must replace.
    static func usedMachine(seed: UInt64) throws -> (Machine, released: () -> Int) {
        let (t, _) = try Machine.busy()
        var requests = RandomRequests(rng: SplitMix64(seed: seed))
        for _ in 0..<300 { _ = requests.next(t.hv, client: t.client) }
        _ = t.hv.vmCreate(client: t.client)
        var released = 0
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: 0x1000, alignment: 4096)
        #expect(t.hv.mapHostMemory(PhysicalRange(base: hostData + 0x60_0000, size: 0x1000),
                                   file: SharedFileRange(device: 1, inode: 99, offset: 0, size: 0x1000), pointer: buffer,
                                   release: {
                                       released += 1
                                       buffer.deallocate()
                                   }, client: t.client).value != nil)
        return (t, { released })
    }

    @Test(arguments: [UInt64(21), 22])
    func restoringInPlaceEqualsRestoringIntoANewHypervisor(seed: UInt64) throws {
        let (m, shared) = try Machine.busy()
        let image = try HypervisorStateImage(decoding: m.hv.stateImage().encoded())
        let (t, released) = try Self.usedMachine(seed: seed)
        let attachments = Attachments(shared)
        try t.hv.restore(image: image, sharedMemory: attachments.attach)
        #expect(released() == 1, "the old state's client memory was let go")
        let (fresh, _) = try m.restored(from: image, shared: shared)
        #expect(differences(t.hv.stateImage(), fresh.stateImage()) == [])
        #expect(differences(t.hv.stateImage(), StateImageTests.expectedAfterRestore(image)) == [])
        #expect(t.hv.snapshot() == m.hv.snapshot() && t.hv.statistics == m.hv.statistics)
        #expect(t.hv.tlbStatistics == m.hv.tlbStatistics)
        for w in 0..<5 { #expect(t.hv.interruptLines(window: w) == m.hv.interruptLines(window: w)) }
        #expect(t.hv.sharedRanges == m.hv.sharedRanges && t.memory.replacedRanges.count == 1)
        // The checker's probes count in the TLB's counters: both get them.
        for hv in [t.hv, m.hv] { #expect(InvariantChecker(hv).check(iovas: [vmData, 0x1000_0000]).isEmpty) }
        // And it behaves as the original from then on.
        var a = RandomRequests(rng: SplitMix64(seed: seed + 100))
        var b = a
        for step in 0..<800 {
            let x = a.next(m.hv, client: m.client)
            let y = b.next(t.hv, client: t.client)
            #expect(x == y, "seed \(seed) step \(step)")
            if x != y { break }
        }
        var original = m.hv.stateImage()
        original.translationEpoch = 0
        var copy = t.hv.stateImage()
        copy.translationEpoch = 0
        #expect(differences(copy, original) == [])
        for r in t.hv.sharedRanges { t.hv.unmapHostMemory(base: r.base) }
        #expect(attachments.released == 1)
    }

    /// Refused after part of it was installed (a register file of the wrong size in the second window; client memory
    /// nobody attaches, found after everything else): no client memory stays attached, and the next restore is exact.
    @Test func aRefusedRestoreInPlaceLeavesNoClientMemoryAndTheNextIsExact() throws {
        let (m, shared) = try Machine.busy()
        let image = m.hv.stateImage()
        var shortRegisters = image
        shortRegisters.instances[1].physical.registers.removeLast()
        let (t, released) = try Self.usedMachine(seed: 5)
        #expect(throws: StateImageError.self) { try t.hv.restore(image: shortRegisters) }
        #expect(released() == 1 && t.hv.sharedRanges == [] && t.memory.replacedRanges.isEmpty)
        let attachments = Attachments(shared)
        #expect(throws: StateImageError.sharedMemoryUnavailable(base: hostData + 0x40_0000,
                                                                reason: "no client memory was provided")) {
            try t.hv.restore(image: image)
        }
        #expect(t.hv.sharedRanges == [] && t.memory.replacedRanges.isEmpty)
        try t.hv.restore(image: image, sharedMemory: attachments.attach)
        #expect(differences(t.hv.stateImage(), StateImageTests.expectedAfterRestore(image)) == [])
        #expect(t.hv.snapshot() == m.hv.snapshot())
        // Once more over itself: the attached copy is let go, a new one attached.
        try t.hv.restore(image: image, sharedMemory: attachments.attach)
        #expect(attachments.released == 1 && t.memory.replacedRanges.count == 1)
        #expect(t.hv.memRead(address: hostData + 0x40_0010, length: 4, client: m.client).value == [0xEE, 0xFF, 0xC0, 0])
    }

    /// An image under another configuration is refused in place as it is into a new hypervisor.
    @Test func anotherConfigurationIsRefusedInPlace() throws {
        let (m, _) = try Machine.busy()
        var image = m.hv.stateImage(includeMemory: false)
        image.configuration.lines[0].value += " changed"
        let (t, _) = try Self.usedMachine(seed: 6)
        #expect(throws: StateImageError.self) { try t.hv.restore(image: image) }
        #expect(t.memory.replacedRanges.isEmpty)
    }
}
