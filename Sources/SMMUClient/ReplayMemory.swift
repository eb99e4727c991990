#if canImport(Glibc)
import Glibc
#endif
import CSocketShims
import WireProtocol

/// The replayer's stand-in for the recorded clients' memory (docs/trace-format.md, "Memory"): one memfd per file
/// the trace numbers, of the recorded size and seals, mapped here too; and the live MEM_MAPs, so that bytes the
/// daemon read at a physical address when recording can be written at the same place before the request is replayed.
final class ReplayMemory {
    private struct File {
        let fd: Int32
        let size: Int
        let pointer: UnsafeMutableRawPointer?
    }
    private struct Mapping {
        let session: UInt64
        let address: UInt64
        let size: UInt64
        let offset: UInt64
        let file: UInt32
    }
    private var files: [UInt32: File] = [:]
    private var mappings: [Mapping] = []

    static let sealWrite: UInt32 = 0x8
    static let sealFutureWrite: UInt32 = 0x10

    deinit {
        for f in files.values {
            if let p = f.pointer { munmap(p, f.size) }
            close(f.fd)
        }
    }

    /// A descriptor to send as the recorded one was sent; the caller closes it after sending.
    func descriptor(for d: TraceDescriptor) throws(ReplayError) -> Int32 {
        switch d.kind {
        case .other:
            var ends: [Int32] = [0, 0]
            guard pipe(&ends) == 0 else { throw .setup("pipe: \(String(cString: strerror(errno)))") }
            close(ends[1])
            return ends[0]
        case .file:
            let f = try file(d)
            let copy = dup(f.fd)
            guard copy >= 0 else { throw .setup("dup: \(String(cString: strerror(errno)))") }
            return copy
        }
    }

    /// A MEM_MAP the daemon accepted: its range shows the file from now until the session closes.
    func mapped(session: UInt64, address: UInt64, size: UInt64, offset: UInt64, file: UInt32) {
        mappings.append(Mapping(session: session, address: address, size: size, offset: offset, file: file))
    }

    func sessionClosed(_ session: UInt64) { mappings.removeAll { $0.session == session } }

    /// Puts bytes the daemon read when recording back where it will read them again.
    func write(_ m: TraceMemory) throws(ReplayError) {
        var done = 0
        while done < m.bytes.count {
            let address = m.address &+ UInt64(done)
            guard let map = mappings.first(where: { address >= $0.address && address - $0.address < $0.size }),
                  let f = files[map.file], let p = f.pointer else {
                throw .badTrace("memory at 0x\(String(address, radix: 16)) was read from no mapping the trace made")
            }
            let at = Int(map.offset + (address - map.address))
            let n = min(m.bytes.count - done, Int(map.size - (address - map.address)), f.size - at)
            guard n > 0 else { throw .badTrace("memory at 0x\(String(address, radix: 16)) lies past its file") }
            m.bytes.withUnsafeBytes { (p + at).copyMemory(from: $0.baseAddress! + done, byteCount: n) }
            done += n
        }
    }

    private func file(_ d: TraceDescriptor) throws(ReplayError) -> File {
        if let f = files[d.file] { return f }
        guard d.size <= 1 << 40 else { throw .badTrace("a recorded file of \(d.size) bytes") }
        let fd = csock_memfd("smmuctl-replay-\(d.file)")
        guard fd >= 0 else { throw .setup("memfd_create: \(String(cString: strerror(errno)))") }
        guard ftruncate(fd, off_t(d.size)) == 0 else {
            close(fd)
            throw .setup("ftruncate to \(d.size): \(String(cString: strerror(errno)))")
        }
        let writeSealed = d.seals & (Self.sealWrite | Self.sealFutureWrite) != 0
        var pointer: UnsafeMutableRawPointer?
        if !writeSealed, d.size > 0 {
            let p = mmap(nil, Int(d.size), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)
            if let p, p != MAP_FAILED { pointer = p }
        }
        if d.seals != 0 && csock_add_seals(fd, Int32(bitPattern: d.seals)) != 0 {
            throw .setup("adding seals 0x\(String(d.seals, radix: 16)): \(String(cString: strerror(errno)))")
        }
        let f = File(fd: fd, size: Int(d.size), pointer: pointer)
        files[d.file] = f
        return f
    }
}
