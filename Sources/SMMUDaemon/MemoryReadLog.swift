import SMMUModel

/// Restart mode: the bytes of memory the daemon's requests read (table descriptors, MEM_READ's bytes), journaled so
/// that a replay reads exactly what the original read (docs/hypervisor-model.md, "Restart and crash survival").
///
/// Why: a replay runs after the fact. Client memory (a QEMU guest's RAM, MEM_MAPped) has moved on: a guest with
/// `iommu.strict=1` unmaps a DMA buffer right after the DMA, so a replayed walk of its tables would fault where the
/// original translated. The daemon's own RAM (a memfd) is ahead too: it holds the writes of the whole journal, so a
/// replayed read can see a value written later. Either makes a regenerated answer or state differ from the original.
///
/// How: every read the memory map makes on the model's behalf has an index (the reads since the journal began, in
/// the daemon's one order, which a replay repeats). A read whose 8 bytes at that address were journaled since the
/// journal began, with the same value (every word of it, for a longer read), is left out (walks reread the same
/// descriptors): a replay has written that value there already and nothing has changed it since, because any daemon
/// write to client memory or change of what backs an address forgets what was remembered (`MemoryMap.clientChanges`),
/// and the daemon's writes to its own RAM are replayed in the same order. Others are journaled as (index, address, bytes), in a READS record committed before
/// any answer that depended on them reaches an output file (`Connection` calls `commit`). A replay (`beginReplay`)
/// writes each journaled read's bytes where it is about to be read, into the private replay mapping of client memory
/// or the RAM file (which a later replayed write brings back to its final value). Reads the journal does not cover
/// (the request a crash interrupted, whose answer no output file holds) read client memory as it is now (the private
/// copy is refreshed from the file first: it may hold what an earlier replayed read wrote there) and are journaled
/// by the replaying process, so the next replay reads the same again.
///
/// Cost: a journaled 8-byte read takes 32 bytes of journal (`observationHeader` + 8), plus a 16-byte record header
/// per batch; the checkpoint threshold counts them as journal bytes.
public final class MemoryReadLog {
    /// (index u64, address u64, length u32, reserved u32) before each read's bytes, padded to 8.
    static let observationHeader = 24

    /// Reads since the journal began; the next read's index.
    private(set) var reads: UInt64 = 0
    /// Observations not yet journaled, encoded.
    private(set) var pending: [UInt8] = []
    /// The last value journaled per 8-byte address since the journal began (or client memory last changed).
    private var remembered = RememberedValues()
    private var seenClientChanges: UInt64 = 0

    /// The journal's observations during a replay, by index, and the next one to apply.
    private var replay: [Observation] = []
    private var cursor = 0
    /// The highest index the journal covers: reads up to it that were not left out must be in it.
    private var covered: UInt64?
    /// A replay is running (`beginReplay` to `endReplay`).
    private var replaying = false
    /// Reads a replay found neither journaled nor left out (a replay that diverged): logged by the caller.
    private(set) var uncovered = 0
    /// Journaled reads a replay could not apply (another address or length than the read): logged by the caller.
    private(set) var mismatched = 0

    public init() {}

    struct Observation {
        let index: UInt64
        let address: UInt64
        let bytes: UnsafeRawBufferPointer
    }

    /// A new journal begins (a checkpoint holds everything before it).
    func reset() {
        reads = 0
        pending.removeAll(keepingCapacity: true)
        remembered.forget()
        replay = []
        cursor = 0
        covered = nil
        replaying = false
    }

    /// The memory map's `readJournal` hook.
    func observe(_ address: UInt64, _ bytes: UnsafeMutableRawBufferPointer, clientChanges: UInt64) {
        let index = reads
        reads &+= 1
        var journaled = false
        if cursor < replay.count, replay[cursor].index == index {
            let o = replay[cursor]
            cursor += 1
            if o.address == address, o.bytes.count == bytes.count {
                bytes.copyMemory(from: o.bytes)
                journaled = true
            } else {
                mismatched += 1
            }
        }
        if replaying, !journaled, covered.map({ index > $0 }) ?? true {
            // Past what the journal covers (the request a crash interrupted, never answered): it runs now, so it reads
            // the client's memory as it is now, not what an earlier replayed read left in the private copy.
            ReplayMappings.refresh(bytes)
        }
        if clientChanges != seenClientChanges {
            seenClientChanges = clientChanges
            remembered.forget()
        }
        // Remembered first, journaled or not: a replay remembers what the original did, so it leaves out the same reads.
        let same = allRemembered(address, UnsafeRawBufferPointer(bytes))
        if same || journaled { return }
        if let covered, index <= covered { uncovered += 1 }
        Self.encode(index: index, address: address, bytes: UnsafeRawBufferPointer(bytes), into: &pending)
    }

    /// True when every 8-byte word of the read is what was last journaled at its address (each is remembered now
    /// either way): a run of descriptors (`PhysicalMemory.read64Run`, DMA_PREFETCH's bulk decode) is left out as
    /// a single descriptor is. Otherwise the whole read is journaled: one read, one observation.
    private func allRemembered(_ address: UInt64, _ bytes: UnsafeRawBufferPointer) -> Bool {
        guard bytes.count > 0, bytes.count % 8 == 0, address & 7 == 0 else { return false }
        var all = true
        for i in stride(from: 0, to: bytes.count, by: 8) {
            all = remembered.seen(address &+ UInt64(i), bytes.loadUnaligned(fromByteOffset: i, as: UInt64.self)) && all
        }
        return all
    }

    /// The observations to journal now (a READS record's payload), or nil when there are none.
    public func takePending() -> [UInt8]? {
        guard !pending.isEmpty else { return nil }
        defer { pending.removeAll(keepingCapacity: true) }
        return pending
    }

    /// A replay of a journal begins: `payloads` are its READS records' payloads, oldest first. They must stay valid
    /// until `endReplay` (the journal's mapping). Throws nothing: a damaged payload ends the list there.
    func beginReplay(_ payloads: [UnsafeRawBufferPointer]) {
        reset()
        for p in payloads { Self.decode(p, into: &replay) }
        replay.sort { $0.index < $1.index }
        covered = replay.last?.index
        replaying = true
    }

    /// The replay is over: what the journal held is no longer applied (it stays in the journal).
    func endReplay() {
        replaying = false
        replay = []
        cursor = 0
        covered = nil
    }

    static func encode(index: UInt64, address: UInt64, bytes: UnsafeRawBufferPointer, into out: inout [UInt8]) {
        withUnsafeBytes(of: index.littleEndian) { out.append(contentsOf: $0) }
        withUnsafeBytes(of: address.littleEndian) { out.append(contentsOf: $0) }
        withUnsafeBytes(of: UInt32(bytes.count).littleEndian) { out.append(contentsOf: $0) }
        out.append(contentsOf: [0, 0, 0, 0])
        out.append(contentsOf: bytes)
        let pad = RestartJournal.padded(bytes.count) - bytes.count
        if pad > 0 { out.append(contentsOf: repeatElement(0, count: pad)) }
    }

    static func decode(_ p: UnsafeRawBufferPointer, into out: inout [Observation]) {
        var at = 0
        while at + observationHeader <= p.count {
            let length = Int(p.le(at + 16, as: UInt32.self))
            guard length <= p.count - at - observationHeader else { return }
            out.append(Observation(index: p.le(at), address: p.le(at + 8),
                                   bytes: UnsafeRawBufferPointer(rebasing: p[(at + observationHeader)..<(at + observationHeader + length)])))
            at += observationHeader + RestartJournal.padded(length)
        }
    }
}

extension MemoryReadLog {
    /// Journals `memory`'s reads from now on (restart mode); `detach` stops it.
    public func attach(to memory: MemoryMap) {
        memory.readJournal = { [unowned self, unowned memory] address, bytes in
            observe(address, bytes, clientChanges: memory.clientChanges)
        }
    }

    public static func detach(from memory: MemoryMap) { memory.readJournal = nil }
}
