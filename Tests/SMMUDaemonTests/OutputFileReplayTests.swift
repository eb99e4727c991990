import Glibc
import Testing
import WireProtocol
@testable import SMMUDaemon

/// A restart's replay regenerates a connection's answer stream over the output file the previous process wrote
/// (ReplayCheck): the peer gets the previous process's bytes up to where it had written, and the replay's after; a
/// regenerated frame of another length (or a replay that falls short) is caught before anything is sent.
struct OutputFileReplayTests {
    static func frame(_ opcode: UInt8, tag: UInt32, payload: [UInt8]) -> [UInt8] {
        FrameHeader(opcode: opcode | 0x80, tag: tag, length: UInt32(payload.count)).encoded + payload
    }

    /// The previous process: `frames` written, the first `sent` bytes sent; the next process's view of the file.
    func previous(_ frames: [[UInt8]], sent: Int) throws -> OutputFile {
        let first = try #require(OutputFile.make())
        for f in frames { #expect(f.withUnsafeBytes { first.append($0) }) }
        #expect(lseek(first.fd, off_t(sent), SEEK_SET) == off_t(sent))
        return OutputFile(fd: dup(first.fd))
    }

    func regenerate(_ file: OutputFile, _ frames: [[UInt8]]) {
        for f in frames { #expect(f.withUnsafeBytes { file.append($0) }) }
        file.finishReplay()
    }

    let old = [Self.frame(0x04, tag: 1, payload: [1, 2, 3, 4, 5, 6, 7, 8]), Self.frame(0x03, tag: 2, payload: [0, 0, 0, 0]),
               Self.frame(0x04, tag: 3, payload: Array(repeating: 9, count: 16))]

    @Test func anExactReplayKeepsTheStreamAndWritesOnlyWhatIsNew() throws {
        let file = try previous(old, sent: 30)
        let new = Self.frame(0x02, tag: 4, payload: [])
        regenerate(file, old + [new])
        #expect(file.replayCheck == ReplayCheck())
        #expect(file.written == old.joined().count + new.count && file.pending == file.written - 30)
        var bytes = [UInt8](repeating: 0, count: file.written)
        #expect(pread(file.fd, &bytes, bytes.count, 0) == bytes.count)
        #expect(bytes == Array(old.joined()) + new)
    }

    @Test func anAnswerOfAnotherLengthIsMisaligned() throws {
        let file = try previous(old, sent: 10)
        var regenerated = old
        regenerated[1] = Self.frame(0x03, tag: 2, payload: [0, 0, 0, 0, 0, 0, 0, 0])   // 4 bytes longer
        regenerate(file, regenerated)
        #expect(file.replayCheck.problem == .misaligned(offset: old[0].count))
        // Nothing of the regenerated stream was written over the previous process's.
        var bytes = [UInt8](repeating: 0, count: old.joined().count)
        #expect(pread(file.fd, &bytes, bytes.count, 0) == bytes.count && bytes == Array(old.joined()))
    }

    @Test func anAnswerWithOtherBytesOfTheSameLengthKeepsThePreviousOne() throws {
        let file = try previous(old, sent: 0)
        var regenerated = old
        regenerated[2] = Self.frame(0x04, tag: 3, payload: Array(repeating: 7, count: 16))
        regenerate(file, regenerated)
        #expect(file.replayCheck.problem == nil && file.replayCheck.different == 1)
        #expect(file.replayCheck.firstDifferent?.offset == old[0].count + old[1].count)
        var bytes = [UInt8](repeating: 0, count: old.joined().count)
        #expect(pread(file.fd, &bytes, bytes.count, 0) == bytes.count && bytes == Array(old.joined()))
    }

    @Test func aReplayThatFallsShortOrStraddlesDifferentlyIsCaught() throws {
        let short = try previous(old, sent: 0)
        regenerate(short, Array(old.prefix(2)))
        #expect(short.replayCheck.problem == .short(written: old[0].count + old[1].count, produced: old.joined().count))
        // The previous process died in the middle of writing its last frame: the regenerated one must start the same.
        let cut = Array(old.joined().dropLast(5))
        let partial = try previous([cut], sent: 0)
        regenerate(partial, old)
        #expect(partial.replayCheck == ReplayCheck())
        #expect(partial.written == old.joined().count)
        let wrong = try previous([cut], sent: 0)
        var regenerated = old
        regenerated[2] = Self.frame(0x04, tag: 3, payload: Array(repeating: 7, count: 16))
        regenerate(wrong, regenerated)
        #expect(wrong.replayCheck.problem == .misaligned(offset: old[0].count + old[1].count))
    }
}
