import Foundation

/// Renders the daemon's DUMP JSON for people: each window's registers as a table, virtual (what
/// the host sees) beside physical (what the hypervisor programmed), differences marked with `*`;
/// every other part pretty-printed. Anything not of the documented shape falls back to pretty JSON.
public enum DumpRenderer {
    /// Renders the DUMP JSON; anything not shaped as expected falls back to pretty JSON.
    public static func render(_ text: String) -> String {
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
        text += TextTable.render(header: ["register", "offset", "virtual", "physical", ""], rows: rows)
        let rest = w.filter { !["index", "name", "base", "registers"].contains($0.key) }
        if !rest.isEmpty { text += "\n" + JSONText.pretty(rest) }
        return text
    }
}

public enum JSONText {
    /// Pretty-prints a JSON value (or JSON text); returns text unchanged if it is not JSON.
    public static func pretty(_ value: Any) -> String {
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
