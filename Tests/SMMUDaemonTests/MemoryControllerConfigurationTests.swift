import Testing
@testable import SMMUDaemon
import SMMUModel

/// The `memory_controller` section: the Tegra234 default, overrides, and errors naming the key (exit 78).
struct MemoryControllerConfigurationTests {
    static let tegra = """
        topology: tegra234
        memory:
          host_ram: [{base: 0x80000000, size: 0x10000000}]
          hypervisor_ram: {base: 0x7f000000, size: 0x00400000}
        """

    func policyMC(_ yaml: String) throws -> MemoryControllerConfiguration? {
        try DaemonCore.policy(DaemonConfiguration.parse(yaml: yaml)).topology.memoryController
    }

    @Test func tegra234HasLinuxsTableByDefault() throws {
        #expect(try policyMC(Self.tegra) == .tegra234)
        #expect(try policyMC(DaemonConfigurationTests.minimal) == nil)
    }

    @Test func theTableAndWindowsCanBeReplaced() throws {
        let mc = try #require(try policyMC(Self.tegra + """

            memory_controller:
              passthrough_is_host: true
              clients:
                - { name: sdmmcrab, id: 0x63, smmu: niso1, sid: 0x02, override: 0x318 }
                - { name: odd, id: 0x200, smmu: iso, sid: 0x01, override: 0x1000, security: 0x2000 }
            """))
        #expect(mc.passthroughIsHost && mc.sidBase == 0x02C0_0000 && mc.clients.count == 2)
        #expect(mc.clients[1].securityOffset == 0x2000 && mc.clients[0].securityOffset == 0x31C)
        #expect(try policyMC(Self.tegra + "\nmemory_controller: {enabled: false}") == nil)
        let generic = try #require(try policyMC(DaemonConfigurationTests.minimal + """

            memory_controller:
              sid_base: 0x10000000
              broadcast_base: 0x10010000
              clients: [{ name: dev, id: 1, smmu: mmu500, sid: 0x10, override: 0x8 }]
            """))
        #expect(generic.clients.map(\.smmu) == ["mmu500"])
    }

    @Test(arguments: [
        ("\nmemory_controller: {sid_bsae: 0}", "config error: memory_controller.sid_bsae: unknown key"),
        ("\nmemory_controller: {clients: [{name: a, id: 1, smmu: niso1, sid: 2, override: 0x318, colour: 1}]}",
         "config error: memory_controller.clients[0].colour: unknown key"),
        ("\nmemory_controller: {clients: [{name: a, id: 1, smmu: niso9, sid: 2, override: 0x318}]}",
         "config error: memory_controller.clients[0].smmu: no SMMU named \"niso9\""),
        ("\nmemory_controller: {clients: [{name: a, id: 1, smmu: niso1, sid: 0x7f, override: 0x318}]}",
         "config error: memory_controller.clients[0].sid:"),
        ("\nmemory_controller: {clients: [{name: a, id: 1, smmu: niso1, sid: 2, override: 0x31a}]}",
         "config error: memory_controller.clients[0].override:"),
        ("\nmemory_controller: {clients: [{name: a, id: 1, smmu: niso1, sid: 2, override: 0x318}, {name: b, id: 2, smmu: niso1, sid: 2, override: 0x31c}]}",
         "config error: memory_controller.clients[1].override:"),
        ("\nmemory_controller: {clients: [{name: a, id: 1, smmu: niso1, sid: 2, override: 0x318}, {name: a, id: 2, smmu: niso1, sid: 2, override: 0x320}]}",
         "config error: memory_controller.clients[1].name:"),
        ("\nmemory_controller: {sid_base: 0x08000000}", "config error: memory_controller.sid_base: overlaps SMMU window niso1a"),
        ("\nmemory_controller: {broadcast_base: 0x80000000}", "config error: memory_controller.broadcast_base: overlaps memory"),
        ("\nmemory_controller: {sid_base: 0x02c08000}", "config error: memory_controller.sid_base: must be a multiple of 0x10000"),
    ])
    func brokenSectionNamesTheKey(extra: String, message: String) {
        do {
            _ = try DaemonConfiguration.parse(yaml: Self.tegra + extra)
            Issue.record("accepted: \(extra)")
        } catch {
            #expect(error.description.hasPrefix(message), "got: \(error.description)")
        }
    }

    @Test func otherTopologiesNeedTheWholeSection() {
        #expect(throws: ConfigurationError.invalid(key: "memory_controller.sid_base", reason: "is required for topology generic4k")) {
            _ = try DaemonConfiguration.parse(yaml: DaemonConfigurationTests.minimal + "\nmemory_controller: {passthrough_is_host: false}")
        }
    }
}
