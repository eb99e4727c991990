import Testing
@testable import PKVM
import SMMUModel

/// `Hypervisor.checkpoint()` and `restore(_:)`: the fuzzers start every input from a restored checkpoint, so a
/// restore must give back exactly the hypervisor the checkpoint saw (a finding must reproduce from its input alone).
@Suite("Checkpoint and restore")
struct CheckpointTests {
    /// Host programming, a denial, host memory, a protected VM with a page and a stream, DMAs: state in every
    /// part of the hypervisor.
    func dirty(_ m: Machine) {
        let window = m.hv.policy.topology.windows[0]
        func address(_ name: RegisterName, _ index: Int) -> UInt64 { window.base + window.configuration.offset(of: name, index: index) }
        #expect(m.hv.hostWrite(address: address(.SMR, 0), value: 1 << 31 | 0x10, width: .word, client: m.client).value != nil)
        #expect(m.hv.hostWrite(address: address(.S2CR, 0), value: 0x0002_0000, width: .word, client: m.client).value != nil)
        let hidden = m.hv.instances[0].reservedSMRs.lowerBound
        expectDenied(m.hv.hostWrite(address: address(.SMR, hidden), value: 1 << 31, width: .word, client: m.client), .hiddenStreamMatchGroup)
        #expect(m.hv.memWrite(address: hostData, bytes: [1, 2, 3, 4, 5, 6, 7, 8], client: m.client).value != nil)
        _ = m.protectedVM(stream: 0x30, pages: 2)
        m.vmWrites([9, 9, 9, 9], at: vmData + 4096)
        _ = m.hv.dma(window: 0, stream: 0x10, iova: hostData, access: .read)
        _ = m.hv.dma(window: 0, stream: 0x30, iova: 0, access: .write)
    }

    @Test func restoreGivesBackTheFinalizedHypervisor() throws {
        let m = Machine(finalized: true)
        let checkpoint = try #require(m.hv.checkpoint())
        for _ in 0..<2 {   // twice: a restored hypervisor can be dirtied and restored again
            let fresh = Machine(finalized: true)
            dirty(m)
            #expect(m.hv.snapshot() != fresh.hv.snapshot())
            #expect(m.hv.checkpoint() == nil, "a VM exists: nothing to checkpoint")
            #expect(m.hv.restore(checkpoint))
            #expect(m.hv.snapshot() == fresh.hv.snapshot())
            #expect(m.differences(m.state(), fresh.state()) == [])
            #expect(m.hv.statistics == fresh.hv.statistics)
            #expect(m.hv.tlbStatistics == fresh.hv.tlbStatistics)
            #expect(m.memory.readBytes(at: hostData, count: 8) == [UInt8](repeating: 0, count: 8))
            #expect(m.memory.readBytes(at: vmData, count: 8192)!.allSatisfy { $0 == 0 })
            #expect(m.memory.readBytes(at: hypervisorRAM.base, count: Int(hypervisorRAM.size))!.allSatisfy { $0 == 0 },
                    "the VM's stage-2 tables are gone")
            // It behaves as new, not only looks it: the same VM handle, the same pages donated again.
            let vm = m.protectedVM(stream: 0x30, pages: 2)
            #expect(vm == fresh.hv.vmCreate(client: fresh.client).value)
            #expect(m.hv.restore(checkpoint))
        }
    }

    @Test func restoreToBeforeFinalization() throws {
        let m = Machine(finalized: false)
        let checkpoint = try #require(m.hv.checkpoint())
        #expect(m.hv.finalize())
        dirty(m)
        #expect(m.hv.restore(checkpoint))
        #expect(m.hv.lifecycle == .notFinalized)
        #expect(m.hv.snapshot() == Machine(finalized: false).hv.snapshot())
        guard case .deferred = m.hv.hostRead(address: m.hv.policy.topology.windows[0].base, width: .word, client: m.client) else {
            Issue.record("a host read before finalization is deferred")
            return
        }
    }

    @Test func noRestoreWhileClientMemoryIsMapped() throws {
        let m = Machine(finalized: true)
        let checkpoint = try #require(m.hv.checkpoint())
        let base = hostData + 0x10_0000
        #expect(m.mapShared(at: base).result.value != nil)
        #expect(m.hv.checkpoint() == nil)
        _ = m.hv.vmCreate(client: m.client)
        #expect(!m.hv.restore(checkpoint))
        #expect(m.hv.sharedRanges == [PhysicalRange(base: base, size: 4096)], "a refused restore changes nothing")
        #expect(m.hv.snapshot().vms.count == 1)
        m.hv.unmapHostMemory(base: base)
        #expect(m.hv.restore(checkpoint))
        #expect(m.hv.snapshot() == Machine(finalized: true).hv.snapshot())
    }
}
