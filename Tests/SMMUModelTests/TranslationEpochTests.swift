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
}
