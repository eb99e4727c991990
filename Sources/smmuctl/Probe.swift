import ArgumentParser
import ArmSMMUDriver
import SMMUClient
import SMMUModel
import WireProtocol

#if canImport(Glibc)
    import Glibc
#endif

/// probe: plays Linux's arm-smmu probe and reset against every window, printing what Linux prints.
/// A DEFERRED answer is -EPROBE_DEFER: retry until --wait runs out, then exit 3.
struct Probe: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Replay the Linux arm-smmu probe and reset on every window.")
    @OptionGroup var connection: Connection
    @Option(help: "Seconds to keep retrying a deferred probe (0: do not retry).") var wait: Int = 10
    @Flag(help: "Boot as with arm-smmu.disable_bypass=0 (S2CR bypass, sCR0.USFCFG clear).") var allowBypass = false
    @Flag(help: "Then program the Tegra234 memory controller's stream-ID overrides of every client, as Linux's tegra186_mc_resume() does.")
    var mc = false
    @Option(help: "Only these memory-controller clients (by Linux's name, e.g. sdmmcrab); implies --mc.") var mcClient: [String] = []

    func run() throws {
        let (client, hello) = try connection.open(defaultRole: .host)
        let probe = LinuxProbe(client: client, options: .init(disableBypass: !allowBypass))
        let deadline = monotonicSeconds() + Double(wait)
        while true {
            do {
                let reports = try probe.run(windows: hello.windows)
                for r in reports {
                    for line in r.lines { print("arm-smmu \(r.deviceName): \(line)") }
                    print("arm-smmu \(r.deviceName): reset: sCR0 \(hex(r.initialSCR0)) -> \(hex(r.finalSCR0)) (reads back \(hex(r.readBackSCR0))), \(r.reads) reads, \(r.writes) writes")
                    if r.configuration.numContextBanks != Int(r.window.numContextBanks)
                        || r.configuration.numMappingGroups != Int(r.window.numStreamMatchGroups)
                    {
                        print("arm-smmu \(r.deviceName): note: HELLO lists \(r.window.numContextBanks) context banks and \(r.window.numStreamMatchGroups) SMRs")
                    }
                }
                break
            } catch .deferred {
                let name = hello.windows.first.map { String($0.base, radix: 16) + ".iommu" } ?? "smmu"
                guard monotonicSeconds() < deadline else {
                    print("arm-smmu \(name): probe deferred (-EPROBE_DEFER): pKVM not finalized; giving up after \(wait)s")
                    throw ExitCode(ExitCodes.deferred)
                }
                print("arm-smmu \(name): probe deferred (-EPROBE_DEFER): pKVM not finalized; retrying")
                usleep(200_000)
            } catch {
                printError("smmuctl: probe failed: \(error)")
                throw ExitCode(ExitCodes.failure)
            }
        }
        if mc || !mcClient.isEmpty { try programMemoryController(client) }
    }

    /// `tegra186_mc_client_sid_override()` for each client of Linux's `tegra234_mc_clients[]` with its own stream ID,
    /// printing what Linux would (the WARN when an override was off) and what the hypervisor refused.
    private func programMemoryController(_ client: SMMUClient) throws {
        let table = MemoryControllerConfiguration.tegra234
        var chosen = table.clients
        if !mcClient.isEmpty {
            let unknown = mcClient.filter { table.client(named: $0) == nil }
            guard unknown.isEmpty else {
                printError("smmuctl: no memory-controller client named \(unknown.joined(separator: ", "))")
                throw ExitCode(ExitCodes.failure)
            }
            chosen = chosen.filter { mcClient.contains($0.name) }
        }
        var refused = 0
        for c in chosen {
            let linux = LinuxMemoryControllerProbe.Client(name: c.name, override: table.sidBase + UInt64(c.overrideOffset),
                                                          security: table.sidBase + UInt64(c.securityOffset))
            let outcome: LinuxMemoryControllerProbe.Outcome
            do {
                outcome = try LinuxMemoryControllerProbe.overrideStreamID(linux, sid: c.sid, via: client)
            } catch {
                guard case .status(.denied) = error else { throw error }
                refused += 1
                print("tegra-mc: \(c.name): stream ID \(hex(UInt64(c.sid))): DENIED by the hypervisor (the client is not the host's)")
                continue
            }
            let what = outcome.locked ? "locked, left alone"
                : outcome.writes.isEmpty ? "already set" : "wrote \(outcome.writes.joined(separator: " and "))"
            print("tegra-mc: \(c.name): stream ID \(hex(UInt64(c.sid))): \(what)\(outcome.warned ? " (WARN: override was off)" : "")")
        }
        print("tegra-mc: \(chosen.count) clients, \(refused) refused")
    }

    private func monotonicSeconds() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
    }
}
