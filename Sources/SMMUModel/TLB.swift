/// The translation cache: final translations, one entry per 4 KiB input page, tagged the way the
/// architecture tags them (VMID, ASID or global) plus the context bank that made them. Entries stay
/// until a TLBI removes them, stale or not, as on hardware.
///
/// Direct-mapped and allocated once, so a hit costs no allocation and no hashing of a struct key.
/// Invalidation by VMID or ASID scans the table, so the TLB keeps occupancy counts (all entries, and entries
/// per VMID bucket) and a TLBI that cannot match anything returns at once: the hypervisor turns one host
/// TLBIALLNSNH into a TLBIVMID per host bank, which was 120 full scans (about 2 ms) on an empty Tegra234 TLB.
///
/// A TLBIVA(L) names one address: an entry of a 4 KiB mapping can only sit in the slot its bank and page
/// hash to, so the TLB probes that slot in each bank holding entries and scans nothing. Only entries of
/// larger mappings (blocks, 16/64 KiB pages) are stored under other pages than the one a TLBI names, so
/// while a VMID bucket holds any of those, a TLBIVA of that bucket falls back to the scan.
final class TLB {
    /// Allowed accesses, as bits: privileged read/write/execute, then unprivileged.
    struct Permissions: OptionSet, Hashable {
        let rawValue: UInt8
        static let privilegedRead = Permissions(rawValue: 1 << 0)
        static let privilegedWrite = Permissions(rawValue: 1 << 1)
        static let privilegedExecute = Permissions(rawValue: 1 << 2)
        static let userRead = Permissions(rawValue: 1 << 3)
        static let userWrite = Permissions(rawValue: 1 << 4)
        static let userExecute = Permissions(rawValue: 1 << 5)
        static let all: Permissions = [.privilegedRead, .privilegedWrite, .privilegedExecute,
                                       .userRead, .userWrite, .userExecute]

        /// True if `access` is allowed.
        func permits(_ access: DMAAccess) -> Bool {
            let user = !access.contains(.privileged)
            var needed: Permissions
            if access.isWrite {
                needed = user ? .userWrite : .privilegedWrite
            } else {
                needed = user ? .userRead : .privilegedRead
            }
            if access.contains(.instructionFetch) {
                needed.insert(user ? .userExecute : .privilegedExecute)
            }
            return isSuperset(of: needed)
        }
    }

    struct Entry {
        var vaPage: UInt64 = 0
        var paPage: UInt64 = 0
        var ipaPage: UInt64 = 0
        /// The context bank, stored plus one so that an all-zero entry is empty: the table is an anonymous mapping whose
        /// pages the kernel zeroes lazily, so a new model does not write (and fault in) all 8192 slots.
        /// Set through `bank`.
        var storedBank: Int16 = 0
        /// -1: empty.
        var bank: Int16 {
            @inline(__always) get { storedBank &- 1 }
            @inline(__always) set { storedBank = newValue &+ 1 }
        }
        /// The context bank whose stage 2 produced the entry (itself for stage-2-only), or -1.
        var s2Bank: Int16 = -1
        var vmid: UInt16 = 0
        var s2VMID: UInt16 = 0
        var asid: UInt16 = 0
        var global = false
        var hasIPA = false
        var permissions = Permissions()
        var level: UInt8 = 3
        /// Size of the stage-1 (or only) mapping, log2 bytes; TLBIVA removes the whole of it.
        var leafShift: UInt8 = 12
        /// Size of the stage-2 mapping, log2 bytes; TLBIIPAS2 removes the whole of it.
        var s2LeafShift: UInt8 = 12
    }

    static let capacity = 8192
    /// All-zero bytes are an empty entry (see `Entry.bank`), so the table is a lazily zeroed mapping.
    private let table = FixedArray<Entry>(zeroedCount: capacity)
    private var entries: UnsafeMutablePointer<Entry> { @inline(__always) get { table.base } }
    /// Live entries.
    private(set) var count = 0
    /// Live entries tagged with a VMID (stage 1 or stage 2) whose low byte is the index: a superset count, so a
    /// zero proves no entry carries that VMID.
    private let vmidBuckets = FixedArray<Int32>(repeating: 0, count: 256)
    /// Live entries of mappings larger than 4 KiB (`leafShift` > 12), per VMID bucket (same superset rule).
    private let blockBuckets = FixedArray<Int32>(repeating: 0, count: 256)
    /// Live entries per context bank (banks 0..<128, MMU-500's most), and one past the highest bank used.
    private let bankCounts = FixedArray<Int32>(repeating: 0, count: 128)
    /// One bit per slot, set while the slot holds a live entry: a TLBI that must scan visits the live entries
    /// through these 128 words instead of reading all 8192 slots (a sparse TLB is scanned in a few words).
    private let occupied = FixedArray<UInt64>(repeating: 0, count: capacity / 64)
    private var bankLimit = 0
    /// [0] TLBIVA(L)s answered by probing, [1] by scanning (tests and the benchmark).
    private let vaCounters = FixedArray<Int>(repeating: 0, count: 2)
    var directVAInvalidations: Int { vaCounters[0] }
    var scannedVAInvalidations: Int { vaCounters[1] }
    /// [0] hits, [1] misses (pointer-backed: counted on every translation).
    private let counters = FixedArray<Int>(repeating: 0, count: 2)
    var hits: Int { counters[0] }
    var misses: Int { counters[1] }

    init() {}

    deinit {
        table.deallocate()
        counters.deallocate()
        vmidBuckets.deallocate()
        blockBuckets.deallocate()
        bankCounts.deallocate()
        occupied.deallocate()
        vaCounters.deallocate()
    }

    @inline(__always)
    func slot(bank: Int, vaPage: UInt64) -> Int { Self.slot(bank: bank, vaPage: vaPage) }

    @inline(__always)
    static func slot(bank: Int, vaPage: UInt64) -> Int {
        let h = (vaPage &* 0x9E37_79B9_7F4A_7C15) ^ (UInt64(bank) &* 0xBF58_476D_1CE4_E5B9)
        return Int(truncatingIfNeeded: h >> 51) & (Self.capacity - 1)
    }

    /// The entry for this bank, VMID and ASID covering `vaPage`, if cached.
    @inline(__always)
    func lookup(bank: Int, vmid: UInt16, asid: UInt16, vaPage: UInt64) -> Entry? {
        let i = slot(bank: bank, vaPage: vaPage)
        // The occupancy bit first: 1 KiB that stays in the cache, where the slots are 320 KiB that do not (a
        // DMA_PREFETCH looks up hundreds of pages, most of them in empty slots).
        guard occupied[i >> 6] & (1 << UInt64(i & 63)) != 0 else {
            counters[1] &+= 1
            return nil
        }
        let e = entries[i]
        if e.bank == Int16(truncatingIfNeeded: bank), e.vaPage == vaPage, e.vmid == vmid,
           e.global || e.asid == asid {
            counters[0] &+= 1
            return e
        }
        counters[1] &+= 1
        return nil
    }

    func insert(_ entry: Entry) {
        precondition(entry.bank < 128, "MMU-500 has at most 128 context banks")
        let i = slot(bank: Int(entry.bank), vaPage: entry.vaPage)
        if entries[i].bank >= 0 { account(entries[i], -1) }
        entries[i] = entry
        if entry.bank >= 0 {
            account(entry, 1)
            occupied[i >> 6] |= 1 << UInt64(i & 63)
        } else {
            occupied[i >> 6] &= ~(1 << UInt64(i & 63))
        }
    }

    func resetStatistics() {
        counters.fill(0)
    }

    /// Sets every counter (a state image's restore).
    func setCounters(hits: Int, misses: Int, direct: Int, scanned: Int) {
        counters[0] = hits
        counters[1] = misses
        vaCounters[0] = direct
        vaCounters[1] = scanned
    }

    /// Adds (`delta` 1) or removes (-1) a live entry's occupancy.
    @inline(__always)
    private func account(_ e: Entry, _ delta: Int32) {
        count += Int(delta)
        vmidBuckets[Int(e.vmid & 0xFF)] &+= delta
        if e.leafShift > 12 { blockBuckets[Int(e.vmid & 0xFF)] &+= delta }
        bankCounts[Int(e.bank)] &+= delta
        if delta > 0 && Int(e.bank) >= bankLimit { bankLimit = Int(e.bank) + 1 }
        if e.s2Bank >= 0 && e.s2VMID & 0xFF != e.vmid & 0xFF { vmidBuckets[Int(e.s2VMID & 0xFF)] &+= delta }
    }

    /// False when no live entry can carry `vmid`.
    @inline(__always)
    private func mayHold(vmid: UInt16) -> Bool { vmidBuckets[Int(vmid & 0xFF)] > 0 }

    /// Removes every entry `matches` selects.
    private func invalidate(where matches: (Entry) -> Bool) {
        guard count > 0 else { return }
        for w in occupied.indices {
            var bits = occupied[w]
            while bits != 0 {
                let i = w << 6 | bits.trailingZeroBitCount
                bits &= bits &- 1
                if matches(entries[i]) { remove(at: i) }
            }
        }
    }

    @inline(__always)
    private func remove(at i: Int) {
        account(entries[i], -1)
        entries[i].bank = -1
        occupied[i >> 6] &= ~(1 << UInt64(i & 63))
    }

    /// TLBIALLNSNH, reset: everything (no hypervisor or secure entries are ever made).
    func invalidateAll() {
        invalidate { _ in true }
    }

    /// TLBIVMID: every entry made under `vmid`, at either stage.
    func invalidate(vmid: UInt16) {
        guard mayHold(vmid: vmid) else { return }
        invalidate { $0.vmid == vmid || ($0.s2Bank >= 0 && $0.s2VMID == vmid) }
    }

    /// TLBIALL (context bank): every entry of the bank's VMID.
    func invalidateContext(vmid: UInt16) {
        guard mayHold(vmid: vmid) else { return }
        invalidate { $0.vmid == vmid }
    }

    /// TLBIASID: non-global stage-1 entries of (VMID, ASID).
    func invalidate(vmid: UInt16, asid: UInt16) {
        guard mayHold(vmid: vmid) else { return }
        invalidate { $0.vmid == vmid && !$0.global && $0.asid == asid }
    }

    /// TLBIVA(L) with an ASID, TLBIVAA(L) without: the entries whose mapping covers `va` (VA[55:12]).
    func invalidate(vmid: UInt16, asid: UInt16?, va: UInt64) {
        let vaMask: UInt64 = 0x00FF_FFFF_FFFF_F000
        let target = va & vaMask
        guard mayHold(vmid: vmid) else { return }
        func matches(_ e: Entry) -> Bool {
            guard e.vmid == vmid, !e.hasIPA || e.s2Bank != e.bank else { return false }
            if let asid, !e.global, e.asid != asid { return false }
            let shift = UInt64(e.leafShift)
            return ((e.vaPage << 12) & vaMask) >> shift == target >> shift
        }
        guard blockBuckets[Int(vmid & 0xFF)] == 0 else {
            vaCounters[1] &+= 1
            invalidate(where: matches)
            return
        }
        // Every entry of this VMID maps 4 KiB and is stored under its own page: the input page is VA[55:12]
        // as the TLBI names it, or with bits 63:56 set (a TTBR1 address).
        vaCounters[0] &+= 1
        let low = target >> 12
        func probe(_ bank: Int, _ page: UInt64) {
            let i = slot(bank: bank, vaPage: page)
            let e = entries[i]
            if Int(e.bank) == bank, e.vaPage == page, matches(e) { remove(at: i) }
        }
        for bank in 0..<bankLimit where bankCounts[bank] > 0 {
            probe(bank, low)
            probe(bank, low | 0xFF << 44)
        }
    }

    /// TLBIIPAS2(L): entries whose stage-2 mapping covers `ipa`, made by `bank`'s stage 2 or
    /// under its VMID.
    func invalidate(s2Bank bank: Int, vmid: UInt16, ipa: UInt64) {
        invalidate { e in
            guard e.hasIPA, Int(e.s2Bank) == bank || e.s2VMID == vmid else { return false }
            let shift = UInt64(e.s2LeafShift)
            return (e.ipaPage << 12) >> shift == ipa >> shift
        }
    }

    /// The entry in slot `i`, live or not (tests).
    func entry(atSlot i: Int) -> Entry { entries[i] }

    /// Live entries counted by scanning, to check `count` (tests).
    var scannedCount: Int {
        var n = 0
        for i in 0..<Self.capacity where entries[i].bank >= 0 { n += 1 }
        return n
    }

    /// True when the occupancy bits name exactly the live slots (tests).
    var occupancyMatchesSlots: Bool {
        (0..<Self.capacity).allSatisfy { i in (occupied[i >> 6] >> UInt64(i & 63)) & 1 == (entries[i].bank >= 0 ? 1 : 0) }
    }
}
