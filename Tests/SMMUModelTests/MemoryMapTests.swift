import Testing
@testable import SMMUModel
#if canImport(Glibc)
import Glibc
#endif

@Suite("Simulated physical memory")
struct MemoryMapTests {
    @Test func regionsReadZeroAndRejectOverlaps() throws {
        let m = try MemoryMap(regions: [(0x8000_0000, 0x1000_0000)])
        #expect(m.read64(at: 0x8FFF_FFF8) == 0)
        #expect(m.read64(at: 0x9000_0000) == nil)
        #expect(m.read64(at: 0x7FFF_FFF8) == nil)
        #expect(throws: MemoryMap.MemoryMapError.invalidRegion(base: 0x8FFF_F000, size: 0x2000)) {
            try m.addRegion(base: 0x8FFF_F000, size: 0x2000)
        }
        #expect(throws: MemoryMap.MemoryMapError.self) { try m.addRegion(base: .max - 10, size: 100) }
        try m.addRegion(base: 0x9000_0000, size: 0x1000)
        #expect(m.ramRegions.count == 2)
    }

    @Test func readsAndWritesWithBoundsChecks() throws {
        let m = try MemoryMap(regions: [(0x1000, 0x2000), (0x3000, 0x1000)])
        #expect(m.write64(0x1122_3344_5566_7788, at: 0x1008))
        #expect(m.read64(at: 0x1008) == 0x1122_3344_5566_7788)
        #expect(m.readBytes(at: 0x1008, count: 2) == [0x88, 0x77])
        // Regions are adjacent but separate: an access may span them.
        #expect(m.writeBytes([1, 2, 3, 4], at: 0x2FFE))
        #expect(m.readBytes(at: 0x2FFE, count: 4) == [1, 2, 3, 4])
        #expect(m.readBytes(at: 0x3FFE, count: 4) == nil)
        #expect(!m.writeBytes([1, 2, 3, 4], at: 0x3FFE))
        #expect(m.readBytes(at: 0x3FFE, count: 2) == [0, 0])
        #expect(m.zero(at: 0x1008, count: 8))
        #expect(m.read64(at: 0x1008) == 0)
        #expect(!m.zero(at: 0x3F00, count: 0x200))
        #expect(!m.write64(1, at: 0x4000))
    }

    /// A run of descriptors reads what `read64` reads word by word, inside one page, and the journal sees its bytes
    /// once, before they are read (a replay writes the journaled bytes there first).
    @Test func aRunOfWordsReadsAsWordsAndIsJournaledOnce() throws {
        let m = try MemoryMap(regions: [(0x10_0000, 0x10_0000)])
        let words = UnsafeMutablePointer<UInt64>.allocate(capacity: 512)
        defer { words.deallocate() }
        #expect(m.read64Run(at: 0x10_2000, count: 512, into: words), "untouched RAM")
        #expect((0..<512).allSatisfy { words[$0] == 0 })
        for i in 0..<UInt64(512) { #expect(m.write64(0x1000_0000_0000 | i, at: 0x10_3000 + i * 8)) }
        var journaled: [(UInt64, Int)] = []
        m.readJournal = { address, bytes in
            journaled.append((address, bytes.count))
            bytes.storeBytes(of: UInt64(0xAB).littleEndian, toByteOffset: 8, as: UInt64.self)
        }
        #expect(m.read64Run(at: 0x10_3100, count: 16, into: words))
        #expect(journaled.count == 1 && journaled[0] == (0x10_3100, 128))
        #expect(words[0] == 0x1000_0000_0020 && words[1] == 0xAB && words[15] == 0x1000_0000_002F)
        m.readJournal = nil
        #expect(m.read64Run(at: 0x10_3108, count: 1, into: words) && words[0] == 0xAB)
        #expect(!m.read64Run(at: 0x10_3FF8, count: 2, into: words), "across a page")
        #expect(!m.read64Run(at: 0x10_3004, count: 1, into: words), "unaligned")
        #expect(!m.read64Run(at: 0x20_0000, count: 1, into: words), "no RAM")
        #expect(!m.read64Run(at: 0x10_3000, count: 0, into: words))
    }

    @Test func externalMemoryReplacesARangeUntilRestored() throws {
        let m = try MemoryMap(regions: [(0x10_0000, 0x10_0000)])
        m.write64(0xAAAA, at: 0x10_1000)
        let size = 0x2000
        let external = UnsafeMutableRawPointer.allocate(byteCount: size, alignment: 4096)
        external.initializeMemory(as: UInt8.self, repeating: 0x5A, count: size)
        var released = false
        try m.replace(base: 0x10_1000, size: UInt64(size), with: external) {
            released = true
        }
        #expect(m.read64(at: 0x10_1000) == 0x5A5A_5A5A_5A5A_5A5A)
        m.write64(7, at: 0x10_2FF8)
        #expect(external.load(fromByteOffset: size - 8, as: UInt64.self) == 7)
        // A read straddling the replaced range's end sees both backings.
        m.writeBytes([0x11], at: 0x10_3000)
        external.storeBytes(of: 0x22, toByteOffset: size - 1, as: UInt8.self)
        #expect(m.readBytes(at: 0x10_2FFC, count: 8) == [0, 0, 0, 0x22, 0x11, 0, 0, 0])
        #expect(throws: MemoryMap.MemoryMapError.alreadyReplaced(base: 0x10_2000)) {
            try m.replace(base: 0x10_2000, size: 0x1000, with: external) {}
        }
        #expect(throws: MemoryMap.MemoryMapError.invalidRange(base: 0x10_0800, size: 0x1000)) {
            try m.replace(base: 0x10_0800, size: 0x1000, with: external) {}
        }
        #expect(!released)
        try m.restore(base: 0x10_1000)
        #expect(released)
        #expect(m.read64(at: 0x10_1000) == 0xAAAA)
        #expect(throws: MemoryMap.MemoryMapError.notReplaced(base: 0x10_1000)) { try m.restore(base: 0x10_1000) }
        external.deallocate()
    }

    @Test func untouchedRAMCostsNoResidentMemory() throws {
        // 4 GiB of RAM: calloc'd lazily, and only on a write.
        let m = try MemoryMap(regions: [(0x1_0000_0000, 4 << 30)])
        #expect(m.read64(at: 0x1_0000_0000 + (3 << 30)) == 0)
        #expect(m.write64(1, at: 0x1_0000_0000 + (3 << 30)))
        #expect(m.read64(at: 0x1_0000_0000 + (3 << 30)) == 1)
    }

    @Test func zeroWrittenPagesPutsRAMBackToZerosAndLeavesClientMemory() throws {
        // Two adjacent regions: an access may span them.
        let m = try MemoryMap(regions: [(0x1000, 0x4000), (0x5000, 0x3000)])
        let client = UnsafeMutableRawPointer.allocate(byteCount: 0x1000, alignment: 0x1000)
        defer { client.deallocate() }
        client.initializeMemory(as: UInt8.self, repeating: 0, count: 0x1000)
        try m.replace(base: 0x6000, size: 0x1000, with: client) {}
        for round in 1...2 {   // twice: what the first call cleared is tracked again
            #expect(m.write64(UInt64(round), at: 0x1008))
            #expect(m.writeBytes([UInt8](repeating: 0xEE, count: 0x2010), at: 0x2FF8))   // 4 pages, 2 regions
            #expect(m.write64(0xC11E, at: 0x6008))                                          // client memory
            #expect(m.zero(at: 0x7000, count: 0x1000, discard: false))
            #expect(m.write64(5, at: 0x7FF8))
            m.zeroWrittenPages()
            #expect(m.readBytes(at: 0x1000, count: 0x5000)!.allSatisfy { $0 == 0 })
            #expect(m.readBytes(at: 0x7000, count: 0x1000)!.allSatisfy { $0 == 0 })
            #expect(m.read64(at: 0x6008) == 0xC11E, "client memory is not the map's to zero")
        }
        try m.restore(base: 0x6000)
        #expect(m.readBytes(at: 0x1000, count: 0x7000)!.allSatisfy { $0 == 0 })
    }

    /// A page a discarding `zero` handed back reads as zero and is no longer marked written; written again, it is
    /// marked again, so neither `zeroWrittenPages` nor `zeroAll` can miss it.
    @Test func aDiscardedPageWrittenAgainIsZeroedAgain() throws {
        let m = try MemoryMap(regions: [(0x1000, 0x4000)])
        for zeroing in [MemoryMap.zeroWrittenPages, MemoryMap.zeroAll] {
            #expect(m.writeBytes([UInt8](repeating: 0xAB, count: 0x3000), at: 0x1000))
            #expect(m.zero(at: 0x2000, count: 0x1000))          // a whole page: discarded
            #expect(m.read64(at: 0x2000) == 0)
            #expect(m.zero(at: 0x3000, count: 0x800))           // half a page: stored zeros, still marked written
            #expect(m.write64(7, at: 0x2010))
            zeroing(m)()
            #expect(m.readBytes(at: 0x1000, count: 0x4000)!.allSatisfy { $0 == 0 })
        }
        // A discard of hundreds of pages, not starting on a word of marks: the pages around it keep theirs.
        let big = try MemoryMap(regions: [(0x10_0000, 0x10_0000)])
        for zeroing in [MemoryMap.zeroWrittenPages, MemoryMap.zeroAll] {
            #expect(big.writeBytes([UInt8](repeating: 0x77, count: 0x10_0000), at: 0x10_0000))
            #expect(big.zero(at: 0x10_3000, count: 0xC8000))     // pages 3..<203 of 256
            #expect(big.write64(9, at: 0x10_0000 + 100 * 0x1000 + 8))
            zeroing(big)()
            #expect(big.readBytes(at: 0x10_0000, count: 0x10_0000)!.allSatisfy { $0 == 0 })
        }
    }

    /// `zeroAll` (a restore replacing RAM) leaves RAM as a new map has it, whatever was written, and client memory
    /// as it is.
    @Test func zeroAllPutsEveryRegionBackToZerosAndLeavesClientMemory() throws {
        let m = try MemoryMap(regions: [(0x1000, 0x4000), (0x5000, 0x3000)])
        let client = UnsafeMutableRawPointer.allocate(byteCount: 0x1000, alignment: 0x1000)
        defer { client.deallocate() }
        client.initializeMemory(as: UInt8.self, repeating: 0, count: 0x1000)
        try m.replace(base: 0x6000, size: 0x1000, with: client) {}
        #expect(m.writeBytes([UInt8](repeating: 0xEE, count: 0x2010), at: 0x2FF8))
        #expect(m.write64(0xC11E, at: 0x6008))
        #expect(m.write64(5, at: 0x7FF8))
        m.zeroAll()
        var nonZero: [UInt64] = []
        m.forEachNonZeroPage { address, _ in nonZero.append(address) }
        #expect(nonZero == [])
        #expect(m.read64(at: 0x6008) == 0xC11E, "client memory is not the map's to zero")
        try m.restore(base: 0x6000)
        #expect(m.readBytes(at: 0x1000, count: 0x7000)!.allSatisfy { $0 == 0 })
    }
}
