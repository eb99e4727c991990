/// The last value recorded per 8-byte-aligned address, so that a recorder of memory reads (a trace's, the restart
/// journal's) leaves out a descriptor a walk reads again unchanged. Direct-mapped by address: slot i holds
/// (address | 1, value) at 2i, 2i + 1 (0: empty); a slot another address took only makes a value recorded twice,
/// never one left out. Cheaper than a dictionary on every descriptor read.
struct RememberedValues {
    static let slots = 1 << 15
    private var table = [UInt64](repeating: 0, count: 2 * RememberedValues.slots)

    /// True when `value` is what was last remembered at `address`; else remembers it and returns false. An unaligned
    /// address is never remembered (its key would collide with the aligned one below it).
    mutating func seen(_ address: UInt64, _ value: UInt64) -> Bool {
        guard address & 7 == 0 else { return false }
        let slot = 2 * Int(truncatingIfNeeded: (address >> 3) & UInt64(Self.slots - 1))
        return table.withUnsafeMutableBufferPointer { r in
            if r[slot] == address | 1 && r[slot + 1] == value { return true }
            r[slot] = address | 1
            r[slot + 1] = value
            return false
        }
    }

    mutating func forget() {
        table.withUnsafeMutableBufferPointer { $0.update(repeating: 0) }
    }
}
