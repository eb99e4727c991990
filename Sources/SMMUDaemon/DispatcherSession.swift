#if canImport(Glibc)
import Glibc
#endif
import PKVM
import SMMUModel
import WireProtocol

/// What the dispatcher knows of the connection a request came on. Passed in with each request, never reached
/// back into: the session alone changes it, by applying the `SessionEffect` the dispatcher returns.
struct SessionContext {
    let connection: ConnectionID
    let peer: PeerCredentials
    /// Nil until a HELLO is accepted.
    var role: Role?
    /// Who the audit names: the HELLO name (informative), and the SO_PEERCRED pid and uid (what it attributes by).
    var client: ClientIdentity
}

/// What a request asks of its session, applied by the session once the answer is in the output.
enum SessionEffect: Equatable {
    case none
    /// Framing was fine but the request was not (undecodable, or MEM_MAP without exactly one fd): answer, then close.
    case closeAfterFrame
    /// HELLO was accepted: the connection now has this role, and the audit this name.
    case greeted(Role, name: String)
    /// EVENTS: the connection now only receives events; no more requests are read from it.
    case subscribed
    /// MEM_MAP: client memory now backs the range from `base`, until the connection closes.
    case mapped(base: UInt64)
}

/// One connection's protocol state: framing, HELLO and role, and the requests it sends.
///
/// Frame-level back-pressure: it answers requests only while its output stays under `outputLimit` and the turn's work
/// budget lasts (`TurnBudget`, G8); the rest wait in the decoder (`hasPendingInput`) until the server has drained the
/// output and given the queue to the other connections.
final class DispatcherSession: Session {
    /// Strong: an unowned reference paid a checked retain and a release on every request. The dispatcher holds
    /// no session, so there is no cycle.
    let dispatcher: Dispatcher
    private var context: SessionContext
    /// Starts small and grows to the largest frame the client sends: an idle or one-shot connection costs 4 KiB, not 64.
    private var decoder = FrameDecoder(mode: .requests, initialCapacity: 4096)
    private(set) var eventsMode = false
    private var closing = false
    /// Memory this connection mapped with MEM_MAP: (base) of each range, restored when it closes.
    private(set) var mappedRanges: [UInt64] = []
    static let outputLimit = 1 << 20

    init(connection: ConnectionID, peer: PeerCredentials, dispatcher: Dispatcher) {
        self.dispatcher = dispatcher
        context = SessionContext(connection: connection, peer: peer, role: nil,
                                 client: ClientIdentity(name: "pid\(peer.pid)", pid: peer.pid, uid: peer.uid))
    }

    var connection: ConnectionID { context.connection }
    var role: Role? { context.role }
    /// The name the audit gives the peer (its HELLO name).
    var clientName: String { context.client.name }
    var wantsInput: Bool { !eventsMode && !closing }
    var isGreeted: Bool { context.role != nil }
    /// Only what `drain` held back for the output bound counts: a partial frame (a header whose payload has
    /// not all arrived, or the tail a peer left when it hung up) is waiting for bytes, not for the output.
    var hasPendingInput: Bool { !closing && !eventsMode && heldBack }
    /// Set when `drain` stopped at `outputLimit` or at the turn's budget with input still buffered.
    private var heldBack = false

    func receive(_ input: UnsafeRawBufferPointer, fds: inout [Int32], output: inout [UInt8]) -> SessionVerdict {
        decoder.append(input)
        return drain(fds: &fds, output: &output)
    }

    func withUnconsumedInput<R>(_ body: (UnsafeRawBufferPointer, _ skip: Int) -> R) -> R {
        decoder.withUnconsumed(body)
    }

    func resumeInput(output: inout [UInt8]) -> SessionVerdict {
        var none: [Int32] = []
        return drain(fds: &none, output: &output)
    }

    /// Answers what the decoder holds, until the output bound or the turn's work budget (`TurnBudget`) is reached;
    /// the rest is held back for a later turn of the queue.
    private func drain(fds: inout [Int32], output: inout [UInt8]) -> SessionVerdict {
        var spent = 0
        while !closing && !eventsMode && output.count < Self.outputLimit && spent < TurnBudget.units {
            let handled: Bool? = decoder.next { verdict, payload in
                switch verdict {
                case .request(let opcode, let header):
                    apply(dispatcher.handle(opcode, header: header, payload: payload, fds: &fds, context: context,
                                            output: &output, spent: &spent))
                case .unsupported(let header):
                    spent += TurnBudget.framingCost
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
        heldBack = (output.count >= Self.outputLimit || spent >= TurnBudget.units)
            && decoder.bufferedByteCount >= FrameHeader.size
        return closing ? .closeAfterFlush : .keepOpen
    }

    private func apply(_ effect: SessionEffect) {
        switch effect {
        case .none: break
        case .closeAfterFrame: closing = true
        case .greeted(let role, let name):
            context.role = role
            context.client.name = name.isEmpty ? "pid\(context.peer.pid)" : Self.printable(name)
        case .subscribed: eventsMode = true
        case .mapped(let base): mappedRanges.append(base)
        }
    }

    func closed() { dispatcher.sessionClosed(context.connection, mapped: mappedRanges) }

    /// A HELLO name as the daemon keeps it: the client chose it, and it goes into log lines (finalization), audit
    /// messages and, without journald, one-line stderr records, where a newline would start a line of the client's
    /// making (journald's stream parses a "<0>" there as an emergency from the daemon). Control characters become "?".
    static func printable(_ name: String) -> String {
        guard name.unicodeScalars.contains(where: { $0.properties.generalCategory == .control }) else { return name }
        return String(String.UnicodeScalarView(name.unicodeScalars.map {
            $0.properties.generalCategory == .control ? "?" : $0
        }))
    }

    // MARK: State image

    /// This session's state, with the connection's unsent `output` and what the dispatcher holds for it.
    func stateImage(output: [UInt8]) -> DispatcherStateImage.SessionImage {
        DispatcherStateImage.SessionImage(
            id: context.connection.rawValue, peer: context.peer, role: context.role, clientName: context.client.name,
            subscribed: eventsMode, closing: closing, heldBack: heldBack, mappedBases: mappedRanges,
            epochPage: dispatcher.epochPages?.isAttached(context.connection) ?? false,
            ring: dispatcher.rings[context.connection] != nil, input: decoder.pendingState, output: output)
    }

    /// A session continuing where the one `image` recorded stopped (its connection's output is the caller's).
    init(restoring image: DispatcherStateImage.SessionImage, dispatcher: Dispatcher) {
        self.dispatcher = dispatcher
        context = SessionContext(connection: ConnectionID(rawValue: image.id), peer: image.peer, role: image.role,
                                 client: ClientIdentity(name: image.clientName, pid: image.peer.pid, uid: image.peer.uid))
        decoder = FrameDecoder(mode: .requests, restoring: image.input)
        eventsMode = image.subscribed
        closing = image.closing
        heldBack = image.heldBack
        mappedRanges = image.mappedBases
    }

    /// What a ring attached again on restore runs its requests as.
    var sessionContext: SessionContext { context }
}
