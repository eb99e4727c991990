import CSocketShims
import Glibc
import PKVM
import POSIXCalls
import SystemPackage

/// A restart checkpoint: the daemon's whole state at a request boundary, so a restart replays only the journal
/// written after it (docs/hypervisor-model.md, "Restart and crash survival"). Generation g's checkpoint is the state
/// before the first record of journal g; generation 0 has no checkpoint (the state is the configuration's).
///
/// It holds the hypervisor's and the dispatcher's state images as their own encodings, and what only the server
/// knows: per connection which stored descriptors are its socket, its output file and its DMA_EPOCH page, how much
/// of its answer stream was written, and the next connection id. It is written once into a memfd that is then
/// sealed (no write, grow or shrink), so a stored checkpoint cannot change under the next process.
struct Checkpoint: Equatable {
    static let magic: [UInt8] = Array("SMMUCKPT".utf8)
    /// 2: a connection's ring.
    static let formatVersion: UInt32 = 2

    /// One open connection.
    struct ConnectionRecord: Equatable {
        var id: UInt64
        var socket: FDStore.FileIdentity
        var output: FDStore.FileIdentity
        /// Bytes of its answer stream written to the output file (the next answer goes there).
        var outputWritten: Int
        /// The file of its DMA_EPOCH page, if it shared one.
        var epochPage: FDStore.FileIdentity?
        /// Its shared-memory ring, if it attached one.
        var ring: Ring? = nil
    }

    /// A connection's ring: its file, the request word it was answered up to (every answer is published on the
    /// queue, so none is pending at a checkpoint), and whether a malformed frame had ended it.
    struct Ring: Equatable {
        var file: FDStore.FileIdentity
        var answered: UInt32
        var ended: Bool
    }

    /// The journal generation this checkpoint starts (its records follow it).
    var generation: UInt64
    var nextConnection: UInt64
    var connections: [ConnectionRecord]
    /// `HypervisorStateImage.encoded()`.
    var hypervisor: [UInt8]
    /// `DispatcherStateImage.encoded()`.
    var dispatcher: [UInt8]

    func encoded() -> [UInt8] {
        var w = StateImageWriter(capacity: 64 + hypervisor.count + dispatcher.count + 64 * connections.count)
        w.u64(generation)
        w.u64(nextConnection)
        w.array(connections) { w, c in
            w.u64(c.id)
            for f in [c.socket, c.output, c.epochPage ?? FDStore.FileIdentity(device: 0, inode: 0)] {
                w.u64(f.device)
                w.u64(f.inode)
            }
            w.int(c.outputWritten)
            w.bool(c.epochPage != nil)
            w.bool(c.ring != nil)
            if let ring = c.ring {
                w.u64(ring.file.device)
                w.u64(ring.file.inode)
                w.u32(ring.answered)
                w.bool(ring.ended)
            }
        }
        w.data(hypervisor)
        w.data(dispatcher)
        return StateImageEnvelope.seal(magic: Self.magic, version: Self.formatVersion, body: w.bytes)
    }

    init(generation: UInt64, nextConnection: UInt64, connections: [ConnectionRecord], hypervisor: [UInt8],
         dispatcher: [UInt8]) {
        self.generation = generation
        self.nextConnection = nextConnection
        self.connections = connections
        self.hypervisor = hypervisor
        self.dispatcher = dispatcher
    }

    init(decoding bytes: some Collection<UInt8>) throws(StateImageError) {
        var r = try StateImageEnvelope.open(bytes, magic: Self.magic, version: Self.formatVersion)
        generation = try r.u64()
        nextConnection = try r.u64()
        connections = try r.array(minimumSize: 58) { r throws(StateImageError) in
            let id = try r.u64()
            var files: [FDStore.FileIdentity] = []
            for _ in 0..<3 { files.append(FDStore.FileIdentity(device: try r.u64(), inode: try r.u64())) }
            let written = try r.int()
            let hasEpoch = try r.bool()
            var ring: Ring?
            if try r.bool() {
                ring = Ring(file: FDStore.FileIdentity(device: try r.u64(), inode: try r.u64()), answered: try r.u32(),
                            ended: try r.bool())
            }
            guard written >= 0 else { throw .corrupt(reason: "connection \(id) wrote \(written) bytes") }
            return ConnectionRecord(id: id, socket: files[0], output: files[1], outputWritten: written,
                                    epochPage: hasEpoch ? files[2] : nil, ring: ring)
        }
        hypervisor = try r.data()
        dispatcher = try r.data()
        guard r.isAtEnd else { throw .corrupt(reason: "bytes after the checkpoint") }
    }

    /// The checkpoint in a new sealed memfd (what is stored).
    func sealedFile() throws(RestartJournalError) -> Int32 {
        let bytes = encoded()
        let fd = csock_memfd("smmu-hypd-checkpoint")
        guard fd >= 0 else { throw .system(SyscallFailure("memfd_create", errno: .last)) }
        var done = 0
        while done < bytes.count {
            let n = bytes.withUnsafeBytes { pwrite(fd, $0.baseAddress! + done, $0.count - done, off_t(done)) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else {
                let e = Errno.last
                close(fd)
                throw .system(SyscallFailure("pwrite", errno: e))
            }
            done += n
        }
        guard csock_add_seals(fd, Self.allSeals) == 0 else {
            let e = Errno.last
            close(fd)
            throw .system(SyscallFailure("fcntl(F_ADD_SEALS)", errno: e))
        }
        return fd
    }

    /// F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE.
    static let allSeals: Int32 = 0x1 | 0x2 | 0x4 | 0x8

    /// The checkpoint a previous process stored in `fd` (not taken over: the caller closes it). Refused unless
    /// sealed and intact.
    static func read(fd: Int32) throws(StateImageError) -> Checkpoint {
        guard csock_get_seals(fd) & allSeals == allSeals else { throw .corrupt(reason: "the checkpoint file is not sealed") }
        var st = stat()
        guard fstat(fd, &st) == 0, st.st_size >= 0 else { throw .corrupt(reason: "fstat: \(Errno.last)") }
        var bytes = [UInt8](repeating: 0, count: Int(st.st_size))
        var done = 0
        while done < bytes.count {
            let n = bytes.withUnsafeMutableBytes { pread(fd, $0.baseAddress! + done, $0.count - done, off_t(done)) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { throw .truncated(at: done) }
            done += n
        }
        return try Checkpoint(decoding: bytes)
    }
}
