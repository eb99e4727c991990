/// Turning a window offset into a register, from the register table and the configuration.

public struct RegisterLocation: Hashable, Sendable, CustomStringConvertible {
    public let name: RegisterName
    /// Array element (SMR n, CBAR n) or context bank n for context-bank registers; else 0.
    public let index: Int
    /// 0, or 4 for the high half of a 64-bit register accessed as 32 bits.
    public let byteOffset: Int

    public init(name: RegisterName, index: Int = 0, byteOffset: Int = 0) {
        self.name = name
        self.index = index
        self.byteOffset = byteOffset
    }

    public var description: String {
        let d = RegisterMap.descriptor(name)
        var s = "\(name)"
        if d.indexing != .none { s += d.space == .contextBank ? "[cb\(index)]" : "(\(index))" }
        if byteOffset == 4 { s += ".hi" }
        return s
    }
}

public enum DecodedAccess: Sendable, Equatable {
    case register(RegisterLocation, width: AccessWidth)
    /// Reads as zero, ignores writes.
    case reserved(RegisterSpace)
}

public enum AccessError: Error, Sendable, Equatable {
    case outsideWindow
    case misaligned
    case wideAccessToNarrowRegister(RegisterName)
}

/// Per-configuration lookup from an in-page offset to a register, built once from `RegisterMap`.
/// Each register page (GR0, GR1, context bank) is a dense table with one 16-bit slot per word (every register
/// lives below 4 KiB of its page), so decoding an access is an index, not a hash: this runs on every trapped
/// access. A final class over one buffer, with the window's geometry decoded once, so the hot path touches no
/// reference counts and re-derives nothing from the IDRs.
final class RegisterLayout: @unchecked Sendable {  // immutable after init
    struct Entry: Sendable {
        var ordinal: Int
        var index: Int
        var byteOffset: Int
    }

    let configuration: MMU500Configuration
    private let windowSize: UInt64
    private let pageShift: UInt64
    private let pageMask: UInt64
    private let numPage: Int
    private let numContextBanks: Int
    /// Slots per page table: one per word of the first 4 KiB.
    private static let slotsPerSpace = 1024
    /// GR0's slots, then GR1's, then the context-bank page's.
    private let slots: UnsafeMutablePointer<UInt16>
    /// A slot no register occupies.
    private static let empty: UInt16 = .max

    init(_ configuration: MMU500Configuration) {
        self.configuration = configuration
        windowSize = configuration.windowSize
        pageShift = UInt64(configuration.pageShift)
        pageMask = configuration.pageSize - 1
        numPage = configuration.numPage
        numContextBanks = configuration.numContextBanks
        slots = .allocate(capacity: 3 * Self.slotsPerSpace)
        slots.initialize(repeating: Self.empty, count: 3 * Self.slotsPerSpace)
        for (ordinal, d) in RegisterMap.all.enumerated() {
            let elements = d.space == .contextBank ? 1 : configuration.implementedCount(d)
            for element in 0..<elements {
                let base = d.offset + UInt32(element) * d.stride
                let index = d.space == .contextBank ? 0 : element
                set(d.space, base, Entry(ordinal: ordinal, index: index, byteOffset: 0))
                if d.width == .doubleword { set(d.space, base + 4, Entry(ordinal: ordinal, index: index, byteOffset: 4)) }
            }
        }
    }

    deinit { slots.deallocate() }

    private static func first(_ space: RegisterSpace) -> Int {
        switch space {
        case .gr0: 0
        case .gr1: slotsPerSpace
        case .contextBank: 2 * slotsPerSpace
        }
    }

    /// ordinal (7 bits) << 8 | index (7 bits) << 1 | high word (1 bit).
    private func set(_ space: RegisterSpace, _ inPage: UInt32, _ e: Entry) {
        precondition(Int(inPage >> 2) < Self.slotsPerSpace && e.ordinal < 128 && e.index < 128,
                     "register table outgrew RegisterLayout's packing")
        slots[Self.first(space) + Int(inPage >> 2)] = UInt16(e.ordinal << 8 | e.index << 1 | (e.byteOffset == 4 ? 1 : 0))
    }

    @inline(__always) private func lookup(_ first: Int, _ inPage: UInt64) -> Entry? {
        guard inPage & 3 == 0, inPage >> 2 < UInt64(Self.slotsPerSpace) else { return nil }
        let v = slots[first + Int(inPage >> 2)]
        guard v != Self.empty else { return nil }
        return Entry(ordinal: Int(v >> 8), index: Int(v >> 1 & 0x7F), byteOffset: v & 1 == 1 ? 4 : 0)
    }

    func decode(offset: UInt64, width: AccessWidth) -> Result<DecodedAccess, AccessError> {
        let bytes = UInt64(width.bytes)
        guard offset < windowSize, offset + bytes <= windowSize else { return .failure(.outsideWindow) }
        guard offset & (bytes - 1) == 0 else { return .failure(.misaligned) }
        let page = Int(offset >> pageShift)
        let inPage = offset & pageMask
        let space: RegisterSpace
        let first: Int
        var bank = 0
        if page == 0 {
            space = .gr0; first = 0
        } else if page == 1 {
            space = .gr1; first = Self.slotsPerSpace
        } else if page >= numPage && page < numPage + numContextBanks {
            space = .contextBank; first = 2 * Self.slotsPerSpace; bank = page - numPage
        } else {
            return .success(.reserved(page < numPage ? .gr1 : .contextBank))
        }
        guard let entry = lookup(first, inPage) else {
            // A 64-bit access whose high word is a 32-bit register is still a wide access to it.
            if width == .doubleword, let high = lookup(first, inPage + 4) {
                return .failure(.wideAccessToNarrowRegister(RegisterMap.all[high.ordinal].name))
            }
            return .success(.reserved(space))
        }
        let name = RegisterName(rawValue: entry.ordinal)!
        if width == .doubleword && RegisterMap.all[entry.ordinal].width == .word {
            return .failure(.wideAccessToNarrowRegister(name))
        }
        let index = space == .contextBank ? bank : entry.index
        return .success(.register(RegisterLocation(name: name, index: index, byteOffset: entry.byteOffset), width: width))
    }
}
