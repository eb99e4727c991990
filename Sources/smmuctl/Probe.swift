import ArgumentParser
import ArmSMMUDriver
import SMMUClient
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
                return
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
    }

    private func monotonicSeconds() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
    }
}
