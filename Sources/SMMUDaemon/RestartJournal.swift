import CSocketShims
import Glibc
import POSIXCalls
import SystemPackage

/// Why a stored restart journal cannot be used.
public enum RestartJournalError: Error, Equatable, CustomStringConvertible {
    case system(SyscallFailure)
    case notAJournal
    case unsupportedVersion(UInt32)
    case corrupt(offset: Int)

    public var description: String {
        switch self {
        case .system(let f): "\(f.call): \(f.errno)"
        case .notAJournal: "the stored journal has no journal header"
        case .unsupportedVersion(let v): "the stored journal is version \(v); this daemon reads version \(RestartJournal.version)"
        case .corrupt(let offset): "the stored journal has an invalid record at offset \(offset)"
        }
    }
}

/// Everything that changed the daemon's state since it started from its configuration, in the order it happened:
/// connections accepted and closed, the bytes each connection's requests arrived in, finalization. The daemon's
/// state is a pure function of that sequence (the hypervisor and the dispatcher use no clock), so a new process
/// that replays it holds exactly the state the old one had, whenever the old one died.
///
/// The journal is a memfd kept in systemd's fd store, mapped shared: what the process stored is there after
/// SIGKILL. A record is published by one 8-byte release store of the committed length (the commit word), so a
/// record is in the journal entirely or not at all.
///
/// Input is received straight into the journal, so a byte is consumed from a socket exactly when it is in the
/// journal: the bytes are first peeked into the scratch area, their complement is written where the record's bytes
/// go, then recv() fills that place. After a crash the record at the tail, not yet committed, was received exactly
/// when its bytes equal the scratch copy (every byte of the complement differs), and it is then committed.
public final class RestartJournal {
    public enum Kind: UInt32, Sendable {
        /// A connection was admitted: payload the peer's credentials and its socket's and output file's identity.
        case accept = 1
        /// Bytes received on a connection, with the identities of descriptors that came with them.
        case data = 2
        /// The connection's session was asked to answer requests it had held back (output drained).
        case resume = 3
        /// The connection was closed: payload the reason (`CloseReason`).
        case close = 4
        /// The finalization timer ran.
        case finalize = 5
        /// A newcomer was refused at the connection cap (STATS counts it).
        case refused = 6
        /// Bytes of memory requests read, for the replay to read the same (MemoryReadLog): payload the observations.
        case reads = 7
        /// A connection's shared-memory ring (SharedRing): payload the request word (u32), 0 (u32), then the request
        /// bytes copied out of the ring before they were applied; no bytes for the attach (the word it started at).
        case ring = 8
    }

    /// One committed record.
    public struct Record {
        public let kind: Kind
        public let connection: UInt64
        public let payload: UnsafeRawBufferPointer
    }

    static let magic: UInt64 = 0x314E_524A_5550_4D53  // "SMPUJRN1" little-endian
    /// 2: READS records (a version 1 journal has none, and its replay would read memory as it is now).
    /// 3: RING records (a version 2 journal has none and is read as it is: restart mode refused RING then).
    public static let version: UInt32 = 3
    static let readable: ClosedRange<UInt32> = 2...3
    static let headerSize = 64
    static let commitOffset = 16
    /// Where peeked bytes go before they are received into a record (one read's worth).
    static let scratchSize = 64 << 10
    static let recordsStart = headerSize + scratchSize
    static let recordHeaderSize = 16

    public let fd: Int32
    let base: UnsafeMutableRawPointer
    public let capacity: Int

    /// Record bytes committed (from `recordsStart`).
    public private(set) var committed: Int

    /// A new, empty journal in a fresh memfd of `capacity` bytes (sparse: memory is used as records are written).
    public static func create(capacity: Int = 1 << 30) throws(RestartJournalError) -> RestartJournal {
        let fd = csock_memfd("smmu-hypd-journal")
        guard fd >= 0 else { throw .system(SyscallFailure("memfd_create", errno: .last)) }
        guard ftruncate(fd, off_t(capacity)) == 0 else {
            let e = Errno.last
            close(fd)
            throw .system(SyscallFailure("ftruncate", errno: e))
        }
        let journal = try RestartJournal(fd: fd, capacity: capacity)
        journal.base.storeBytes(of: magic.littleEndian, toByteOffset: 0, as: UInt64.self)
        journal.base.storeBytes(of: version.littleEndian, toByteOffset: 8, as: UInt32.self)
        return journal
    }

    /// The journal a previous process left in `fd` (taken over), with a pending receive resolved.
    public static func open(fd: Int32) throws(RestartJournalError) -> RestartJournal {
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw .system(SyscallFailure("fstat", errno: .last)) }
        guard st.st_size >= recordsStart else { throw .notAJournal }
        let journal = try RestartJournal(fd: fd, capacity: Int(st.st_size))
        guard UInt64(littleEndian: journal.base.load(as: UInt64.self)) == magic else { throw .notAJournal }
        let v = UInt32(littleEndian: journal.base.load(fromByteOffset: 8, as: UInt32.self))
        guard readable.contains(v) else { throw .unsupportedVersion(v) }
        journal.committed = Int(csock_load_acquire_u64(journal.commitWord))
        guard journal.committed <= journal.capacity - recordsStart else { throw .corrupt(offset: journal.committed) }
        journal.recoverPendingReceive()
        return journal
    }

    private init(fd: Int32, capacity: Int) throws(RestartJournalError) {
        let p = mmap(nil, capacity, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)
        guard let p, p != MAP_FAILED else { throw .system(SyscallFailure("mmap", errno: .last)) }
        self.fd = fd
        self.base = p
        self.capacity = capacity
        self.committed = 0
    }

    deinit {
        munmap(base, capacity)
        close(fd)
    }

    private var commitWord: UnsafeMutablePointer<UInt64> {
        (base + Self.commitOffset).assumingMemoryBound(to: UInt64.self)
    }

    private var tail: UnsafeMutableRawPointer { base + Self.recordsStart + committed }

    /// Where a read peeks before `beginData`.
    public var scratch: UnsafeMutableRawBufferPointer {
        UnsafeMutableRawBufferPointer(start: base + Self.headerSize, count: Self.scratchSize)
    }

    private func fits(_ payload: Int) -> Bool {
        Self.recordsStart + committed + Self.recordHeaderSize + Self.padded(payload) <= capacity
    }

    static func padded(_ n: Int) -> Int { (n + 7) & ~7 }

    private func writeHeader(_ kind: Kind?, connection: UInt64, length: Int) {
        tail.storeBytes(of: (kind?.rawValue ?? 0).littleEndian, as: UInt32.self)
        tail.storeBytes(of: UInt32(length).littleEndian, toByteOffset: 4, as: UInt32.self)
        tail.storeBytes(of: connection.littleEndian, toByteOffset: 8, as: UInt64.self)
    }

    private func publish(length: Int) {
        committed += Self.recordHeaderSize + Self.padded(length)
        csock_store_release_u64(commitWord, UInt64(committed))
    }

    /// Appends and commits one record. False when the journal is full.
    @discardableResult
    public func append(_ kind: Kind, connection: UInt64 = 0, payload: [UInt8] = []) -> Bool {
        guard fits(payload.count) else { return false }
        writeHeader(nil, connection: connection, length: payload.count)
        payload.withUnsafeBytes { (tail + Self.recordHeaderSize).copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
        tail.storeBytes(of: kind.rawValue.littleEndian, as: UInt32.self)
        publish(length: payload.count)
        return true
    }

    /// Prepares a DATA record for the `count` bytes now in `scratch` and returns where to receive them (filled with
    /// their complement). Nil when the journal is full.
    public func beginData(connection: UInt64, files: [FDStore.FileIdentity], count: Int) -> UnsafeMutableRawBufferPointer? {
        let prefix = 8 + 16 * files.count
        guard count <= Self.scratchSize, fits(prefix + count) else { return nil }
        writeHeader(nil, connection: connection, length: prefix + count)
        let payload = tail + Self.recordHeaderSize
        payload.storeBytes(of: UInt32(files.count).littleEndian, as: UInt32.self)
        payload.storeBytes(of: UInt32(count).littleEndian, toByteOffset: 4, as: UInt32.self)
        for (i, f) in files.enumerated() {
            payload.storeBytes(of: f.device.littleEndian, toByteOffset: 8 + 16 * i, as: UInt64.self)
            payload.storeBytes(of: f.inode.littleEndian, toByteOffset: 16 + 16 * i, as: UInt64.self)
        }
        let bytes = UnsafeMutableRawBufferPointer(start: payload + prefix, count: count)
        for i in 0..<count { bytes[i] = ~scratch[i] }
        // The kind last: a crash before this leaves no pending record to examine.
        tail.storeBytes(of: Kind.data.rawValue.littleEndian, as: UInt32.self)
        return bytes
    }

    /// Commits the DATA record `beginData` prepared, once recv() has put `received` bytes into it (fewer than peeked
    /// only if the socket changed under the daemon, which a stream socket's queue cannot).
    public func commitData(received: Int) {
        let payload = tail + Self.recordHeaderSize
        let files = Int(UInt32(littleEndian: payload.load(as: UInt32.self)))
        let count = Int(UInt32(littleEndian: payload.load(fromByteOffset: 4, as: UInt32.self)))
        if received != count {
            payload.storeBytes(of: UInt32(received).littleEndian, toByteOffset: 4, as: UInt32.self)
            tail.storeBytes(of: UInt32(8 + 16 * files + received).littleEndian, toByteOffset: 4, as: UInt32.self)
        }
        publish(length: 8 + 16 * files + received)
    }

    /// After a crash: commits the DATA record at the tail if its recv() happened (its bytes equal the scratch copy).
    /// Returns true when it did.
    @discardableResult
    func recoverPendingReceive() -> Bool {
        guard fits(0), UInt32(littleEndian: tail.load(as: UInt32.self)) == Kind.data.rawValue else { return false }
        let length = Int(UInt32(littleEndian: tail.load(fromByteOffset: 4, as: UInt32.self)))
        let payload = tail + Self.recordHeaderSize
        let files = Int(UInt32(littleEndian: payload.load(as: UInt32.self)))
        let count = Int(UInt32(littleEndian: payload.load(fromByteOffset: 4, as: UInt32.self)))
        guard count > 0, count <= Self.scratchSize, length == 8 + 16 * files + count, fits(length) else { return false }
        let bytes = UnsafeRawBufferPointer(start: payload + 8 + 16 * files, count: count)
        guard bytes.elementsEqual(UnsafeRawBufferPointer(scratch)[0..<count]) else { return false }
        publish(length: length)
        return true
    }

    /// Every committed record, oldest first.
    public func records() throws(RestartJournalError) -> [Record] {
        var out: [Record] = []
        var offset = 0
        while offset < committed {
            let p = base + Self.recordsStart + offset
            guard offset + Self.recordHeaderSize <= committed,
                  let kind = Kind(rawValue: UInt32(littleEndian: p.load(as: UInt32.self))) else {
                throw .corrupt(offset: offset)
            }
            let length = Int(UInt32(littleEndian: p.load(fromByteOffset: 4, as: UInt32.self)))
            let connection = UInt64(littleEndian: p.load(fromByteOffset: 8, as: UInt64.self))
            guard offset + Self.recordHeaderSize + length <= committed else { throw .corrupt(offset: offset) }
            out.append(Record(kind: kind, connection: connection,
                              payload: UnsafeRawBufferPointer(start: p + Self.recordHeaderSize, count: length)))
            offset += Self.recordHeaderSize + Self.padded(length)
        }
        return out
    }
}

extension RestartJournal.Record {
    /// A DATA record's descriptors' identities and bytes (nil if the payload is not one).
    public var data: (files: [FDStore.FileIdentity], bytes: UnsafeRawBufferPointer)? {
        guard kind == .data, payload.count >= 8 else { return nil }
        let files = Int(payload.loadUnaligned(as: UInt32.self).littleEndian)
        let count = Int(payload.loadUnaligned(fromByteOffset: 4, as: UInt32.self).littleEndian)
        guard payload.count == 8 + 16 * files + count else { return nil }
        let identities = (0..<files).map { i in
            FDStore.FileIdentity(device: payload.loadUnaligned(fromByteOffset: 8 + 16 * i, as: UInt64.self).littleEndian,
                                 inode: payload.loadUnaligned(fromByteOffset: 16 + 16 * i, as: UInt64.self).littleEndian)
        }
        return (identities, UnsafeRawBufferPointer(rebasing: payload[(8 + 16 * files)...]))
    }
}

