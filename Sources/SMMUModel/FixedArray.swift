#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A fixed-size array in manually managed memory, for state read on every translation: a `let`
/// of this type is mutated through its pointer, so no dynamic exclusivity check runs per access
/// (those checks cost more than the translation itself). The owner calls `deallocate()`.
struct FixedArray<Element> {
    let base: UnsafeMutablePointer<Element>
    let count: Int
    /// True when `base` is an anonymous mapping (`init(zeroedCount:)`), unmapped instead of freed.
    private let mapped: Bool

    init(repeating value: Element, count: Int) {
        self.count = count
        mapped = false
        base = .allocate(capacity: max(count, 1))
        base.initialize(repeating: value, count: count)
    }

    /// All zero bytes, in an anonymous mapping: the kernel zeroes its pages as they are first touched, so a large
    /// table used sparsely (the TLB's 8192 slots, the 64 Ki-entry stream cache) costs nothing to make; a new model
    /// (a restore, a fuzz input) used to write and fault in all of it. (`calloc` clears the memory itself under
    /// the address sanitizer.) Only for trivial types whose zero bytes are a valid value.
    init(zeroedCount count: Int) {
        precondition(_isPOD(Element.self), "zero bytes are only a value of a trivial type")
        self.count = count
        mapped = true
        let bytes = max(count, 1) * MemoryLayout<Element>.stride
        let p = mmap(nil, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
        guard let p, p != MAP_FAILED else { fatalError("mmap of \(bytes) bytes failed: errno \(errno)") }
        base = p.bindMemory(to: Element.self, capacity: max(count, 1))
    }

    @inline(__always)
    subscript(i: Int) -> Element {
        get { base[i] }
        nonmutating set { base[i] = newValue }
    }

    var indices: Range<Int> { 0..<count }

    func fill(_ value: Element) {
        for i in 0..<count { base[i] = value }
    }

    func deallocate() {
        base.deinitialize(count: count)
        if mapped {
            munmap(base, max(count, 1) * MemoryLayout<Element>.stride)
        } else {
            base.deallocate()
        }
    }
}
