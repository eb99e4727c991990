import Testing
@testable import PKVM
import SMMUModel

/// G7's attacks on the memory controller's windows (one per MC rule), against the G7 machine with, besides its VM,
/// SDMMC4's stream (niso1 0x02, clients sdmmcrab and sdmmcwab) assigned to that VM, and the host's pcie1r client
/// (niso1, own stream 0x05) re-pointed at pcie2's stream 0x06.
extension G7AuditTests {
    static let mc = MemoryControllerConfiguration.tegra234

    static func mcClient(_ name: String) -> MemoryControllerClient { mc.clients[mc.client(named: name)!] }

    static func prepareMemoryController(_ m: Machine, vm: VMHandle) {
        #expect(m.hv.vmAssignStream(vm, window: 0, stream: 0x02, client: m.client).value != nil)
        let pcie1r = mcClient("pcie1r")
        #expect(m.hv.hostWrite(address: mc.sidBase + UInt64(pcie1r.overrideOffset), value: 0x06, width: .word,
                               client: m.client).value != nil)
    }

    static func memoryControllerAttacks(vm: VMHandle) -> [Attack] {
        func sid(_ rule: TrapRule, _ client: String, security: Bool = false, _ value: UInt64, streams: [UInt16] = []) -> Attack {
            let c = mcClient(client)
            let offset = UInt64(security ? c.securityOffset : c.overrideOffset)
            return Attack(name: "MC \(client) \(security ? "security" : "override") 0x\(String(value, radix: 16))", rule: rule,
                          window: "mc-sid", register: "\(client).\(security ? "SECURITY" : "OVERRIDE")", offset: offset,
                          value: value, width: 4, streams: streams) { m in
                m.hv.hostWrite(address: mc.sidBase + offset, value: value, width: .word, client: m.client).deniedEvent
            }
        }
        return [
            sid(.mcOverrideForeignStream, "pcie1r", 0x15, streams: [0x15]),
            sid(.mcForeignClient, "sdmmcrab", 0x05, streams: [0x02]),
            sid(.mcForeignClient, "sdmmcwab", security: true, 0x1_0100, streams: [0x02]),
            sid(.mcOverridePassthrough, "pcie1w", 0x7F, streams: [0x7F]),
            Attack(name: "MC bypass configuration write", rule: .mcBypassConfig, window: "mc-broadcast",
                   register: "MC_SMMU_BYPASS_CONFIG", offset: 0x1820, value: 0, width: 4) { m in
                m.hv.hostWrite(address: mc.broadcastBase + 0x1820, value: 0, width: .word, client: m.client).deniedEvent
            },
            Attack(name: "VM_ASSIGN_STREAM of a stream a host MC client routes to", rule: .assignStreamMCRouted,
                   window: "niso1a", register: nil, offset: nil, value: 0x06, width: nil, streams: [0x06]) {
                $0.hv.vmAssignStream(vm, window: 0, stream: 0x06, client: $0.client).deniedEvent
            },
        ]
    }
}
