// Range and layout checks, each naming the key an operator must fix.

extension DaemonConfiguration {
    static let pageSize: UInt64 = 4096

    /// Checks what decoding cannot: alignment, overlaps, ranges. Also run after command-line overrides.
    public func validate() throws(ConfigurationError) {
        try validateMemory()
        try validateRange(hypervisor.reservedContextBanks, 0...127, "hypervisor.reserved_context_banks")
        try validateRange(hypervisor.reservedSMRs, 0...127, "hypervisor.reserved_smrs")
        for (i, entry) in hypervisor.hypervisorStreams.enumerated() {
            if entry.smmu.isEmpty { throw .invalid(key: "hypervisor.hypervisor_streams[\(i)].smmu", reason: "must name an SMMU") }
            if entry.streams.isEmpty { throw .invalid(key: "hypervisor.hypervisor_streams[\(i)].streams", reason: "must list at least one stream") }
        }
        try validateRange(finalization.delayMilliseconds, 0...600_000, "finalization.delay_ms")
        if !socket.path.hasPrefix("/") { throw .invalid(key: "socket.path", reason: "must be an absolute path") }
        if socket.path.utf8.count > 107 { throw .invalid(key: "socket.path", reason: "must be at most 107 bytes (sockaddr_un)") }
        if socket.mode > 0o777 { throw .invalid(key: "socket.mode", reason: "must be a file mode between 0000 and 0777") }
        try validateRange(audit.burst, 1...1_000_000, "audit.burst")
        try validateRange(audit.summaryIntervalMilliseconds, 10...3_600_000, "audit.summary_interval_ms")
        // journald drops past 10,000 messages per 30 s per service by default; 31 windows of 300 stay under it.
        try validateRange(audit.maxRecordsPerSecond, 1...300, "audit.max_records_per_second")
        try validateRange(limits.maxConnections, 1...1_000_000, "limits.max_connections")
        try validateRange(limits.helloTimeoutMilliseconds, 10...3_600_000, "limits.hello_timeout_ms")
        try validateRange(limits.maxBufferedOutput, 1 << 20...1 << 40, "limits.max_buffered_output")
        try validateMemoryController(topology: topology.topology)
        try trace.validate()
    }

    private func validateMemory() throws(ConfigurationError) {
        if memory.hostRAM.isEmpty { throw .invalid(key: "memory.host_ram", reason: "must list at least one range") }
        var named: [(key: String, range: MemoryRange)] = []
        for (i, range) in memory.hostRAM.enumerated() { named.append(("memory.host_ram[\(i)]", range)) }
        named.append(("memory.hypervisor_ram", memory.hypervisorRAM))
        for (key, range) in named { try validatePages(range, key) }
        for (i, range) in memory.hostDMARanges.enumerated() { try validatePages(range, "memory.host_dma_ranges[\(i)]") }
        // RAM ranges are disjoint, and DMA ranges lie outside all RAM: a host page can be donated, and no DMA
        // range may keep a host stream on it afterwards (G4); the hypervisor's pages are never the host's.
        for a in named.indices {
            for b in named.indices where b > a && named[a].range.overlaps(named[b].range) {
                throw .invalid(key: named[b].key, reason: "overlaps \(named[a].key)")
            }
        }
        for (i, range) in memory.hostDMARanges.enumerated() {
            if let ram = named.first(where: { $0.range.overlaps(range) }) {
                throw .invalid(key: "memory.host_dma_ranges[\(i)]", reason: "overlaps \(ram.key)")
            }
        }
    }

    private func validatePages(_ range: MemoryRange, _ key: String) throws(ConfigurationError) {
        if range.size == 0 || range.size % Self.pageSize != 0 {
            throw .invalid(key: key + ".size", reason: "must be a non-zero multiple of 4096")
        }
        if range.base % Self.pageSize != 0 { throw .invalid(key: key + ".base", reason: "must be a multiple of 4096") }
        if range.base.addingReportingOverflow(range.size).overflow || range.end > 1 << 48 {
            throw .invalid(key: key + ".size", reason: "the range must end below 2^48")
        }
    }

    private func validateRange(_ value: Int, _ allowed: ClosedRange<Int>, _ key: String) throws(ConfigurationError) {
        if !allowed.contains(value) { throw .invalid(key: key, reason: "must be between \(allowed.lowerBound) and \(allowed.upperBound)") }
    }
}
