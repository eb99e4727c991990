// Decodable conformances: snake_case keys, defaults for optional sections, unknown keys rejected.

extension DaemonConfiguration: Decodable {
    enum Keys: String, CodingKey, CaseIterable {
        case topology, memory, hypervisor, finalization, socket, roles, audit, limits, watchdog, fd_store
        case memory_controller, trace
    }

    public init(from decoder: any Decoder) throws {
        try decoder.rejectUnknownKeys(Keys.self)
        let c = try decoder.container(keyedBy: Keys.self)
        topology = try c.decode(TopologyPreset.self, forKey: .topology)
        memory = try c.decode(Memory.self, forKey: .memory)
        hypervisor = try c.decodeIfPresent(HypervisorSection.self, forKey: .hypervisor)
            ?? HypervisorSection(reservedContextBanks: 8, reservedSMRs: 8, hypervisorStreams: [])
        finalization = try c.decodeIfPresent(Finalization.self, forKey: .finalization)
            ?? Finalization(mode: .delay, delayMilliseconds: 200)
        socket = try c.decodeIfPresent(Socket.self, forKey: .socket)
            ?? Socket(path: "/run/smmu-hypd/smmu-hypd.sock", mode: 0o660)
        roles = try c.decodeIfPresent(Roles.self, forKey: .roles)
            ?? Roles()
        audit = try c.decodeIfPresent(Audit.self, forKey: .audit)
            ?? Audit(burst: 64, summaryIntervalMilliseconds: 1000, maxRecordsPerSecond: 200)
        limits = try c.decodeIfPresent(Limits.self, forKey: .limits)
            ?? Limits(maxConnections: 1024, helloTimeoutMilliseconds: 5000, maxBufferedOutput: 64 << 20)
        watchdog = try c.decodeIfPresent(Bool.self, forKey: .watchdog) ?? true
        fdStore = try c.decodeIfPresent(Bool.self, forKey: .fd_store) ?? false
        memoryController = try c.decodeIfPresent(MemoryController.self, forKey: .memory_controller)
        trace = try c.decodeIfPresent(Trace.self, forKey: .trace) ?? Trace()
    }
}

extension DaemonConfiguration.Memory: Decodable {
    enum Keys: String, CodingKey, CaseIterable { case host_ram, hypervisor_ram, host_dma_ranges }

    public init(from decoder: any Decoder) throws {
        try decoder.rejectUnknownKeys(Keys.self)
        let c = try decoder.container(keyedBy: Keys.self)
        hostRAM = try c.decode([DaemonConfiguration.MemoryRange].self, forKey: .host_ram)
        hypervisorRAM = try c.decode(DaemonConfiguration.MemoryRange.self, forKey: .hypervisor_ram)
        hostDMARanges = try c.decodeIfPresent([DaemonConfiguration.MemoryRange].self, forKey: .host_dma_ranges) ?? []
    }
}

extension DaemonConfiguration.MemoryRange {
    enum Keys: String, CodingKey, CaseIterable { case base, size }

    public init(from decoder: any Decoder) throws {
        try decoder.rejectUnknownKeys(Keys.self)
        let c = try decoder.container(keyedBy: Keys.self)
        base = try c.decode(UInt64.self, forKey: .base)
        size = try c.decode(UInt64.self, forKey: .size)
    }
}

extension DaemonConfiguration.HypervisorSection: Decodable {
    enum Keys: String, CodingKey, CaseIterable { case reserved_context_banks, reserved_smrs, hypervisor_streams }

    public init(from decoder: any Decoder) throws {
        try decoder.rejectUnknownKeys(Keys.self)
        let c = try decoder.container(keyedBy: Keys.self)
        reservedContextBanks = try c.decodeIfPresent(Int.self, forKey: .reserved_context_banks) ?? 8
        reservedSMRs = try c.decodeIfPresent(Int.self, forKey: .reserved_smrs) ?? 8
        hypervisorStreams = try c.decodeIfPresent([DaemonConfiguration.HypervisorStreams].self, forKey: .hypervisor_streams) ?? []
    }
}

extension DaemonConfiguration.HypervisorStreams: Decodable {
    enum Keys: String, CodingKey, CaseIterable { case smmu, streams }

    public init(from decoder: any Decoder) throws {
        try decoder.rejectUnknownKeys(Keys.self)
        let c = try decoder.container(keyedBy: Keys.self)
        smmu = try c.decode(String.self, forKey: .smmu)
        var list = try c.nestedUnkeyedContainer(forKey: .streams)
        streams = []
        while !list.isAtEnd {
            let value = try list.decode(UInt64.self)
            guard value <= 0xFFFF else {
                throw DecodingError.dataCorrupted(.init(
                    codingPath: list.codingPath + [AnyCodingKey(intValue: list.currentIndex - 1)],
                    debugDescription: "stream ID 0x\(String(value, radix: 16)) is over 16 bits"))
            }
            streams.append(UInt16(value))
        }
    }
}

extension DaemonConfiguration.Finalization: Decodable {
    enum Keys: String, CodingKey, CaseIterable { case mode, delay_ms }

    public init(from decoder: any Decoder) throws {
        try decoder.rejectUnknownKeys(Keys.self)
        let c = try decoder.container(keyedBy: Keys.self)
        mode = try c.decodeIfPresent(DaemonConfiguration.FinalizationMode.self, forKey: .mode) ?? .delay
        delayMilliseconds = try c.decodeIfPresent(Int.self, forKey: .delay_ms) ?? 200
        // A delay the mode would ignore is a mistake in the file: say so rather than wait for nothing.
        if mode != .delay, c.contains(.delay_ms) {
            throw DecodingError.dataCorrupted(.init(codingPath: c.codingPath + [Keys.delay_ms],
                                                   debugDescription: "only with mode: delay (mode is \(mode.rawValue))"))
        }
    }
}

extension DaemonConfiguration.Socket: Decodable {
    enum Keys: String, CodingKey, CaseIterable { case path, mode }

    public init(from decoder: any Decoder) throws {
        try decoder.rejectUnknownKeys(Keys.self)
        let c = try decoder.container(keyedBy: Keys.self)
        path = try c.decodeIfPresent(String.self, forKey: .path) ?? "/run/smmu-hypd/smmu-hypd.sock"
        // Read the scalar's text: YAML 1.1 reads 0660 as octal, 1.2 as decimal; a file mode is always octal.
        if let text = try c.decodeIfPresent(String.self, forKey: .mode) {
            guard let mode = Self.parseMode(text) else {
                throw DecodingError.dataCorrupted(.init(
                    codingPath: c.codingPath + [Keys.mode], debugDescription: "must be an octal file mode such as 0660, not \(text)"))
            }
            self.mode = mode
        } else {
            mode = 0o660
        }
    }

    /// `0660`, `660`, `0o660` -> 0o660; anything with a non-octal digit or over 0o7777 -> nil.
    static func parseMode(_ text: String) -> UInt32? {
        var digits = Substring(text.trimmingCharacters(in: .whitespaces))
        if digits.hasPrefix("0o") || digits.hasPrefix("0O") { digits = digits.dropFirst(2) }
        guard !digits.isEmpty, digits.count <= 5, let value = UInt32(digits, radix: 8), value <= 0o7777 else { return nil }
        return value
    }
}

extension DaemonConfiguration.RoleAllowList: Decodable {
    enum Keys: String, CodingKey, CaseIterable { case uids, gids }

    public init(from decoder: any Decoder) throws {
        try decoder.rejectUnknownKeys(Keys.self)
        let c = try decoder.container(keyedBy: Keys.self)
        uids = try c.decodeIfPresent([UInt32].self, forKey: .uids) ?? []
        gids = try c.decodeIfPresent([UInt32].self, forKey: .gids) ?? []
    }
}

extension DaemonConfiguration.Roles: Decodable {
    enum Keys: String, CodingKey, CaseIterable { case host, device, admin }

    public init(from decoder: any Decoder) throws {
        try decoder.rejectUnknownKeys(Keys.self)
        let c = try decoder.container(keyedBy: Keys.self)
        typealias List = DaemonConfiguration.RoleAllowList
        host = try c.decodeIfPresent(List.self, forKey: .host) ?? List()
        device = try c.decodeIfPresent(List.self, forKey: .device) ?? List()
        admin = try c.decodeIfPresent(List.self, forKey: .admin) ?? List()
    }
}

extension DaemonConfiguration.Audit: Decodable {
    enum Keys: String, CodingKey, CaseIterable { case burst, summary_interval_ms, max_records_per_second }

    public init(from decoder: any Decoder) throws {
        try decoder.rejectUnknownKeys(Keys.self)
        let c = try decoder.container(keyedBy: Keys.self)
        burst = try c.decodeIfPresent(Int.self, forKey: .burst) ?? 64
        summaryIntervalMilliseconds = try c.decodeIfPresent(Int.self, forKey: .summary_interval_ms) ?? 1000
        maxRecordsPerSecond = try c.decodeIfPresent(Int.self, forKey: .max_records_per_second) ?? 200
    }
}

extension DaemonConfiguration.Limits: Decodable {
    enum Keys: String, CodingKey, CaseIterable { case max_connections, hello_timeout_ms, max_buffered_output }

    public init(from decoder: any Decoder) throws {
        try decoder.rejectUnknownKeys(Keys.self)
        let c = try decoder.container(keyedBy: Keys.self)
        maxConnections = try c.decodeIfPresent(Int.self, forKey: .max_connections) ?? 1024
        helloTimeoutMilliseconds = try c.decodeIfPresent(Int.self, forKey: .hello_timeout_ms) ?? 5000
        maxBufferedOutput = try c.decodeIfPresent(Int.self, forKey: .max_buffered_output) ?? 64 << 20
    }
}
