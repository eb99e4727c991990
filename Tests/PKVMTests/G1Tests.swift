import Testing
@testable import PKVM
import SMMUModel

/// G1: before finalization no host access reaches an SMMU.
@Suite struct G1Tests {
    /// Every register of every window, at its first and last index, read and written with all ones
    /// at both widths: all DEFERRED, nothing audited, and both register files equal a fresh reset.
    @Test func everyAccessBeforeFinalizeIsDeferredAndStateIsReset() {
        let m = Machine(finalized: false)
        #expect(m.hv.lifecycle == .notFinalized)
        var accesses = 0
        for (w, window) in m.hv.policy.topology.windows.enumerated() {
            let c = window.configuration
            for d in RegisterMap.all {
                let count = c.implementedCount(d)
                for index in Set([0, count - 1]) where count > 0 {
                    let address = window.base + c.offset(of: d.name, index: index)
                    for width in AccessWidth.allCases {
                        let r = m.hv.hostRead(address: address, width: width, client: m.client)
                        let wr = m.hv.hostWrite(address: address, value: .max, width: width, client: m.client)
                        accesses += 2
                        guard case .deferred = r, case .deferred = wr else {
                            Issue.record("\(window.name) \(d.name)[\(index)] width \(width.bytes): \(r) / \(wr)")
                            continue
                        }
                    }
                }
            }
            let fresh = MMU500(configuration: c, memory: m.memory)
            #expect(m.physical(w).registers().map(\.value) == fresh.registers().map(\.value), "\(window.name) physical")
            #expect(m.physical(w).tlbEntryCount == 0)
        }
        // Addresses outside every window and unaligned ones are not answered either.
        for address: UInt64 in [0, 0x0800_0002, .max - 3, hostRAM.base] {
            if case .deferred = m.hv.hostRead(address: address, width: .word, client: m.client) {} else {
                Issue.record("read 0x\(String(address, radix: 16)) not deferred")
            }
            accesses += 1
        }
        #expect(m.hv.statistics.deferred == accesses)
        #expect(m.hv.statistics.hostReads == 0 && m.hv.statistics.hostWrites == 0)
        #expect(m.audit.events.isEmpty)
        #expect(m.hv.lifecycle == .notFinalized)
    }

    @Test func hypercallsBeforeFinalizeAreDeferred() {
        let m = Machine(finalized: false)
        guard case .deferred = m.hv.vmCreate(client: m.client) else { Issue.record("VM_CREATE served"); return }
        let vm = VMHandle(rawValue: 1)
        guard case .deferred = m.hv.vmDonate(vm, range: PhysicalRange(base: vmData, size: 4096), client: m.client) else {
            Issue.record("VM_DONATE served"); return
        }
        guard case .deferred = m.hv.vmAssignStream(vm, window: 0, stream: 5, client: m.client) else {
            Issue.record("VM_ASSIGN_STREAM served"); return
        }
        guard case .deferred = m.hv.vmDestroy(vm, client: m.client) else { Issue.record("VM_DESTROY served"); return }
        #expect(m.hv.ownership.owner(ofAddress: vmData) == .host)
        #expect(m.hv.ownership.owner(ofStream: StreamID(5), smmu: 0) == .host)
    }

    /// Finalization takes the SMMU: the host's deferred probe now succeeds and the physical SMMU is
    /// in the safe state (translation on, unmatched streams fault). FINALIZE again is harmless.
    @Test func finalizeTakesTheSMMUAndIsIdempotent() {
        let m = Machine(finalized: false)
        let d = m.driver()
        if case .deferred = d.read(.IDR0) {} else { Issue.record("IDR0 answered before finalize") }
        #expect(m.hv.finalize())
        #expect(m.hv.lifecycle == .finalized)
        #expect(d.read(.IDR0).value != nil)
        for w in m.hv.instances.indices {
            let scr0 = m.physical(w).peek(.sCR0)
            #expect(scr0 & 1 == 0, "CLIENTPD clear")
            #expect(scr0 & (1 << 10) != 0, "USFCFG set")
        }
        // An unknown stream now faults instead of bypassing to memory.
        #expect(m.hv.dma(window: 0, stream: 0x33, iova: hostData, access: .write).fault == .unidentifiedStream)
        d.w32(.SMR, 0, 0x1234)
        #expect(m.hv.finalize())
        #expect(d.r32(.SMR, 0) == 0x1234, "a second FINALIZE must not reset the host's state")
        m.hv.beginStopping()
        #expect(!m.hv.finalize())
        #expect(m.hv.lifecycle == .stopping)
    }

    /// Before finalization, DMA cannot reach a page by way of a stream the host will later lose,
    /// and finalization clears whatever the reset SMMU recorded.
    @Test func finalizationStartsFromCleanFaultState() {
        let m = Machine(finalized: false)
        _ = m.hv.dma(window: 0, stream: 0x10, iova: 0xFFFF_0000_0000, access: .read)
        m.hv.finalize()
        let d = m.driver()
        #expect(d.r32(.sGFSR) == 0)
        #expect(m.hv.interruptLines(window: 0).allSatisfy { !$0 })
    }
}
