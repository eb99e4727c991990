import Testing
@testable import SMMUModel

/// The model's part of a state image (docs/state-image.md): an MMU-500's register file and TLB as values, RAM's
/// non-zero pages, the MC's registers, the epoch's resumption.
@Suite struct StateImageModelTests {
    static let sid: UInt16 = 0x0E
    static let bank = 3

    /// A model with a Linux stage-1 domain, a TLB holding entries, counters, and a pending context fault.
    static func busy() throws -> (Machine, PageTableBuilder) {
        var m = Machine()
        let d = m.driver
        d.reset()
        let pt = try m.builder(.stage1)
        d.attachStage1(bank: bank, ttbr0: pt.root, tcr: pt.tcr)
        d.route(smr: 0, stream: sid, mask: 0x7F80, toBank: bank)
        for page in 0..<8 as Range<UInt64> { try pt.map(0x1000_0000 + page << 12, to: Machine.ramBase + 0x5000 + page << 12, size: 0x1000) }
        for page in 0..<8 as Range<UInt64> { _ = m.smmu.translate(stream: StreamID(sid), iova: 0x1000_0000 + page << 12, access: .read) }
        _ = m.smmu.translate(stream: StreamID(sid), iova: 0x1000_0010, access: .write)
        _ = m.smmu.translate(stream: StreamID(sid), iova: 0x2000_0000, access: .read)   // no mapping: FSR.TF
        return (m, pt)
    }

    @Test func aRestoredModelIsTheSameModel() throws {
        let (m, pt) = try Self.busy()
        let image = m.smmu.stateImage()
        #expect(image.tlbEntries.count == 8 && image.tlbHits == 1 && image.tlbMisses >= 9)
        #expect(image.registers.count == m.smmu.registerSlotCount)
        let copy = MMU500(configuration: m.smmu.configuration, memory: m.memory)
        #expect(copy.restore(image) == nil)
        #expect(copy.stateImage() == image)
        #expect(copy.contextInterruptAsserted(bank: Self.bank) == m.smmu.contextInterruptAsserted(bank: Self.bank))
        // A stale entry stays stale in both (the TLB is kept exactly): the unmapped page still hits until a TLBI.
        try pt.unmap(0x1000_2000, size: 0x1000)
        for model in [m.smmu, copy] {
            let t = model.translate(stream: StreamID(Self.sid), iova: 0x1000_2008, access: .read)
            #expect(t.tlbHit && t.physicalAddress == Machine.ramBase + 0x7008)
        }
        #expect(copy.stateImage() == m.smmu.stateImage())
    }

    @Test func anImageThatCannotBeThisModelsIsRefused() throws {
        let (m, _) = try Self.busy()
        let image = m.smmu.stateImage()
        let fresh = MMU500(configuration: m.smmu.configuration, memory: m.memory)
        let before = fresh.stateImage()
        var shorter = image
        shorter.registers.removeLast()
        #expect(fresh.restore(shorter) != nil)
        var moved = image
        moved.tlbEntries[0].slot ^= 1
        #expect(fresh.restore(moved) != nil)
        var bank = image
        bank.tlbEntries[0].bank = 200
        #expect(fresh.restore(bank) != nil)
        var shift = image
        shift.tlbEntries[0].leafShift = 70
        #expect(fresh.restore(shift) != nil)
        #expect(fresh.stateImage() == before, "a refused image changes nothing")
        let other = MMU500(configuration: .generic4K, memory: m.memory)
        #expect(other.restore(image) != nil, "another configuration's register file")
    }

    @Test func nonZeroPagesSkipZerosUntouchedRAMAndClientMemory() throws {
        let memory = try MemoryMap(regions: [(0x8000_0000, 64 << 20), (0x7F00_0000, 1 << 20)])
        var pages: [UInt64] = []
        memory.forEachNonZeroPage { a, _ in pages.append(a) }
        #expect(pages.isEmpty)
        memory.writeBytes([1], at: 0x8000_1FFF)
        memory.writeBytes([0, 0, 0], at: 0x8000_3000)   // written, but zero
        memory.writeBytes([7], at: 0x7F00_0000)
        memory.writeBytes([9], at: 0x8010_0000)
        let client = UnsafeMutableRawBufferPointer.allocate(byteCount: 4096, alignment: 4096)
        defer { client.deallocate() }
        client.initializeMemory(as: UInt8.self, repeating: 0xAA)
        try memory.replace(base: 0x8010_0000, size: 4096, with: client.baseAddress!, release: {})
        var seen: [UInt64: [UInt8]] = [:]
        memory.forEachNonZeroPage { a, bytes in seen[a] = Array(bytes) }
        #expect(seen.keys.sorted() == [0x7F00_0000, 0x8000_1000], "the client's page and zero pages are left out")
        #expect(seen[0x8000_1000]?[0xFFF] == 1 && seen[0x8000_1000]?.count == 4096)
        memory.zero(at: 0x8000_1000, count: 4096)
        seen = [:]
        memory.forEachNonZeroPage { a, bytes in seen[a] = Array(bytes) }
        #expect(seen.keys.sorted() == [0x7F00_0000])
    }

    @Test func memoryControllerRegistersRestoreOnlyWhatTheHardwareHolds() {
        let mc = MemoryController(.tegra234)
        let n = mc.configuration.clients.count
        var overrides = mc.overrides
        overrides[0] = 0x33
        #expect(mc.restore(overrides: overrides, securities: mc.securities, bypassConfig: 0x3, interruptMask: 5) == nil)
        #expect(mc.read(.override(0)) == 0x33 && mc.bypassConfig == 3 && mc.interruptMask == 5)
        #expect(mc.restore(overrides: Array(overrides.prefix(n - 1)), securities: mc.securities, bypassConfig: 0,
                           interruptMask: 0) != nil)
        #expect(mc.restore(overrides: overrides, securities: mc.securities.map { $0 | 1 }, bypassConfig: 0,
                           interruptMask: 0) != nil)
        #expect(mc.read(.override(0)) == 0x33 && mc.bypassConfig == 3, "a refused restore changes nothing")
    }

    @Test func theEpochResumesAfterTheValueGivenAndPublishesIt() {
        let epoch = TranslationEpoch()
        var seen: [UInt64] = []
        epoch.publish = { seen.append($0) }
        epoch.resume(after: 41)
        epoch.advance()
        #expect(seen == [42, 43] && epoch.value == 43)
    }
}
