/// The table the benchmark prints: one row per measurement, with the floor, the ratio and the verdict
/// where the issue sets a target.
struct Report {
    struct Row {
        var name: String
        var value: String
        var floor: String = ""
        var ratio: String = ""
        var target: String = ""
        var verdict: String = ""
    }

    private(set) var rows: [Row] = []
    private(set) var misses: [String] = []

    mutating func add(_ name: String, _ value: String, floor: String = "", ratio: String = "") {
        rows.append(Row(name: name, value: value, floor: floor, ratio: ratio))
    }

    /// A row with a target: `pass` decides PASS or MISS.
    mutating func add(_ name: String, _ value: String, floor: String = "", ratio: String = "", target: String, pass: Bool) {
        rows.append(Row(name: name, value: value, floor: floor, ratio: ratio, target: target, verdict: pass ? "PASS" : "MISS"))
        if !pass { misses.append(name) }
    }

    /// A row that could not be measured (the reason in place of the value).
    mutating func failed(_ name: String, _ reason: String, target: String = "") {
        rows.append(Row(name: name, value: "FAILED: " + reason, target: target, verdict: target.isEmpty ? "" : "MISS"))
        if !target.isEmpty { misses.append(name) }
    }

    func render() -> String {
        let header = Row(name: "measurement", value: "value", floor: "floor", ratio: "ratio", target: "target", verdict: "")
        let all = [header] + rows
        func width(_ key: KeyPath<Row, String>) -> Int { all.map { $0[keyPath: key].count }.max() ?? 0 }
        let widths = [width(\.name), width(\.value), width(\.floor), width(\.ratio), width(\.target)]
        func pad(_ s: String, _ n: Int, right: Bool = false) -> String {
            let fill = String(repeating: " ", count: max(0, n - s.count))
            return right ? fill + s : s + fill
        }
        func line(_ r: Row) -> String {
            "| " + [pad(r.name, widths[0]), pad(r.value, widths[1], right: true), pad(r.floor, widths[2], right: true),
                    pad(r.ratio, widths[3], right: true), pad(r.target, widths[4]), pad(r.verdict, 4)].joined(separator: " | ") + " |"
        }
        let rule = "|" + (widths + [4]).map { String(repeating: "-", count: $0 + 2) }.joined(separator: "|") + "|"
        return ([line(header), rule] + rows.map(line)).joined(separator: "\n")
    }
}

func fixed(_ v: Double, _ digits: Int = 1) -> String {
    guard v.isFinite else { return "-" }
    var scale = 1.0
    for _ in 0..<digits { scale *= 10 }
    let r = (v * scale).rounded() / scale
    var s = String(r)
    if let dot = s.firstIndex(of: ".") {
        let decimals = s.distance(from: dot, to: s.endIndex) - 1
        if digits == 0 { s = String(s[..<dot]) } else if decimals < digits { s += String(repeating: "0", count: digits - decimals) }
    }
    return s
}

func microseconds(_ v: Double) -> String { fixed(v, 1) + " µs" }
func rate(_ v: Double) -> String { v >= 1e6 ? fixed(v / 1e6, 2) + "M/s" : fixed(v / 1e3, 1) + "k/s" }
func ratio(_ v: Double) -> String { fixed(v, 2) + "x" }
