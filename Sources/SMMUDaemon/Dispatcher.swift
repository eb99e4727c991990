#if canImport(Glibc)
import Glibc
#endif
import Hypervisor
import SMMUModel
import WireProtocol

/// Who may take each HELLO role (SO_PEERCRED against the config's allow-lists). uid 0 always may.
public struct RoleAllowList: Sendable, Equatable {
    public var uids: [Role: Set<UInt32>]
    public var gids: [Role: Set<UInt32>]
    public init(uids: [Role: Set<UInt32>] = [:], gids: [Role: Set<UInt32>] = [:]) {
        self.uids = uids
        self.gids = gids
    }
    public func permits(_ role: Role, _ peer: PeerCredentials) -> Bool {
        peer.uid == 0 || uids[role]?.contains(peer.uid) == true || gids[role]?.contains(peer.gid) == true
    }
}

/// Turns protocol v1 requests into hypervisor calls and answers them (the spec, opcode by opcode).
///
/// Lives on the server's serial queue with the hypervisor: the single owner of all state (G8 relies
/// on every request being answered there, in order, per connection).
public final class Dispatcher: SessionFactory {
    public let hypervisor: Hypervisor
    public let roles: RoleAllowList
    var stats = DispatcherStatistics()
    private var sessions: [ConnectionID: DispatcherSession] = [:]
    private var subscribers: [ConnectionID] = []
    /// Last interrupt-line levels sent to subscribers, per window.
    private var lines: [[Bool]]
    private(set) weak var server: ServerHandle?
    /// Called once, on the queue, when finalization has completed (the daemon then sends READY=1).
    public var onFinalized: (() -> Void)?
    /// Audit counters from the sink (written, coalesced, ...), for STATS.
    public var auditCounters: () -> [String: Int] = { [:] }
    /// Protocol v1.1: the device connections' shared epoch pages (Dispatcher+TranslationCache.swift).
    private(set) lazy var epochPages = EpochPages(epoch: hypervisor.translationEpoch)
    /// Protocol v1.1: connections' shared-memory rings (SharedRing.swift).
    var rings: [ConnectionID: SharedRing] = [:]

    public init(hypervisor: Hypervisor, roles: RoleAllowList) {
        self.hypervisor = hypervisor
        self.roles = roles
        lines = hypervisor.windows.indices.map { hypervisor.interruptLines(window: $0) }
    }

    public func makeSession(connection: ConnectionID, peer: PeerCredentials, server: ServerHandle) -> Session {
        self.server = server
        let session = DispatcherSession(connection: connection, peer: peer, dispatcher: self)
        sessions[connection] = session
        stats.connectionsOpened += 1
        stats.connectionsOpen += 1
        return session
    }

    func sessionClosed(_ session: DispatcherSession) {
        sessions[session.connection] = nil
        subscribers.removeAll { $0 == session.connection }
        stats.connectionsOpen -= 1
        for base in session.mappedRanges { unmapClientMemory(base: base) }
        epochPages.detach(connection: session.connection)
        rings.removeValue(forKey: session.connection)?.stop()
    }

    /// Runs pKVM finalization (the delay timer or FINALIZE) and tells the daemon once it is done.
    @discardableResult
    public func finalize() -> Bool {
        let before = hypervisor.lifecycle
        guard hypervisor.finalize() else { return false }
        if before == .notFinalized {
            onFinalized?()
            publishLineChanges()
        }
        return true
    }

    var subscribersEmpty: Bool { subscribers.isEmpty }

    /// Sends every line change since the last call to every EVENTS connection (of `window` only,
    /// when the change can only have come from there).
    func publishLineChanges(window: Int? = nil) {
        var bytes: [UInt8] = []
        for w in window.map({ [$0] }) ?? Array(lines.indices) where lines.indices.contains(w) {
            let now = hypervisor.interruptLines(window: w)
            for (line, up) in now.enumerated() where up != lines[w][line] {
                Event(window: UInt32(w), line: UInt32(line), level: up ? 1 : 0).encode(into: &bytes)
            }
            lines[w] = now
        }
        guard !bytes.isEmpty, let server else { return }
        for c in subscribers { server.send(bytes, to: c) }
    }

    public var clientCount: Int { stats.connectionsOpen }
    public var operationCount: Int { stats.totalOperations }

    // MARK: Framing answers

    func answerUnsupported(_ header: FrameHeader, output: inout [UInt8]) {
        stats.unsupported += 1
        ResponseEncoder.append(to: &output, opcode: header.opcode, tag: header.tag, status: .unsupported)
    }

    func answerMalformed(opcode: UInt8, tag: UInt32, output: inout [UInt8]) {
        stats.malformed += 1
        ResponseEncoder.appendMalformed(to: &output, opcode: opcode, tag: tag)
    }

    // MARK: Requests

    /// Which role may send which opcode (protocol v1's opcode headings).
    static func permits(_ op: Opcode, for role: Role) -> Bool {
        switch op {
        case .hello: true
        case .read, .write, .memRead, .memWrite, .memMap, .events, .vmCreate, .vmDonate, .vmAssignStream, .vmDestroy:
            role == .host
        case .dma, .dmaEpoch, .dmaCached, .dmaPrefetch: role == .device
        case .ring: role == .host || role == .device
        case .stats: role == .host || role == .admin
        case .dump, .finalize: role == .admin
        case .event: false
        }
    }

    func handle(_ op: Opcode, header: FrameHeader, payload: UnsafeRawBufferPointer, fds: inout [Int32],
                session: DispatcherSession, output: inout [UInt8]) {
        let tag = header.tag
        func answer(_ status: Status, _ response: ResponsePayload = .none) {
            stats.count(op.rawValue, status, role: session.role)
            ResponseEncoder.append(to: &output, opcode: op.rawValue, tag: tag, status: status, payload: response)
        }
        let request: Request
        do {
            request = try Request.decode(opcode: op, payload: payload)
        } catch {
            answerMalformed(opcode: op.rawValue, tag: tag, output: &output)
            session.closeAfterThisFrame()
            return
        }
        // MEM_MAP and DMA_EPOCH carry exactly one fd (those that came with it); none or several is malformed
        // whoever sends it. The caller closes every fd left in `fds`.
        var passedFD: Int32?
        if op == .memMap || op == .dmaEpoch || op == .ring {
            guard fds.count == 1 else {
                answerMalformed(opcode: op.rawValue, tag: tag, output: &output)
                session.closeAfterThisFrame()
                return
            }
            passedFD = fds.removeFirst()
        }
        defer { if let fd = passedFD { close(fd) } }

        guard let role = session.role else {
            if case .hello(let hello) = request {
                let status = greet(session, hello)
                return status == .ok ? answer(.ok, .hello(helloResponse())) : answer(status)
            }
            return answer(.forbidden)
        }
        guard op != .hello, Self.permits(op, for: role) else { return answer(.forbidden) }
        guard hypervisor.lifecycle != .stopping else { return answer(.shuttingDown) }

        let client = session.client
        switch request {
        case .hello:
            answer(.forbidden)
        case .read(let r):
            guard let width = AccessWidth(bytes: r.width) else { return answer(.badAccess) }
            switch hypervisor.hostRead(address: r.address, width: width, client: client) {
            case .ok(let v): answer(.ok, .read(v))
            case let other: answer(Self.status(other))
            }
        case .write(let w):
            guard let width = AccessWidth(bytes: w.width) else { return answer(.badAccess) }
            let result = hypervisor.hostWrite(address: w.address, value: w.value, width: width, client: client)
            answer(Self.status(result))
            if case .ok = result, !subscribersEmpty { publishLineChanges(window: hypervisor.window(of: w.address)) }
        case .dma(let d):
            switch hypervisor.dma(window: Int(d.window), stream: d.streamID, iova: d.iova,
                                  access: DMAAccess(rawValue: d.flags.rawValue & 7)) {
            case .translated(let pa):
                answer(.ok, .dma(WireProtocol.DMAResult(physicalAddress: pa, fault: 0)))
            case .fault(let f):
                answer(.fault, .dma(WireProtocol.DMAResult(physicalAddress: 0, fault: f.rawValue)))
                if !subscribersEmpty { publishLineChanges(window: Int(d.window)) }
            case .invalid:
                answer(.invalid)
            }
        case .dmaEpoch:
            let (status, payload) = attachEpochPage(fd: passedFD!, session: session)
            answer(status, payload)
        case .dmaCached(let d):
            let (status, payload) = cachedDMA(d)
            answer(status, payload)
        case .ring:
            answer(attachRing(fd: passedFD!, session: session))
        case .dmaPrefetch(let p):
            let (status, payload) = prefetchDMA(p)
            answer(status, payload)
        case .memRead(let m):
            // The answer must fit one frame (65536 bytes of payload at most).
            guard Int(m.length) <= MemReadRequest.maxLength else { return answer(.invalid) }
            switch hypervisor.memRead(address: m.address, length: Int(m.length), client: client) {
            case .ok(let bytes): answer(.ok, .bytes(bytes))
            case let other: answer(Self.status(other))
            }
        case .memWrite(let m):
            answer(Self.status(hypervisor.memWrite(address: m.address, bytes: m.bytes, client: client)))
        case .memMap(let m):
            answer(mapClientMemory(m, fd: passedFD!, session: session))
        case .events:
            answer(.ok)
            publishLineChanges()   // bring `lines` up to date before this subscriber's first events
            session.enterEventsMode()
            subscribers.append(session.connection)
            for (w, levels) in lines.enumerated() {
                for (line, up) in levels.enumerated() where up {
                    Event(window: UInt32(w), line: UInt32(line), level: 1).encode(into: &output)
                }
            }
        case .vmCreate:
            switch hypervisor.vmCreate(client: client) {
            case .ok(let vm): answer(.ok, .vmCreate(vm.rawValue))
            case let other: answer(Self.status(other))
            }
        case .vmDonate(let d):
            answer(Self.status(hypervisor.vmDonate(VMHandle(rawValue: d.vm),
                                                   range: PhysicalRange(base: d.address, size: d.size), client: client)))
        case .vmAssignStream(let a):
            answer(Self.status(hypervisor.vmAssignStream(VMHandle(rawValue: a.vm), window: Int(a.window),
                                                         stream: a.streamID, client: client)))
        case .vmDestroy(let vm):
            answer(Self.status(hypervisor.vmDestroy(VMHandle(rawValue: vm), client: client)))
            linesMayHaveChanged()
        case .stats:
            answer(.ok, .text(statisticsJSON(for: role)))
        case .dump:
            answer(.ok, .text(DumpDocument(hypervisor: hypervisor).json(limit: Int(FrameHeader.maxPayloadLength))))
        case .finalize:
            answer(finalize() ? .ok : .shuttingDown)
        }
    }

    private func greet(_ session: DispatcherSession, _ hello: HelloRequest) -> Status {
        guard let role = hello.role else { return .invalid }
        guard roles.permits(role, session.peer) else { return .forbidden }
        session.greet(role: role, name: hello.name)
        return .ok
    }
}
