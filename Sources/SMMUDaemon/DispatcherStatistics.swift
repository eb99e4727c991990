import WireProtocol

/// Protocol-level counters: operations by the requester's role, opcode and status, connections. STATS and STATUS=
/// read them. Operations are kept per role because a host's STATS show only its own: a device's DMA answers would
/// tell it how a protected VM's streams fault.
struct DispatcherStatistics {
    /// [role slot][opcode raw value * statuses + status raw value], flat: counted on every request.
    var operations = [[Int]](repeating: [Int](repeating: 0, count: 256 * Self.statuses), count: 4)
    static let statuses = Int(Status.allCases.map(\.rawValue).max()!) + 1
    var connectionsOpened = 0
    var connectionsOpen = 0
    var unsupported = 0
    var malformed = 0

    /// Slot 0 holds requests answered before a HELLO was accepted.
    private static func slot(_ role: Role?) -> Int { role.map { Int($0.rawValue) } ?? 0 }

    mutating func count(_ opcode: UInt8, _ status: Status, role: Role?) {
        operations[Self.slot(role)][Int(opcode) * Self.statuses + Int(status.rawValue)] &+= 1
    }

    var totalOperations: Int { operations.reduce(0) { $0 + $1.reduce(0, +) } }

    func totalOperations(role: Role?) -> Int { operations[Self.slot(role)].reduce(0, +) }

    /// Every slot: un-greeted, then each role.
    static let everyone: [Role?] = [nil, .host, .device, .admin]

    /// {"READ": {"OK": 3, "DEFERRED": 1}, ...} with only the non-zero entries, of the requests of `roles`.
    func byOpcode(of roles: [Role?] = Self.everyone) -> [String: [String: Int]] {
        var out: [String: [String: Int]] = [:]
        for slot in roles.map(Self.slot) {
            for op in 0..<256 {
                for status in 0..<Self.statuses where operations[slot][op * Self.statuses + status] > 0 {
                    let n = operations[slot][op * Self.statuses + status]
                    let name = Opcode(rawValue: UInt8(op)).map { "\($0)" } ?? "0x" + String(op, radix: 16)
                    out[name, default: [:]]["\(Status(rawValue: UInt32(status))!)", default: 0] += n
                }
            }
        }
        return out
    }
}
