import CSocketShims
import Foundation
import Synchronization
import Testing
import WireProtocol

@testable import SMMUClient

#if canImport(Glibc)
    import Glibc
#endif

/// A client holds the memfd it passes (MEM_MAP, DMA_EPOCH, RING) and may change it while the daemon checks it.
@Suite(.serialized, .enabled(if: ProcessInfo.processInfo.environment["SMMU_HYPD_BIN"] != nil, "set SMMU_HYPD_BIN to run against the daemon"))
struct SharedMemoryRaceTests {
    /// A second thread that, once told, waits a few microseconds, then truncates the file to nothing and seals it
    /// against shrinking: at the right moment, after the daemon read the size and before it read the seals.
    final class Racer: @unchecked Sendable {
        let armed = Atomic<Bool>(false)
        let fd = Atomic<Int32>(-1)
        let delay = Atomic<Int>(0)
        let stop = Atomic<Bool>(false)

        func run() {
            while !stop.load(ordering: .acquiring) {
                guard armed.load(ordering: .acquiring) else { continue }
                let start = DispatchTime.now().uptimeNanoseconds
                let wait = UInt64(delay.load(ordering: .relaxed))
                while DispatchTime.now().uptimeNanoseconds - start < wait {}
                let f = fd.load(ordering: .relaxed)
                _ = ftruncate(f, 0)
                _ = csock_add_seals(f, 0x2)   // F_SEAL_SHRINK
                armed.store(false, ordering: .releasing)
            }
        }
    }

    @Test("a memfd truncated and sealed while DMA_EPOCH checks it is refused, never mapped past its end (the daemon died of SIGBUS)")
    func shrinkThenSealDuringTheCheck() throws {
        let daemon = try RunningDaemon()
        defer { daemon.stop() }
        var (device, _) = try daemon.connect(role: .device)
        let racer = Racer()
        let thread = Thread { racer.run() }
        thread.start()
        defer { racer.stop.store(true, ordering: .releasing) }
        var rng = SystemRandomNumberGenerator()
        // Before the fix one attempt in a few hundred won the race here (the daemon checked the size, then the seals).
        for attempt in 0..<3000 {
            let fd = csock_memfd("race")
            #expect(fd >= 0)
            _ = ftruncate(fd, 4096)
            racer.fd.store(fd, ordering: .relaxed)
            racer.delay.store(Int.random(in: 0..<40_000, using: &rng), ordering: .relaxed)
            racer.armed.store(true, ordering: .releasing)
            let answer: SMMUClient.Frame
            do { answer = try device.call(.dmaEpoch, fds: [fd]) } catch {
                Issue.record("attempt \(attempt): the daemon stopped answering (\(error))")
                close(fd)
                return
            }
            while racer.armed.load(ordering: .acquiring) {}
            var st = stat()
            fstat(fd, &st)
            close(fd)
            if answer.status == .ok {
                #expect(st.st_size >= 4096, "attempt \(attempt): DMA_EPOCH accepted a file of \(st.st_size) bytes")
                device.close()   // one page per connection
                (device, _) = try daemon.connect(role: .device)
            } else {
                #expect(answer.status == .invalid)
            }
        }
        #expect(try device.call(.stats).status == .forbidden, "the daemon still answers")
    }
}
