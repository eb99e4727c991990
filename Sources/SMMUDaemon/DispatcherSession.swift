#if canImport(Glibc)
import Glibc
#endif
import Hypervisor
import SMMUModel
import WireProtocol

/// One connection's protocol state: framing, HELLO and role, and the requests it sends.
///
/// Frame-level back-pressure: it answers requests only while its output stays under `outputLimit`;
/// the rest wait in the decoder (`hasPendingInput`) until the server has drained the output.
final class DispatcherSession: Session {
    let connection: ConnectionID
    let peer: PeerCredentials
    /// Strong: an unowned reference paid a checked retain and a release on every request. The dispatcher's
    /// `sessions` table holds the session until `closed()`, which breaks the cycle.
    let dispatcher: Dispatcher
    /// Starts small and grows to the largest frame the client sends: an idle or one-shot connection costs 4 KiB, not 64.
    private var decoder = FrameDecoder(mode: .requests, initialCapacity: 4096)
    private(set) var role: Role?
    private(set) var client = ClientIdentity(name: "", pid: 0, uid: 0)
    private(set) var eventsMode = false
    private var closing = false
    /// Memory this connection mapped with MEM_MAP: (base) of each range, restored when it closes.
    var mappedRanges: [UInt64] = []
    static let outputLimit = 1 << 20

    init(connection: ConnectionID, peer: PeerCredentials, dispatcher: Dispatcher) {
        self.connection = connection
        self.peer = peer
        self.dispatcher = dispatcher
        client = ClientIdentity(name: "pid\(peer.pid)", pid: peer.pid, uid: peer.uid)
    }

    var wantsInput: Bool { !eventsMode && !closing }
    var isGreeted: Bool { role != nil }
    /// Only what `drain` held back for the output bound counts: a partial frame (a header whose payload has
    /// not all arrived, or the tail a peer left when it hung up) is waiting for bytes, not for the output.
    var hasPendingInput: Bool { !closing && !eventsMode && heldBack }
    /// Set when `drain` stopped at `outputLimit` with input still buffered.
    private var heldBack = false

    func receive(_ input: UnsafeRawBufferPointer, fds: inout [Int32], output: inout [UInt8]) -> SessionVerdict {
        decoder.append(input)
        return drain(fds: &fds, output: &output)
    }

    func resumeInput(output: inout [UInt8]) -> SessionVerdict {
        var none: [Int32] = []
        return drain(fds: &none, output: &output)
    }

    private func drain(fds: inout [Int32], output: inout [UInt8]) -> SessionVerdict {
        while !closing && !eventsMode && output.count < Self.outputLimit {
            let handled: Bool? = decoder.next { verdict, payload in
                switch verdict {
                case .request(let opcode, let header):
                    dispatcher.handle(opcode, header: header, payload: payload, fds: &fds, session: self, output: &output)
                case .unsupported(let header):
                    dispatcher.answerUnsupported(header, output: &output)
                case .malformed(let opcode, let tag, _):
                    dispatcher.answerMalformed(opcode: opcode, tag: tag, output: &output)
                    closing = true
                case .message:
                    break   // responses mode only
                }
                return true
            }
            if handled == nil { break }
        }
        heldBack = output.count >= Self.outputLimit && decoder.bufferedByteCount >= FrameHeader.size
        return closing ? .closeAfterFlush : .keepOpen
    }

    /// A request whose framing is fine but whose ancillary data is not (MEM_MAP without exactly one fd).
    func closeAfterThisFrame() { closing = true }

    func greet(role: Role, name: String) {
        self.role = role
        client.name = name.isEmpty ? "pid\(peer.pid)" : name
    }

    func enterEventsMode() { eventsMode = true }

    func closed() { dispatcher.sessionClosed(self) }
}
