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
/// Each register page is a dense table with one 16-bit slot per word (every register lives below 4 KiB of its
/// page), so decoding an access is an array index rather than a hash: this runs on every trapped access.
struct RegisterLayout: Sendable {
    struct Entry: Sendable {
        var ordinal: Int
        var index: Int
        var byteOffset: Int
    }

    let configuration: MMU500Configuration
    private let gr0: [UInt16]
    private let gr1: [UInt16]
    private let contextBank: [UInt16]
    /// A slot no register occupies.
    private static let empty: UInt16 = .max

    init(_ configuration: MMU500Configuration) {
        self.configuration = configuration
        var tables: [RegisterSpace: [UInt16]] = [.gr0: [], .gr1: [], .contextBank: []]
        func set(_ space: RegisterSpace, _ inPage: UInt32, _ entry: Entry) {
            let slot = Int(inPage >> 2)
            if tables[space]!.count <= slot { tables[space]!.append(contentsOf: repeatElement(Self.empty, count: slot + 1 - tables[space]!.count)) }
            tables[space]![slot] = Self.pack(entry)
        }
        for (ordinal, d) in RegisterMap.all.enumerated() {
            let elements = d.space == .contextBank ? 1 : configuration.implementedCount(d)
            for element in 0..<elements {
                let base = d.offset + UInt32(element) * d.stride
                let index = d.space == .contextBank ? 0 : element
                set(d.space, base, Entry(ordinal: ordinal, index: index, byteOffset: 0))
                if d.width == .doubleword { set(d.space, base + 4, Entry(ordinal: ordinal, index: index, byteOffset: 4)) }
            }
        }
        gr0 = tables[.gr0]!
        gr1 = tables[.gr1]!
        contextBank = tables[.contextBank]!
    }

    /// ordinal (7 bits) << 8 | index (7 bits) << 1 | high word (1 bit).
    private static func pack(_ e: Entry) -> UInt16 {
        precondition(e.ordinal < 128 && e.index < 128, "register table outgrew RegisterLayout's packing")
        return UInt16(e.ordinal << 8 | e.index << 1 | (e.byteOffset == 4 ? 1 : 0))
    }

    @inline(__always) private static func lookup(_ table: [UInt16], _ inPage: UInt32) -> Entry? {
        let slot = Int(inPage >> 2)
        guard inPage & 3 == 0, slot < table.count else { return nil }
        let v = table[slot]
        guard v != empty else { return nil }
        return Entry(ordinal: Int(v >> 8), index: Int(v >> 1 & 0x7F), byteOffset: v & 1 == 1 ? 4 : 0)
    }

    func decode(offset: UInt64, width: AccessWidth) -> Result<DecodedAccess, AccessError> {
        guard offset < configuration.windowSize,
              offset + UInt64(width.bytes) <= configuration.windowSize else { return .failure(.outsideWindow) }
        guard offset % UInt64(width.bytes) == 0 else { return .failure(.misaligned) }
        let page = Int(offset >> UInt64(configuration.pageShift))
        let inPage = UInt32(offset & (configuration.pageSize - 1))
        let space: RegisterSpace
        let map: [UInt16]
        var bank = 0
        switch page {
        case 0: space = .gr0; map = gr0
        case 1: space = .gr1; map = gr1
        case configuration.numPage..<(configuration.numPage + configuration.numContextBanks):
            space = .contextBank; map = contextBank; bank = page - configuration.numPage
        default:
            return .success(.reserved(page < configuration.numPage ? .gr1 : .contextBank))
        }
        guard let entry = Self.lookup(map, inPage) else {
            // A 64-bit access whose high word is a 32-bit register is still a wide access to it.
            if width == .doubleword, let high = Self.lookup(map, inPage + 4) {
                return .failure(.wideAccessToNarrowRegister(RegisterMap.all[high.ordinal].name))
            }
            return .success(.reserved(space))
        }
        let d = RegisterMap.all[entry.ordinal]
        if width == .doubleword && d.width == .word {
            return .failure(.wideAccessToNarrowRegister(d.name))
        }
        let index = space == .contextBank ? bank : entry.index
        return .success(.register(RegisterLocation(name: d.name, index: index, byteOffset: entry.byteOffset),
                                  width: width))
    }
}
