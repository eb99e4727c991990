import Foundation
import Glibc
import TestSupport
import POSIXCalls

/// The socket floor: the least a protocol v1 server on AF_UNIX SOCK_STREAM can cost on this machine.
///
/// A blocking read loop (socket-floor.md's "Swift, blocking read loop"): it reads everything available,
/// answers every whole frame in the batch with a response of the size the daemon would send (READ: 8-byte
/// payload, anything else: none), and sends the batch with one write. It does no decoding beyond the header,
/// so the daemon's ratio against it is the cost of the daemon itself. It runs in a process of its own
/// (`smmu-bench --serve-floor PATH`, see `FloorProcess`), as the daemon does: a thread of the benchmark's own
/// process would switch to and from the client without changing address space, which the daemon never can.
final class EchoFloor: Sendable {
    let path: String
    private let listenFD: Int32

    enum SetupError: Error, CustomStringConvertible {
        case socket(SyscallFailure)
        var description: String {
            switch self { case .socket(let failure): "echo floor: \(failure)" }
        }
    }

    init(path: String) throws(SetupError) {
        self.path = path
        unlink(path)
        let fd: Int32
        do { fd = try syscall("socket") { socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0) } }
        catch { throw .socket(error) }
        do {
            _ = try syscall("bind") { bindUnixSocket(fd, path) }
            _ = try syscall("listen") { listen(fd, 16) }
        } catch {
            close(fd)
            throw .socket(error)
        }
        listenFD = fd
    }

    /// Serves connections one after another on the calling thread, until accept fails.
    func serveForever() {
        while true {
            let fd = accept(listenFD, nil, nil)
            if fd < 0 {
                if errno == EINTR { continue }
                return
            }
            serve(fd)
            close(fd)
        }
    }

    /// The loop: blocking recv of whatever is there, one send of all the answers.
    private func serve(_ fd: Int32) {
        let capacity = 1 << 16
        let input = UnsafeMutableRawPointer.allocate(byteCount: capacity, alignment: 16)
        let output = UnsafeMutableRawPointer.allocate(byteCount: capacity * 2, alignment: 16)
        defer {
            input.deallocate()
            output.deallocate()
        }
        var held = 0  // bytes of an incomplete frame kept at the start of `input`
        while true {
            let n = recv(fd, input + held, capacity - held, 0)
            if n <= 0 {
                if n < 0 && errno == EINTR { continue }
                return
            }
            let available = held + n
            var at = 0
            var out = 0
            while available - at >= 16 {
                let length = Int(input.loadUnaligned(fromByteOffset: at + 12, as: UInt32.self).littleEndian)
                guard length <= capacity - 16 else { return }
                if available - at < 16 + length { break }
                let opcode = input.load(fromByteOffset: at + 3, as: UInt8.self)
                let payload = opcode == 0x02 ? 8 : 0
                (output + out).copyMemory(from: input + at, byteCount: 8)  // magic, version, opcode, tag
                (output + out).storeBytes(of: opcode | 0x80, toByteOffset: 3, as: UInt8.self)
                (output + out).storeBytes(of: UInt32(0), toByteOffset: 8, as: UInt32.self)
                (output + out).storeBytes(of: UInt32(payload).littleEndian, toByteOffset: 12, as: UInt32.self)
                if payload > 0 { (output + out + 16).initializeMemory(as: UInt8.self, repeating: 0, count: payload) }
                out += 16 + payload
                at += 16 + length
            }
            held = available - at
            if held > 0 && at > 0 { input.copyMemory(from: input + at, byteCount: held) }
            var sent = 0
            while sent < out {
                let w = send(fd, output + sent, out - sent, Int32(MSG_NOSIGNAL))
                if w < 0 {
                    if errno == EINTR { continue }
                    return
                }
                sent += w
            }
        }
    }
}
