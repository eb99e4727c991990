import Testing

@testable import SMMUModel

/// The epoch advances on every write that could change a translation and only then: a miss would let a
/// device use a stale cached translation; an advance per fault or sync would empty device caches for nothing.
@Suite struct TranslationEpochTests {
    @Test("configuration writes that change a value and every TLBI advance it; sync, fault syndromes and unchanged values do not")
    func advancesExactlyOnRelevantWrites() {
        let m = Machine(.generic4K)
        let epoch = TranslationEpoch()
        m.smmu.epoch = epoch
        let d = m.driver
        func advanced(_ body: () -> Void) -> Bool {
            let before = epoch.value
            body()
            return epoch.value != before
        }
        #expect(advanced { d.w32(.SMR, 0, 0x8000_0010) })
        #expect(!advanced { d.w32(.SMR, 0, 0x8000_0010) }, "the same value again changes nothing")
        #expect(advanced { d.w32(.S2CR, 0, 0) })
        #expect(advanced { d.w32(.CBAR, 0, 0x0001_0000) })
        #expect(advanced { d.w64(.TTBR0, 0, 0x8010_0000) })
        #expect(advanced { d.w32(.SCTLR, 0, 1) })
        #expect(advanced { d.w32(.sCR0, 0, 0x0020_0400) })
        #expect(advanced { d.w64(.TLBIVAL, 0, 0x100) })
        #expect(advanced { d.w32(.TLBIALLNSNH, 0, 0) }, "a TLBI advances even when nothing was cached")
        #expect(!advanced { d.w32(.TLBSYNC, 0, 0) })
        #expect(!advanced { d.w32(.MAIR0, 0, 0x44) })
        // A fault recorded by a translation (the bank's tables are empty) changes no translation.
        #expect(!advanced { _ = m.smmu.translate(stream: StreamID(0x10), iova: 0x1000, access: .read) })
        #expect(m.smmu.peek(.FSR, index: 0) != 0)
        #expect(!advanced { d.w32(.FSR, 0, 0xFFFF_FFFF) }, "W1C of a fault")
        #expect(advanced { m.smmu.reset() })
    }

    @Test("a TLBI by address advances with the one page it names in its bank; every other advance may have changed anything")
    func advancesSayWhatTheyChanged() {
        let m = Machine(.generic4K)
        let epoch = TranslationEpoch()
        m.smmu.epoch = epoch
        m.smmu.windowIndex = 4
        var heard: [TranslationChange] = []
        epoch.publish = { _, change in heard.append(change) }
        let d = m.driver
        func change(_ body: () -> Void) -> [TranslationChange] {
            heard = []
            body()
            return heard
        }
        #expect(change { d.w64(.TLBIVAL, 2, 0x0007_0000_0012_3456) }
                == [.address(window: 4, bank: 2, asid: 7, address: 0x12_3456_000)])
        #expect(change { d.w64(.TLBIVA, 1, 0x0003_0000_0000_0100) } == [.address(window: 4, bank: 1, asid: 3, address: 0x10_0000)])
        #expect(change { d.w64(.TLBIVAA, 0, 0x0009_0000_0000_0042) } == [.address(window: 4, bank: 0, asid: nil, address: 0x42_000)])
        #expect(change { d.w64(.TLBIVAAL, 0, 0x43) } == [.address(window: 4, bank: 0, asid: nil, address: 0x43_000)])
        #expect(change { d.w32(.TLBIASID, 1, 3) } == [.anything], "TLBIASID is a whole context")
        #expect(change { d.w32(.TLBIALL, 1, 0) } == [.anything])
        #expect(change { d.w32(.TLBIVMID, 0, 2) } == [.anything])
        #expect(change { d.w32(.TLBIALLNSNH, 0, 0) } == [.anything])
        #expect(change { d.w64(.TLBIIPAS2, 1, 0x100) } == [.anything], "an IPA is not an IOVA")
        #expect(change { d.w32(.SMR, 0, 0x8000_0011) } == [.anything])
        #expect(change { d.w64(.TTBR0, 1, 0x8020_0000) } == [.anything])
        #expect(change { m.smmu.reset() } == [.anything])
        #expect(change { d.w32(.TLBSYNC, 0, 0) }.isEmpty)
    }

    @Test("what a device may cache says how far a TLBIVA reaches: the stage-1 leaf, which may be larger than the piece")
    func extentsCarryTheirReach() throws {
        let (m, pt) = try Stage1Tests.attached()
        let stream = StreamID(Stage1Tests.sid)
        try pt.map(0x10_0000, to: Machine.ramBase + 0x5000, size: 0x1000)
        try pt.map(0x20_0000, to: Machine.ramBase + 0x20_0000, size: 0x20_0000)
        try pt.map(0x4000_0000, to: Machine.ramBase & ~0x3FFF_FFFF, size: 0x4000_0000)
        for (iova, size, reach) in [(UInt64(0x10_0010), UInt8(12), UInt8(12)), (0x20_1234, 21, 21),
                                    (0x4000_0000 + Machine.ramBase % 0x4000_0000 + 0x20_5000, 21, 30)] {
            for tlb in ["walk", "hit"] {
                let t = m.smmu.translate(stream: stream, iova: iova, access: .read)
                let e = try #require(m.smmu.extent(of: t, stream: stream), "\(tlb)")
                #expect(e.sizeShift == size && e.reachShift == reach, "iova \(iova) \(tlb): \(e)")
            }
        }
    }
}
