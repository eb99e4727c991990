import WireProtocol

/// Protocol-level counters: operations by opcode and status, connections. STATS and STATUS= read them.
struct DispatcherStatistics {
    /// [opcode raw value * statuses + status raw value], flat: counted on every request.
    private var operations = [Int](repeating: 0, count: 256 * Self.statuses)
    private static let statuses = Int(Status.allCases.map(\.rawValue).max()!) + 1
    var connectionsOpened = 0
    var connectionsOpen = 0
    var unsupported = 0
    var malformed = 0

    mutating func count(_ opcode: UInt8, _ status: Status) {
        operations[Int(opcode) * Self.statuses + Int(status.rawValue)] &+= 1
    }

    var totalOperations: Int { operations.reduce(0, +) }

    /// {"READ": {"OK": 3, "DEFERRED": 1}, ...} with only the non-zero entries.
    var byOpcode: [String: [String: Int]] {
        var out: [String: [String: Int]] = [:]
        for op in 0..<256 {
            for status in 0..<Self.statuses where operations[op * Self.statuses + status] > 0 {
                let n = operations[op * Self.statuses + status]
                let name = Opcode(rawValue: UInt8(op)).map { "\($0)" } ?? "0x" + String(op, radix: 16)
                out[name, default: [:]]["\(Status(rawValue: UInt32(status))!)"] = n
            }
        }
        return out
    }
}
