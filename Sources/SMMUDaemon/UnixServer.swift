import CSocketShims
import POSIXCalls
import SystemPackage
import Dispatch
import Glibc
import Logging

/// The daemon's AF_UNIX SOCK_STREAM server. One serial queue owns everything: the listener, every connection,
/// every session and, through the sessions, the hypervisor. Connections are polled by an `EventPoller` thread that
/// enters the queue with `queue.sync` once per batch of ready sockets (no Dispatch source per connection: see
/// EventPoller for why). Input is read in batches and handed to each connection's session; its answers go out in
/// as few send() calls as the socket allows.
///
/// Back-pressure: a connection whose unsent output passes `Limits.maxPendingOutput` is no longer read until it
/// drains below half of it, so memory stays bounded and nothing is dropped; other connections are unaffected.
/// Descriptors and memory across connections are bounded too (G8, see UnixServer+Admission): a cap on open
/// connections that un-greeted ones give way to, a HELLO deadline, and a bound on all connections' unsent output.
public final class UnixServer: ServerHandle, @unchecked Sendable {  // invariant: mutable state only on `queue`
    public struct Limits: Sendable {
        /// Stop reading a connection whose unsent output exceeds this; resume below half of it.
        public var maxPendingOutput = 4 << 20
        /// Unsolicited output (events) past this closes the connection: its client stopped reading.
        public var hardPendingOutput = 16 << 20
        /// Bytes read per recvmsg call.
        public var readChunk = 64 << 10
        /// Bytes read from one connection per wake-up, so one busy client cannot starve the others.
        public var readBudgetPerEvent = 256 << 10
        /// How long shutdown waits for clients to take their last answers before closing anyway.
        public var shutdownGrace: Duration = .seconds(3)
        /// Open connections at most (limits.max_connections).
        public var maxConnections = 1024
        /// A connection not greeted this long after it was accepted is closed (limits.hello_timeout_ms).
        public var helloDeadline: Duration = .seconds(5)
        /// Unsent output across all connections at most (limits.max_buffered_output).
        public var maxTotalPendingOutput = 64 << 20
        /// A connection whose socket has taken nothing for this long while output waits is not draining: past the
        /// total bound it is closed before any connection that is.
        public var stallThreshold: Duration = .milliseconds(500)
        public init() {}
    }

    /// What the server knows about one connection (for STATUS, DUMP and tests).
    public struct ConnectionStatus: Sendable, Equatable {
        public let id: ConnectionID
        public let peer: PeerCredentials
        public let pendingOutput: Int
        public let peakPendingOutput: Int
        public let readSuspended: Bool
        public let bytesReceived: UInt64
    }

    public let queue: DispatchQueue
    public let limits: Limits
    private let listener: ListeningSocket
    private let factory: SessionFactory
    let logger: Logger
    private var listenSource: DispatchSourceRead?
    private var listenSuspended = false
    var connections: [ConnectionID: Connection] = [:]
    var nextID: UInt64 = 1
    /// Restart mode (fd store and journal), set by the daemon before `start`; nil otherwise.
    var persistence: ServerPersistence?
    private var shutdownCompletion: (() -> Void)?
    /// Connections accepted since start.
    public var acceptedCount: UInt64 { counters.accepted }
    public private(set) var isShuttingDown = false
    /// What the bounds on connections did (STATS). Read on the queue.
    public internal(set) var counters = ConnectionCounters()
    /// Called on the queue after each batch of input and of accepted connections: a request boundary (checkpoints).
    var afterInput: (() -> Void)?
    /// Connections not greeted when accepted, oldest first (the HELLO deadline, the cap's evictions).
    var ungreeted = UngreetedQueue()
    var reaperScheduled = false
    /// Unsent output summed over all connections, and whether a check of its bound is queued.
    var totalPendingOutput = 0
    var outputCheckScheduled = false
    /// Kept open to be closed when accept() fails with EMFILE, so one pending client can be accepted and closed
    /// rather than left waiting in the backlog.
    var reserveFD: Int32
    var notices = ThrottledNotices()
    /// One receive buffer shared by all connections: the queue is serial, and sessions copy what they keep.
    let readBuffer: UnsafeMutableRawBufferPointer
    /// Where recvmsg puts received descriptors, shared the same way (no allocation per read).
    let receivedFDs: UnsafeMutablePointer<Int32>
    let poller: EventPoller
    /// The poller's current batch, set on its thread just before it enters the queue to handle it.
    private var pendingBatch = UnsafeBufferPointer<EventPoller.Event>(start: nil, count: 0)
    /// Runs `pendingBatch` on the queue; made once in `start`.
    private var batchItem: DispatchWorkItem?

    /// Fails only when the kernel refuses an epoll set or an eventfd (descriptor limits).
    public init(
        listener: ListeningSocket, sessionFactory: SessionFactory,
        queue: DispatchQueue = DispatchQueue(label: "smmu-hypd.server"), limits: Limits = Limits(),
        logger: Logger = Logger(label: "smmu-hypd.server")
    ) throws {
        poller = try EventPoller()
        self.listener = listener
        self.factory = sessionFactory
        self.queue = queue
        self.limits = limits
        self.logger = logger
        readBuffer = .allocate(byteCount: limits.readChunk, alignment: 16)
        receivedFDs = .allocate(capacity: Int(CSOCK_MAX_FDS))
        reserveFD = open("/dev/null", O_RDONLY | O_CLOEXEC)
    }

    deinit {
        if reserveFD >= 0 { close(reserveFD) }
        poller.stop()
        readBuffer.deallocate()
        receivedFDs.deallocate()
    }

    /// Starts accepting and polling (callable from anywhere).
    public func start() {
        queue.async { self.startOnQueue() }
        // Each batch enters the queue through one work item made here: `queue.sync { closure }` allocated a
        // closure context and a block on every wake-up, which at one request in flight is every request.
        batchItem = DispatchWorkItem { [unowned self] in handle(pendingBatch) }
        poller.start { [weak self] events in
            guard let self, let item = batchItem else { return }
            pendingBatch = events  // dispatch_sync orders this write before the item reads it
            queue.sync(execute: item)
        }
    }

    /// Number of open connections. Call on the queue.
    public var clientCount: Int {
        dispatchPrecondition(condition: .onQueue(queue))
        return connections.count
    }

    /// Call on the queue.
    public func connectionStatuses() -> [ConnectionStatus] {
        dispatchPrecondition(condition: .onQueue(queue))
        return connections.values.sorted { $0.id.rawValue < $1.id.rawValue }.map {
            ConnectionStatus(id: $0.id, peer: $0.peer, pendingOutput: $0.pendingOutput,
                             peakPendingOutput: $0.peakPendingOutput, readSuspended: $0.isReadSuspended,
                             bytesReceived: $0.bytesReceived)
        }
    }

    public func send(_ bytes: [UInt8], to connection: ConnectionID) {
        dispatchPrecondition(condition: .onQueue(queue))
        connections[connection]?.enqueue(bytes)
    }

    public var connectionCounters: ConnectionCounters { counters }

    /// Stops accepting (removing the socket file the server bound), stops reading, lets every connection
    /// receive what was already answered, closes them, then calls `completion` on the queue.
    /// Connections still holding output after `Limits.shutdownGrace` are closed anyway. Call on the queue.
    public func beginShutdown(completion: @escaping () -> Void) {
        dispatchPrecondition(condition: .onQueue(queue))
        guard !isShuttingDown else { return }
        isShuttingDown = true
        shutdownCompletion = completion
        stopListening()
        for connection in connections.values { connection.finishAfterFlush() }
        queue.asyncAfter(deadline: .now() + limits.shutdownGrace.timeInterval) { [self] in
            for connection in connections.values {
                logger.warning("shutdown: closing \(connection.id) with \(connection.pendingOutput) bytes unsent")
                connection.teardown()
            }
        }
        completeShutdownIfIdle()
    }

    // MARK: internals

    /// One batch of ready sockets, on the queue. A token whose connection closed since the wait is skipped
    /// (ids are never reused, so a recycled fd number cannot be mistaken for it).
    private func handle(_ events: UnsafeBufferPointer<EventPoller.Event>) {
        for event in events {
            connections[ConnectionID(rawValue: event.token)]?.handle(event)
        }
        afterInput?()
    }

    private func startOnQueue() {
        let source = DispatchSource.makeReadSource(fileDescriptor: listener.fd, queue: queue)
        source.setEventHandler { [unowned self] in self.acceptAll() }
        source.setCancelHandler { [listener] in close(listener.fd) }
        listenSource = source
        source.resume()
    }

    /// Removes the socket file the server bound (an adopted socket is systemd's): a stop in restart mode leaves the
    /// connections in the fd store, but a new process binds its own listener again.
    func removeSocketFile() {
        if let path = listener.path { unlink(path) }
    }

    private func stopListening() {
        guard let source = listenSource else { return }
        listenSource = nil
        // Remove the file now (the process may exit before the cancel handler runs); systemd owns an adopted one.
        if let path = listener.path { unlink(path) }
        source.cancel()
        if listenSuspended {
            listenSuspended = false
            source.resume()
        }
    }

    /// Accepts until EAGAIN. At the connection cap a newcomer takes the place of the oldest un-greeted connection, or
    /// is closed at once when all are greeted. Out of descriptors (EMFILE, ENFILE) the same: the oldest un-greeted
    /// connection is closed to free one, else the reserve descriptor is spent to accept and close the newcomer; only
    /// when even that fails does the listener pause briefly, instead of spinning.
    private func acceptAll() {
        while !isShuttingDown {
            let fd = acceptOne()
            if fd < 0 {
                let e = errno
                switch e {
                case EAGAIN, EWOULDBLOCK: return
                case EINTR, ECONNABORTED, EPROTO: continue
                case EMFILE, ENFILE:
                    // Linux reserves the descriptor before it looks for a client: EMFILE also means "nobody waiting".
                    guard listenerHasPending() else { return }
                    if evictOldestUngreeted(reason: "no descriptor left") || refuseWithReserveDescriptor() { continue }
                    logger.error("accept: \(Errno(rawValue: e)); pausing the listener for 100 ms")
                    pauseListener()
                    return
                default:
                    logger.error("accept: \(Errno(rawValue: e)); pausing the listener for 100 ms")
                    pauseListener()
                    return
                }
            }
            admitStored(fd: fd)
            afterInput?()
        }
    }

    /// Serves a connected socket: accepted now, or stored by a process that died before its ACCEPT was journaled.
    func admitStored(fd: Int32) {
        var credentials = csock_peer()
        guard csock_peer_credentials(fd, &credentials) == 0 else {
            close(fd)
            return
        }
        let peer = PeerCredentials(pid: credentials.pid, uid: credentials.uid, gid: credentials.gid)
        guard admit(peer) else {
            close(fd)
            return
        }
        var output: OutputFile?
        if let persistence, !persistence.disabled {
            output = OutputFile.make()
            if let output { persistence.accepted(ConnectionID(rawValue: nextID), fd: fd, peer: peer, output: output) }
        }
        let connection = replayAccept(id: ConnectionID(rawValue: nextID), fd: fd, peer: peer, output: output)
        nextID += 1
        guard connection.start() else {
            logger.error("epoll_ctl: \(Errno.last); closing \(connection.id)")
            connection.teardown()
            return
        }
        if !connection.session.isGreeted { awaitHello(connection.id) }
    }

    /// Makes the session and the connection for an admitted socket (also what an ACCEPT record replays).
    @discardableResult
    func replayAccept(id: ConnectionID, fd: Int32, peer: PeerCredentials, output: OutputFile?) -> Connection {
        counters.accepted += 1
        let session = factory.makeSession(connection: id, peer: peer, server: self)
        let connection = Connection(id: id, fd: fd, peer: peer, session: session, server: self, outputFile: output)
        connections[id] = connection
        return connection
    }

    func acceptOne() -> Int32 { csock_accept(listener.fd) }

    /// True when a client waits to be accepted.
    private func listenerHasPending() -> Bool {
        var pfd = pollfd(fd: listener.fd, events: Int16(POLLIN), revents: 0)
        return poll(&pfd, 1, 0) == 1 && pfd.revents & Int16(POLLIN) != 0
    }

    private func pauseListener() {
        guard let source = listenSource, !listenSuspended else { return }
        listenSuspended = true
        source.suspend()
        queue.asyncAfter(deadline: .now() + .milliseconds(100)) { [self] in
            guard listenSuspended, let source = listenSource else { return }
            listenSuspended = false
            source.resume()
        }
    }

    /// The open connection `id`, if any (for the admission rules).
    func connection(_ id: ConnectionID) -> Connection? { connections[id] }

    var openConnections: Dictionary<ConnectionID, Connection>.Values { connections.values }

    func connectionClosed(_ connection: Connection) {
        connections[connection.id] = nil
        completeShutdownIfIdle()
    }

    private func completeShutdownIfIdle() {
        guard isShuttingDown, connections.isEmpty, let completion = shutdownCompletion else { return }
        shutdownCompletion = nil
        poller.stop()
        completion()
    }

    func log(_ message: String) { logger.warning("\(message)") }
}

extension Duration {
    /// For Dispatch deadlines.
    var timeInterval: DispatchTimeInterval {
        let (seconds, attoseconds) = components
        return .nanoseconds(Int(clamping: seconds * 1_000_000_000 + attoseconds / 1_000_000_000))
    }
}
