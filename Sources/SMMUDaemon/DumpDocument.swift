import Foundation
import Hypervisor

/// DUMP's JSON, kept under the protocol's 64 KiB payload limit: when the full document is larger,
/// register lists are cut (each window keeps its first registers, the windows sharing the room) and
/// `"truncated": true` says so; VM memory past the snapshot's limit is counted in `memory_ranges_omitted`.
struct DumpDocument {
    let hypervisor: Hypervisor

    /// Bytes one register entry takes in the JSON, at most (`{"index":127,"offset":"0x7f058",...}`).
    static let registerEntryBytes = 160

    /// The document, encoded once in the usual case: the register lists are cut to what the limit can hold
    /// before encoding (round-robin over the windows), so the work is bounded by the limit, not by the state.
    func json(limit: Int) -> String {
        var snapshot = hypervisor.snapshot()
        let all = snapshot.windows.map(\.registers)
        for w in snapshot.windows.indices { snapshot.windows[w].registers = [] }
        let rest = encode(snapshot, truncated: true).utf8.count
        var keep = max(0, (limit - rest) / Self.registerEntryBytes)
        while true {
            var kept = all.map { _ in [HypervisorSnapshot.Register]() }
            var left = keep
            var round = 0
            while left > 0, all.contains(where: { $0.count > round }) {
                for w in all.indices where left > 0 && all[w].count > round {
                    kept[w].append(all[w][round])
                    left -= 1
                }
                round += 1
            }
            for w in snapshot.windows.indices { snapshot.windows[w].registers = kept[w] }
            let truncated = kept.map(\.count) != all.map(\.count) || snapshot.memory_ranges_omitted > 0
            let text = encode(snapshot, truncated: truncated)
            if text.utf8.count <= limit { return text }
            guard keep > 0 else { return #"{"truncated":true}"# }
            keep /= 2
        }
    }

    private func encode(_ snapshot: HypervisorSnapshot, truncated: Bool) -> String {
        struct Document: Encodable {
            var snapshot: HypervisorSnapshot
            var truncated: Bool
            func encode(to encoder: Encoder) throws {
                try snapshot.encode(to: encoder)
                var c = encoder.container(keyedBy: Key.self)
                try c.encode(truncated, forKey: .truncated)
            }
            enum Key: String, CodingKey { case truncated }
        }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let data = (try? encoder.encode(Document(snapshot: snapshot, truncated: truncated))) ?? Data("{}".utf8)
        return String(decoding: data, as: UTF8.self)
    }
}
