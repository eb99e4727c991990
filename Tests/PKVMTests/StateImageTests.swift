import Testing
@testable import PKVM
import SMMUModel
import TestSupport

/// The hypervisor's state image (docs/state-image.md): a restore is exact, behaves the same from then on, and no
/// byte sequence can make a restore trap or install a state that breaks an invariant.
@Suite struct StateImageTests {
    /// The image after a restore: the same, but for the translation epoch, which resumes strictly after the saved one.
    static func expectedAfterRestore(_ image: HypervisorStateImage, floor: UInt64 = 0) -> HypervisorStateImage {
        var e = image
        e.translationEpoch = max(image.translationEpoch, floor) + 1
        return e
    }

    @Test func roundTripOfABusyMachineIsExact() throws {
        let (m, shared) = try Machine.busy()
        let image = m.hv.stateImage()
        #expect(image.vms.count == 3 && image.sharedMappings.count == 1 && image.memory!.count > 4)
        #expect(image.instances[0].physical.tlbEntries.count >= 3, "live TLB entries are in the image")
        #expect(image.instances[0].physical.registers.count == m.physical(0).registerSlotCount)
        let bytes = image.encoded()
        let decoded = try HypervisorStateImage(decoding: bytes)
        #expect(decoded == image)
        let (restored, _) = try m.restored(from: decoded, shared: shared)
        #expect(differences(restored.stateImage(), Self.expectedAfterRestore(image)) == [])
        #expect(restored.snapshot() == m.hv.snapshot(), "DUMP's state is the same")
        #expect(restored.statistics == m.hv.statistics && restored.tlbStatistics == m.hv.tlbStatistics)
        for w in 0..<5 { #expect(restored.interruptLines(window: w) == m.hv.interruptLines(window: w)) }
        #expect(restored.interruptLines(window: 0).contains(true), "the pending context fault still raises its line")
        #expect(InvariantChecker(restored).check(iovas: [vmData, 0x1000_0000]).isEmpty)
        #expect(restored.memory.readBytes(at: vmData + 0x1008, count: 12) == Array("vm1's secret".utf8))
        #expect(restored.memRead(address: hostData + 0x40_0010, length: 4, client: m.client).value == [0xEE, 0xFF, 0xC0, 0])
        #expect(restored.sharedRanges == m.hv.sharedRanges)
    }

    /// The same random requests, to the original and to the restored copy, get the same answers, and leave both in
    /// the same state (so nothing the image left out changed behaviour: the TLB, the stream cache, the allocator).
    @Test(arguments: [UInt64(11), 12, 13])
    func restoredHypervisorBehavesTheSame(seed: UInt64) throws {
        let (m, shared) = try Machine.busy()
        let (restored, audit) = try m.restored(from: HypervisorStateImage(decoding: m.hv.stateImage().encoded()), shared: shared)
        let before = m.audit.events.count
        var a = RandomRequests(rng: SplitMix64(seed: seed))
        var b = a
        var answers = Set<String>()
        for step in 0..<1500 {
            let x = a.next(m.hv, client: m.client)
            let y = b.next(restored, client: m.client)
            #expect(x == y, "seed \(seed) step \(step)")
            if x != y { break }
            answers.insert(String(x.prefix { $0 != "(" }))
        }
        #expect(answers.count > 12, "the mix reaches many kinds of answer: \(answers.sorted())")
        #expect(Array(m.audit.events[before...]) == audit.events)
        var original = m.hv.stateImage()
        original.translationEpoch = 0
        var copy = restored.stateImage()
        copy.translationEpoch = 0
        #expect(differences(copy, original) == [])
        #expect(restored.snapshot() == m.hv.snapshot(), "DUMP's state is the same")
    }

    @Test func withoutMemoryTheCallerKeepsRAM() throws {
        let (m, shared) = try Machine.busy()
        let image = m.hv.stateImage(includeMemory: false)
        #expect(image.memory == nil)
        #expect(image.encoded().count < m.hv.stateImage().encoded().count)
        // The caller's RAM, kept apart from the image: a copy of the original's own pages (client memory aside).
        let ram = try MemoryMap(regions: m.memory.ramRegions)
        m.memory.forEachNonZeroPage { address, bytes in ram.writeBytes(Array(bytes), at: address) }
        let restored = try Hypervisor.restore(policy: m.hv.policy, memory: ram, audit: CollectingAuditSink(),
                                              image: image) { mapping throws(StateImageError) in
            let buffer = shared[mapping.range.base]!
            return SharedMemoryAttachment(pointer: buffer.baseAddress!, release: {})
        }
        #expect(restored.memory.readBytes(at: vmData + 0x1008, count: 12) == Array("vm1's secret".utf8))
        #expect(differences(restored.stateImage(includeMemory: false), Self.expectedAfterRestore(image)) == [])
    }

    /// Cached translations (protocol v1.1) never outlive a restore: the epoch resumes after the image's and after the
    /// highest value a client may have seen.
    @Test func theEpochResumesStrictlyAfterWhatAnyClientSaw() throws {
        let (m, shared) = try Machine.busy()
        let image = m.hv.stateImage()
        var published: [UInt64] = []
        let (a, _) = try m.restored(from: image, shared: shared)
        #expect(a.translationEpoch.value == image.translationEpoch + 1)
        let (b, _) = try m.restored(from: image, shared: shared, epochFloor: image.translationEpoch + 500)
        #expect(b.translationEpoch.value == image.translationEpoch + 501)
        b.translationEpoch.publish = { published.append($0) }
        b.translationEpoch.resume(after: 9)
        #expect(published == [10])
    }

    @Test func anotherVersionIsRefusedWithAClearError() throws {
        let (m, _) = try Machine.busy()
        var bytes = m.hv.stateImage(includeMemory: false).encoded()
        bytes[8] = 0   // the version field, little-endian at offset 8
        bytes[9] = 1
        #expect(throws: StateImageError.unsupportedVersion(found: 256, supported: HypervisorStateImage.formatVersion)) {
            try HypervisorStateImage(decoding: bytes)
        }
        let error = StateImageError.unsupportedVersion(found: 256, supported: 1)
        #expect(error.description == "state image format version 256 is not supported: this daemon reads version 1 only")
        #expect(throws: StateImageError.badMagic) { try HypervisorStateImage(decoding: Array("not an image at all, no".utf8)) }
    }

    @Test func anotherConfigurationIsRefused() throws {
        let (m, shared) = try Machine.busy()
        let image = m.hv.stateImage()
        var policy = m.hv.policy
        policy.reservedSMRs = 4
        let memory = try MemoryMap(regions: m.memory.ramRegions)
        #expect(throws: StateImageError.configurationMismatch(reason: "reservedSMRs was \"8\", is \"4\"")) {
            try Hypervisor.restore(policy: policy, memory: memory, audit: CollectingAuditSink(), image: image)
        }
        let bigger = try MemoryMap(regions: [(hostRAM.base, hostRAM.size), (hypervisorRAM.base, hypervisorRAM.size * 2)])
        #expect(throws: StateImageError.self) {
            try Hypervisor.restore(policy: m.hv.policy, memory: bigger, audit: CollectingAuditSink(), image: image)
        }
        // Client memory nobody attaches again: refused, and nothing stays attached.
        #expect(throws: StateImageError.sharedMemoryUnavailable(base: hostData + 0x40_0000, reason: "the test has no such file")) {
            try m.restored(from: image)
        }
        _ = shared
    }
}

/// No byte sequence makes decoding or restoring trap: a damaged image is refused with a reason, or restores to a
/// state the invariant checker passes (the checksum is recomputed here so that damage reaches the fields).
@Suite struct StateImageDamageTests {
    /// The image's body with a valid envelope around it: what damage past the checksum looks like.
    static func resealed(_ body: ArraySlice<UInt8>) -> [UInt8] {
        StateImageEnvelope.seal(magic: HypervisorStateImage.magic, version: HypervisorStateImage.formatVersion, body: Array(body))
    }

    @Test func everyTruncationIsRefused() throws {
        let (m, _) = try Machine.busy()
        let bytes = m.hv.stateImage(includeMemory: false).encoded()
        var decoded: [Int] = []
        for n in 0..<bytes.count where (try? HypervisorStateImage(decoding: bytes[..<n])) != nil { decoded.append(n) }
        #expect(decoded.isEmpty, "every proper prefix of \(bytes.count) bytes is refused")
        // Past the envelope: the body cut short, resealed (each costs a CRC of the whole body: a sample). Every cut in
        // the first and last 64 bytes, and 100 in between.
        let body = bytes[StateImageEnvelope.headerSize...]
        var rng = SplitMix64(seed: 5)
        var cuts = Array(0..<64) + Array((body.count - 64)..<body.count)
        cuts += (0..<100).map { _ in Int.random(in: 0..<body.count, using: &rng) }
        for cut in cuts {
            let damaged = Self.resealed(body.prefix(cut))
            do {
                _ = try HypervisorStateImage(decoding: damaged)
                Issue.record("a body cut at \(cut) of \(body.count) decoded")
            } catch .truncated, .corrupt {
            } catch {
                Issue.record("cut at \(cut): \(error)")
            }
        }
    }

    @Test(arguments: [UInt64(21), 22])
    func flippedBytesAreRefusedOrRestoreToASafeState(seed: UInt64) throws {
        let (m, shared) = try Machine.busy()
        let bytes = m.hv.stateImage().encoded()
        #expect(throws: StateImageError.corrupt(reason: "checksum mismatch")) {
            var flipped = bytes
            flipped[bytes.count / 2] ^= 0x10
            try HypervisorStateImage(decoding: flipped)
        }
        let body = bytes[StateImageEnvelope.headerSize...]
        var rng = SplitMix64(seed: seed)
        var outcomes: [String: Int] = [:]
        for _ in 0..<40 {
            var damaged = Array(body)
            for _ in 0..<Int.random(in: 1...3, using: &rng) {
                let at = Int.random(in: 0..<damaged.count, using: &rng)
                damaged[at] ^= UInt8.random(in: 1...255, using: &rng)
            }
            do {
                let image = try HypervisorStateImage(decoding: Self.resealed(damaged[...]))
                let (restored, _) = try m.restored(from: image, shared: shared)
                let violations = InvariantChecker(restored).check(iovas: [vmData, 0x1000_0000, hostData])
                #expect(violations.isEmpty, "a damaged image restored to a broken state: \(violations)")
                outcomes["restored", default: 0] += 1
            } catch {
                outcomes["\(error)".prefix { $0 != ":" }.description, default: 0] += 1
            }
        }
        #expect(outcomes.count >= 2, "damage is both caught and, where harmless, restored: \(outcomes)")
    }

    /// Damage aimed at the structure (ownership, VMs, allocator, reservations) rather than at register values:
    /// every field is re-encoded with one value changed, and the restore must refuse or stay safe.
    @Test func inconsistentStructuresAreRefused() throws {
        let (m, shared) = try Machine.busy()
        let image = m.hv.stateImage()
        func refused(_ change: (inout HypervisorStateImage) -> Void, _ what: String) {
            var damaged = image
            change(&damaged)
            do {
                _ = try m.restored(from: HypervisorStateImage(decoding: damaged.encoded()), shared: shared)
                Issue.record("restored despite \(what)")
            } catch .corrupt(let reason) {
                #expect(!reason.isEmpty)
            } catch {
                Issue.record("\(what): \(error)")
            }
        }
        refused({ $0.vms[0].tablePages.append(hostRAM.base) }, "a VM table page in host RAM")
        refused({ $0.vms[1].tablePages.append($0.vms[0].stage2Root) }, "a table page shared by two VMs")
        refused({ $0.freeHypervisorPages.removeLast() }, "a hypervisor page lost")
        refused({ $0.freeHypervisorPages.append(.init(first: $0.vms[0].stage2Root, count: 1, descending: false)) },
                "a VM's table page free")
        refused({ $0.pageCodes[0][0].code = 77 }, "pages of a VM that does not exist")
        refused({ $0.pageCodes[0][0].code |= 1 << 31; $0.pageCodes[0][0].code |= 1 }, "a shared VM page")
        refused({ $0.streamOwners[0].removeAll() }, "a VM's stream given back without the VM knowing")
        refused({ $0.streamOwners[2].removeAll { $0.owner == .hypervisor } }, "the hypervisor's stream taken")
        refused({ $0.instances[0].reservedSMRUse.removeAll() }, "a VM's stream routed by no reserved SMR")
        refused({ $0.instances[0].reservedContextBankUse[0].bank = 3 }, "a VM bank among the host's")
        refused({ $0.instances[0].physical.registers.removeLast() }, "a register file of another size")
        refused({ $0.instances[0].physical.tlbEntries[0].slot ^= 1 }, "a TLB entry in the wrong slot")
        refused({ $0.instances[0].physical.tlbEntries[0].bank = 127 }, "a TLB entry of a bank that does not exist")
        refused({ $0.sharedMappings[0].range.size += 4096 }, "a mapping over pages not marked shared")
        refused({ $0.sharedMappings.removeAll() }, "shared pages no mapping backs")
        refused({ $0.memory![0].address += 1 }, "a RAM page off its page")
        refused({ $0.memoryController!.overrides[0] = 0x1FF }, "an MC override wider than the register")
        refused({ $0.nextVM = 0 }, "VM handle 0")
        refused({ $0.statistics.hostReads = -1 }, "a negative counter")
        // The physical SMR of a VM's stream, turned into one that also matches a host stream: the invariant checker.
        let used = image.instances[0].reservedSMRUse[0].slot
        let smrSlot = m.physical(0).registers().firstIndex { $0.location.name == .SMR && $0.location.index == used }!
        refused({ $0.instances[0].physical.registers[smrSlot] |= 0x7F80 << 16 }, "a VM's reserved SMR widened")
        let free = m.physical(0).registers().firstIndex { $0.location.name == .SMR && $0.location.index == 127 }!
        refused({ $0.instances[0].physical.registers[free] |= 1 << 31 }, "a free reserved SMR made valid")
    }
}

@Suite struct StateImageCodingTests {
    @Test func crc32IsZlibs() {
        #expect(CRC32.checksum(Array("123456789".utf8)) == 0xCBF4_3926)
        #expect(CRC32.checksum([UInt8]()) == 0)
        // The eight-at-a-time path and the byte path agree at every length and alignment.
        var rng = SplitMix64(seed: 1)
        let bytes = (0..<67).map { _ in UInt8.random(in: 0...255, using: &rng) }
        for start in 0..<9 {
            for end in start...bytes.count {
                let slice = bytes[start..<end]
                var c: UInt32 = 0xFFFF_FFFF
                for b in slice {
                    c ^= UInt32(b)
                    for _ in 0..<8 { c = c & 1 != 0 ? 0xEDB8_8320 ^ (c >> 1) : c >> 1 }
                }
                #expect(CRC32.checksum(Array(slice)) == c ^ 0xFFFF_FFFF)
            }
        }
    }

    @Test func readerNeverTrapsOnCountsOrLengths() {
        var w = StateImageWriter()
        w.int(Int.max)   // a count no input can hold
        var r = StateImageReader(w.bytes)
        #expect(throws: StateImageError.truncated(at: 8)) { try r.count() }
        var negative = StateImageReader(StateImageWriter().bytes + [0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF])
        #expect(throws: StateImageError.corrupt(reason: "byte 0: negative count -1")) { try negative.count() }
        var bool = StateImageReader([2])
        #expect(throws: StateImageError.corrupt(reason: "byte 0: 2 is not a boolean")) { try bool.bool() }
        var utf8 = StateImageReader([1, 0, 0, 0, 0, 0, 0, 0, 0xFF])
        #expect(throws: StateImageError.corrupt(reason: "byte 0: a string is not UTF-8")) { try utf8.string() }
    }
}
