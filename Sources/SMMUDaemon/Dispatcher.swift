#if canImport(Glibc)
import Glibc
#endif
import PKVM
import SMMUModel
import WireProtocol

/// Turns protocol v1 requests into hypervisor calls and answers them (docs/protocol-v1.md, opcode by opcode).
///
/// Control flows one way: a session hands in a request with its `SessionContext` and gets back the
/// `SessionEffect` it must apply; the dispatcher never calls back into a session and keeps no table of them.
/// Lives on the server's serial queue with the hypervisor: the single owner of all state (G8 relies
/// on every request being answered there, in order, per connection).
public final class Dispatcher: SessionFactory {
    public let hypervisor: Hypervisor
    public let roles: DaemonConfiguration.Roles
    var stats = DispatcherStatistics()
    /// EVENTS: who listens, and what they last heard.
    var events: EventsPublisher
    /// The server that asked for sessions: where events go, and whose connection counters STATS shows.
    weak var server: ServerHandle?
    /// Called once, on the queue, when finalization has completed (the daemon then sends READY=1).
    public var onFinalized: (() -> Void)?
    /// Audit counters from the sink (written, coalesced, ...), for STATS.
    public var auditCounters: () -> [String: Int] = { [:] }
    /// Protocol v1.1: the device connections' shared epoch pages (Dispatcher+TranslationCache.swift), made at the
    /// first DMA_EPOCH: until a device shares a page, an epoch advance tells nobody.
    var epochPages: EpochPages?
    /// Protocol v1.1: connections' shared-memory rings (SharedRing.swift).
    var rings: [ConnectionID: SharedRing] = [:]

    public init(hypervisor: Hypervisor, roles: DaemonConfiguration.Roles = .init()) {
        self.hypervisor = hypervisor
        self.roles = roles
        events = EventsPublisher(hypervisor: hypervisor)
    }

    public func makeSession(connection: ConnectionID, peer: PeerCredentials, server: ServerHandle) -> Session {
        self.server = server
        stats.connectionsOpened += 1
        stats.connectionsOpen += 1
        return DispatcherSession(connection: connection, peer: peer, dispatcher: self)
    }

    /// A connection is gone: it hears no more events, and the memory it mapped goes back to the daemon, zeroed.
    func sessionClosed(_ connection: ConnectionID, mapped: [UInt64]) {
        events.unsubscribe(connection)
        stats.connectionsOpen -= 1
        for base in mapped { hypervisor.unmapHostMemory(base: base) }
        epochPages?.detach(connection: connection)
        rings.removeValue(forKey: connection)?.stop()
    }

    /// Runs pKVM finalization (the delay timer or FINALIZE) and tells the daemon once it is done.
    @discardableResult
    public func finalize() -> Bool {
        let before = hypervisor.lifecycle
        guard hypervisor.finalize() else { return false }
        if before == .notFinalized {
            onFinalized?()
            events.publishChanges(to: server)
        }
        return true
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
        case .dma, .mcDMA, .dmaEpoch, .dmaCached, .dmaPrefetch: role == .device
        case .ring: role == .host || role == .device
        case .stats: role == .host || role == .admin
        case .dump, .finalize: role == .admin
        case .event: false
        }
    }

    /// Answers one request into `output` and says what the session must do next.
    func handle(_ op: Opcode, header: FrameHeader, payload: UnsafeRawBufferPointer, fds: inout [Int32],
                context: SessionContext, output: inout [UInt8]) -> SessionEffect {
        let tag = header.tag
        func answer(_ status: Status, _ response: ResponsePayload = .none) {
            stats.count(op.rawValue, status, role: context.role)
            ResponseEncoder.append(to: &output, opcode: op.rawValue, tag: tag, status: status, payload: response)
        }
        func report<T>(_ outcome: Outcome<T>) { answer(Status(outcome)) }
        let request: Request
        do {
            request = try Request.decode(opcode: op, payload: payload)
        } catch {
            answerMalformed(opcode: op.rawValue, tag: tag, output: &output)
            return .closeAfterFrame
        }
        // MEM_MAP and DMA_EPOCH carry exactly one fd (those that came with it); none or several is malformed
        // whoever sends it. The caller closes every fd left in `fds`.
        var passedFD: Int32?
        if op == .memMap || op == .dmaEpoch || op == .ring {
            guard fds.count == 1 else {
                answerMalformed(opcode: op.rawValue, tag: tag, output: &output)
                return .closeAfterFrame
            }
            passedFD = fds.removeFirst()
        }
        defer { if let fd = passedFD { close(fd) } }

        guard let role = context.role else {
            guard case .hello(let hello) = request else {
                answer(.forbidden)
                return .none
            }
            guard let role = hello.role else {
                answer(.invalid)
                return .none
            }
            guard roles.permits(role, context.peer) else {
                answer(.forbidden)
                return .none
            }
            // Counted under the role it has just taken.
            stats.count(op.rawValue, .ok, role: role)
            ResponseEncoder.append(to: &output, opcode: op.rawValue, tag: tag, status: .ok, payload: .hello(helloResponse()))
            return .greeted(role, name: hello.name)
        }
        guard op != .hello, Self.permits(op, for: role) else {
            answer(.forbidden)
            return .none
        }
        guard hypervisor.lifecycle != .stopping else {
            answer(.shuttingDown)
            return .none
        }

        let client = context.client
        switch request {
        case .hello:
            answer(.forbidden)
        case .read(let r):
            guard let width = AccessWidth(bytes: r.width) else { answer(.badAccess); break }
            switch hypervisor.hostRead(address: r.address, width: width, client: client) {
            case .ok(let v): answer(.ok, .read(v))
            case let other: report(other)
            }
        case .write(let w):
            guard let width = AccessWidth(bytes: w.width) else { answer(.badAccess); break }
            let outcome = hypervisor.hostWrite(address: w.address, value: w.value, width: width, client: client)
            report(outcome)
            if case .ok(let window) = outcome, !events.isEmpty { events.publishChanges(window: window, to: server) }
        case .dma(let d):
            let outcome = hypervisor.dma(window: Int(d.window), stream: d.streamID, iova: d.iova,
                                         access: DMAAccess(d.flags))
            switch outcome {
            case .ok(let pa):
                answer(.ok, .dma(DMAResponse(physicalAddress: pa, fault: 0)))
            case .fault(let f):
                answer(.fault, .dma(DMAResponse(physicalAddress: 0, fault: FaultCode(f).rawValue)))
                if !events.isEmpty { events.publishChanges(window: Int(d.window), to: server) }
            case let other:
                report(other)
            }
        case .mcDMA(let d):
            answerMemoryControllerDMA(d, answer: answer)
        case .dmaEpoch:
            let (status, payload) = attachEpochPage(fd: passedFD!, connection: context.connection)
            answer(status, payload)
        case .dmaCached(let d):
            let (status, payload) = cachedDMA(d)
            answer(status, payload)
        case .ring:
            answer(attachRing(fd: passedFD!, context: context))
        case .dmaPrefetch(let p):
            let (status, payload) = prefetchDMA(p)
            answer(status, payload)
        case .memRead(let m):
            // The answer must fit one frame (65536 bytes of payload at most).
            guard Int(m.length) <= MemReadRequest.maxLength else { answer(.invalid); break }
            switch hypervisor.memRead(address: m.address, length: Int(m.length), client: client) {
            case .ok(let bytes): answer(.ok, .bytes(bytes))
            case let other: report(other)
            }
        case .memWrite(let m):
            report(hypervisor.memWrite(address: m.address, bytes: m.bytes, client: client))
        case .memMap(let m):
            let outcome = mapClientMemory(m, fd: passedFD!, client: client)
            report(outcome)
            if case .ok = outcome { return .mapped(base: m.address) }
        case .events:
            answer(.ok)
            events.subscribe(context.connection, server: server, output: &output)
            return .subscribed
        case .vmCreate:
            switch hypervisor.vmCreate(client: client) {
            case .ok(let vm): answer(.ok, .vmCreate(vm.rawValue))
            case let other: report(other)
            }
        case .vmDonate(let d):
            report(hypervisor.vmDonate(VMHandle(rawValue: d.vm), range: PhysicalRange(base: d.address, size: d.size),
                                       client: client))
        case .vmAssignStream(let a):
            report(hypervisor.vmAssignStream(VMHandle(rawValue: a.vm), window: Int(a.window), stream: a.streamID,
                                             client: client))
        case .vmDestroy(let vm):
            report(hypervisor.vmDestroy(VMHandle(rawValue: vm), client: client))
            if !events.isEmpty { events.publishChanges(to: server) }
        case .stats:
            answer(.ok, .text(statisticsJSON(for: role)))
        case .dump:
            answer(.ok, .text(DumpDocument(hypervisor: hypervisor).json(limit: Int(FrameHeader.maxPayloadLength))))
        case .finalize:
            answer(finalize() ? .ok : .shuttingDown)
        }
        return .none
    }

    func helloResponse() -> HelloResponse {
        HelloResponse(state: HelloState(hypervisor.lifecycle), windows: hypervisor.windows.map {
            WindowRecord(base: $0.base, size: $0.size, pageSize: $0.pageSize, numContextBanks: $0.contextBanks,
                         numStreamMatchGroups: $0.streamMatchGroups, name: $0.name)
        })
    }
}
