#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Simulated physical memory: RAM regions backed by zero-filled anonymous memory, mapped on first
/// write (so a large, untouched RAM costs nothing resident), and page-aligned ranges inside a
/// region that can be backed by memory supplied from outside (a client's shared memory).
///
/// Zeroing whole pages of a region's own memory hands them back to the kernel (`MADV_DONTNEED`), so a
/// VM's teardown scrub costs what the VM touched, not what it owned, and never grows the daemon's memory.
///
/// A region may instead be backed by a file (`addRegion(base:size:file:)`: restart mode's memfds, kept in systemd's
/// fd store, so RAM outlives the process and a checkpoint need not copy it). It is mapped shared at once; zeroing
/// whole pages punches them out of the file (`MADV_REMOVE`), which frees and zeroes them as `MADV_DONTNEED` does
/// for anonymous memory.
public final class MemoryMap: PhysicalMemory {
    public enum MemoryMapError: Error, Sendable, Equatable {
        /// The region would overlap one that exists, or is empty, or wraps around.
        case invalidRegion(base: UInt64, size: UInt64)
        /// The range is not page aligned or not inside one region.
        case invalidRange(base: UInt64, size: UInt64)
        /// The file could not be mapped (`errno`).
        case mapFailed(base: UInt64, errno: Int32)
        /// Part of the range is already backed by external memory.
        case alreadyReplaced(base: UInt64)
        /// No external memory starts at this address.
        case notReplaced(base: UInt64)
    }

    /// Granule of `replace(base:size:with:release:)`.
    public static let pageSize: UInt64 = 4096

    final class Overlay {
        let base: UInt64
        let size: UInt64
        let pointer: UnsafeMutableRawPointer
        let release: () -> Void
        init(base: UInt64, size: UInt64, pointer: UnsafeMutableRawPointer, release: @escaping () -> Void) {
            self.base = base
            self.size = size
            self.pointer = pointer
            self.release = release
        }
        deinit { release() }
    }

    final class Region {
        let base: UInt64
        let size: UInt64
        /// A private anonymous mapping made on first write, or a shared mapping of `file`; nil reads as zeros.
        var storage: UnsafeMutableRawPointer?
        /// True when `storage` maps a file: whole pages are discarded with `MADV_REMOVE`.
        var fileBacked = false
        /// One bit per page of `storage` written since the last `zeroWrittenPages()` (made with it, untouched
        /// parts cost nothing resident).
        var written: UnsafeMutablePointer<UInt64>?
        var writtenWords: Int { Int((size / MemoryMap.pageSize + 63) / 64) }
        var overlays: [Overlay] = []
        init(base: UInt64, size: UInt64) {
            self.base = base
            self.size = size
        }
        deinit {
            if let storage { munmap(storage, Int(size)) }
            if let written { munmap(written, writtenWords * 8) }
        }
    }

    private var regions: [Region] = []
    /// While set, called with every read of client-supplied memory (`replace`): what an answer depended on that no
    /// request wrote, which the daemon's trace records so a replay can put it back (docs/trace-format.md). Scrubs
    /// (`zero`) are writes and are not reported. Unset, it costs one test on a client-memory read.
    public var clientReadObserver: ((_ address: UInt64, _ bytes: UnsafeRawBufferPointer) -> Void)?
    /// While set, called before every read that can decide an answer (a descriptor, MEM_READ's bytes), of RAM and
    /// client memory alike, with the bytes about to be read: restart mode journals them, and its replay writes the
    /// journaled bytes there first, so a replayed request reads what the original read (docs/hypervisor-model.md,
    /// "Restart and crash survival"). Unset, it costs one test per read.
    public var readJournal: ((_ address: UInt64, _ bytes: UnsafeMutableRawBufferPointer) -> Void)?
    /// Counts the daemon's own writes into client memory and changes of which memory backs an address (`replace`,
    /// `restore`): a reader that remembers values it saw there must forget them when this moves.
    public private(set) var clientChanges: UInt64 = 0
    /// The region of the last access: descriptor walks and DMA stay in one region.
    private var lastRegion: Region?

    public init() {}

    /// A map with these RAM regions.
    public convenience init(regions: [(base: UInt64, size: UInt64)]) throws(MemoryMapError) {
        self.init()
        for r in regions { try addRegion(base: r.base, size: r.size) }
    }

    /// The RAM regions, by base.
    public var ramRegions: [(base: UInt64, size: UInt64)] { regions.map { ($0.base, $0.size) } }

    /// Adds a zero-filled RAM region.
    public func addRegion(base: UInt64, size: UInt64) throws(MemoryMapError) {
        let (end, overflow) = base.addingReportingOverflow(size)
        guard size > 0, !overflow, size <= UInt64(Int.max),
              !regions.contains(where: { base < $0.base + $0.size && $0.base < end }) else {
            throw .invalidRegion(base: base, size: size)
        }
        regions.append(Region(base: base, size: size))
        regions.sort { $0.base < $1.base }
    }

    /// Adds a RAM region backed by `file` (at least `size` bytes; the map does not keep or close the descriptor),
    /// mapped shared: its contents are the file's, and what is written goes to the file.
    public func addRegion(base: UInt64, size: UInt64, file: Int32) throws(MemoryMapError) {
        try addRegion(base: base, size: size)
        guard let r = regions.first(where: { $0.base == base }) else { throw .invalidRegion(base: base, size: size) }
        let p = mmap(nil, Int(size), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, file, 0)
        let bits = mmap(nil, r.writtenWords * 8, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0)
        guard let p, p != MAP_FAILED, let bits, bits != MAP_FAILED else {
            let e = errno
            if let p, p != MAP_FAILED { munmap(p, Int(size)) }
            if let bits, bits != MAP_FAILED { munmap(bits, r.writtenWords * 8) }
            regions.removeAll { $0 === r }
            lastRegion = nil
            throw .mapFailed(base: base, errno: e)
        }
        r.storage = p
        r.written = bits.assumingMemoryBound(to: UInt64.self)
        r.fileBacked = true
    }

    /// True when every RAM region is backed by a file (`addRegion(base:size:file:)`): RAM outlives this map, and a
    /// state image need not carry it.
    public var isFileBacked: Bool { !regions.isEmpty && regions.allSatisfy(\.fileBacked) }

    /// True if every byte of [address, address + count) is RAM.
    /// An access may span adjacent regions.
    public func contains(address: UInt64, count: Int) -> Bool {
        let (end, overflow) = address.addingReportingOverflow(UInt64(max(count, 0)))
        guard count >= 0, !overflow else { return false }
        var at = address
        while let r = region(at) {
            if end <= r.base + r.size { return true }
            at = r.base + r.size
        }
        return false
    }

    @inline(__always)
    private func region(_ address: UInt64) -> Region? {
        if let r = lastRegion, address >= r.base, address - r.base < r.size { return r }
        for r in regions where address >= r.base && address - r.base < r.size {
            lastRegion = r
            return r
        }
        return nil
    }

    /// Host memory behind `address` and how many bytes follow it contiguously; nil if not RAM.
    /// `forWrite` allocates the region's storage; a read of an untouched region gets nil pointer.
    private func segment(_ address: UInt64, forWrite: Bool)
        -> (pointer: UnsafeMutableRawPointer?, available: UInt64, client: Bool)? {
        guard let r = region(address) else { return nil }
        let offset = address - r.base
        var limit = r.size - offset
        if !r.overlays.isEmpty { for o in r.overlays {
            if address >= o.base && address - o.base < o.size {
                return (o.pointer + Int(address - o.base), o.size - (address - o.base), true)
            }
            if o.base > address { limit = min(limit, o.base - address) }
        } }
        if r.storage == nil && forWrite {
            let p = mmap(nil, Int(r.size), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0)
            guard let p, p != MAP_FAILED else { return nil }
            let bits = mmap(nil, r.writtenWords * 8, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0)
            guard let bits, bits != MAP_FAILED else {
                munmap(p, Int(r.size))
                return nil
            }
            r.storage = p
            r.written = bits.assumingMemoryBound(to: UInt64.self)
        }
        return (r.storage.map { $0 + Int(offset) }, limit, false)
    }

    // MARK: PhysicalMemory

    /// An unaligned address is no descriptor: nil, as a bus would abort it. Aligned, the 8 bytes lie in one
    /// page, so they are in one piece of backing memory and one page of the ownership table.
    public func read64(at address: UInt64) -> UInt64? {
        guard address & 7 == 0, let (p, available, client) = segment(address, forWrite: false), available >= 8 else {
            return nil
        }
        guard let p else { return 0 }
        if let readJournal { readJournal(address, UnsafeMutableRawBufferPointer(start: p, count: 8)) }
        if client, let clientReadObserver { clientReadObserver(address, UnsafeRawBufferPointer(start: p, count: 8)) }
        return UInt64(littleEndian: p.load(as: UInt64.self))
    }

    /// One lookup of the backing memory for the run, and one call of each hook for its bytes (the journal and the
    /// trace take any length); RAM never written reads as zeros and is not reported, as `read64` does.
    public func read64Run(at address: UInt64, count: Int, into words: UnsafeMutablePointer<UInt64>) -> Bool {
        let bytes = count &* 8
        guard address & 7 == 0, count > 0, count <= 512, Int(address & 0xFFF) + bytes <= 4096,
              let (p, available, client) = segment(address, forWrite: false), available >= UInt64(bytes) else {
            return false
        }
        guard let p else {
            words.update(repeating: 0, count: count)
            return true
        }
        if let readJournal { readJournal(address, UnsafeMutableRawBufferPointer(start: p, count: bytes)) }
        if client, let clientReadObserver { clientReadObserver(address, UnsafeRawBufferPointer(start: p, count: bytes)) }
        for i in 0..<count { words[i] = UInt64(littleEndian: p.load(fromByteOffset: i &* 8, as: UInt64.self)) }
        return true
    }

    @discardableResult
    public func write64(_ value: UInt64, at address: UInt64) -> Bool {
        guard address & 7 == 0, let (p, available, client) = segment(address, forWrite: true), available >= 8, let p else {
            return false
        }
        if client { clientChanges &+= 1 }
        p.storeBytes(of: value.littleEndian, as: UInt64.self)
        noteWritten(address, 8)
        return true
    }

    /// Marks the pages of [address, address + count), inside one region, as written (client memory's included:
    /// zeroing the region's own page under it too is harmless).
    @inline(__always)
    private func noteWritten(_ address: UInt64, _ count: Int) {
        guard count > 0, let r = region(address), let bits = r.written else { return }
        let first = (address - r.base) / Self.pageSize
        let last = (address - r.base + UInt64(count) - 1) / Self.pageSize
        for page in first...last { bits[Int(page / 64)] |= 1 << (page % 64) }
    }

    /// Zeroes every page of the regions' own memory written since the last call, with stores: RAM reads as it
    /// did when the map was made, at the cost of what was written, and the pages stay mapped (no page fault at
    /// the next write, unlike `zero`). For a fuzzer that puts one machine back between inputs. Client memory
    /// (`replace`) is not touched.
    public func zeroWrittenPages() {
        for r in regions { Self.zeroWrittenPages(of: r) }
    }

    /// All RAM reads as zeros, as `zero` over every region would make it, client memory (`replace`) untouched: a
    /// restore that replaces RAM (`Hypervisor.restore(image:)`). An anonymous region holds nothing but zeros outside
    /// the pages marked written, so only those are cleared, with stores (a restore into a used map costs what was
    /// written, not a page fault per page written again); a file-backed region holds the file's bytes, so all of
    /// it is discarded.
    public func zeroAll() {
        for r in regions {
            if r.fileBacked, let storage = r.storage {
                if !Self.discardPages(storage, Int(r.size), advice: MADV_REMOVE) { memset(storage, 0, Int(r.size)) }
                r.written?.update(repeating: 0, count: r.writtenWords)
            } else {
                Self.zeroWrittenPages(of: r)
            }
        }
    }

    private static func zeroWrittenPages(of r: Region) {
        guard let storage = r.storage, let bits = r.written else { return }
        for w in 0..<r.writtenWords where bits[w] != 0 {
            var word = bits[w]
            while word != 0 {
                let page = w * 64 + word.trailingZeroBitCount
                memset(storage + page * Int(Self.pageSize), 0, Int(Self.pageSize))
                word &= word - 1
            }
            bits[w] = 0
        }
    }

    // MARK: Bytes

    /// Calls `body` for each contiguous piece of [address, address + count); false if any is not RAM.
    /// `observed`: a read the hooks see (before `body` copies it); `writes`: `body` changes the memory.
    private func forEachSegment(_ address: UInt64, _ count: Int, forWrite: Bool, observed: Bool = false,
                                writes: Bool = false, _ body: (UnsafeMutableRawPointer?, Int, Int) -> Void) -> Bool {
        guard count >= 0, contains(address: address, count: count) || count == 0 else { return false }
        var done = 0
        while done < count {
            guard let (p, available, client) = segment(address + UInt64(done), forWrite: forWrite) else { return false }
            let n = Int(min(available, UInt64(count - done)))
            if observed, let p {
                if let readJournal { readJournal(address + UInt64(done), UnsafeMutableRawBufferPointer(start: p, count: n)) }
                if client, let clientReadObserver {
                    clientReadObserver(address + UInt64(done), UnsafeRawBufferPointer(start: p, count: n))
                }
            }
            if writes, client { clientChanges &+= 1 }
            body(p, done, n)
            done += n
        }
        return true
    }

    /// `count` bytes at `address`, nil unless all of them are RAM.
    public func readBytes(at address: UInt64, count: Int) -> [UInt8]? {
        guard contains(address: address, count: count) || count == 0 else { return nil }
        var out = [UInt8](repeating: 0, count: count)
        let ok = out.withUnsafeMutableBytes { buffer in
            forEachSegment(address, count, forWrite: false, observed: true) { p, at, n in
                if let p, let base = buffer.baseAddress { (base + at).copyMemory(from: p, byteCount: n) }
            }
        }
        return ok ? out : nil
    }

    /// Writes `bytes` at `address`; false (and nothing written) unless all of them are RAM.
    @discardableResult
    public func writeBytes(_ bytes: [UInt8], at address: UInt64) -> Bool {
        guard contains(address: address, count: bytes.count) || bytes.isEmpty else { return false }
        return bytes.withUnsafeBytes { buffer in
            forEachSegment(address, bytes.count, forWrite: true, writes: true) { p, at, n in
                if let p, let base = buffer.baseAddress { p.copyMemory(from: base + at, byteCount: n) }
                noteWritten(address + UInt64(at), n)
            }
        }
    }

    /// Fills [address, address + count) with zeros; false unless all of it is RAM. Whole pages of a region's
    /// own memory go back to the kernel instead of being written (they read as zero until written again), unless
    /// `discard` is false: memory about to be written (a page-table page being handed out) is cheaper to write
    /// zeros into than to hand back and fault in again at the next write.
    @discardableResult
    public func zero(at address: UInt64, count: Int, discard: Bool = true) -> Bool {
        guard contains(address: address, count: count) || count == 0 else { return false }
        return forEachSegment(address, count, forWrite: false, writes: true) { p, at, n in
            guard let p else { return }
            if discard, let r = ownRegion(of: p), Self.discardPages(p, n, advice: r.fileBacked ? MADV_REMOVE : MADV_DONTNEED) {
                Self.forgetWrites(r, p, n)
                return
            }
            memset(p, 0, n)
        }
    }

    /// Clears the written marks of the whole pages of [p, p + n) in `r`'s storage, just discarded: they read as zero
    /// again, so `zeroWrittenPages` need not store zeros into them (which would fault each one in again).
    private static func forgetWrites(_ r: Region, _ p: UnsafeMutableRawPointer, _ n: Int) {
        guard let storage = r.storage, let bits = r.written else { return }
        let offset = p - storage
        let first = (offset + Int(pageSize) - 1) / Int(pageSize)
        let end = (offset + n) / Int(pageSize)
        var page = first
        while page < end {   // whole words at once: a VM's scrub can hand back thousands of pages
            if page % 64 == 0, end - page >= 64 {
                bits[page / 64] = 0
                page += 64
            } else {
                bits[page / 64] &= ~(1 << UInt64(page % 64))
                page += 1
            }
        }
    }

    private func ownRegion(of p: UnsafeMutableRawPointer) -> Region? {
        regions.first { r in r.storage.map { p >= $0 && p < $0 + Int(r.size) } ?? false }
    }

    /// Zeroes the whole pages of [p, p + n) by discarding them (`advice`: `MADV_DONTNEED` for private anonymous
    /// memory, `MADV_REMOVE` for a shared file, where `MADV_DONTNEED` would keep the file's bytes) and the rest with
    /// memset; false if the kernel refused (the caller then writes zeros).
    private static func discardPages(_ p: UnsafeMutableRawPointer, _ n: Int, advice: Int32) -> Bool {
        let page = Int(pageSize)
        let start = (Int(bitPattern: p) + page - 1) & ~(page - 1)
        let end = (Int(bitPattern: p) + n) & ~(page - 1)
        guard end > start else { return false }
        guard madvise(UnsafeMutableRawPointer(bitPattern: start), end - start, advice) == 0 else { return false }
        memset(p, 0, start - Int(bitPattern: p))
        memset(UnsafeMutableRawPointer(bitPattern: end)!, 0, Int(bitPattern: p) + n - end)
        return true
    }

    // MARK: State image

    /// Calls `body` with the address and bytes of every page of the map's own memory that is not all zeros, in
    /// address order (a state image's RAM, docs/state-image.md). Pages under external backing are skipped (their
    /// contents are the client's file, and the own memory they hide is zeroed when the backing ends), and so are
    /// pages the kernel has never given the region (`mincore`: they read as zero), so an idle RAM costs little.
    public func forEachNonZeroPage(_ body: (UInt64, UnsafeRawBufferPointer) -> Void) {
        let page = Int(Self.pageSize)
        for r in regions {
            guard let storage = r.storage else { continue }
            let pages = Int(r.size) / page
            var resident = [UInt8](repeating: 1, count: pages)
            if mincore(storage, pages * page, &resident) != 0 { resident = [UInt8](repeating: 1, count: pages) }
            for i in 0..<pages where resident[i] & 1 != 0 {
                let address = r.base + UInt64(i * page)
                if r.overlays.contains(where: { address >= $0.base && address - $0.base < $0.size }) { continue }
                let p = UnsafeRawBufferPointer(start: storage + i * page, count: page)
                if !Self.isZero(p) { body(address, p) }
            }
        }
    }

    private static func isZero(_ p: UnsafeRawBufferPointer) -> Bool {
        let words = p.bindMemory(to: UInt64.self)
        var acc: UInt64 = 0
        for w in words { acc |= w }
        return acc == 0
    }

    // MARK: External backing

    /// Backs the page-aligned range [base, base + size) inside one region with `pointer` (size
    /// bytes) until `restore(base:)`; `release` runs when the map lets go of it. The region's own
    /// contents in that range are hidden, not copied.
    public func replace(base: UInt64, size: UInt64, with pointer: UnsafeMutableRawPointer,
                        release: @escaping () -> Void) throws(MemoryMapError) {
        guard size > 0, base % Self.pageSize == 0, size % Self.pageSize == 0,
              contains(address: base, count: Int(clamping: size)), let r = region(base) else {
            throw .invalidRange(base: base, size: size)
        }
        if r.overlays.contains(where: { base < $0.base + $0.size && $0.base < base + size }) {
            throw .alreadyReplaced(base: base)
        }
        r.overlays.append(Overlay(base: base, size: size, pointer: pointer, release: release))
        clientChanges &+= 1
    }

    /// Ends the replacement that starts at `base`: the region's own memory shows again.
    public func restore(base: UInt64) throws(MemoryMapError) {
        guard let r = region(base), let i = r.overlays.firstIndex(where: { $0.base == base }) else {
            throw .notReplaced(base: base)
        }
        r.overlays.remove(at: i)
        clientChanges &+= 1
    }

    /// The replaced ranges, as (base, size).
    public var replacedRanges: [(base: UInt64, size: UInt64)] {
        regions.flatMap { $0.overlays.map { ($0.base, $0.size) } }
    }
}
