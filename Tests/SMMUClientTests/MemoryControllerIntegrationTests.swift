import Foundation
import Testing
import WireProtocol

@testable import SMMUClient

/// The Tegra234 daemon's memory controller over the socket: Linux's override sequence (as a newcomer's driver plays
/// it) is accepted, the MC windows are not HELLO windows, an attack is DENIED, MC_DMA reports the route.
@Suite struct MemoryControllerIntegrationTests {
    static let sidBase: UInt64 = 0x02C0_0000
    /// From Linux's table: sdmmcrab (0x63, override 0x318) and sdmmcwab (0x67, 0x338), SDMMC4's stream 0x02 on niso1.
    static let sdmmc = [
        LinuxMemoryControllerProbe.Client(name: "sdmmcrab", override: sidBase + 0x318, security: sidBase + 0x31C),
        LinuxMemoryControllerProbe.Client(name: "sdmmcwab", override: sidBase + 0x338, security: sidBase + 0x33C),
    ]

    @Test func linuxSequenceAndAnAttackOverTheSocket() throws {
        guard ProcessInfo.processInfo.environment["SMMU_HYPD_BIN"] != nil else { return }
        let daemon = try RunningDaemon()
        defer { daemon.stop() }
        let (client, hello) = try daemon.connect()
        #expect(!hello.windows.contains { $0.base <= Self.sidBase && Self.sidBase < $0.base + $0.size })
        for c in Self.sdmmc {
            // probe_device with the device's stream (here 0x20, a host stream), then back to SDMMC4's own.
            for sid: UInt8 in [0x20, 0x02] {
                let outcome = try LinuxMemoryControllerProbe.overrideStreamID(c, sid: sid, via: client)
                #expect(!outcome.warned && !outcome.locked && outcome.writes == ["override"], "\(outcome)")
            }
        }
        #expect(throws: SMMUClientError.status(.denied)) {   // the passthrough ID: around every SMMU
            try client.write(address: Self.sdmmc[0].override, value: 0x7F)
        }
        #expect(throws: SMMUClientError.status(.denied)) { try client.write(address: 0x02C1_1820, value: 0) }
        let (device, _) = try daemon.connect(role: .device)
        let r = try device.mcDMA(client: 0x63, iova: 0x8000_0000)
        #expect(r.window == 0 && r.stream == 0x02)   // niso1's first instance saw SDMMC4's stream
        #expect(throws: SMMUClientError.status(.invalid)) { _ = try device.mcDMA(client: 0xFFFF, iova: 0) }
    }

    /// `smmuctl probe --mc` replays Linux's override programming for every client (as `tegra186_mc_resume()` does)
    /// after the SMMU probe: none is refused on a fresh daemon, and a client the host re-pointed is put back.
    @Test func smmuctlProbeProgramsEveryClient() throws {
        guard let daemonBinary = ProcessInfo.processInfo.environment["SMMU_HYPD_BIN"] else { return }
        let daemon = try RunningDaemon()
        defer { daemon.stop() }
        let (client, _) = try daemon.connect()
        try client.write(address: Self.sdmmc[0].override, value: 0x20)   // the host points SDMMC4's reads at its 0x20
        let smmuctl = Process()
        smmuctl.executableURL = URL(fileURLWithPath: daemonBinary).deletingLastPathComponent().appendingPathComponent("smmuctl")
        smmuctl.arguments = ["probe", "--mc", "--socket", daemon.socketPath]
        let pipe = Pipe()
        smmuctl.standardOutput = pipe
        try smmuctl.run()
        let output = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        smmuctl.waitUntilExit()
        #expect(smmuctl.terminationStatus == 0)
        #expect(output.contains("tegra-mc: 82 clients, 0 refused"), "\(output.suffix(300))")
        #expect(output.contains("tegra-mc: sdmmcrab: stream ID 0x2: wrote override"))
        #expect(try client.read(address: Self.sdmmc[0].override) & 0xFF == 0x02)
    }
}
