/// The byte coding of state images (docs/state-image.md): little-endian integers, counted arrays and strings.
/// Shared by the hypervisor's image and the daemon's (SMMUDaemon's `DispatcherStateImage`).

/// Appends fields to an image.
public struct StateImageWriter {
    public private(set) var bytes: [UInt8] = []

    public init(capacity: Int = 0) { bytes.reserveCapacity(capacity) }

    /// A writer whose body will be sealed in place (`sealed`): room for the envelope's header is kept in front, so
    /// a large image is not copied once more to put a header before it.
    public static func sealable(capacity: Int = 0) -> StateImageWriter {
        var w = StateImageWriter(capacity: StateImageEnvelope.headerSize + capacity)
        w.bytes.append(contentsOf: repeatElement(0, count: StateImageEnvelope.headerSize))
        return w
    }

    /// The envelope around what was written since `sealable` (magic, version, length, CRC-32 of the body).
    public mutating func sealed(magic: [UInt8], version: UInt32) -> [UInt8] {
        let size = StateImageEnvelope.headerSize
        var header = StateImageWriter(capacity: size)
        header.raw(magic)
        header.u32(version)
        header.int(bytes.count - size)
        header.u32(CRC32.checksum(bytes[size...]))
        for (i, b) in header.bytes.enumerated() { bytes[i] = b }
        return bytes
    }

    public mutating func u8(_ v: UInt8) { bytes.append(v) }
    public mutating func bool(_ v: Bool) { bytes.append(v ? 1 : 0) }
    public mutating func u16(_ v: UInt16) { withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) } }
    public mutating func u32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) } }
    public mutating func u64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) } }
    /// A signed count or counter, as its two's complement.
    public mutating func int(_ v: Int) { u64(UInt64(bitPattern: Int64(v))) }
    public mutating func raw(_ v: some Collection<UInt8>) { bytes.append(contentsOf: v) }
    public mutating func data(_ v: some Collection<UInt8>) {
        int(v.count)
        bytes.append(contentsOf: v)
    }
    public mutating func string(_ s: String) { data(Array(s.utf8)) }
    /// A counted array of 64-bit integers, as `array(_:_:)` with `u64` writes it, in one copy.
    public mutating func u64Array(_ v: [UInt64]) {
        int(v.count)
        #if _endian(little)
        v.withUnsafeBytes { bytes.append(contentsOf: $0) }
        #else
        for x in v { u64(x) }
        #endif
    }
    public mutating func array<T>(_ items: some Collection<T>, _ each: (inout Self, T) -> Void) {
        int(items.count)
        for item in items { each(&self, item) }
    }
}

/// Reads fields of an image; every read is bounds-checked and throws instead of trapping.
public struct StateImageReader {
    public let bytes: [UInt8]
    public private(set) var offset: Int

    public init(_ bytes: [UInt8], offset: Int = 0) {
        self.bytes = bytes
        self.offset = offset
    }

    public var isAtEnd: Bool { offset == bytes.count }

    private mutating func take(_ n: Int) throws(StateImageError) -> ArraySlice<UInt8> {
        guard n >= 0, n <= bytes.count - offset else { throw .truncated(at: offset) }
        defer { offset += n }
        return bytes[offset..<(offset + n)]
    }

    /// One unaligned little-endian load, not a loop over bytes: images hold thousands of integers (register files,
    /// TLB entries), and the byte loop was most of the decoding's time.
    private mutating func integer<T: FixedWidthInteger>(_: T.Type) throws(StateImageError) -> T {
        let n = MemoryLayout<T>.size
        guard n <= bytes.count - offset else { throw .truncated(at: offset) }
        let v = bytes.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: offset, as: T.self) }
        offset += n
        return T(littleEndian: v)
    }

    public mutating func u8() throws(StateImageError) -> UInt8 { try integer(UInt8.self) }
    public mutating func u16() throws(StateImageError) -> UInt16 { try integer(UInt16.self) }
    public mutating func u32() throws(StateImageError) -> UInt32 { try integer(UInt32.self) }
    public mutating func u64() throws(StateImageError) -> UInt64 { try integer(UInt64.self) }
    public mutating func int() throws(StateImageError) -> Int { Int(truncatingIfNeeded: Int64(bitPattern: try u64())) }

    public mutating func bool() throws(StateImageError) -> Bool {
        let at = offset
        switch try u8() {
        case 0: return false
        case 1: return true
        case let b: throw .corrupt(reason: "byte \(at): \(b) is not a boolean")
        }
    }

    /// A count of items that each take at least `minimumSize` bytes: checked against what is left, so a corrupt
    /// count fails here instead of reserving memory for it.
    public mutating func count(minimumSize: Int = 1) throws(StateImageError) -> Int {
        let at = offset
        let n = try int()
        guard n >= 0, n <= (bytes.count - offset) / max(minimumSize, 1) else {
            throw n < 0 ? .corrupt(reason: "byte \(at): negative count \(n)") : .truncated(at: offset)
        }
        return n
    }

    public mutating func raw(_ n: Int) throws(StateImageError) -> ArraySlice<UInt8> { try take(n) }
    public mutating func data() throws(StateImageError) -> [UInt8] { Array(try take(try count())) }

    public mutating func string() throws(StateImageError) -> String {
        let at = offset
        let d = try data()
        guard let s = String(validating: d, as: UTF8.self) else { throw .corrupt(reason: "byte \(at): a string is not UTF-8") }
        return s
    }

    /// A counted array of 64-bit integers (`StateImageWriter.u64Array`), in one copy: register files are thousands.
    public mutating func u64Array() throws(StateImageError) -> [UInt64] {
        let n = try count(minimumSize: 8)
        let start = offset
        offset += n * 8
        return [UInt64](unsafeUninitializedCapacity: n) { out, initialized in
            bytes.withUnsafeBytes { UnsafeMutableRawBufferPointer(out).copyMemory(from: .init(rebasing: $0[start..<(start + n * 8)])) }
            #if !_endian(little)
            for i in 0..<n { out[i] = UInt64(littleEndian: out[i]) }
            #endif
            initialized = n
        }
    }

    public mutating func array<T>(minimumSize: Int = 1,
                                  _ each: (inout Self) throws(StateImageError) -> T) throws(StateImageError) -> [T] {
        let n = try count(minimumSize: minimumSize)
        var out: [T] = []
        out.reserveCapacity(n)
        for _ in 0..<n { out.append(try each(&self)) }
        return out
    }
}

/// The header every state image starts with: magic, format version, then a CRC-32 of everything after the header,
/// so that a damaged image is refused as corrupt before a field of it is read.
public enum StateImageEnvelope {
    /// magic (8) + version (4) + body length (8) + CRC-32 of the body (4).
    public static let headerSize = 24

    public static func seal(magic: [UInt8], version: UInt32, body: [UInt8]) -> [UInt8] {
        var w = StateImageWriter.sealable(capacity: body.count)
        w.raw(body)
        return w.sealed(magic: magic, version: version)
    }

    /// The body of a sealed image, checked: magic, version, length and checksum.
    public static func open(_ bytes: some Collection<UInt8>, magic: [UInt8],
                            version: UInt32) throws(StateImageError) -> StateImageReader {
        // The header alone first: a short or foreign input is refused without copying it.
        var h = StateImageReader(Array(bytes.prefix(headerSize)))
        guard Array(try h.raw(magic.count)) == magic else { throw .badMagic }
        let found = try h.u32()
        guard found == version else { throw .unsupportedVersion(found: found, supported: version) }
        let length = try h.int()
        let crc = try h.u32()
        let available = bytes.count - headerSize
        guard length >= 0, length <= available else { throw .truncated(at: bytes.count) }
        guard length == available else { throw .corrupt(reason: "\(available - length) bytes after the image's end") }
        let r = StateImageReader(Array(bytes), offset: headerSize)
        guard CRC32.checksum(r.bytes[headerSize...]) == crc else { throw .corrupt(reason: "checksum mismatch") }
        return r
    }
}

/// CRC-32 (IEEE 802.3, reflected, as zlib computes it), eight bytes at a time (slicing-by-8: an image holds
/// megabytes of RAM, and a byte at a time was most of its cost).
public enum CRC32 {
    private static let tables: [[UInt32]] = {
        var t = [[UInt32]](repeating: [UInt32](repeating: 0, count: 256), count: 8)
        for n in 0..<256 {
            var c = UInt32(n)
            for _ in 0..<8 { c = c & 1 != 0 ? 0xEDB8_8320 ^ (c >> 1) : c >> 1 }
            t[0][n] = c
        }
        for n in 0..<256 {
            for k in 1..<8 { t[k][n] = t[0][Int(t[k - 1][n] & 0xFF)] ^ (t[k - 1][n] >> 8) }
        }
        return t
    }()
    private static let flat: [UInt32] = tables.flatMap { $0 }

    public static func checksum(_ bytes: some Collection<UInt8>) -> UInt32 {
        var c: UInt32 = 0xFFFF_FFFF
        flat.withUnsafeBufferPointer { t in
            let done = bytes.withContiguousStorageIfAvailable { b in
                var i = 0
                let n = b.count
                let base = UnsafeRawPointer(b.baseAddress)
                while i + 8 <= n, let base {
                    // The eight bytes in one load (a sanitized build checks, and the fuzzer traces, every load).
                    let word = UInt64(littleEndian: base.loadUnaligned(fromByteOffset: i, as: UInt64.self))
                    let lo = c ^ UInt32(truncatingIfNeeded: word)
                    let hi = UInt32(truncatingIfNeeded: word >> 32)
                    c = t[7 * 256 + Int(lo & 0xFF)] ^ t[6 * 256 + Int((lo >> 8) & 0xFF)]
                        ^ t[5 * 256 + Int((lo >> 16) & 0xFF)] ^ t[4 * 256 + Int(lo >> 24)]
                        ^ t[3 * 256 + Int(hi & 0xFF)] ^ t[2 * 256 + Int((hi >> 8) & 0xFF)]
                        ^ t[1 * 256 + Int((hi >> 16) & 0xFF)] ^ t[Int(hi >> 24)]
                    i += 8
                }
                while i < n {
                    c = t[Int((c ^ UInt32(b[i])) & 0xFF)] ^ (c >> 8)
                    i += 1
                }
                return true
            }
            if done == nil { for b in bytes { c = t[Int((c ^ UInt32(b)) & 0xFF)] ^ (c >> 8) } }
        }
        return c ^ 0xFFFF_FFFF
    }
}
