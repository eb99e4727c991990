import CSocketShims
import Foundation
import Synchronization
import WireProtocol

@testable import SMMUClient

#if canImport(Glibc)
    import Glibc
#endif

/// A connected socket pair: the client end for SMMUClient, the server end for a test thread.
func socketPair() -> (client: Int32, server: Int32) {
    var fds: [Int32] = [-1, -1]
    let rc = socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &fds)
    precondition(rc == 0, "socketpair failed")
    return (fds[0], fds[1])
}

/// What one request looked like on the server side.
struct Received: Sendable, Equatable {
    var request: Request
    var tag: UInt32
    /// Descriptors that came with it (SCM_RIGHTS), already open in this process.
    var fds: [Int32]
}

/// A protocol v1 responder on a background thread, for client-side behaviour that needs a real
/// socket peer (fd passing, interleaved pipelining, back-pressure). It decodes with the real
/// FrameDecoder and answers with the real ResponseEncoder; `answer` decides each response.
final class TestServer: Sendable {
    let fd: Int32
    let received = Mutex<[Received]>([])
    private let done = DispatchSemaphore(value: 0)

    /// - Parameters:
    ///   - readChunk: bytes per recv (small values make a slow reader that applies back-pressure).
    ///   - answer: the status and payload for each request.
    init(fd: Int32, readChunk: Int = 65536, answer: @escaping @Sendable (Request) -> (Status, ResponsePayload)) {
        self.fd = fd
        let thread = Thread { [self] in
            serve(readChunk: readChunk, answer: answer)
            done.signal()
        }
        thread.start()
    }

    /// Waits for the server thread to finish (the client closed its end).
    func join() { done.wait() }

    private func serve(readChunk: Int, answer: (Request) -> (Status, ResponsePayload)) {
        var decoder = FrameDecoder()
        var out: [UInt8] = []
        out.reserveCapacity(1 << 16)
        var pendingFDs: [Int32] = []
        defer { close(fd) }
        while true {
            var fds = [Int32](repeating: -1, count: 4)
            var numFDs: Int32 = 0
            var truncated: Int32 = 0
            let n = decoder.readInto(minimumSpace: readChunk) { space in
                csock_recv_with_fds(fd, space.baseAddress, min(readChunk, space.count), &fds, 4, &numFDs, &truncated, 0)
            }
            if n <= 0 { return }
            pendingFDs += fds.prefix(Int(min(numFDs, 4)))
            out.removeAll(keepingCapacity: true)
            var closeAfter = false
            while let _ = decoder.next({ verdict, payload in
                switch verdict {
                case .request(let op, let header):
                    guard let request = try? Request.decode(opcode: op, payload: payload) else { return }
                    received.withLock { $0.append(Received(request: request, tag: header.tag, fds: pendingFDs)) }
                    pendingFDs = []
                    let (status, body) = answer(request)
                    ResponseEncoder.append(to: &out, opcode: op.rawValue, tag: header.tag, status: status, payload: body)
                case .unsupported(let header):
                    ResponseEncoder.append(to: &out, opcode: header.opcode, tag: header.tag, status: .unsupported)
                case .malformed(let opcode, let tag, _):
                    ResponseEncoder.appendMalformed(to: &out, opcode: opcode, tag: tag)
                    closeAfter = true
                case .message:
                    break
                }
            }) {}
            var sent = 0
            while sent < out.count {
                let m = out.withUnsafeBytes { send(fd, $0.baseAddress! + sent, $0.count - sent, Int32(MSG_NOSIGNAL)) }
                if m <= 0 { return }
                sent += m
            }
            if closeAfter { return }
        }
    }
}
