/// When a ring's thread (`SharedRing`), spinning for the next request, should give up its CPU, and when it should move
/// to another one. It yields about every 2 µs of spinning, so a client that runs on the same CPU gets to write its
/// request. But a client spinning for its answer on that same CPU yields too, and then every exchange waits for two
/// context switches (`smmu-bench --ring-only`: a READ round trip of about 4 µs, where it is about 1 µs on two CPUs),
/// and the scheduler rarely separates two threads that never sleep. So a thread whose yields keep handing the CPU to
/// someone (a yield that took 1.5 µs or more: another thread ran) moves to another CPU (`csock_leave_this_cpu`), at
/// most once every 20 ms, so that where every CPU is busy it does not chase a free one.
struct RingSpin {
    static let yieldInterval: UInt64 = 2_000
    static let sharedYield: UInt64 = 1_500
    static let sharedInARow = 4
    static let leaveInterval: UInt64 = 20_000_000

    private var lastYield: UInt64
    private var sharedYields = 0
    private var lastLeave: UInt64?

    init(now: UInt64) { lastYield = now }

    /// True when the spinning thread should yield now (at `now`, in nanoseconds).
    func shouldYield(now: UInt64) -> Bool { now &- lastYield >= Self.yieldInterval }

    /// After a yield from `start` to `end`: true when the thread should leave its CPU.
    mutating func yielded(from start: UInt64, to end: UInt64) -> Bool {
        lastYield = end
        sharedYields = end &- start >= Self.sharedYield ? sharedYields + 1 : 0
        guard sharedYields >= Self.sharedInARow else { return false }
        sharedYields = 0
        if let lastLeave, end &- lastLeave < Self.leaveInterval { return false }
        lastLeave = end
        return true
    }
}
