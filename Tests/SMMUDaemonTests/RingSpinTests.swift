import CSocketShims
import Testing
@testable import SMMUDaemon

/// A ring thread's spin policy: yield about every 2 µs, and move to another CPU only after yields that keep handing
/// the CPU to someone, at most every 20 ms.
@Suite("Ring thread spin: when to yield and when to leave the CPU")
struct RingSpinTests {
    @Test func yieldsAboutEveryTwoMicroseconds() {
        var spin = RingSpin(now: 1_000_000)
        #expect(!spin.shouldYield(now: 1_000_000 + 1_999))
        #expect(spin.shouldYield(now: 1_000_000 + 2_000))
        let left = spin.yielded(from: 1_002_000, to: 1_002_400)     // a yield with nobody else to run: 0.4 µs
        #expect(!left)
        #expect(!spin.shouldYield(now: 1_003_000), "counted from the end of the last yield")
        #expect(spin.shouldYield(now: 1_004_400))
    }

    @Test func leavesAfterFourSharedYieldsInARowAtMostEveryTwentyMilliseconds() {
        var spin = RingSpin(now: 0)
        var t: UInt64 = 10_000_000
        func yield(_ took: UInt64) -> Bool {
            defer { t += took + 2_000 }
            return spin.yielded(from: t, to: t + took)
        }
        let firstThree = [yield(3_000), yield(3_000), yield(3_000)]
        #expect(firstThree == [false, false, false])
        let free = yield(400)
        #expect(!free, "a yield that found the CPU free breaks the row")
        let again = [yield(1_500), yield(2_000), yield(50_000), yield(1_600)]
        #expect(again == [false, false, false, true], "the fourth shared yield in a row leaves")
        // Sharing again at once: not before 20 ms, so a thread on a machine with every CPU busy does not chase one.
        var left = 0
        let first = t
        while t - first < 19_000_000 { if yield(5_000) { left += 1 } }
        #expect(left == 0)
        while t - first < 21_000_000 { if yield(5_000) { left += 1 } }
        #expect(left == 1)
    }

    /// Leaving the CPU moves the thread to another one it may use, and leaves it free to run on all of them.
    @Test func leavingTheCPUMovesTheThreadWithoutPinningIt() {
        let allowed = csock_allowed_cpu_count()
        let before = csock_current_cpu()
        let moved = csock_leave_this_cpu()
        #expect(csock_allowed_cpu_count() == allowed, "the affinity is whole again")
        if allowed > 1 {
            #expect(moved == 1)
            #expect(csock_current_cpu() != before)
        } else {
            #expect(moved == 0, "nowhere to go")
        }
    }
}
