// The `trace:` section: record every request and its answer from the start (docs/trace-format.md).

extension DaemonConfiguration {
    /// Where and how much to record. Without `path`, nothing is recorded until an admin TRACE start names a file.
    public struct Trace: Sendable, Equatable {
        /// Recorded from the daemon's start, replaced if it exists; nil: only on a TRACE start.
        public var path: String?
        /// The trace ends, marked truncated, before it would pass this many bytes (TRACE start may name another).
        public var maxBytes: UInt64
        public static let defaultMaxBytes: UInt64 = 64 << 20
        public init(path: String? = nil, maxBytes: UInt64 = defaultMaxBytes) {
            self.path = path
            self.maxBytes = maxBytes
        }
    }
}

extension DaemonConfiguration.Trace: Decodable {
    enum Keys: String, CodingKey, CaseIterable { case path, max_bytes }

    public init(from decoder: any Decoder) throws {
        try decoder.rejectUnknownKeys(Keys.self)
        let c = try decoder.container(keyedBy: Keys.self)
        path = try c.decodeIfPresent(String.self, forKey: .path)
        maxBytes = try c.decodeIfPresent(UInt64.self, forKey: .max_bytes) ?? Self.defaultMaxBytes
    }

    /// 64 KiB to 1 TiB; an absolute path.
    func validate() throws(ConfigurationError) {
        if let path, !path.hasPrefix("/") { throw .invalid(key: "trace.path", reason: "must be an absolute path") }
        if maxBytes < 64 << 10 || maxBytes > 1 << 40 {
            throw .invalid(key: "trace.max_bytes", reason: "must be between 65536 and 1099511627776")
        }
    }
}
