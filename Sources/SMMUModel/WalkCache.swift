/// The table descriptors one run of speculative translations has read (protocol v1.1's DMA_PREFETCH probes
/// dozens of neighbouring pages): one per level, keyed by the descriptor's physical address, so consecutive
/// probes under the same tables read and check only their leaf.
///
/// Why it is exact enough: a run is one request on the daemon's serial queue, so no TLB invalidation, register
/// write or ownership change falls inside it; a descriptor reused from an earlier probe of the same run is what a
/// hardware walk cache would return (the host must invalidate before it relies on a changed table entry, and
/// that invalidation is a later request). Only valid table descriptors (bits[1:0] = 0b11 above level 3) that
/// passed the downstream filter are kept; leaves are always read. Outside a run the cache is off and empty.
final class WalkCache {
    /// [2·level] = descriptor address | 1 (0: empty), [2·level + 1] = the descriptor; [8] = 1 + stream while on;
    /// [9...13]: the last leaf table found (`LeafTable`): key, table address (0: none), permissions, output bits, hole.
    private let slots = FixedArray<UInt64>(repeating: 0, count: 14)

    func deallocate() { slots.deallocate() }

    @inline(__always)
    func isActive(for stream: StreamID) -> Bool { slots[8] == 1 + UInt64(stream.rawValue) }

    func begin(stream: StreamID) {
        end()
        slots[8] = 1 + UInt64(stream.rawValue)
    }

    func end() { for i in 0..<14 { slots[i] = 0 } }

    /// The stage-1 last-level table that maps a 2 MiB-aligned region of IOVA for a context bank.
    struct LeafTable {
        /// Physical address of the table; 0 when the region has none (a block, a fault): walk instead.
        var table: UInt64
        var allowed: TLB.Permissions
        var outputBits: Int
        /// No table because an invalid descriptor above it covers the region: a walk of any page in it ends in a
        /// translation fault (`table` is 0).
        var hole = false
    }

    /// The key of `iova`'s 2 MiB region in `bank` (never 0).
    @inline(__always)
    static func key(bank: Int, iova: UInt64) -> UInt64 { (iova >> 21) << 8 | UInt64(bank & 0x7F) | 0x80 }

    @inline(__always)
    func leafTable(key: UInt64) -> LeafTable? {
        guard slots[9] == key else { return nil }
        return LeafTable(table: slots[10], allowed: TLB.Permissions(rawValue: UInt8(truncatingIfNeeded: slots[11])),
                         outputBits: Int(slots[12]), hole: slots[13] != 0)
    }

    func keep(_ t: LeafTable, key: UInt64) {
        slots[9] = key
        slots[10] = t.table
        slots[11] = UInt64(t.allowed.rawValue)
        slots[12] = UInt64(t.outputBits)
        slots[13] = t.hole ? 1 : 0
    }

    @inline(__always)
    func descriptor(at address: UInt64, level: Int) -> UInt64? {
        slots[2 * level] == address | 1 ? slots[2 * level + 1] : nil
    }

    @inline(__always)
    func keep(_ descriptor: UInt64, at address: UInt64, level: Int) {
        slots[2 * level] = address | 1
        slots[2 * level + 1] = descriptor
    }
}

extension MMU500 {
    /// Runs `body` (speculative translations by `stream`: `probe`) with the walk cache on, then empties it.
    public func speculating<T>(stream: StreamID, _ body: () throws -> T) rethrows -> T {
        walkCache.begin(stream: stream)
        defer { walkCache.end() }
        return try body()
    }
}
