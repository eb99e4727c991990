import WireProtocol

/// What a DMA master may keep of the daemon's answers (protocol v1.1 DMA_CACHED/DMA_PREFETCH, v1.2's
/// invalidation log), as qemu/smmu-hypd-device.c keeps them: a translation is used only while nothing since the
/// epoch it was answered in may have ended it.
///
/// The cache is valid as of the epoch it last saw. Before each lookup and insertion it reads what changed
/// since (`InvalidationLog.changes`): with a complete log of address ranges it drops the entries whose mapping
/// (the 2^reach_shift bytes around them) overlaps a range; otherwise (no log: a v1.1 daemon, or `useLog` false
/// as an old client; overflow; a record being rewritten; a change that is not a range) it drops everything.
/// An answer is kept only if it was given in the epoch the cache has reached, so no change between the
/// answer and its insertion is missed. Entries are scanned on a ranged drop: fine for tests and tools, a
/// device with many entries indexes them (QEMU's probes its hash slots).
public final class TranslationCache<Memory: InvalidationLog.ReadableMemory> {
    public struct Entry: Equatable, Sendable {
        public var window: UInt32
        public var stream: UInt32
        /// [iovaBase, iovaBase + 2^sizeShift) maps linearly onto physicalBase.
        public var iovaBase: UInt64
        public var physicalBase: UInt64
        public var sizeShift: UInt8
        /// The mapping a TLBIVA ends it by: the 2^reachShift bytes around `iovaBase`.
        public var reachShift: UInt8
        public var access: UInt8
    }

    public struct Statistics: Equatable, Sendable {
        public var hits = 0, misses = 0
        /// Times everything was dropped, and entries dropped by ranges.
        public var fullFlushes = 0, rangeDrops = 0
        /// Records applied as ranges.
        public var rangesApplied = 0
        public var lastFullFlush: InvalidationLog.FullFlushReason?
    }

    let memory: Memory
    /// Whether ranges are applied (the daemon keeps the log and this client reads it).
    public let usesLog: Bool
    /// The epoch every entry is valid in.
    public private(set) var seen: UInt64
    /// One entry per piece, by (window, stream, iovaBase >> 12).
    private var entries: [Key: Entry] = [:]
    public private(set) var statistics = Statistics()
    /// The piece sizes present (lookups probe each).
    private var shifts: Set<UInt8> = []

    struct Key: Hashable { var window: UInt32, stream: UInt32, page: UInt64 }

    /// `epoch`: what DMA_EPOCH answered. `useLog` false makes a v1.1 client, which ignores the log.
    public init(memory: Memory, epoch: UInt64, useLog: Bool = true) {
        self.memory = memory
        seen = epoch
        usesLog = useLog && InvalidationLog.isKept(in: memory)
    }

    public var count: Int { entries.count }

    /// Brings the cache to the current epoch.
    public func synchronize() {
        if !usesLog {
            let now = memory.loadAcquire(0)
            if now != seen { flushAll(.unranged) }
            seen = now
            return
        }
        let (now, changes) = InvalidationLog.changes(since: seen, in: memory)
        seen = now
        switch changes {
        case .none:
            break
        case .everything(let reason):
            flushAll(reason)
        case .ranges(let records):
            statistics.rangesApplied += records.count
            guard !entries.isEmpty else { return }
            let before = entries.count
            entries = entries.filter { _, e in
                !records.contains { $0.ends(window: e.window, iova: e.iovaBase, reachShift: max(e.reachShift, e.sizeShift)) }
            }
            statistics.rangeDrops += before - entries.count
        }
    }

    private func flushAll(_ reason: InvalidationLog.FullFlushReason) {
        entries.removeAll(keepingCapacity: true)
        shifts.removeAll()
        statistics.fullFlushes += 1
        statistics.lastFullFlush = reason
    }

    /// The physical address of a cached translation valid now, or nil (a miss: ask the daemon).
    public func lookup(window: UInt32, stream: UInt32, iova: UInt64, write: Bool) -> UInt64? {
        synchronize()
        let needed = write ? CachedDMAResult.writable : CachedDMAResult.readable
        for shift in shifts {
            let base = iova & ~((1 << UInt64(shift)) - 1)
            if let e = entries[Key(window: window, stream: stream, page: base >> 12)], e.sizeShift == shift,
               e.access & needed != 0 {
                statistics.hits += 1
                return e.physicalBase | iova & ((1 << UInt64(shift)) - 1)
            }
        }
        statistics.misses += 1
        return nil
    }

    /// Keeps an OK answer for the access at `iova` (DMA_CACHED's, or a DMA_PREFETCH record with `iova` the
    /// start of its range for records after the first). Returns whether it was kept: not when the epoch moved
    /// on since it was answered, nor a size the protocol does not give.
    @discardableResult
    public func insert(window: UInt32, stream: UInt32, iova: UInt64, answer: CachedDMAResult) -> Bool {
        synchronize()
        guard answer.fault == 0, answer.epoch == seen, (12...21).contains(answer.sizeShift) else { return false }
        let mask: UInt64 = (1 << UInt64(answer.sizeShift)) - 1
        let e = Entry(window: window, stream: stream, iovaBase: iova & ~mask, physicalBase: answer.physicalAddress & ~mask,
                      sizeShift: answer.sizeShift, reachShift: max(answer.reachShift, answer.sizeShift),
                      access: answer.access)
        entries[Key(window: window, stream: stream, page: e.iovaBase >> 12)] = e
        shifts.insert(answer.sizeShift)
        return true
    }
}
