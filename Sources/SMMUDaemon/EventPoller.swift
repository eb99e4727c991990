import CSocketShims
import Dispatch
import Glibc
import POSIXCalls

/// The server's I/O thread: one epoll set holding every connection, waited on by a long-running work item on a
/// private Dispatch queue (so it has a thread of its own).
///
/// Why not a Dispatch read source per connection: libdispatch's event thread wakes a worker for each event and
/// re-arms the fd through an eventfd, about 11 syscalls and 2.5 context switches per request against 3 and 1 here
/// (measured with `perf`; README, "Performance"); on this machine that was most of a round trip. The poller owns no state: it hands
/// each batch of ready events to its handler, which the server runs inside `queue.sync`, so the serial queue stays
/// the single owner of everything and Dispatch keeps the listener, the timers and the signals.
final class EventPoller: @unchecked Sendable {  // epoll_ctl is thread-safe; the loop's buffer is its own
    /// What a connection wants to hear about. Hang-ups and errors are always reported.
    struct Interest: OptionSet, Sendable {
        let rawValue: UInt32
        static let read = Interest(rawValue: CSOCK_EPOLLIN)
        static let write = Interest(rawValue: CSOCK_EPOLLOUT)
        /// Reported once per change instead of while the condition holds: restart mode waits so for the rest of a
        /// frame whose start the socket holds (InputTake), which level-triggered polling would report without end.
        static let edge = Interest(rawValue: CSOCK_EPOLLET)
        /// The peer shut down its sending side (asked for with reading; it adds no wake-up: EPOLLIN is then set too).
        static let peerShutdown = Interest(rawValue: CSOCK_EPOLLRDHUP)
    }

    /// One ready descriptor, named by the token it was registered with.
    struct Event {
        let token: UInt64
        let bits: UInt32
        var readable: Bool { bits & CSOCK_EPOLLIN != 0 }
        var writable: Bool { bits & CSOCK_EPOLLOUT != 0 }
        var hungUp: Bool { bits & (CSOCK_EPOLLHUP | CSOCK_EPOLLERR) != 0 }
        /// Nothing more will arrive: the peer shut down its side or is gone.
        var peerDone: Bool { bits & (CSOCK_EPOLLHUP | CSOCK_EPOLLERR | CSOCK_EPOLLRDHUP) != 0 }
    }

    /// Registered with the wake-up eventfd; never a connection's token.
    private static let stopToken = UInt64.max
    /// How long the loop polls without sleeping after a batch (`loop`).
    static let busyPollNanoseconds: UInt64 = 50_000

    private let epollFD: Int32
    private let stopFD: Int32
    private let ioQueue = DispatchQueue(label: "smmu-hypd.io")

    init() throws(SyscallFailure) {
        let ep = try syscall("epoll_create1") { csock_epoll_create() }
        let ev: Int32
        do {
            ev = try syscall("eventfd") { csock_eventfd() }
        } catch {
            close(ep)
            throw error
        }
        do {
            _ = try syscall("epoll_ctl") { csock_epoll_ctl(ep, CSOCK_EPOLL_ADD, ev, CSOCK_EPOLLIN, Self.stopToken) }
        } catch {
            close(ep)
            close(ev)
            throw error
        }
        epollFD = ep
        stopFD = ev
    }

    /// The loop holds the poller, so these close only once it has returned and its owner let go.
    deinit {
        close(epollFD)
        close(stopFD)
    }

    /// Starts waiting; `handler` gets every batch of ready connection events, on the I/O thread.
    func start(_ handler: @escaping @Sendable (UnsafeBufferPointer<Event>) -> Void) {
        ioQueue.async { self.loop(handler) }
    }

    /// Ends the loop after the batch it is in (callable from any thread, more than once).
    func stop() {
        var one: UInt64 = 1
        _ = write(stopFD, &one, 8)
    }

    func add(_ fd: Int32, token: UInt64, interest: Interest) -> Bool {
        csock_epoll_ctl(epollFD, CSOCK_EPOLL_ADD, fd, interest.rawValue, token) == 0
    }

    func modify(_ fd: Int32, token: UInt64, interest: Interest) {
        _ = csock_epoll_ctl(epollFD, CSOCK_EPOLL_MOD, fd, interest.rawValue, token)
    }

    /// Call before closing `fd`: a descriptor another process shares would otherwise stay in the set.
    func remove(_ fd: Int32) {
        _ = csock_epoll_ctl(epollFD, CSOCK_EPOLL_DEL, fd, 0, 0)
    }

    private func loop(_ handler: (UnsafeBufferPointer<Event>) -> Void) {
        let capacity = Int(CSOCK_MAX_EVENTS)
        let raw = UnsafeMutablePointer<csock_event>.allocate(capacity: capacity)
        let events = UnsafeMutablePointer<Event>.allocate(capacity: capacity)
        defer {
            raw.deallocate()
            events.deallocate()
        }
        var lastBatch: UInt64 = 0
        while true {
            // Right after a batch, poll without sleeping for a while: a client's next request usually follows its answer
            // within microseconds, and a thread asleep on an idle CPU of this VM took 40 µs to wake (a socket round
            // trip of 53 µs against a floor of 9). Then sleep until something arrives: an idle daemon spins not at all.
            let spinning = csock_monotonic_ns() &- lastBatch < Self.busyPollNanoseconds
            // EINTR is retried; EBADF/EINVAL: the set itself is broken, nothing more can be served.
            guard let n = try? Int(syscall("epoll_wait") {
                csock_epoll_wait(epollFD, raw, Int32(capacity), spinning ? 0 : -1)
            }) else { return }
            if n == 0 {
                if spinning { sched_yield() }   // another thread on this CPU (a client) gets to run
                continue
            }
            lastBatch = csock_monotonic_ns()
            var count = 0
            var stopping = false
            for i in 0..<n {
                if raw[i].token == Self.stopToken {
                    stopping = true
                    continue
                }
                (events + count).initialize(to: Event(token: raw[i].token, bits: raw[i].events))
                count += 1
            }
            if count > 0 { handler(UnsafeBufferPointer(start: events, count: count)) }
            if stopping { return }
        }
    }
}
