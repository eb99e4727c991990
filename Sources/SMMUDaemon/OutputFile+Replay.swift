import Glibc
import WireProtocol

/// A restart's replay regenerates each connection's answer stream from the journal. Below `produced` the file holds
/// what the previous process wrote, and that is what the peer gets (it may have got part of it already): the
/// regenerated frames are compared with it, frame by frame, where the file still has the bytes (from `punched`).
///
/// The replay is exact (MemoryReadLog), so they are equal. Should they ever differ, two cases:
/// - **misaligned**: a regenerated frame has another length than the frame the previous process wrote at that offset,
///   or one that straddles `produced` differs in its part below it, or the replay ends short of `produced`. Sending
///   on would give the peer a corrupt stream (frames from two streams cut at different places): the connection is
///   closed instead (`Connection.resumeAfterReplay`), logged and recorded in the journal.
/// - **different**: a frame of the same length and different bytes (a STATS whose audit counters moved, or a replay
///   that diverged). The stream stays framed (the peer gets the previous process's frame); it is logged.
struct ReplayCheck: Equatable {
    enum Problem: Equatable {
        /// At this stream offset a regenerated frame does not line up with the previous process's stream.
        case misaligned(offset: Int)
        /// The replay ended at `written`, short of what the previous process had written.
        case short(written: Int, produced: Int)
    }

    var problem: Problem?
    /// Regenerated frames that differ from the previous process's, same length.
    var different = 0
    /// The first one's offset and opcode.
    var firstDifferent: (offset: Int, opcode: UInt8)?

    static func == (a: ReplayCheck, b: ReplayCheck) -> Bool {
        a.problem == b.problem && a.different == b.different && a.firstDifferent?.offset == b.firstDifferent?.offset
            && a.firstDifferent?.opcode == b.firstDifferent?.opcode
    }
}

extension OutputFile {
    /// Compares the frames of `bytes` (to go at `written`) that lie below `produced` with the file; returns how many
    /// bytes of `bytes` lie below it (not to be written).
    func catchUp(_ bytes: UnsafeRawBufferPointer) -> Int {
        var at = 0
        while at < bytes.count, written + at < produced {
            let offset = written + at
            let rest = bytes.count - at
            // Whole frames from the session; anything else is compared as one piece.
            var length = rest
            if rest >= FrameHeader.size {
                let header = FrameHeader(decoding: UnsafeRawBufferPointer(rebasing: bytes[at...]))
                if header.magic == FrameHeader.magic { length = min(rest, FrameHeader.size + Int(header.length)) }
            }
            let frame = UnsafeRawBufferPointer(rebasing: bytes[at..<(at + length)])
            compare(frame, at: offset)
            at += length
        }
        return min(at, bytes.count, max(0, produced - written))
    }

    /// One regenerated frame at stream offset `offset`, against the file's bytes below `produced`.
    private func compare(_ frame: UnsafeRawBufferPointer, at offset: Int) {
        guard replayCheck.problem == nil else { return }
        let end = offset + frame.count
        let from = max(offset, punched), to = min(end, produced)
        guard from < to else { return }
        var old = [UInt8](repeating: 0, count: to - from)
        let n = old.withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, off_t(from)) }
        guard n == old.count else {
            replayCheck.problem = .misaligned(offset: offset)
            return
        }
        let same = old.withUnsafeBytes { $0.elementsEqual(frame[(from - offset)..<(to - offset)]) }
        if same { return }
        // The previous process's header at this offset says where its frame ends.
        if from == offset, old.count >= FrameHeader.size {
            let header = old.withUnsafeBytes { FrameHeader(decoding: $0) }
            let mine = FrameHeader(decoding: frame)
            if header.magic != FrameHeader.magic || header.length != mine.length {
                replayCheck.problem = .misaligned(offset: offset)
                return
            }
        }
        if end > produced {  // the peer would get the previous process's start and this frame's end
            replayCheck.problem = .misaligned(offset: offset)
            return
        }
        replayCheck.different += 1
        if replayCheck.firstDifferent == nil {
            replayCheck.firstDifferent = (offset, frame.count >= FrameHeader.size ? frame[3] : 0)
        }
    }

    /// After the replay: the regenerated stream must have reached `produced`.
    func finishReplay() {
        if replayCheck.problem == nil, written < produced {
            replayCheck.problem = .short(written: written, produced: produced)
        }
    }
}
