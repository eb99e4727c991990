/// What is wrong with a configuration file, naming the key (`memory.host_ram[0].size`) so an operator can fix it.
public enum ConfigurationError: Error, Equatable, CustomStringConvertible {
    /// The file could not be read.
    case unreadable(path: String, reason: String)
    /// The YAML itself is malformed.
    case syntax(String)
    /// A key is missing, unknown, of the wrong type, or out of range.
    case invalid(key: String, reason: String)

    public var description: String {
        switch self {
        case .unreadable(let path, let reason): "config error: \(path): \(reason)"
        case .syntax(let message): "config error: YAML: \(message)"
        case .invalid(let key, let reason): "config error: \(key.isEmpty ? "(top level)" : key): \(reason)"
        }
    }

    /// The dotted key path of a decoding position: `memory.host_ram[0].size`.
    static func keyPath(_ path: [any CodingKey]) -> String {
        var text = ""
        for key in path {
            if let index = key.intValue, key.stringValue.hasPrefix("Index") || key.stringValue == String(index) {
                text += "[\(index)]"
            } else {
                text += (text.isEmpty ? "" : ".") + key.stringValue
            }
        }
        return text
    }

    /// Turns a DecodingError into a message naming the key and saying what was expected.
    static func from(_ error: DecodingError) -> ConfigurationError {
        switch error {
        case .keyNotFound(let key, let context):
            return .invalid(key: keyPath(context.codingPath + [key]), reason: "missing")
        case .valueNotFound(_, let context):
            return .invalid(key: keyPath(context.codingPath), reason: "missing value")
        case .typeMismatch(let type, let context):
            return .invalid(key: keyPath(context.codingPath), reason: "expected \(typeName(type))")
        case .dataCorrupted(let context):
            if let underlying = context.underlyingError { return .syntax(String(describing: underlying)) }
            return .invalid(key: keyPath(context.codingPath), reason: context.debugDescription)
        @unknown default:
            return .syntax(String(describing: error))
        }
    }

    private static func typeName(_ type: Any.Type) -> String {
        switch type {
        case is UInt64.Type, is UInt32.Type, is UInt16.Type, is Int.Type: "a non-negative integer (decimal, 0x.. or 0o..)"
        case is Bool.Type: "true or false"
        case is String.Type: "a string"
        default: "\(type)".contains("Array") ? "a list" : "a mapping (\(type))"
        }
    }
}

/// Any key, to see every key a mapping holds (Decodable alone ignores unknown ones).
struct AnyCodingKey: CodingKey {
    let stringValue: String
    let intValue: Int?
    init(stringValue: String) { self.stringValue = stringValue; intValue = nil }
    init(intValue: Int) { stringValue = String(intValue); self.intValue = intValue }
}

extension Decoder {
    /// Throws for the first key of this mapping that `Keys` does not name: a misspelt key must not be
    /// silently replaced by its default.
    func rejectUnknownKeys<Keys: CodingKey & CaseIterable>(_: Keys.Type) throws {
        let container = try container(keyedBy: AnyCodingKey.self)
        let known = Set(Keys.allCases.map(\.stringValue))
        for key in container.allKeys where !known.contains(key.stringValue) {
            let expected = Keys.allCases.map(\.stringValue).joined(separator: ", ")
            throw DecodingError.dataCorrupted(.init(
                codingPath: codingPath + [key], debugDescription: "unknown key (expected one of: \(expected))"))
        }
    }
}
