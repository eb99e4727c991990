import Logging
import Testing
import WireProtocol
@testable import SMMUDaemon

/// Restart mode's rule for what to receive off a socket (InputTake), without sockets.
struct InputTakeTests {
    let read = Request.read(ReadRequest(address: 0x1200_0000, width: 4)).encoded(tag: 1)
    let stats = Request.stats.encoded(tag: 2)

    func take(_ peeked: [UInt8], after unconsumed: [UInt8] = [], skip: Int = 0, queued: Int? = nil,
              maxBytes: Int = 64 << 10) -> InputTake {
        unconsumed.withUnsafeBytes { u in
            peeked.withUnsafeBytes { p in
                InputTake.measure(unconsumed: u, skip: skip, peeked: p, queued: queued ?? peeked.count,
                                  maxCost: TurnBudget.units, maxBytes: maxBytes)
            }
        }
    }

    @Test func onlyWholeFramesAreTaken() {
        let partial = Array(read + read.prefix(5))
        #expect(take(partial) == InputTake(bytes: read.count))
        #expect(take(Array(read.prefix(10))) == InputTake(bytes: 0))
        // The rest of a started frame completes it.
        #expect(take(Array(read.dropFirst(10)) + read, after: Array(read.prefix(10))) == InputTake(bytes: read.count - 10 + read.count))
    }

    @Test func aTurnsWorthAtMost() {
        // 300 unit-cost frames: 256 are one turn; a STATS is a whole turn by itself.
        let many = (0..<300).flatMap { _ in read }
        #expect(take(many) == InputTake(bytes: 256 * read.count))
        #expect(take(stats + read) == InputTake(bytes: stats.count))
        #expect(take(read + stats) == InputTake(bytes: read.count))
        // Near the bound on held input: one frame at a time.
        #expect(take(many, maxBytes: 0) == InputTake(bytes: read.count))
    }

    @Test func aFrameLongerThanThePeekIsTakenOnlyWhenTheSocketHoldsAllOfIt() {
        let write = Request.memWrite(MemWriteRequest(address: 0x8000_0000, bytes: [UInt8](repeating: 7, count: 65536 - 16)))
            .encoded(tag: 3)
        let peeked = Array(write.prefix(65536))
        #expect(take(peeked, queued: 65536) == InputTake(bytes: 0))
        #expect(take(peeked, queued: write.count) == InputTake(bytes: 65536, continues: true))
        #expect(take(Array(write.dropFirst(65536)) + read, after: peeked) == InputTake(bytes: write.count - 65536 + read.count))
    }

    @Test func unsupportedAndMalformedFramesAreTakenAsTheDecoderConsumesThem() {
        var unknown = FrameHeader(request: .read, tag: 4, length: 100).encoded
        unknown[3] = 0x7F
        let frame = unknown + [UInt8](repeating: 0, count: 100)
        #expect(take(frame + read) == InputTake(bytes: frame.count + read.count))
        #expect(take(Array(frame.prefix(50))) == InputTake(bytes: 0))
        // Payload still to skip: it completes the unsupported frame.
        #expect(take([UInt8](repeating: 0, count: 20) + read, skip: 20) == InputTake(bytes: 20 + read.count))
        #expect(take([UInt8](repeating: 0, count: 10), skip: 20) == InputTake(bytes: 0))
        // A bad header closes the connection: the header is all that is read.
        var bad = read
        bad[0] = 0
        #expect(take(bad + read) == InputTake(bytes: FrameHeader.size))
    }

    @Test func aHeaderCutByDescriptorsIsTakenToSeePastIt() {
        #expect(take(Array(read.prefix(6)), queued: read.count) == InputTake(bytes: 6, continues: true))
        #expect(take(Array(read.prefix(6)), queued: 6) == InputTake(bytes: 0))
    }

    @Test func aConnectionReadsOneFrameAtATimeWhileHeldInputIsNearItsBound() throws {
        let p = ServerPersistence(journal: try RestartJournal.create(capacity: 1 << 20), store: CheckpointTests.TableStore(),
                                  logger: Logger(label: "test"))
        let (a, b) = (ConnectionID(rawValue: 1), ConnectionID(rawValue: 2))
        let chunk = 64 << 10
        p.noteHeldInput(a, bytes: ServerPersistence.maxHeldInput - chunk)
        #expect(p.heldInputRoom(for: b, chunk: chunk) == chunk)
        p.noteHeldInput(a, bytes: ServerPersistence.maxHeldInput - chunk + 1)
        #expect(p.heldInputRoom(for: b, chunk: chunk) == 0)
        #expect(p.heldInputRoom(for: a, chunk: chunk) == chunk)  // its own held input is what it would replace
        p.closed(a, reason: .plain)
        #expect(p.heldInput == 0 && p.heldInputRoom(for: b, chunk: chunk) == chunk)
    }
}
