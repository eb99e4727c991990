import Testing
@testable import PKVM
import SMMUModel

@Suite("Invariant checker")
struct InvariantCheckerTests {
    /// Its sampled DMAs fault (unmatched host streams: a global fault; a VM stream at unmapped IOVAs: a fault in the
    /// VM's bank), yet no register changes: the fuzzers run it after steps whose effects they check next.
    @Test func probeDMAsChangeNoRegister() {
        let m = Machine(finalized: true)
        _ = m.protectedVM(stream: 0x30, pages: 1)
        let before = m.state()
        #expect(InvariantChecker(m.hv).check(iovas: [0x4000_0000, 0xDEAD_0000]).isEmpty)
        #expect(m.differences(before, m.state()) == [])
        // The same DMAs, made for real, do record faults: the check above would have seen them.
        _ = m.hv.dma(window: 0, stream: 1, iova: 0x4000_0000, access: .read)
        _ = m.hv.dma(window: 0, stream: 0x30, iova: 0xDEAD_0000, access: .read)
        let changed = m.differences(before, m.state())
        #expect(changed.contains { $0.hasPrefix("niso1a.sGFAR:") }, "\(changed)")
        #expect(changed.contains { $0.hasPrefix("niso1a.FAR[cb") }, "the VM's bank: \(changed)")
    }
}
