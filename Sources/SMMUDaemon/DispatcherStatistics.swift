import WireProtocol

/// Protocol-level counters: operations by opcode and status, connections. STATS and STATUS= read them.
struct DispatcherStatistics {
    /// [opcode raw value][status raw value]
    private var operations = [[Int]](repeating: [Int](repeating: 0, count: Status.allCases.count), count: 256)
    var connectionsOpened = 0
    var connectionsOpen = 0
    var unsupported = 0
    var malformed = 0

    mutating func count(_ opcode: UInt8, _ status: Status) { operations[Int(opcode)][Int(status.rawValue)] += 1 }

    var totalOperations: Int { operations.reduce(0) { $0 + $1.reduce(0, +) } }

    /// {"READ": {"OK": 3, "DEFERRED": 1}, ...} with only the non-zero entries.
    var byOpcode: [String: [String: Int]] {
        var out: [String: [String: Int]] = [:]
        for (op, row) in operations.enumerated() {
            for (status, n) in row.enumerated() where n > 0 {
                let name = Opcode(rawValue: UInt8(op)).map { "\($0)" } ?? "0x" + String(op, radix: 16)
                out[name, default: [:]]["\(Status(rawValue: UInt32(status))!)"] = n
            }
        }
        return out
    }
}
