import Dispatch
import TestSupport
import Glibc
@testable import SMMUDaemon

/// A test protocol over the real server: 16-byte frames echoed back in order.
/// Frame byte 0 selects extras: 0xFD keeps the fds that came with the frame, 0xCC echoes then closes the
/// connection, 0xB1 answers with 64 KiB (to exercise the session's own hold-back of large answers).
final class EchoSession: Session {
    static let frameSize = 16
    static let bigAnswer = 64 << 10
    private var partial: [UInt8] = []
    private var held: [[UInt8]] = []
    private(set) var keptFDs: [Int32] = []
    private unowned let factory: EchoFactory
    let connection: ConnectionID
    let peer: PeerCredentials

    init(factory: EchoFactory, connection: ConnectionID, peer: PeerCredentials) {
        self.factory = factory
        self.connection = connection
        self.peer = peer
    }

    func receive(_ input: UnsafeRawBufferPointer, fds: inout [Int32], output: inout [UInt8]) -> SessionVerdict {
        partial += input
        var frames = 0
        while partial.count >= Self.frameSize {
            let frame = Array(partial.prefix(Self.frameSize))
            partial.removeFirst(Self.frameSize)
            if frame[0] == 0xFD, !fds.isEmpty {
                keptFDs += fds
                fds = []
            }
            held.append(frame)
            isGreeted = true
            frames += 1
        }
        return answerHeld(output: &output)
    }

    var hasPendingInput: Bool { !held.isEmpty }

    func resumeInput(output: inout [UInt8]) -> SessionVerdict { answerHeld(output: &output) }

    private func answerHeld(output: inout [UInt8]) -> SessionVerdict {
        while !held.isEmpty, output.count < factory.sessionOutputLimit {
            let frame = held.removeFirst()
            output += frame
            if frame[0] == 0xB1 { output += [UInt8](repeating: 0xB1, count: Self.bigAnswer) }
            factory.answered += 1
            if frame[0] == 0xCC {
                held = []
                return .closeAfterFlush
            }
        }
        return .keepOpen
    }

    var wantsInput: Bool { true }

    /// The echo protocol has no HELLO: a connection is greeted by its first complete frame.
    private(set) var isGreeted = false

    func closed() {
        for fd in keptFDs { close(fd) }
        keptFDs = []
        factory.closedSessions += 1
    }
}

/// Counts what its sessions did; touched only on the server queue.
final class EchoFactory: SessionFactory {
    var sessionOutputLimit = Int.max
    var answered = 0
    var closedSessions = 0
    var sessions: [ConnectionID: EchoSession] = [:]

    func makeSession(connection: ConnectionID, peer: PeerCredentials, server: ServerHandle) -> Session {
        let session = EchoSession(factory: self, connection: connection, peer: peer)
        sessions[connection] = session
        return session
    }
}

/// A server on a temporary socket with the echo protocol.
final class EchoServerFixture: @unchecked Sendable {
    let directory: TemporaryDirectory
    let path: String
    let factory = EchoFactory()
    let server: UnixServer

    init(limits: UnixServer.Limits = UnixServer.Limits(), mode: UInt32 = 0o660) throws {
        directory = try TemporaryDirectory()
        path = directory.path + "/s.sock"
        let listener = try ListeningSocket.bind(path: path, mode: mode)
        server = try UnixServer(listener: listener, sessionFactory: factory, limits: limits)
        server.start()
    }

    func onQueue<T>(_ body: () -> T) -> T { server.queue.sync(execute: body) }

    /// Shuts the server down and waits for its completion.
    func shutdown() {
        let done = DispatchSemaphore(value: 0)
        server.queue.async { self.server.beginShutdown { done.signal() } }
        _ = done.wait(timeout: .now() + 10)
        directory.remove()
    }
}

/// `count` frames whose bytes 4..<12 carry the sequence number, byte 0 the given kind.
func echoFrames(_ count: Int, first: Int = 0, kind: UInt8 = 0x01) -> [UInt8] {
    var bytes: [UInt8] = []
    bytes.reserveCapacity(count * EchoSession.frameSize)
    for i in first..<(first + count) {
        var frame = [UInt8](repeating: 0, count: EchoSession.frameSize)
        frame[0] = kind
        withUnsafeBytes(of: UInt64(i).littleEndian) { frame.replaceSubrange(4..<12, with: $0) }
        bytes += frame
    }
    return bytes
}
