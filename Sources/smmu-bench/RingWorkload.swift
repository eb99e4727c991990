import Glibc
import SMMUClient
import WireProtocol

/// The socket and the shared-memory ring (protocol v1.1 RING) side by side against the same daemon: a host
/// READ round trip, back to back (busy), alternating blocks so drift hits both; then the daemon's CPU while a
/// ring is attached and idle (its thread must sleep, not spin).
struct RingWorkload {
    struct Result {
        var socket: Latency
        var ring: Latency
        /// Daemon CPU time per wall second over an idle stretch with the ring attached, in percent.
        var idleCPUPercent: Double
    }

    static func run(daemon: DaemonProcess, samples: Int) throws(BenchError) -> Result {
        let host = try daemon.connect()
        let ring: SMMUClientRing
        do throws(SMMUClientError) {
            _ = try host.hello(role: .host, name: "smmu-bench-ring")
            ring = try SMMUClientRing(client: host)
        } catch { throw .client("ring setup", error) }
        defer { host.close() }
        guard let window = host.greeting?.windows.first else { throw .unexpected("no window") }
        let address = window.base + 0x20   // IDR0
        var socket: [UInt64] = [], shared: [UInt64] = []
        socket.reserveCapacity(samples)
        shared.reserveCapacity(samples)
        do throws(SMMUClientError) {
            while socket.count < samples {
                for _ in 0..<500 {
                    let t0 = monotonicNanoseconds()
                    _ = try host.read(address: address)
                    socket.append(monotonicNanoseconds() - t0)
                }
                for _ in 0..<500 {
                    let t0 = monotonicNanoseconds()
                    _ = try ring.read(address: address)
                    shared.append(monotonicNanoseconds() - t0)
                }
            }
        } catch { throw .client("READ", error) }
        // Idle: the ring's thread spins 200 µs after the last request, then sleeps on its futex.
        usleep(100_000)
        let cpu0 = Self.cpuTicks(daemon.pid), t0 = monotonicNanoseconds()
        sleep(2)
        let cpu1 = Self.cpuTicks(daemon.pid), t1 = monotonicNanoseconds()
        let ticks = Double(sysconf(Int32(_SC_CLK_TCK)))
        let idle = Double(cpu1 - cpu0) / ticks / (Double(t1 - t0) / 1e9) * 100
        return Result(socket: Latency(samples: socket), ring: Latency(samples: shared), idleCPUPercent: idle)
    }

    /// utime + stime of a process, in clock ticks (/proc/PID/stat fields 14 and 15).
    static func cpuTicks(_ pid: Int32) -> Int {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let close = stat.lastIndex(of: ")") else { return 0 }
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        guard fields.count > 13 else { return 0 }
        return (Int(fields[11]) ?? 0) + (Int(fields[12]) ?? 0)
    }
}
