#if canImport(Glibc)
import Glibc
#endif
import Dispatch
import Foundation
import POSIXCalls
import SystemPackage

/// Writes a trace file on a background queue, so that a slow disk never stalls the server queue: the recorder
/// hands it whole chunks, and learns from `pendingBytes` when it has fallen behind (then it stops recording
/// rather than wait or buffer without bound) and from `failed` when a write failed.
final class TraceFileWriter: @unchecked Sendable {
    private let fd: Int32
    private let queue = DispatchQueue(label: "smmu-hypd.trace-writer", qos: .utility)
    private let lock = NSLock()
    private var pending = 0
    private var failure: Errno?

    /// Why a trace file cannot be opened.
    enum OpenError: Error, CustomStringConvertible {
        case open(path: String, Errno)
        var description: String {
            switch self {
            case .open(let path, let e): "cannot create trace file \(path): \(e)"
            }
        }
    }

    /// Creates the file (mode 0640, never following a symbolic link). `exclusive`: refuse an existing file, for a
    /// path an admin client named; the configuration's own path is replaced.
    init(path: String, exclusive: Bool) throws(OpenError) {
        let flags = O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW | (exclusive ? O_EXCL : O_TRUNC)
        let fd = open(path, flags, 0o640)
        guard fd >= 0 else { throw .open(path: path, .last) }
        self.fd = fd
    }

    /// Bytes handed over and not yet written.
    var pendingBytes: Int { lock.withLock { pending } }
    /// The first write that failed.
    var failed: Errno? { lock.withLock { failure } }

    /// Writes `chunk` after everything submitted before it.
    func submit(_ chunk: [UInt8]) {
        lock.withLock { pending += chunk.count }
        queue.async { [self] in
            let ok = lock.withLock { failure == nil }
            if ok { writeAll(chunk) }
            lock.withLock { pending -= chunk.count }
        }
    }

    /// Returns once every chunk submitted so far is written (or failed).
    func waitForWrites() { queue.sync {} }

    /// Closes the file after the submitted chunks are written; `wait`: return only then (the daemon's exit).
    func close(wait: Bool) {
        let fd = fd
        if wait { queue.sync { _ = Glibc.close(fd) } } else { queue.async { _ = Glibc.close(fd) } }
    }

    private func writeAll(_ chunk: [UInt8]) {
        chunk.withUnsafeBytes { p in
            var done = 0
            while done < p.count {
                let n = write(fd, p.baseAddress! + done, p.count - done)
                if n < 0 && errno == EINTR { continue }
                guard n > 0 else {
                    let e = Errno.last
                    lock.withLock { failure = e }
                    return
                }
                done += n
            }
        }
    }
}
