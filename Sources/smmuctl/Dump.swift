import ArgumentParser
import Foundation
import SMMUClient
import WireProtocol

/// DUMP: the daemon's whole state. By default each window's registers as a table (virtual beside
/// physical, differences marked), then every other part of the JSON pretty-printed.
struct Dump: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Dump the whole state (admin).")
    @OptionGroup var connection: Connection
    @Flag(help: "Print the JSON as the daemon sent it.") var json = false

    func run() throws {
        let (client, _) = try connection.open(defaultRole: .admin)
        let text = try perform { () throws(SMMUClientError) in try client.dump() }
        if json {
            print(text)
        } else {
            print(DumpRenderer.render(text))
        }
    }
}

enum DumpRenderer {
    /// Renders the DUMP JSON; anything not shaped as expected falls back to pretty JSON.
    static func render(_ text: String) -> String {
        guard let object = try? JSONSerialization.jsonObject(with: Data(text.utf8)),
            var top = object as? [String: Any]
        else { return text }
        var out: [String] = []
        if let state = top.removeValue(forKey: "state") { out.append("state: \(state)") }
        if let windows = top["windows"] as? [[String: Any]] {
            top.removeValue(forKey: "windows")
            for w in windows { out.append(renderWindow(w)) }
        }
        for key in top.keys.sorted() {
            out.append("\(key):")
            out.append(JSONText.pretty(top[key] ?? NSNull()))
        }
        return out.joined(separator: "\n\n")
    }

    static func renderWindow(_ w: [String: Any]) -> String {
        var title = "window \(w["index"] ?? "?")"
        if let name = w["name"] { title += " \(name)" }
        if let base = w["base"] { title += " @ \(base)" }
        guard let registers = w["registers"] as? [[String: Any]] else { return title + "\n" + JSONText.pretty(w) }
        var differ = 0
        let rows = registers.map { r -> [String] in
            let name = "\(r["register"] ?? "?")[\(r["index"] ?? 0)]"
            let v = "\(r["virtual"] ?? "")", p = "\(r["physical"] ?? "")"
            if v != p { differ += 1 }
            return [name, "\(r["offset"] ?? "")", v, p, v == p ? "" : "*"]
        }
        var text = title + " (\(registers.count) registers, \(differ) differ: *)\n"
        text += Table.render(header: ["register", "offset", "virtual", "physical", ""], rows: rows)
        let rest = w.filter { !["index", "name", "base", "registers"].contains($0.key) }
        if !rest.isEmpty { text += "\n" + JSONText.pretty(rest) }
        return text
    }
}

enum JSONText {
    /// Pretty-prints a JSON value (or JSON text); returns text unchanged if it is not JSON.
    static func pretty(_ value: Any) -> String {
        var object = value
        if let text = value as? String {
            guard let parsed = try? JSONSerialization.jsonObject(with: Data(text.utf8), options: [.fragmentsAllowed]) else {
                return text
            }
            object = parsed
        }
        guard
            let data = try? JSONSerialization.data(
                withJSONObject: object, options: [.prettyPrinted, .sortedKeys, .fragmentsAllowed])
        else { return "\(value)" }
        return String(decoding: data, as: UTF8.self)
    }
}
