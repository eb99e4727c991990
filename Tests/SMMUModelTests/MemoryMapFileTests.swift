import Testing
@testable import SMMUModel
#if canImport(Glibc)
import Glibc
#endif

/// RAM backed by a file (restart mode's memfds): what is written is in the file, and a scrub still frees and zeroes.
@Suite("Simulated physical memory in a file")
struct MemoryMapFileTests {
    /// A sparse file of `size` bytes on tmpfs (what a memfd is), unlinked.
    static func file(size: Int) throws -> Int32 {
        var template = Array("/dev/shm/memorymap-test-XXXXXX".utf8CString)
        let fd = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
        try #require(fd >= 0)
        template.withUnsafeBufferPointer { _ = unlink($0.baseAddress!) }
        try #require(ftruncate(fd, off_t(size)) == 0)
        return fd
    }

    static func blocks(_ fd: Int32) -> Int {
        var st = stat()
        return fstat(fd, &st) == 0 ? Int(st.st_blocks) : -1
    }

    static func pread64(_ fd: Int32, at offset: Int) -> UInt64 {
        var v: UInt64 = 0
        _ = withUnsafeMutableBytes(of: &v) { pread(fd, $0.baseAddress, 8, off_t(offset)) }
        return UInt64(littleEndian: v)
    }

    @Test func writesGoToTheFileAndAnotherMapSeesThem() throws {
        let fd = try Self.file(size: 0x10_0000)
        defer { close(fd) }
        let m = MemoryMap()
        try m.addRegion(base: 0x8000_0000, size: 0x10_0000, file: fd)
        #expect(m.isFileBacked)
        #expect(m.read64(at: 0x8000_0000) == 0)
        #expect(m.write64(0x1122_3344_5566_7788, at: 0x8000_2008))
        #expect(m.writeBytes([1, 2, 3], at: 0x800F_FFFD))
        #expect(Self.pread64(fd, at: 0x2008) == 0x1122_3344_5566_7788)
        // A second process maps the same file: the same RAM, without a copy.
        let again = MemoryMap()
        try again.addRegion(base: 0x8000_0000, size: 0x10_0000, file: fd)
        #expect(again.read64(at: 0x8000_2008) == 0x1122_3344_5566_7788)
        #expect(again.readBytes(at: 0x800F_FFFD, count: 3) == [1, 2, 3])
        // Anonymous RAM is not file backed; a map with both is not either.
        try again.addRegion(base: 0x9000_0000, size: 0x1000)
        #expect(!again.isFileBacked)
    }

    @Test func aScrubFreesAndZeroesTheFilesPages() throws {
        let size = 0x40_0000
        let fd = try Self.file(size: size)
        defer { close(fd) }
        let m = MemoryMap()
        try m.addRegion(base: 0x1000_0000, size: UInt64(size), file: fd)
        for page in stride(from: 0, to: size, by: 4096) { m.write64(0xFFFF, at: 0x1000_0000 + UInt64(page)) }
        let full = Self.blocks(fd)
        #expect(full * 512 >= size, "every page was written")
        // Unaligned edges are written with zeros, the whole pages between go back to the kernel.
        #expect(m.zero(at: 0x1000_0000, count: size))
        #expect(Self.blocks(fd) < full / 8, "MADV_DONTNEED would leave the file's pages in place")
        #expect(Self.pread64(fd, at: 0) == 0 && Self.pread64(fd, at: size - 4096) == 0)
        #expect(m.read64(at: 0x1000_1000) == 0)
        var nonZero = 0
        m.forEachNonZeroPage { _, _ in nonZero += 1 }
        #expect(nonZero == 0)
        // Partial pages and the fuzzers' reset still zero by storing.
        m.write64(7, at: 0x1000_2000)
        #expect(m.zero(at: 0x1000_2000, count: 16))
        #expect(Self.pread64(fd, at: 0x2000) == 0)
        m.write64(9, at: 0x1000_3000)
        m.zeroWrittenPages()
        #expect(Self.pread64(fd, at: 0x3000) == 0)
    }

    @Test func aFileThatCannotBeMappedIsRefusedAndLeavesNoRegion() throws {
        let m = MemoryMap()
        #expect(throws: MemoryMap.MemoryMapError.mapFailed(base: 0x1000, errno: EBADF)) {
            try m.addRegion(base: 0x1000, size: 0x1000, file: -1)
        }
        #expect(m.ramRegions.isEmpty)
    }

    /// `zeroAll` empties a file-backed region: its bytes are the file's (a previous process wrote them, no written
    /// mark records them), so the whole file is punched out, not only what this map wrote.
    @Test func zeroAllPunchesTheWholeFile() throws {
        let fd = try Self.file(size: 0x10_0000)
        defer { close(fd) }
        let payload = [UInt8](repeating: 0x5A, count: 0x8000)
        #expect(payload.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, 0x4_0000) } == 0x8000)   // "before"
        let m = MemoryMap()
        try m.addRegion(base: 0x8000_0000, size: 0x10_0000, file: fd)
        #expect(m.read64(at: 0x8004_0000) == 0x5A5A_5A5A_5A5A_5A5A)
        #expect(m.write64(9, at: 0x8000_1000))
        m.zeroAll()
        #expect(Self.blocks(fd) == 0, "the file's pages were freed")   // first: a read through the mapping allocates
        #expect(Self.pread64(fd, at: 0x4_0000) == 0 && Self.pread64(fd, at: 0x1000) == 0)
        #expect(m.readBytes(at: 0x8000_0000, count: 0x10_0000)!.allSatisfy { $0 == 0 })
    }
}
