import Foundation
import Hypervisor

/// DUMP's JSON, kept under the protocol's 64 KiB payload limit: when the full document is larger,
/// register lists are cut (largest first) and `"truncated": true` says so.
struct DumpDocument {
    let hypervisor: Hypervisor

    func json(limit: Int) -> String {
        var snapshot = hypervisor.snapshot()
        var truncated = false
        while true {
            let text = encode(snapshot, truncated: truncated)
            if text.utf8.count <= limit { return text }
            guard let w = snapshot.windows.indices.max(by: { snapshot.windows[$0].registers.count < snapshot.windows[$1].registers.count }),
                  !snapshot.windows[w].registers.isEmpty else { return #"{"truncated":true}"# }
            snapshot.windows[w].registers.removeLast(max(1, snapshot.windows[w].registers.count / 4))
            truncated = true
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
