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
public final class MemoryMap: PhysicalMemory {
    public enum MemoryMapError: Error, Sendable, Equatable {
        /// The region would overlap one that exists, or is empty, or wraps around.
        case invalidRegion(base: UInt64, size: UInt64)
        /// The range is not page aligned or not inside one region.
        case invalidRange(base: UInt64, size: UInt64)
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
        /// A private anonymous mapping made on first write; nil reads as zeros.
        var storage: UnsafeMutableRawPointer?
        var overlays: [Overlay] = []
        init(base: UInt64, size: UInt64) {
            self.base = base
            self.size = size
        }
        deinit { if let storage { munmap(storage, Int(size)) } }
    }

    private var regions: [Region] = []
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
        -> (pointer: UnsafeMutableRawPointer?, available: UInt64)? {
        guard let r = region(address) else { return nil }
        let offset = address - r.base
        var limit = r.size - offset
        if !r.overlays.isEmpty { for o in r.overlays {
            if address >= o.base && address - o.base < o.size {
                return (o.pointer + Int(address - o.base), o.size - (address - o.base))
            }
            if o.base > address { limit = min(limit, o.base - address) }
        } }
        if r.storage == nil && forWrite {
            let p = mmap(nil, Int(r.size), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0)
            guard let p, p != MAP_FAILED else { return nil }
            r.storage = p
        }
        return (r.storage.map { $0 + Int(offset) }, limit)
    }

    // MARK: PhysicalMemory

    /// An unaligned address is no descriptor: nil, as a bus would abort it. Aligned, the 8 bytes lie in one
    /// page, so they are in one piece of backing memory and one page of the ownership table.
    public func read64(at address: UInt64) -> UInt64? {
        guard address & 7 == 0, let (p, available) = segment(address, forWrite: false), available >= 8 else {
            return nil
        }
        guard let p else { return 0 }
        return UInt64(littleEndian: p.load(as: UInt64.self))
    }

    @discardableResult
    public func write64(_ value: UInt64, at address: UInt64) -> Bool {
        guard address & 7 == 0, let (p, available) = segment(address, forWrite: true), available >= 8, let p else {
            return false
        }
        p.storeBytes(of: value.littleEndian, as: UInt64.self)
        return true
    }

    // MARK: Bytes

    /// Calls `body` for each contiguous piece of [address, address + count); false if any is not RAM.
    private func forEachSegment(_ address: UInt64, _ count: Int, forWrite: Bool,
                                _ body: (UnsafeMutableRawPointer?, Int, Int) -> Void) -> Bool {
        guard count >= 0, contains(address: address, count: count) || count == 0 else { return false }
        var done = 0
        while done < count {
            guard let (p, available) = segment(address + UInt64(done), forWrite: forWrite) else { return false }
            let n = Int(min(available, UInt64(count - done)))
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
            forEachSegment(address, count, forWrite: false) { p, at, n in
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
            forEachSegment(address, bytes.count, forWrite: true) { p, at, n in
                if let p, let base = buffer.baseAddress { p.copyMemory(from: base + at, byteCount: n) }
            }
        }
    }

    /// Fills [address, address + count) with zeros; false unless all of it is RAM. Whole pages of a region's
    /// own memory go back to the kernel instead of being written (they read as zero until written again).
    @discardableResult
    public func zero(at address: UInt64, count: Int) -> Bool {
        guard contains(address: address, count: count) || count == 0 else { return false }
        return forEachSegment(address, count, forWrite: false) { p, at, n in
            guard let p else { return }
            if isOwnStorage(p), Self.discardPages(p, n) { return }
            memset(p, 0, n)
        }
    }

    private func isOwnStorage(_ p: UnsafeMutableRawPointer) -> Bool {
        regions.contains { r in r.storage.map { p >= $0 && p < $0 + Int(r.size) } ?? false }
    }

    /// Zeroes the whole pages of [p, p + n) by discarding them and the rest with memset; false if the kernel
    /// refused (the caller then writes zeros).
    private static func discardPages(_ p: UnsafeMutableRawPointer, _ n: Int) -> Bool {
        let page = Int(pageSize)
        let start = (Int(bitPattern: p) + page - 1) & ~(page - 1)
        let end = (Int(bitPattern: p) + n) & ~(page - 1)
        guard end > start else { return false }
        guard madvise(UnsafeMutableRawPointer(bitPattern: start), end - start, MADV_DONTNEED) == 0 else { return false }
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
    }

    /// Ends the replacement that starts at `base`: the region's own memory shows again.
    public func restore(base: UInt64) throws(MemoryMapError) {
        guard let r = region(base), let i = r.overlays.firstIndex(where: { $0.base == base }) else {
            throw .notReplaced(base: base)
        }
        r.overlays.remove(at: i)
    }

    /// The replaced ranges, as (base, size).
    public var replacedRanges: [(base: UInt64, size: UInt64)] {
        regions.flatMap { $0.overlays.map { ($0.base, $0.size) } }
    }
}
