/// Protocol v1.2's invalidation log: what each advance of the translation epoch ended, kept in the shared epoch
/// page (docs/protocol-v1.md, "Version 1.2"), so a device that caches translations drops only the ranges a TLBIVA
/// named instead of everything.
///
/// Layout of the epoch page (little-endian, naturally aligned):
///
/// | offset | what |
/// |---|---|
/// | 0x00 | `u64 epoch` (v1.1) |
/// | 0x08 | `u32 format`: 1 when the daemon keeps the log (a v1.1 daemon leaves the client's zeros) |
/// | 0x0C | `u32 slots`: 126 |
/// | 0x40 + 32·i | slot i: the record of the advance to epoch e is in slot e mod slots |
///
/// A slot: `u64 sequence` (the epoch whose advance it records; 0 while it is written), `u64 address` (the
/// first byte of the range, VA[55:12]), `u32 pages`, `u16 window`, `u16 context_bank`, `u16 asid`, `u8 kind`
/// (`InvalidationRecord.Kind`), a reserved byte, `u32 covers` (v1.3: the advances this record stands for).
///
/// It is a seqlock per slot. The writer (the daemon, alone) writes a record as: sequence ← 0; release fence;
/// the fields; sequence ← e (release); and only then the epoch ← e (release). A reader that last saw epoch s
/// loads the epoch (acquire) as n, then for each e in s+1...n loads slot e's sequence (acquire), copies its
/// fields, and after an acquire fence loads every sequence again. Both loads equal e for every record, or it
/// trusts nothing and drops everything: a sequence equal to e, read with acquire, makes that record's fields
/// visible; a writer reusing the slot for e + slots stores 0 before a release fence and then the fields, so a
/// reader that saw any of the new fields sees, after its acquire fence, a sequence other than e.
public enum InvalidationLog {
    public static let formatOffset = 0x08
    public static let slotCountOffset = 0x0C
    public static let firstSlotOffset = 0x40
    public static let slotSize = 32
    public static let slots = 126
    public static let format: UInt32 = 1
    public static let pageSize = 4096

    /// The byte offset of the slot that records the advance to `epoch`.
    @inlinable
    public static func slotOffset(epoch: UInt64) -> Int {
        firstSlotOffset + Int(epoch % UInt64(slots)) * slotSize
    }

    /// The writer's access to the page's aligned `u64` words (little-endian in memory), with explicit
    /// ordering: the daemon's is real atomics on shared memory; tests may interpose.
    public protocol WritableMemory {
        func storeRelaxed(_ offset: Int, _ value: UInt64)
        func storeRelease(_ offset: Int, _ value: UInt64)
        func fenceRelease()
    }

    /// The reader's access: the client's is real atomics on shared memory; tests may interpose.
    public protocol ReadableMemory {
        func loadAcquire(_ offset: Int) -> UInt64
        func loadRelaxed(_ offset: Int) -> UInt64
        func fenceAcquire()
    }

    // MARK: The daemon's side

    /// Makes a page a v1.2 page showing `epoch`: no record is trusted (every sequence 0), then the format,
    /// then the epoch. Before the page is shared with anyone who reads it.
    public static func initialize<M: WritableMemory>(_ m: M, epoch: UInt64) {
        for i in 0..<slots {
            for word in 0..<(slotSize / 8) { m.storeRelaxed(firstSlotOffset + i * slotSize + word * 8, 0) }
        }
        m.storeRelaxed(formatOffset, UInt64(format) | UInt64(UInt32(slots)) << 32)
        m.storeRelease(0, epoch)
    }

    /// Records the advance to `epoch` and then shows `epoch` (the writer's half of the seqlock).
    public static func publish<M: WritableMemory>(_ record: InvalidationRecord, epoch: UInt64, to m: M) {
        let slot = slotOffset(epoch: epoch)
        m.storeRelaxed(slot, 0)
        m.fenceRelease()
        let words = record.words
        m.storeRelaxed(slot + 8, words.0)
        m.storeRelaxed(slot + 16, words.1)
        m.storeRelaxed(slot + 24, words.2)
        m.storeRelease(slot, epoch)
        m.storeRelease(0, epoch)
    }

    // MARK: The client's side

    /// Whether the daemon keeps the log in this page (format 1, 126 slots): a v1.1 daemon leaves zeros.
    public static func isKept<M: ReadableMemory>(in m: M) -> Bool {
        m.loadAcquire(formatOffset) == UInt64(format) | UInt64(UInt32(slots)) << 32
    }

    /// What changed since epoch `seen`: the epoch now and what a cache valid at `seen` must drop to be valid
    /// at it (the reader's half of the seqlock).
    ///
    /// v1.3: the reader walks from the newest record down, and a record that `covers` k advances stands for the
    /// k − 1 before it too (its range includes theirs), so only the records it lands on are read; a v1.2 daemon's
    /// records cover 1 each, and this reads every one of them. The records come back oldest first.
    public static func changes<M: ReadableMemory>(since seen: UInt64, in m: M) -> (epoch: UInt64, changes: Changes) {
        let now = m.loadAcquire(0)
        if now == seen { return (now, .none) }
        guard now > seen else { return (now, .everything(.overflow)) }
        var records: [InvalidationRecord] = []
        var read: [UInt64] = []
        var e = now
        while e > seen {
            // A slot older than the last `slots` advances has been reused: the chain cannot reach `seen`.
            guard now - e < UInt64(slots) else { return (now, .everything(.overflow)) }
            let slot = slotOffset(epoch: e)
            guard m.loadAcquire(slot) == e else { return (now, .everything(.overwritten)) }
            let record = InvalidationRecord(words: (m.loadRelaxed(slot + 8), m.loadRelaxed(slot + 16),
                                                    m.loadRelaxed(slot + 24)))
            guard let record else { return (now, .everything(.unreadable)) }
            records.append(record)
            read.append(e)
            e -= min(e, UInt64(max(record.covers, 1)))
        }
        m.fenceAcquire()
        for e in read {
            guard m.loadRelaxed(slotOffset(epoch: e)) == e else { return (now, .everything(.overwritten)) }
        }
        if records.contains(where: { $0.kind == .everything }) { return (now, .everything(.unranged)) }
        return (now, .ranges(records.reversed()))
    }

    public enum Changes: Equatable, Sendable {
        /// The epoch is the one last seen.
        case none
        /// Every cached translation of these ranges ends; nothing else does.
        case ranges([InvalidationRecord])
        /// Every cached translation ends.
        case everything(FullFlushReason)
    }

    public enum FullFlushReason: Equatable, Sendable {
        /// More advances than slots since the epoch last seen (or the epoch went back).
        case overflow
        /// A slot does not hold the record of its epoch, or was rewritten while read.
        case overwritten
        /// A record's kind is not one this reader knows.
        case unreadable
        /// One of the advances was not an address range (configuration, ownership, TLBIASID, TLBIALL...).
        case unranged
    }
}

/// One advance of the translation epoch as the log records it.
public struct InvalidationRecord: Equatable, Sendable {
    public enum Kind: UInt8, Sendable {
        /// Anything may have changed: every cached translation ends.
        case everything = 0
        /// TLBIVA(L): translations by `window`'s context bank `contextBank`'s ASID `asid`.
        case address = 1
        /// TLBIVAA(L): translations by `window`'s context bank `contextBank`, any ASID.
        case addressAnyASID = 2
    }
    public var kind: Kind
    /// The first byte of the range, 4 KiB aligned, VA[55:12] (bits 63:56 are not part of it: a cached IOVA is
    /// compared without them).
    public var address: UInt64
    public var pages: UInt32
    public var window: UInt16
    public var contextBank: UInt16
    public var asid: UInt16
    /// v1.3: how many advances, ending with this one, this record's range stands for (their records' ranges are
    /// inside it; 1 for a record of its own advance only, 0 for kind `everything`). A v1.2 daemon writes 0 there
    /// (reserved), which a reader takes as 1.
    public var covers: UInt32

    public static let addressMask: UInt64 = 0x00FF_FFFF_FFFF_F000
    /// The widest range a merge makes (2 MiB): a device drops a range by probing each page of it.
    public static let maxMergedPages: UInt32 = 512

    public init(kind: Kind, address: UInt64 = 0, pages: UInt32 = 0, window: UInt16 = 0, contextBank: UInt16 = 0,
                asid: UInt16 = 0, covers: UInt32 = 1) {
        self.kind = kind
        self.address = kind == .everything ? 0 : address & Self.addressMask
        self.pages = kind == .everything ? 0 : pages
        self.window = kind == .everything ? 0 : window
        self.contextBank = kind == .everything ? 0 : contextBank
        self.asid = kind == .address ? asid : 0
        self.covers = kind == .everything ? 0 : max(covers, 1)
    }

    /// v1.3: the record for the advance after `self`'s that stands for both: `next`'s scope (kind, window, context
    /// bank, ASID) and the smallest range holding both ranges (the pages between them too: ending a translation
    /// that did not change is a miss, never stale), when that range is at most `maxMergedPages`; nil otherwise
    /// (then `next` is published as it is). A strict unmap of a 1 MiB request is 256 TLBIVALs on IOVAs of one
    /// neighbourhood: they become one or two records instead of overflowing the log.
    public func merging(_ next: InvalidationRecord) -> InvalidationRecord? {
        guard kind != .everything, next.kind == kind, next.window == window, next.contextBank == contextBank,
              next.asid == asid, covers < UInt32.max else { return nil }
        let end = address &+ UInt64(pages) << 12, nextEnd = next.address &+ UInt64(next.pages) << 12
        guard end >= address, nextEnd >= next.address else { return nil }
        let first = min(address, next.address), last = max(end, nextEnd)
        guard (last - first) >> 12 <= UInt64(Self.maxMergedPages) else { return nil }
        return InvalidationRecord(kind: kind, address: first, pages: UInt32((last - first) >> 12), window: window,
                                  contextBank: contextBank, asid: asid, covers: covers + 1)
    }

    public static let everything = InvalidationRecord(kind: .everything)

    /// Whether a cached translation of `window` whose mapping is the naturally aligned `2^reachShift` bytes
    /// around `iova` ends with this record (it does when the mapping overlaps the range; scope beyond the window
    /// is not compared, which may drop more than needed, never less).
    @inlinable
    public func ends(window w: UInt32, iova: UInt64, reachShift: UInt8) -> Bool {
        if kind == .everything { return true }
        guard UInt32(window) == w else { return false }
        let shift = UInt64(min(max(reachShift, 12), 56))
        let base = iova & Self.addressMask & ~((1 << shift) - 1)
        let end = base &+ (1 << shift)                          // exclusive
        let first = address, last = address &+ UInt64(pages) << 12
        return first < end && base < last
    }

    /// The slot's three words after its sequence: address; pages | window << 32 | context_bank << 48;
    /// asid | kind << 16 | covers << 32 (v1.3; byte 27 stays reserved).
    var words: (UInt64, UInt64, UInt64) {
        (address, UInt64(pages) | UInt64(window) << 32 | UInt64(contextBank) << 48,
         UInt64(asid) | UInt64(kind.rawValue) << 16 | UInt64(covers) << 32)
    }

    /// Nil when the kind is unknown.
    init?(words: (UInt64, UInt64, UInt64)) {
        guard let kind = Kind(rawValue: UInt8(truncatingIfNeeded: words.2 >> 16)) else { return nil }
        self.kind = kind
        address = words.0
        pages = UInt32(truncatingIfNeeded: words.1)
        window = UInt16(truncatingIfNeeded: words.1 >> 32)
        contextBank = UInt16(truncatingIfNeeded: words.1 >> 48)
        asid = UInt16(truncatingIfNeeded: words.2)
        covers = kind == .everything ? 0 : max(UInt32(truncatingIfNeeded: words.2 >> 32), 1)
    }
}
