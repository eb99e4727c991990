import ArmSMMUDriver
import Testing

/// A register store (4 KiB pages, context banks from 0x4000): ID registers fixed, sGFSR and FSR write-one-to-clear,
/// every other read returns the last value written (SMRs kept to 15-bit ID and MASK fields), every access logged.
final class StorePort: RegisterPort {
    var registers: [UInt64: UInt64]
    var log: [PortAccess] = []
    init(idr0: UInt32, idr1: UInt32 = 0x1000_0003, idr2: UInt32 = 0x5555) {
        registers = [ARM_SMMU.GR0.ID0: UInt64(idr0), ARM_SMMU.GR0.ID1: UInt64(idr1), ARM_SMMU.GR0.ID2: UInt64(idr2)]
    }
    func read32(_ offset: UInt64) -> UInt32 { UInt32(truncatingIfNeeded: read64(offset)) }
    func read64(_ offset: UInt64) -> UInt64 {
        let v = registers[offset] ?? 0
        log.append(PortAccess(kind: .read, offset: offset, value: v, width: 8))
        return v
    }
    func write32(_ offset: UInt64, _ value: UInt32) { write64(offset, UInt64(value)) }
    func write64(_ offset: UInt64, _ value: UInt64) {
        log.append(PortAccess(kind: .write, offset: offset, value: value, width: 8))
        if offset == ARM_SMMU.GR0.sGFSR || (offset >= 0x4000 && offset & 0xFFF == ARM_SMMU.CB.FSR) {
            registers[offset, default: 0] &= ~value
        } else {
            registers[offset] = (0x800..<0xC00).contains(offset) ? value & 0x7FFF_7FFF : value
        }
    }
    var writes: [(UInt64, UInt64)] { log.filter { $0.kind == .write }.map { ($0.offset, $0.value) } }
}

/// Where the driver's earlier copies disagreed, it follows Linux 6.1; and the NVIDIA pair's behaviour.
@Suite struct ArmSMMUTests {
    static func driver(_ ports: [StorePort]) -> ArmSMMU<StorePort> { try! ArmSMMU.cfgProbe(ports).get() }

    @Test("with ID0.EXIDS the reset sets sCR0.EXIDENABLE, SMRs carry no VALID and S2CR carries EXIDVALID")
    func extendedStreamIDs() {
        let port = StorePort(idr0: 0x7C00_1F04)   // SMS, NUMSIDB 15, EXIDS, 4 SMRs
        let smmu = Self.driver([port])
        #expect(smmu.deviceReset().sCR0 & ARM_SMMU.sCR0.EXIDENABLE != 0)
        smmu.attachStream(1, id: 0x12, mask: 0x80, to: ArmSMMUS2CR(type: .TRANS, cbndx: 2))
        #expect(port.registers[ARM_SMMU.GR0.SMR(1)] == 0x0080_0012)
        #expect(port.registers[ARM_SMMU.GR0.S2CR(1)] == UInt64(ARM_SMMU.S2CR.EXIDVALID | 2))
    }

    @Test("without stream matching the reset and the attach write S2CRs only")
    func streamIndexing() {
        let port = StorePort(idr0: 0x7400_0800)   // no SMS, NUMSIDB 4: 16 stream-indexed S2CRs
        let smmu = Self.driver([port])
        smmu.deviceReset()
        smmu.attachStream(3, id: 3, to: ArmSMMUS2CR(type: .BYPASS))
        #expect(smmu.testSMRMasks() == nil)
        #expect(!port.writes.contains { (0x800..<0xC00).contains($0.0) })
        #expect(port.writes.filter { (0xC00..<0x1000).contains($0.0) }.count == 16 + 2)
    }

    @Test("the NVIDIA pair: writes to both, reads from the first, the sync written 0 and polled on both")
    func nvidiaPair() {
        let ports = [StorePort(idr0: 0x7C00_1E04), StorePort(idr0: 0x7C00_1E04)]
        let smmu = Self.driver(ports)
        ports[1].registers[ARM_SMMU.GR0.sGFSR] = 0x2
        let reset = smmu.deviceReset()
        #expect(reset.syncCompleted)
        #expect(ports[1].registers[ARM_SMMU.GR0.sCR0] == UInt64(reset.sCR0))
        #expect(ports[0].writes.contains { $0 == (ARM_SMMU.GR0.sTLBGSYNC, 0) })
        #expect(ports[1].writes.contains { $0 == (ARM_SMMU.GR0.sTLBGSYNC, 0) })
        #expect(ports[1].log.contains { $0.kind == .read && $0.offset == ARM_SMMU.GR0.sTLBGSTATUS }, "polled on both")
        #expect(ports[1].writes.contains { $0 == (ARM_SMMU.GR0.sGFSR, 0x2) }, "nvidia_smmu_reset clears each instance's own sGFSR")
        #expect(!ports[1].log.contains { $0.kind == .read && $0.offset == ARM_SMMU.GR0.ID0 }, "ID registers come from the first")
        // A busy second instance keeps the sync waiting: 200 polls, then Linux's timeout.
        ports[1].registers[ARM_SMMU.GR0.sTLBGSTATUS] = 1
        #expect(!smmu.tlbSyncGlobal())
        #expect(ports[0].log.suffix(200).allSatisfy { $0.offset == ARM_SMMU.GR0.sTLBGSTATUS })
    }

    @Test("the NVIDIA context fault handler scans every bank of every instance and clears each on its own")
    func nvidiaContextFault() {
        let ports = [StorePort(idr0: 0x7C00_1E04), StorePort(idr0: 0x7C00_1E04)]
        let smmu = Self.driver(ports)
        let fsr = smmu.configuration.cb(2) + ARM_SMMU.CB.FSR
        ports[1].registers[fsr] = UInt64(ARM_SMMU.FSR.TF)
        ports[1].registers[smmu.configuration.cb(2) + ARM_SMMU.CB.FAR] = 0x1234_5000
        let faults = smmu.contextFault(bank: 0)
        #expect(faults.count == 1 && faults.first?.instance == 1 && faults.first?.bank == 2)
        #expect(faults.first?.far == 0x1234_5000)
        #expect(ports[1].writes.contains { $0 == (fsr, UInt64(ARM_SMMU.FSR.TF)) } && !ports[0].writes.contains { $0.0 == fsr })
        #expect(ports[0].log.filter { $0.offset & 0xFFF == ARM_SMMU.CB.FSR }.count == 3, "every bank of instance 0")
    }

    @Test("a stage-1 bank as arm_smmu_write_context_bank writes it, in order")
    func stage1ContextBank() {
        let port = StorePort(idr0: 0x7C00_1E04)
        let smmu = Self.driver([port])
        let cb = smmu.configuration.cb(1), gr1 = smmu.configuration.gr1
        smmu.writeContextBank(1, .stage1(asid: 1, pageTable: 0x8100_0000, tcr: 0x0080_2010))
        let expected: [(UInt64, UInt64)] = [
            (gr1 + 0x804, 0x1), (gr1 + 0x004, 0x0001_F300), (cb + 0x10, 0x0003_8015), (cb + 0x30, 0x0080_2010),
            (cb + 0x20, 1 << 48 | 0x8100_0000), (cb + 0x28, 1 << 48), (cb + 0x38, 0xF404_FF44), (cb + 0x3C, 0),
            (cb, 0x1067),
        ]
        #expect(port.writes.map(\.0) == expected.map(\.0) && port.writes.map(\.1) == expected.map(\.1))
    }
}
