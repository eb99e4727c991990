#if canImport(Glibc)
import Glibc
#endif
import CSocketShims
import PKVM
import POSIXCalls
import SystemPackage

/// A client's file descriptor for MEM_MAP, checked so that the daemon's accesses to it can never fault, and
/// mapped shared (protocol v1, MEM_MAP; docs/hypervisor-model.md, "Memory").
///
/// The daemon touches the mapping on the client's behalf long after MEM_MAP (walks, DMA, scrubbing), so a
/// file that could end before the mapping does would turn a later access into SIGBUS, which kills every
/// client. Hence: only a memfd sealed against shrinking (`F_SEAL_SHRINK`, which QEMU's
/// `memory-backend-memfd` sets by default and which can never be removed), at least as long as the mapping,
/// and not on hugetlbfs (a hole punched there may find no huge page to fault in).
struct SharedMemoryFile {
    enum Refusal: Error, Equatable, CustomStringConvertible {
        case notAFile
        case notSealedAgainstShrinking
        case tooShort(fileSize: UInt64, needed: UInt64)
        case hugeTLB
        case mapFailed(Errno)

        var description: String {
            switch self {
            case .notAFile: "the descriptor is not a regular file"
            case .notSealedAgainstShrinking: "the file is not a memfd sealed with F_SEAL_SHRINK"
            case .tooShort(let size, let needed): "the file has \(size) bytes, the mapping needs \(needed)"
            case .hugeTLB: "hugetlbfs files are refused"
            case .mapFailed(let e): "mmap failed: \(e)"
            }
        }
    }

    static let sealShrink: Int32 = 0x0002        // F_SEAL_SHRINK (linux/fcntl.h)
    static let getSeals: Int32 = 1024 + 10       // F_GET_SEALS
    static let hugetlbfsMagic = 0x9584_58f6      // HUGETLBFS_MAGIC (linux/magic.h)

    let pointer: UnsafeMutableRawPointer
    let size: Int
    let file: SharedFileRange

    /// Checks `fd` and maps [offset, offset + size) of it shared. The caller has checked alignment.
    ///
    /// The seal is read before the size: the client holds the file too and may change it meanwhile. Once
    /// `F_SEAL_SHRINK` is seen the size can only grow, so a size read after it holds for good; a size read before it
    /// could be gone by the time the seal is set (a client that truncates and then seals between the two reads had
    /// the daemon map past the end and die of SIGBUS at its first access: `SharedMemoryRaceTests`).
    static func map(fd: Int32, offset: UInt64, size: UInt64) -> Result<SharedMemoryFile, Refusal> {
        let seals = fcntl(fd, getSeals)
        var st = stat()
        guard fstat(fd, &st) == 0, st.st_mode & S_IFMT == S_IFREG else { return .failure(.notAFile) }
        if csock_fs_type(fd) == hugetlbfsMagic { return .failure(.hugeTLB) }
        guard seals >= 0, seals & sealShrink != 0 else { return .failure(.notSealedAgainstShrinking) }
        let (end, overflow) = offset.addingReportingOverflow(size)
        guard !overflow, st.st_size >= 0, UInt64(st.st_size) >= end, size <= UInt64(Int.max) else {
            return .failure(.tooShort(fileSize: UInt64(max(st.st_size, 0)), needed: overflow ? .max : end))
        }
        let replaying = ReplayMappings.active
        guard let p = mmap(nil, Int(size), PROT_READ | PROT_WRITE, replaying ? MAP_PRIVATE : MAP_SHARED, fd,
                           off_t(truncatingIfNeeded: offset)),
              p != MAP_FAILED else { return .failure(.mapFailed(.last)) }
        if replaying { ReplayMappings.record(pointer: p, size: Int(size), fd: fd, offset: offset) }
        return .success(SharedMemoryFile(pointer: p, size: Int(size), file: SharedFileRange(
            device: UInt64(st.st_dev), inode: UInt64(st.st_ino), offset: offset, size: size)))
    }

    func unmap() { Self.unmap(pointer, size: size) }

    static func unmap(_ pointer: UnsafeMutableRawPointer, size: Int) {
        ReplayMappings.forget(pointer)
        munmap(pointer, size)
    }
}

/// While a restart replays its journal, the client memory it maps again (MEM_MAP, DMA_EPOCH) is mapped private:
/// the replayed requests read the client's current bytes, and what they write (MEM_WRITE, DMA, scrubs, old epoch
/// values) lands in private copies, since the old process wrote it to the client's memory already, and writing it
/// again would put back bytes the client has changed since, or show a device an epoch that went backwards. After
/// the replay every mapping still held is mapped shared again at the same address (`finish`).
enum ReplayMappings {
    private struct Entry { let size: Int; let fd: Int32; let offset: UInt64 }
    nonisolated(unsafe) private static var entries: [UnsafeMutableRawPointer: Entry] = [:]
    nonisolated(unsafe) private(set) static var active = false

    static func begin() { active = true }

    static func record(pointer: UnsafeMutableRawPointer, size: Int, fd: Int32, offset: UInt64) {
        entries[pointer] = Entry(size: size, fd: dup(fd), offset: offset)
    }

    static func forget(_ pointer: UnsafeMutableRawPointer) {
        if let e = entries.removeValue(forKey: pointer) { close(e.fd) }
    }

    /// Copies the client's bytes as they are now into the private copy at `bytes`, when it lies in a mapping made
    /// during the replay (else leaves it): a read the journal does not cover (the request a crash interrupted) must see
    /// the client's memory as it is now, not a value an earlier replayed read wrote into the private copy.
    static func refresh(_ bytes: UnsafeMutableRawBufferPointer) {
        guard active, let start = bytes.baseAddress else { return }
        for (pointer, e) in entries where start >= pointer && start + bytes.count <= pointer + e.size {
            _ = pread(e.fd, start, bytes.count, off_t(truncatingIfNeeded: e.offset + UInt64(start - pointer)))
            return
        }
    }

    /// Maps every mapping still held shared again, in place (the private copies are dropped). Returns how many.
    @discardableResult
    static func finish() -> Int {
        active = false
        var remapped = 0
        for (pointer, e) in entries {
            let p = mmap(pointer, e.size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, e.fd, off_t(truncatingIfNeeded: e.offset))
            if p == pointer { remapped += 1 }
            close(e.fd)
        }
        entries = [:]
        return remapped
    }
}
