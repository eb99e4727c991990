import ArmSMMUDriver
import ArmSMMUTestPorts
import PKVM
import SMMUModel
import Testing

/// One driver, two ports: Linux's probe and attach make the same accesses, in Linux's offsets, on a bare MMU-500
/// with the host's view of the configuration and through the trap handler. The trap handler emulates that view
/// exactly, so the accesses (and every value read) must agree.
@Suite struct DriverPortTests {
    /// cfg_probe, RMR, reset, the SMR mask test, a stage-1 and a stage-2 domain attached, an unmap, the fault
    /// handlers; the recorded accesses.
    static func probeAndAttach<Port: RegisterPort>(_ port: Port) -> [PortAccess] where Port.Failure == Never {
        let log = PortAccessLog()
        guard case .success(let smmu) = ArmSMMU.cfgProbe([RecordingPort(port, log: log)]) else {
            Issue.record("cfg_probe failed")
            return []
        }
        smmu.rmrInstallBypassSMR()
        #expect(smmu.deviceReset().syncCompleted)
        #expect(smmu.testSMRMasks().map { [$0.streamIDMask, $0.smrMaskMask] } == [0x7FFF, 0x7FFF])
        smmu.attach(bank: 3, .stage1(asid: 3, pageTable: hostTablePool.lowerBound, tcr: 0x0080_2010),
                    streams: [(index: 0, id: 0x0E, mask: 0x7F80), (index: 1, id: 0x20, mask: 0)])
        smmu.attach(bank: 4, .stage2(vmid: 5, vttbr: hostTablePool.lowerBound + 0x1_0000, vtcr: 0x8000_3558),
                    streams: [(index: 2, id: 0x21, mask: 0)])
        #expect(smmu.unmapPageS1(bank: 3, asid: 3, iova: 0x1000_0000))
        #expect(smmu.tlbInvContextS2(vmid: 5))
        #expect(smmu.contextFault(bank: 3).isEmpty && smmu.globalFault().isEmpty)
        return log.accesses
    }

    @Test func theModelAndTheTrapHandlerSeeTheSameAccesses() {
        let m = Machine()
        let virtual = m.virtual(0)
        let model = MMU500(configuration: virtual.configuration, memory: MemoryMap())
        model.poke(.sCR0, virtual.peek(.sCR0))   // the state finalization left the host's view in
        let onModel = Self.probeAndAttach(MMU500Port(model) { Issue.record(Comment(rawValue: $0)) })
        let throughTraps = Self.probeAndAttach(TrapPort(machine: m, window: 0))
        #expect(onModel.count > 2 * 120 + 2 * 120)
        #expect(onModel.count == throughTraps.count)
        for (i, (a, b)) in zip(onModel, throughTraps).enumerated() where a != b {
            Issue.record("access \(i): model \(a), trap handler \(b)")
            break
        }
        #expect(m.audit.events.isEmpty)
    }
}
