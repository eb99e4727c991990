import CSocketShims
import Glibc

/// One connection's answers, in a memfd of its own kept in systemd's fd store, sent with sendfile().
///
/// Why a file and sendfile: sendfile(sock, file, NULL, n) advances the file's offset by exactly the bytes the
/// socket took, inside the one system call that queued them. The offset belongs to the open file description, which
/// the stored duplicate shares, so after a crash it says exactly how much of the stream the peer has got, even when
/// SIGKILL lands just after the call returned. A send() from memory and a counter updated after it has that window.
///
/// The file only grows: byte n of the connection's answer stream is at offset n. Bytes already sent are punched out
/// (FALLOC_FL_PUNCH_HOLE), so the memory held is the unsent part only.
final class OutputFile {
    let fd: Int32
    /// Bytes of the answer stream written to the file (the next answer goes here).
    private(set) var written: Int
    /// Bytes the socket has taken: the file offset.
    private(set) var sent: Int
    /// Everything below is a hole.
    private(set) var punched: Int
    /// The end of the stream the previous process wrote (the file's size when taken over; 0 for a new file). A replay
    /// regenerates the stream up to here: those bytes stay the previous process's (what the peer got or gets next),
    /// and the regenerated ones are only compared with them (`OutputFile+Replay`); past it they are written.
    let produced: Int
    /// What the comparison found (nil: nothing regenerated differed).
    var replayCheck = ReplayCheck()
    static let punchGranule = 64 << 10

    var pending: Int { written - sent }

    /// A new, empty file.
    static func make() -> OutputFile? {
        let fd = csock_memfd("smmu-hypd-output")
        return fd < 0 ? nil : OutputFile(fd: fd, written: 0)
    }

    /// Takes over a stored file. `written` starts at what the file's offset says was sent: the replay of the journal
    /// writes the stream again from its start, and `append` skips what is already sent.
    init(fd: Int32, written: Int = 0) {
        self.fd = fd
        let offset = Int(lseek(fd, 0, SEEK_CUR))
        sent = max(0, offset)
        punched = sent & ~(Self.punchGranule - 1)
        self.written = written
        var st = stat()
        produced = fstat(fd, &st) == 0 ? max(sent, Int(st.st_size)) : sent
    }

    deinit { close(fd) }

    /// Appends `bytes` (whole frames) to the stream. The part below `produced` is the previous process's (a replay
    /// regenerating the stream): compared, not written. False when the write failed (out of memory).
    func append(_ bytes: UnsafeRawBufferPointer) -> Bool {
        defer { written += bytes.count }
        var done = written < produced ? catchUp(bytes) : 0
        while done < bytes.count {
            let n = pwrite(fd, bytes.baseAddress! + done, bytes.count - done, off_t(written + done))
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { return false }
            done += n
        }
        return true
    }

    enum FlushResult { case drained, wouldBlock, failed }

    /// Sends what is pending as far as the socket takes it.
    func flush(to socket: Int32) -> FlushResult {
        while sent < written {
            let n = sendfile(socket, fd, nil, written - sent)
            if n > 0 {
                sent += n
                continue
            }
            if n < 0 && errno == EINTR { continue }
            if n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) { punchSent(); return .wouldBlock }
            return .failed
        }
        punchSent()
        return .drained
    }

    private func punchSent() {
        let upTo = sent & ~(Self.punchGranule - 1)
        guard upTo > punched else { return }
        _ = csock_punch_hole(fd, off_t(punched), off_t(upTo - punched))
        punched = upTo
    }
}
