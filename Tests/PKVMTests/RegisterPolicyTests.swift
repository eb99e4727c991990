import Testing
@testable import PKVM
import SMMUModel

/// Each row's `host` column against G2 and G5, and the trap handler and `reconcile` against the row: nothing is
/// allowed or programmed that the row does not say, whatever register it is.
@Suite("Register rows: how the host may touch each register")
struct RegisterPolicyTests {
    /// A VM's stream on window 0's logical SMMU: the foreign stream a host SMR must not match.
    static let vmStream: UInt16 = 0x15

    @Test func routingRegistersAreCheckedThenDerived() {
        #expect(RegisterMap.descriptor(.SMR).host == .checked(.smrMatchesOnlyHostStreams, then: .streamMatch))
        #expect(RegisterMap.descriptor(.S2CR).host == .checked(.s2crTranslatesToHostBank, then: .streamRouting))
        #expect(RegisterMap.descriptor(.CBAR).host == .checked(.cbarNestsOverHostBank, then: .contextVMID))
        #expect(RegisterMap.descriptor(.sCR0).host == .derived(.globalControl))
        for check in HostCheck.allCases { #expect(HostedInstance.rule(of: check).guarantees.first == .g2) }
        for d in RegisterMap.all {
            switch d.effect {
            case .streamMatch, .streamRouting, .globalConfiguration:
                // A register that routes streams never reaches the hardware as the host wrote it.
                switch d.host {
                case .checked, .derived: break
                case .virtualOnly, .passThrough, .rewritten: Issue.record("\(d.name) routes streams but is \(d.host)")
                }
            case .none, .contextConfiguration, .restore, .invalidateTLB, .sync, .addressTranslation:
                break
            }
            // Only a host context bank's own page, and the global sync, are replayed as written.
            if d.host == .passThrough { #expect(d.space == .contextBank || d.effect == .sync, "\(d.name)") }
            // A global TLB operation reaches the hardware only rewritten to the host's VMIDs.
            if case .invalidateTLB = d.effect, d.space != .contextBank {
                switch d.host {
                case .virtualOnly, .rewritten: break
                case .passThrough, .derived, .checked: Issue.record("\(d.name) invalidates globally as \(d.host)")
                }
            }
        }
    }

    /// G5: every indexed register, read or written at the first index the hypervisor keeps, is DENIED and
    /// changes nothing.
    @Test func everyIndexedRegisterIsHiddenBeyondTheHostsShare() {
        let m = Machine()
        let d = m.driver()
        let instance = m.hv.instances[0]
        for desc in RegisterMap.all {
            let hidden: (index: Int, rule: TrapRule)
            switch desc.indexing {
            case .none: continue
            case .contextBank: hidden = (instance.hostContextBanks, .hiddenContextBank)
            case .streamMatchGroup: hidden = (instance.hostSMRs, .hiddenStreamMatchGroup)
            }
            let before = m.state()
            expectDenied(d.read(desc.name, hidden.index, width: desc.width), hidden.rule)
            expectDenied(d.write(desc.name, hidden.index, 0, width: desc.width), hidden.rule)
            #expect(m.differences(before, m.state()).isEmpty, "\(desc.name)")
            // The last host index is the host's.
            #expect(d.read(desc.name, hidden.index - 1, width: desc.width).deniedEvent == nil, "\(desc.name)")
        }
    }

    /// G2 written independently of the table: the only registers that route a stream and the values that would
    /// route a foreign one or name a hidden bank.
    static func g2Refusal(_ name: RegisterName, _ value: UInt64, hostBanks: Int, idMask: UInt16) -> TrapRule? {
        let raw = UInt32(truncatingIfNeeded: value)
        if name == .SMR {
            let valid = raw >> 31 == 1
            let id = UInt16(raw & 0x7FFF), mask = UInt16((raw >> 16) & 0x7FFF)
            return valid && (vmStream ^ id) & ~mask & idMask == 0 ? .smrForeignStream : nil
        }
        if name == .S2CR { return (raw >> 16) & 3 == 0 && Int(raw & 0xFF) >= hostBanks ? .s2crHiddenContextBank : nil }
        if name == .CBAR { return (raw >> 16) & 3 == 3 && Int((raw >> 8) & 0xFF) >= hostBanks ? .cbarHiddenContextBank : nil }
        return nil
    }

    /// For every register and a set of values that attack each routing register, the trap handler refuses exactly
    /// what G2 refuses: nothing the policy never considered is allowed, and nothing else is refused.
    @Test func theTrapHandlersDecisionIsG2sForEveryRegister() {
        let m = Machine()
        _ = m.protectedVM(stream: UInt32(Self.vmStream))
        let d = m.driver()
        let instance = m.hv.instances[0]
        let values: [UInt64] = [
            0, 0xFFFF_FFFF_FFFF_FFFF,
            0x8000_0015, 0x8000_0016, 0x807F_0000, 0x0001_0015,      // SMRs: the VM's stream, another, a mask, invalid
            0x0000_0077, 0x0000_007F, 0x0000_0003, 0x0001_007F,      // S2CRs: translate to hidden and host banks, bypass
            0x0003_7F00, 0x0003_7700, 0x0003_0100, 0x0000_7F00,      // CBARs: nested over hidden and host banks, S2
        ]
        for name in RegisterName.allCases {
            let desc = RegisterMap.descriptor(name)
            for value in values {
                let v = value & desc.width.mask
                let expected = Self.g2Refusal(name, v, hostBanks: instance.hostContextBanks, idMask: instance.idMask)
                // The rule alone: `check` is what the handler consults after `hidden`.
                let location = RegisterLocation(name: name)
                #expect(instance.check(location, value: v)?.rule == expected, "\(name) = \(v)")
                // And end to end: a refusal changes nothing.
                let before = m.state()
                let r = d.write(name, 0, v, width: desc.width)
                if let expected {
                    expectDenied(r, expected)
                    #expect(m.differences(before, m.state()).isEmpty, "\(name) = \(v)")
                } else {
                    #expect(r.deniedEvent == nil, "\(name) = \(v): \(r)")
                }
            }
        }
    }

    /// `reconcile` against the row: after an accepted host write, the physical SMMU changed only as the row says.
    @Test func whatReachesThePhysicalSMMUIsTheRows() {
        for name in RegisterName.allCases {
            let m = Machine()
            let desc = RegisterMap.descriptor(name)
            let instance = m.hv.instances[0]
            let value: UInt64 = name == .SMR ? 0x8000_0016 : 0x0001_0003
            let before = instance.physical.registers()
            #expect(m.driver().write(name, 0, value & desc.width.mask, width: desc.width).value != nil, "\(name)")
            let changed = zip(before, instance.physical.registers()).filter { $0.0.value != $0.1.value }.map(\.0.location)
            let location = RegisterLocation(name: name)
            func physical(_ n: RegisterName, _ i: Int = 0) -> UInt32 {
                UInt32(truncatingIfNeeded: instance.physical.peek(n, index: i))
            }
            switch desc.host {
            case .virtualOnly:
                #expect(changed.isEmpty, "\(name) is virtual only but changed \(changed)")
            case .passThrough:
                #expect(instance.physical.peek(name) == instance.virtual.peek(name), "\(name)")
                let restored: RegisterLocation? = if case .restore(let s) = desc.effect { RegisterLocation(name: s.register) } else { nil }
                #expect(changed.allSatisfy { $0 == location || $0 == restored }, "\(name) changed \(changed)")
            case .derived(let derivation), .checked(_, then: let derivation):
                switch derivation {
                case .globalControl:
                    #expect(physical(.sCR0) == instance.physicalSCR0())
                    for n in 0..<instance.hostSMRs {
                        #expect(physical(.SMR, n) == instance.physicalSMR(n) && physical(.S2CR, n) == instance.physicalS2CR(n))
                    }
                case .streamMatch:
                    #expect(physical(.SMR) == instance.physicalSMR(0) && changed == [location])
                case .streamRouting:
                    #expect(physical(.S2CR) == instance.physicalS2CR(0) && changed == [location])
                case .contextVMID:
                    #expect(physical(.CBAR) == instance.physicalCBAR(0) && changed == [location])
                case .contextFormat:
                    #expect(physical(.CBA2R) == instance.physicalCBA2R(0) && changed == [location])
                }
            case .rewritten:
                // Only the physical TLBIVMID operation, with the hypervisor's VMIDs of host banks.
                #expect(changed.allSatisfy { $0.name == .TLBIVMID }, "\(name) changed \(changed)")
                let vmid = instance.physical.peek(.TLBIVMID)
                #expect(changed.isEmpty || (1...UInt64(instance.hostContextBanks)).contains(vmid))
            }
        }
    }
}
