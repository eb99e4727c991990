import Testing
@testable import SMMUModel

@Suite("Stream matching, S2CR types and global faults")
struct StreamMatchingTests {
    static func reset() -> Machine {
        let m = Machine()
        m.driver.reset()
        return m
    }

    @Test func maskedIDMatchesEveryStreamItCovers() {
        let m = Self.reset()
        let d = m.driver
        d.w32(.SMR, 2, 1 << 31 | 0x0007 << 16 | 0x0010)      // ID 0x10, MASK 0x7: 0x10..0x17
        d.w32(.S2CR, 2, 0x0001_0000)                          // BYPASS
        for sid in UInt16(0x0E)...0x19 {
            let t = m.smmu.translate(stream: StreamID(sid), iova: 0x8000_1000, access: .read)
            if (0x10...0x17).contains(sid) {
                #expect(t.physicalAddress == 0x8000_1000, "stream \(sid)")
            } else {
                #expect(t.fault == .unidentifiedStream, "stream \(sid)")
            }
        }
    }

    @Test func invalidSMRMatchesNothing() {
        let m = Self.reset()
        let d = m.driver
        d.w32(.SMR, 0, 0x7FFF_0000)                       // MASK all ones, VALID clear
        d.w32(.S2CR, 0, 0x0001_0000)
        #expect(m.smmu.translate(stream: StreamID(3), iova: 0, access: .read).fault == .unidentifiedStream)
    }

    @Test func bit15OfTheStreamIsNotCompared() {
        let m = Self.reset()
        let d = m.driver
        d.w32(.SMR, 0, 1 << 31 | 0x0005)
        d.w32(.S2CR, 0, 0x0001_0000)
        #expect(m.smmu.translate(stream: StreamID(0x8005), iova: 0x8000_0000, access: .read).physicalAddress == 0x8000_0000)
    }

    @Test func unmatchedStreamRecordsUSF() {
        let m = Self.reset()
        let d = m.driver
        let t = m.smmu.translate(stream: StreamID(0x42), iova: 0x1234, access: [.write, .privileged])
        #expect(t == Translation(outcome: .fault(.unidentifiedStream)))
        // The generic global fault handler's reads (`arm_smmu_global_fault`).
        let gfsr = d.r32(.sGFSR), s0 = d.r32(.sGFSYNR0), s1 = d.r32(.sGFSYNR1)
        #expect(gfsr == 0x2)
        #expect(s0 & 0x6 == 0x6)                              // WNR, PNU
        #expect(UInt16(truncatingIfNeeded: s1) == 0x42)
        #expect(d.r64(.sGFAR) == 0x1234)
        #expect(m.smmu.globalInterruptAsserted)
        _ = m.smmu.translate(stream: StreamID(0x43), iova: 0, access: .read)
        #expect(d.r32(.sGFSR) == 0x8000_0002)                 // MULTI, first syndrome kept
        #expect(UInt16(truncatingIfNeeded: d.r32(.sGFSYNR1)) == 0x42)
        d.w32(.sGFSR, d.r32(.sGFSR))
        #expect(d.r32(.sGFSR) == 0 && !m.smmu.globalInterruptAsserted)
    }

    @Test func usfcfgClearBypassesUnmatchedStreams() {
        let m = Self.reset()
        let d = m.driver
        d.w32(.sCR0, d.r32(.sCR0) & ~UInt32(1 << 10))
        #expect(m.smmu.translate(stream: StreamID(0x42), iova: 0x8000_0040, access: .read).physicalAddress == 0x8000_0040)
        #expect(d.r32(.sGFSR) == 0)
    }

    @Test func clientPDBypassesEverything() {
        let m = Machine()            // reset state: CLIENTPD = 1
        let d = m.driver
        d.w32(.SMR, 0, 1 << 31 | 0x0001)
        d.w32(.S2CR, 0, 0x0002_0000)                         // FAULT, ignored under CLIENTPD
        #expect(m.smmu.translate(stream: StreamID(1), iova: 0x8000_0000, access: .read).physicalAddress == 0x8000_0000)
        #expect(m.smmu.translate(stream: StreamID(9), iova: 0x8000_0000, access: .read).physicalAddress == 0x8000_0000)
        #expect(m.smmu.translate(stream: StreamID(9), iova: 1 << 48, access: .read).fault == .addressSize)
    }

    @Test func twoValidMatchesAreAMultiMatchFault() {
        let m = Self.reset()
        let d = m.driver
        d.w32(.SMR, 4, 1 << 31 | 0x0F << 16 | 0x20)          // 0x20..0x2F
        d.w32(.SMR, 9, 1 << 31 | 0x25)
        d.w32(.S2CR, 4, 0x0001_0000)
        d.w32(.S2CR, 9, 0x0001_0000)
        #expect(m.smmu.translate(stream: StreamID(0x25), iova: 0, access: .read).fault == .multipleMatch)
        #expect(d.r32(.sGFSR) == 0x4)                         // SMCF
        #expect(d.r32(.sGFSYNR1) & 0xFFFF == 0x25)
        #expect(m.smmu.translate(stream: StreamID(0x26), iova: 0x8000_0000, access: .read).physicalAddress == 0x8000_0000)
        // Invalidating one SMR is seen at once (the match cache is dropped on SMR writes).
        d.w32(.SMR, 9, 0x25)
        #expect(m.smmu.translate(stream: StreamID(0x25), iova: 0x8000_0000, access: .read).physicalAddress == 0x8000_0000)
    }

    @Test func s2crTypes() {
        let m = Self.reset()
        let d = m.driver
        d.w32(.SMR, 0, 1 << 31 | 0x1)
        d.w32(.S2CR, 0, 0x0002_0000)
        #expect(m.smmu.translate(stream: StreamID(1), iova: 0, access: .read).fault == .streamFault)
        #expect(d.r32(.sGFSR) == 0)                           // not recorded
        d.w32(.S2CR, 0, 0x0001_0000)
        #expect(m.smmu.translate(stream: StreamID(1), iova: 0x8000_0000, access: .read).physicalAddress == 0x8000_0000)
        d.w32(.S2CR, 0, 200)                                  // TRANS to a bank beyond NUMCB
        #expect(m.smmu.translate(stream: StreamID(1), iova: 0, access: .read).fault == .streamFault)
        #expect(d.r32(.sGFSR) == 0x1)                         // ICF
    }

    @Test func privcfgAndInstcfgOverrideTheTransaction() throws {
        var m = Self.reset()
        let d = m.driver
        let pt = try m.builder(.stage1)
        try pt.map(0x1000, to: Machine.ramBase, size: 0x1000, attributes: .init(user: false))
        d.attachStage1(bank: 0, ttbr0: pt.root)
        d.route(smr: 0, stream: 1, toBank: 0)
        let s = StreamID(1)
        #expect(m.smmu.translate(stream: s, iova: 0x1000, access: .read).fault == .permission)
        d.w32(.FSR, 0, 0xFFFF_FFFF)
        d.w32(.S2CR, 0, 3 << 24)                              // PRIVCFG = PRIV
        #expect(m.smmu.translate(stream: s, iova: 0x1000, access: .read).physicalAddress == Machine.ramBase)
        d.w32(.S2CR, 0, 2 << 24)                              // PRIVCFG = UNPRIV
        #expect(m.smmu.translate(stream: s, iova: 0x1000, access: .privileged).fault == .permission)
        #expect(d.r32(.FSYNR0, 0) & (1 << 5) == 0)            // recorded as unprivileged
        d.w32(.FSR, 0, 0xFFFF_FFFF)
        d.w32(.S2CR, 0, 3 << 24 | 3 << 26)                    // privileged instruction fetch
        #expect(m.smmu.translate(stream: s, iova: 0x1000, access: .read).physicalAddress == Machine.ramBase)
        try pt.map(0x2000, to: Machine.ramBase, size: 0x1000, attributes: .init(user: false, privilegedExecuteNever: true))
        #expect(m.smmu.translate(stream: s, iova: 0x2000, access: .read).fault == .permission)
        #expect(d.r32(.FSYNR0, 0) & (1 << 6) != 0)            // IND
    }

    @Test func filterDecidesBypassedAccesses() {
        let filter = RangeFilter(0x8000_0000..<0x8000_1000)
        let m = Machine(filter: filter)
        #expect(m.smmu.translate(stream: StreamID(7), iova: 0x8000_0FF8, access: .write).physicalAddress == 0x8000_0FF8)
        #expect(filter.asked.last?.2 == .data(write: true))
        #expect(m.smmu.translate(stream: StreamID(7), iova: 0x8000_1000, access: .read).fault == .ownership)
        #expect(filter.asked.last?.0 == StreamID(7))
    }
}
