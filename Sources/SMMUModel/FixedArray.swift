/// A fixed-size array in manually managed memory, for state read on every translation: a `let`
/// of this type is mutated through its pointer, so no dynamic exclusivity check runs per access
/// (those checks cost more than the translation itself). The owner calls `deallocate()`.
struct FixedArray<Element> {
    let base: UnsafeMutablePointer<Element>
    let count: Int

    init(repeating value: Element, count: Int) {
        self.count = count
        base = .allocate(capacity: max(count, 1))
        base.initialize(repeating: value, count: count)
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
        base.deallocate()
    }
}
