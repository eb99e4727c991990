/// Little-endian integer access on raw bytes: every integer on the wire is little-endian.

extension UnsafeRawBufferPointer {
    /// Loads a little-endian integer at `offset` (no alignment needed).
    @inlinable
    public func loadLE<T: FixedWidthInteger>(_ type: T.Type, at offset: Int) -> T {
        T(littleEndian: loadUnaligned(fromByteOffset: offset, as: T.self))
    }
}

extension Array where Element == UInt8 {
    /// Appends `value` as little-endian bytes (no allocation when capacity suffices).
    @inlinable
    public mutating func appendLE<T: FixedWidthInteger>(_ value: T) {
        Swift.withUnsafeBytes(of: value.littleEndian) { append(contentsOf: $0) }
    }

    /// Appends `count` zero bytes.
    @inlinable
    public mutating func appendZeros(_ count: Int) {
        append(contentsOf: repeatElement(0, count: count))
    }

    /// Loads a little-endian integer at `offset`.
    /// - Precondition: the bytes exist.
    @inlinable
    public func loadLE<T: FixedWidthInteger>(_ type: T.Type, at offset: Int) -> T {
        withUnsafeBytes { $0.loadLE(T.self, at: offset) }
    }

    /// `withUnsafeBytes` that keeps the body's typed error (the standard one rethrows `any Error`).
    @inlinable
    public func withBytes<T, E: Error>(_ body: (UnsafeRawBufferPointer) throws(E) -> T) throws(E) -> T {
        let result: Result<T, E> = withUnsafeBytes { p in Result { () throws(E) in try body(p) } }
        return try result.get()
    }
}
