#if canImport(Glibc)
import Glibc
#endif
import Dispatch
import SMMUModel
import WireProtocol

/// Records every request the dispatcher answers, with its answer, into a bounded trace (docs/trace-format.md).
///
/// Lives on the server queue with the dispatcher and sees everything in the queue's one global order: connections
/// opening and closing, exchanges, events sent to subscribers, finalization by the timer. The cost on the request
/// path is encoding into an in-memory buffer; a `TraceFileWriter` writes whole chunks in the background. Nothing
/// here waits: past `maxBytes` the trace ends `truncated`, and when the writer falls behind by `maxPendingBytes` it
/// ends `writerBehind`, so recording never blocks the daemon nor grows without bound.
///
/// Memory: a walk's answer depends on page-table bytes a client wrote into its own MEM_MAPped file, which the daemon
/// never sees as requests. The memory map reports each read of client memory (`clientReadObserver`); the exchange
/// carries those bytes, and a replay writes them into its own mapping first. An 8-byte read whose value was already
/// recorded since the last daemon write to client memory is left out (a walk rereads the same descriptors).
final class TraceRecorder {
    let path: String
    let maxBytes: UInt64
    /// Bytes of the trace so far (header and records, written or still buffered).
    private(set) var bytes: UInt64 = 0
    private(set) var records: UInt64 = 0
    /// Why it stopped; nil while recording.
    private(set) var end: TraceEnd?
    var isRecording: Bool { end == nil }

    private let writer: TraceFileWriter
    private let memoryMap: MemoryMap
    private var buffer: [UInt8] = []
    private var lastFlush = DispatchTime.now().uptimeNanoseconds
    /// Records since the clock was last read: it is read every `clockEvery` records, not on each.
    private var sinceClock = 0

    // The exchange in progress.
    private var inExchange = false
    private var outputStart = 0
    private var descriptor: TraceDescriptor?
    private var observed: [UInt8] = []
    private var observedCount = 0
    /// Events sent to other connections while the exchange runs: written after it, as a replay will see them.
    private var eventsDuringExchange: [(session: UInt64, frame: [UInt8])] = []
    /// The last value recorded per 8-byte address of client memory since the last daemon write to client memory.
    private var recorded = RememberedValues()
    /// Descriptor files by (device, inode): the trace's file numbers.
    private var files: [FileKey: UInt32] = [:]

    static let flushBytes = 256 << 10
    static let flushNanoseconds: UInt64 = 50_000_000
    static let clockEvery = 64
    static let maxPendingBytes = 16 << 20
    /// The smallest bound that holds the header and its end record.
    static func minimumBytes(configuration: [UInt8]) -> UInt64 {
        UInt64(TraceFormat.headerSize + configuration.count + TraceEncoder.endRecordSize)
    }

    private struct FileKey: Hashable {
        let device: UInt64
        let inode: UInt64
    }

    /// Opens `path` and writes the header. The caller checked `maxBytes` against `minimumBytes`.
    init(path: String, exclusive: Bool, maxBytes: UInt64, configuration: [UInt8], memory: MemoryMap)
        throws(TraceFileWriter.OpenError) {
        writer = try TraceFileWriter(path: path, exclusive: exclusive)
        self.path = path
        self.maxBytes = maxBytes
        memoryMap = memory
        TraceHeader(configuration: configuration).encode(into: &buffer)
        bytes = UInt64(buffer.count)
        flush()
        memory.clientReadObserver = { [unowned self] address, bytes in observe(address, bytes) }
    }

    /// Dropped while recording (its dispatcher is gone): the memory map must not call it again, and the file closes.
    deinit {
        if isRecording {
            memoryMap.clientReadObserver = nil
            writer.close(wait: false)
        }
    }

    var status: TraceStatus {
        TraceStatus(recording: isRecording, end: end, bytes: bytes, records: records, maxBytes: maxBytes)
    }

    // MARK: What the dispatcher reports

    func sessionOpened(_ connection: ConnectionID, peer: PeerCredentials) {
        append(.sessionOpened(session: connection.rawValue, peer: TracePeer(uid: peer.uid, gid: peer.gid, pid: peer.pid)))
    }

    /// Before the daemon unmaps what the connection mapped: client memory changes, so values recorded are forgotten.
    func sessionClosed(_ connection: ConnectionID) {
        forgetRecordedMemory()
        append(.sessionClosed(session: connection.rawValue))
    }

    /// Finalization outside any request (the timer); an admin FINALIZE is its exchange.
    func finalized() {
        if !inExchange { append(.finalized) }
    }

    /// Event frames sent to a subscriber.
    func event(_ frames: [UInt8], to connection: ConnectionID) {
        if inExchange { eventsDuringExchange.append((connection.rawValue, frames)) } else {
            append(.event(session: connection.rawValue, frame: frames))
        }
    }

    /// A request is about to be handled; `fds` are the descriptors that came with it, `outputCount` where its
    /// answer will start in the connection's output.
    func beginExchange(_ op: Opcode, fds: [Int32], outputCount: Int) {
        guard isRecording else { return }
        inExchange = true
        outputStart = outputCount
        observed.removeAll(keepingCapacity: true)
        observedCount = 0
        eventsDuringExchange.removeAll()
        descriptor = fds.count == 1 ? describe(fds[0]) : nil
        // These change what client memory holds, or which file backs an address: what was recorded no longer says
        // what a replay's memory holds.
        if op == .memWrite || op == .memMap { forgetRecordedMemory() }
    }

    /// The request has been answered into `output` from `outputStart`.
    func endExchange(session: ConnectionID, role: Role?, viaRing: Bool, header: FrameHeader,
                     payload: UnsafeRawBufferPointer, output: [UInt8]) {
        guard inExchange else { return }
        inExchange = false
        guard isRecording else { return }
        let start = buffer.count
        let answer = outputStart <= output.count ? output[outputStart...] : []
        TraceEncoder.appendExchange(into: &buffer, session: session.rawValue, role: role, viaRing: viaRing,
                                    descriptor: descriptor, memoryCount: observedCount, memory: observed[...],
                                    header: header, payload: payload, response: answer)
        guard admit(from: start) else { return }
        let events = eventsDuringExchange
        eventsDuringExchange.removeAll()
        for e in events { append(.event(session: e.session, frame: e.frame)) }
    }

    /// Ends the trace (TRACE stop, the daemon stopping, or a bound) with its end record. `wait`: until it is on disk.
    func stop(_ why: TraceEnd, wait: Bool = false) {
        guard isRecording else {
            if wait { writer.waitForWrites() }
            return
        }
        end = why
        memoryMap.clientReadObserver = nil
        TraceEncoder.append(.end(why), into: &buffer)
        bytes += UInt64(TraceEncoder.endRecordSize)
        records += 1
        flush()
        writer.close(wait: wait)
    }

    // MARK: Recording

    private func append(_ record: TraceRecord) {
        guard isRecording else { return }
        let start = buffer.count
        TraceEncoder.append(record, into: &buffer)
        _ = admit(from: start)
    }

    /// Counts the record just encoded at `start`, or takes it back and ends the trace when it would pass the bound.
    private func admit(from start: Int) -> Bool {
        let size = UInt64(buffer.count - start)
        if bytes + size + UInt64(TraceEncoder.endRecordSize) > maxBytes
            || size > UInt64(TraceFormat.recordHeaderSize + TraceFormat.maxBodyLength) {
            buffer.removeSubrange(start...)
            stop(.truncated)
            return false
        }
        bytes += size
        records += 1
        sinceClock += 1
        var due = buffer.count >= Self.flushBytes
        if !due && sinceClock >= Self.clockEvery {
            sinceClock = 0
            due = DispatchTime.now().uptimeNanoseconds - lastFlush >= Self.flushNanoseconds
        }
        if due {
            if let _ = writer.failed { stop(.writeFailed); return false }
            if writer.pendingBytes > Self.maxPendingBytes { stop(.writerBehind); return false }
            flush()
        }
        return true
    }

    private func flush() {
        lastFlush = DispatchTime.now().uptimeNanoseconds
        guard !buffer.isEmpty else { return }
        writer.submit(buffer)
        buffer.removeAll(keepingCapacity: true)
    }

    private func observe(_ address: UInt64, _ bytes: UnsafeRawBufferPointer) {
        guard inExchange else { return }
        if bytes.count == 8, recorded.seen(address, bytes.loadUnaligned(as: UInt64.self)) { return }
        TraceMemory.encode(address: address, bytes: bytes, into: &observed)
        observedCount += 1
    }

    private func forgetRecordedMemory() {
        recorded.forget()
    }

    /// What a replay needs to pass a descriptor the daemon judges alike: a regular file's size and seals, and
    /// the same number for the same file.
    private func describe(_ fd: Int32) -> TraceDescriptor {
        var st = stat()
        guard fstat(fd, &st) == 0, st.st_mode & S_IFMT == S_IFREG else {
            return TraceDescriptor(kind: .other, file: 0, size: 0, seals: 0)
        }
        let key = FileKey(device: UInt64(st.st_dev), inode: UInt64(st.st_ino))
        let number = files[key] ?? UInt32(files.count + 1)
        files[key] = number
        let seals = fcntl(fd, SharedMemoryFile.getSeals)
        return TraceDescriptor(kind: .file, file: number, size: UInt64(max(st.st_size, 0)),
                               seals: UInt32(bitPattern: max(seals, 0)))
    }
}
