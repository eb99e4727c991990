import Testing
@testable import PKVM
import SMMUModel
import TestSupport

/// Thousands of hostile host accesses (routing registers with values aimed at the VMs' streams,
/// hidden indices, TLB maintenance, sCR0, table memory): after each, a denial is audited exactly once;
/// every so often the invariant checker finds nothing, the VMs still reach their pages and no host
/// stream reaches a VM's.
@Suite struct RandomAttackTests {
    static let targets: [RegisterName] = [.SMR, .SMR, .SMR, .S2CR, .S2CR, .CBAR, .CBA2R, .sCR0, .SCTLR, .TCR, .TTBR0,
                                          .TTBR1, .TLBIVMID, .TLBIALLNSNH, .TLBIALL, .TLBIASID, .TLBIVAL, .TLBIIPAS2,
                                          .FSR, .FAR, .sGFSR, .sGFSRRESTORE, .FSRRESTORE, .RESUME, .STLBIALL]

    @Test(arguments: [UInt64(1), 2, 3])
    func randomHostAccessesNeverBreakOwnership(seed: UInt64) throws {
        var rng = SplitMix64(seed: seed)
        let m = Machine(hypervisorStreams: [2: [StreamID(0x7F0)]])
        let d0 = m.driver(0, 1)
        d0.reset()
        m.driver(2).reset()
        let vmStreams: [(window: Int, stream: UInt32, page: UInt64)] = [(0, 0x15, vmData), (2, 0x30, vmData + 0x10_0000)]
        for v in vmStreams { _ = m.protectedVM(stream: v.stream, window: v.window, base: v.page) }
        let tables = m.tables()
        try tables.map4K(0x1000, to: hostData)
        d0.attachStage1(bank: 0, ttbr0: tables.root)
        let foreign: [UInt16] = [0x15, 0x30, 0x7F0]
        var denials = 0
        for step in 0..<1500 {
            let w = [0, 1, 2, 3, 4].randomElement(using: &rng)!
            let name = Self.targets.randomElement(using: &rng)!
            let d = RegisterMap.descriptor(name)
            let index = d.indexing == .none ? 0 : Int.random(in: 0..<128, using: &rng)
            var value = rng.next()
            if name == .SMR {
                let id = foreign.randomElement(using: &rng)! ^ UInt16.random(in: 0...3, using: &rng)
                value = UInt64(1 << 31) | UInt64(rng.next() & 0x7FFF & UInt64.random(in: 0...0xFF, using: &rng)) << 16 | UInt64(id)
            } else if name == .S2CR {
                value = UInt64(Int.random(in: 0...2, using: &rng)) << 16 | UInt64.random(in: 0...130, using: &rng)
            } else if name == .TTBR0 || name == .TTBR1 {
                value = [vmData, hypervisorRAM.base, tables.root, hostData].randomElement(using: &rng)!
            }
            let width = d.width
            let events = m.audit.events.count
            let r = m.driver(w).write(name, index, value & width.mask, width: width)
            if case .denied(let e) = r {
                denials += 1
                #expect(m.audit.events.count == events + 1 && m.audit.events.last == e)
            } else {
                #expect(m.audit.events.count == events, "step \(step): an event without a denial")
            }
            if step % 7 == 0 {   // the host scribbles over its own table memory
                let slot = tables.root + UInt64.random(in: 0..<64, using: &rng) * 8
                let target = [vmData, hypervisorRAM.base, hostData, vmData + 0x10_0000].randomElement(using: &rng)!
                _ = m.hv.memWrite(address: slot, bytes: withUnsafeBytes(of: (target | 0x743).littleEndian) { Array($0) },
                                  client: m.client)
            }
            if step % 150 == 149 {
                let violations = InvariantChecker(m.hv).check(streams: [0x20, 0x7777, 0x14, 0x16].map { StreamID($0) },
                                                              iovas: [0x1000, vmData + 0x123])
                #expect(violations.isEmpty, "seed \(seed) step \(step): \(violations)")
                for v in vmStreams {
                    for w in m.hv.policy.topology.smmus[m.hv.policy.topology.windows[v.window].logicalSMMU].windows {
                        #expect(m.hv.dma(window: w, stream: v.stream, iova: v.page + 8, access: .write).physicalAddress == v.page + 8,
                                "seed \(seed) step \(step): VM stream 0x\(String(v.stream, radix: 16)) lost its page")
                    }
                }
                for w in 0..<5 {
                    for stream: UInt32 in [0x0, 0x14, 0x16, 0x20, 0x31, 0x7777] {
                        for iova in [vmData, vmData + 0x10_0000, 0x1000, hypervisorRAM.base] {
                            let pa = m.hv.dma(window: w, stream: stream, iova: iova, access: .write).physicalAddress
                            #expect(pa.map { m.hv.ownership.owner(ofAddress: $0) == .host } ?? true,
                                    "seed \(seed) step \(step): host stream 0x\(String(stream, radix: 16)) reached 0x\(String(pa ?? 0, radix: 16))")
                        }
                    }
                }
            }
        }
        #expect(denials > 50, "the attack mix must hit the rules")
        #expect(m.hv.statistics.denials == m.audit.events.count)
        #expect(m.hv.interruptLines(window: 0).count == 121)
    }

    /// A reserved bank reused by the next VM: nothing the first VM cached may translate for the second.
    @Test func reusedVMContextBankHasNoStaleTLBEntries() {
        let m = Machine()
        let first = m.protectedVM(stream: 0x15)
        let bank = m.contextBank(of: first, window: 0)
        #expect(m.hv.dma(window: 0, stream: 0x15, iova: vmData, access: .write).physicalAddress == vmData)
        #expect(m.hv.dma(window: 0, stream: 0x15, iova: vmData, access: .write).physicalAddress == vmData)
        _ = m.hv.vmDestroy(first, client: m.client)
        let second = m.protectedVM(stream: 0x16, base: vmData + 0x20_0000)
        #expect(m.contextBank(of: second, window: 0) == bank, "the same reserved bank, the same physical VMID")
        #expect(m.hv.dma(window: 0, stream: 0x16, iova: vmData, access: .write).physicalAddress == nil)
        #expect(m.hv.dma(window: 0, stream: 0x16, iova: vmData + 0x20_0000, access: .write).physicalAddress == vmData + 0x20_0000)
    }
}
