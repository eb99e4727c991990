import WireProtocol

/// Restart mode's rule for how much of a socket's input to receive (G8; docs/hypervisor-model.md, "Restart and
/// crash survival"): whole frames only, and no more than one turn of the queue runs. What is not taken stays in the
/// kernel's socket buffer, which systemd's fd store keeps across a restart, so a checkpoint never has to copy it:
/// input read but not run is what the dispatcher's state image carries, and a client could otherwise make it 64 KiB
/// per connection (a partial frame, or frames the turn budget held back).
/// When no whole frame is there, the connection still takes a frame's start while all connections' held input
/// stays under its bound (`Connection.measureTake`): a sender with a small buffer may wait for those bytes to be read.
///
/// Pure: it looks at the bytes the session holds unconsumed, the bytes peeked from the socket and how many the
/// socket holds in all (FIONREAD; a peek stops at a message that carries descriptors).
struct InputTake: Equatable {
    /// Bytes of the peek to receive now; 0: wait until more arrives.
    var bytes: Int
    /// The first frame goes beyond the peek but is all in the socket: receive on until it is whole, in this same
    /// turn, whatever the read budget, so no checkpoint finds it half read.
    var continues = false

    /// - Parameters:
    ///   - unconsumed: what the session holds but has not run (normally nothing, or the start of a frame a crash
    ///     or an older checkpoint left half read).
    ///   - skip: payload bytes of an unsupported frame the decoder still drops (`FrameDecoder.PendingState`).
    ///   - queued: bytes in the socket in all (at least `peeked.count`).
    ///   - maxCost: the turn's work (`TurnBudget.units`): frames are taken while their opcodes' costs fit.
    ///   - maxBytes: bytes taken at most beyond the first frame (0: one frame at a time).
    static func measure(unconsumed: UnsafeRawBufferPointer, skip: Int, peeked: UnsafeRawBufferPointer, queued: Int,
                        maxCost: Int, maxBytes: Int) -> InputTake {
        let held = unconsumed.count
        let total = held + peeked.count
        var end = skip  // the skipped payload completes the frame in progress: held is empty then
        if end > total {
            return InputTake(bytes: end - held <= queued ? peeked.count : 0, continues: end - held <= queued)
        }
        var cost = 0
        var frames = skip > 0 ? 1 : 0
        while end + FrameHeader.size <= total {
            let header = Self.header(at: end, unconsumed, peeked)
            var frameEnd = end + FrameHeader.size
            var frameCost = TurnBudget.framingCost
            var last = false
            if FrameDecoder.framingError(header) != nil {
                last = true  // the decoder closes on the header: nothing after it is read
            } else if let op = Opcode(rawValue: header.opcode), let size = op.requestSize {
                if size.admits(Int(header.length)) {
                    frameEnd += Int(header.length)
                    frameCost = TurnBudget.cost(of: op)
                } else {
                    last = true
                }
            } else {
                frameEnd += Int(header.length)  // unsupported: answered, its payload skipped
            }
            if frames > 0 && (cost + frameCost > maxCost || frameEnd - held > maxBytes) { break }
            if frameEnd > total {
                // The first frame is not all in the peek: take what there is only if the rest is in the socket.
                guard frames == 0, frameEnd - held <= queued else { break }
                return InputTake(bytes: peeked.count, continues: true)
            }
            end = frameEnd
            cost += frameCost
            frames += 1
            if last { break }
        }
        if frames == 0 && end < total && queued > peeked.count {
            // A header cut by a message carrying descriptors: take its start (under 16 bytes) to see past it.
            return InputTake(bytes: peeked.count, continues: true)
        }
        return InputTake(bytes: max(0, end - held))
    }

    private static func header(at offset: Int, _ a: UnsafeRawBufferPointer, _ b: UnsafeRawBufferPointer) -> FrameHeader {
        if offset >= a.count {
            return FrameHeader(decoding: UnsafeRawBufferPointer(rebasing: b[(offset - a.count)...]))
        }
        if offset + FrameHeader.size <= a.count {
            return FrameHeader(decoding: UnsafeRawBufferPointer(rebasing: a[offset...]))
        }
        var bytes = [UInt8](a[offset...])
        bytes += b[0..<(FrameHeader.size - bytes.count)]
        return bytes.withUnsafeBytes { FrameHeader(decoding: $0) }
    }
}
