import Glibc
import SMMUClient
import WireProtocol

/// Nanoseconds on the monotonic clock (cheaper and steadier than Foundation's dates).
@inline(__always) func monotonicNanoseconds() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
}

/// Why a measurement could not be taken.
enum BenchError: Error, CustomStringConvertible {
    case client(String, SMMUClientError)
    case unexpected(String)
    var description: String {
        switch self {
        case .client(let what, let e): "\(what): \(e)"
        case .unexpected(let s): s
        }
    }
}

/// Latency percentiles of one set of samples, in microseconds.
struct Latency {
    var p50: Double
    var p99: Double

    init(samples: [UInt64]) {
        let sorted = samples.sorted()
        func at(_ q: Double) -> Double { Double(sorted[min(sorted.count - 1, Int(Double(sorted.count) * q))]) / 1000 }
        p50 = at(0.50)
        p99 = at(0.99)
    }

    /// The median of each percentile over several rounds.
    static func median(_ rounds: [Latency]) -> Latency {
        Latency(p50: medianOf(rounds.map(\.p50)), p99: medianOf(rounds.map(\.p99)))
    }

    init(p50: Double, p99: Double) {
        self.p50 = p50
        self.p99 = p99
    }
}

func medianOf(_ values: [Double]) -> Double {
    let s = values.sorted()
    return s.isEmpty ? .nan : s[s.count / 2]
}

/// The READ/WRITE mix the socket rows use: a READ of one register and a WRITE of another, both
/// answered OK by the server under test (the floor answers anything).
struct RegisterWorkload {
    var readAddress: UInt64
    var writeAddress: UInt64
    var writeValue: UInt64

    /// One request outstanding: `count` READs and `count` WRITEs through the client's typed calls, alternating,
    /// each timed on its own; appended to `reads` and `writes` in nanoseconds.
    func roundTrips(_ client: SMMUClient, count: Int, reads: inout [UInt64], writes: inout [UInt64]) throws(BenchError) {
        do {
            for _ in 0..<50 { _ = try client.read(address: readAddress) }  // warm both sides up
            for _ in 0..<count {
                var t0 = monotonicNanoseconds()
                _ = try client.read(address: readAddress)
                var t1 = monotonicNanoseconds()
                reads.append(t1 - t0)
                t0 = t1
                try client.write(address: writeAddress, value: writeValue)
                t1 = monotonicNanoseconds()
                writes.append(t1 - t0)
            }
        } catch {
            throw .client("round trip", error)
        }
    }

    /// Pipelined READs and WRITEs, alternating; see ``pipelinedRate(_:depth:seconds:label:request:)``.
    func throughput(_ client: SMMUClient, depth: Int, seconds: Double) throws(BenchError) -> Double {
        try pipelinedRate(client, depth: depth, seconds: seconds, label: "READ/WRITE depth \(depth)") { i in
            i % 2 == 0
                ? .read(ReadRequest(address: readAddress, width: 4))
                : .write(WriteRequest(address: writeAddress, value: writeValue, width: 4))
        }
    }
}

/// Pipelined requests: the client writes a window of `depth` requests at once and reads the answers,
/// window after window, for about `seconds`. Every answer must carry its request's tag and OK.
/// `request(i)` makes the i-th request of the run. Returns operations per second.
func pipelinedRate(
    _ client: SMMUClient, depth: Int, seconds: Double, label: String, request: (Int) -> Request
) throws(BenchError) -> Double {
    var tag: UInt32 = 0x1000_0000
    var window: [UInt8] = []
    window.reserveCapacity(depth * 48)
    let budget = UInt64(seconds * 1e9)
    var operations = 0
    var bad: String?
    let start = monotonicNanoseconds()
    repeat {
        window.removeAll(keepingCapacity: true)
        let first = tag
        for i in 0..<depth {
            request(operations + i).encode(tag: tag, into: &window)
            tag &+= 1
        }
        var expected = first
        do {
            try client.exchange(window, responses: depth) { header, _ in
                if header.tag != expected || header.status != 0, bad == nil {
                    bad = "tag \(header.tag) status \(header.status), expected tag \(expected) and OK"
                }
                expected &+= 1
            }
        } catch {
            throw .client(label, error)
        }
        if let bad { throw .unexpected("\(label): \(bad)") }
        operations += depth
    } while monotonicNanoseconds() - start < budget
    return Double(operations) / (Double(monotonicNanoseconds() - start) / 1e9)
}
