import Dispatch
import Foundation
import WireProtocol
import Glibc
import TestSupport
@testable import SMMUDaemon

/// A blocking client socket with a receive timeout, for driving the server from tests.
final class TestClient {
    let fd: Int32
    private(set) var isClosed = false

    init(path: String, timeoutSeconds: Int = 10) throws {
        fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw TestIOError("socket") }
        var timeout = timeval(tv_sec: timeoutSeconds, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        guard ListeningSocket.withAddress(path, { connect(fd, $0, $1) }) == 0 else {
            let e = errno
            // deinit still runs for a class whose init throws after initializing every property: close once,
            // through close(), or the deinit would close the same number again (by then another test's socket).
            close()
            throw TestIOError("connect \(path)", errno: e)
        }
    }

    deinit { close() }

    func close() {
        guard !isClosed else { return }
        isClosed = true
        Glibc.close(fd)
    }

    func write(_ bytes: [UInt8]) throws {
        var offset = 0
        while offset < bytes.count {
            let n = bytes.withUnsafeBytes { send(fd, $0.baseAddress! + offset, bytes.count - offset, Int32(MSG_NOSIGNAL)) }
            if n < 0 {
                if errno == EINTR { continue }
                throw TestIOError("send")
            }
            offset += n
        }
    }

    /// Sends without blocking; returns how many bytes the socket took (0 when full).
    func writeNonBlocking(_ bytes: [UInt8]) -> Int {
        let n = bytes.withUnsafeBytes { send(fd, $0.baseAddress!, bytes.count, Int32(MSG_NOSIGNAL) | Int32(MSG_DONTWAIT)) }
        return max(n, 0)
    }

    func read(exactly count: Int) throws -> [UInt8] {
        var result = [UInt8](repeating: 0, count: count)
        var offset = 0
        while offset < count {
            let n = result.withUnsafeMutableBytes { recv(fd, $0.baseAddress! + offset, count - offset, 0) }
            if n < 0 {
                if errno == EINTR { continue }
                throw TestIOError("recv after \(offset) of \(count) bytes")
            }
            if n == 0 { throw TestIOError("EOF after \(offset) of \(count) bytes", errno: 0) }
            offset += n
        }
        return result
    }

    /// Reads until the server closes; returns what came.
    func readToEOF() throws -> [UInt8] {
        var result: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress!, $0.count, 0) }
            if n < 0 {
                if errno == EINTR { continue }
                throw TestIOError("recv (waiting for EOF after \(result.count) bytes)")
            }
            if n == 0 { return result }
            result += chunk[0..<n]
        }
    }
}

/// Number of open descriptors of this process.
func openDescriptorCount() -> Int {
    (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd").count) ?? -1
}

/// Raises this process's soft descriptor limit to the hard one (tests that hold a thousand sockets); returns it.
@discardableResult
func raiseDescriptorLimit() -> Int {
    var limit = rlimit()
    guard getrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return 0 }
    if limit.rlim_cur < limit.rlim_max {
        limit.rlim_cur = limit.rlim_max
        _ = setrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limit)
    }
    return Int(limit.rlim_cur)
}

/// The response frames in a session's output, each with its payload.
func responseFrames(_ output: [UInt8]) -> [(FrameHeader, [UInt8])] {
    var decoder = FrameDecoder(mode: .responses)
    decoder.append(output)
    var frames: [(FrameHeader, [UInt8])] = []
    while let f = decoder.next({ v, p -> (FrameHeader, [UInt8])? in
        guard case .message(let h) = v else { return nil }
        return (h, Array(p))
    }) {
        if let f { frames.append(f) }
    }
    return frames
}
