#if canImport(Glibc)
import Glibc
#endif
import PKVM
import SMMUModel
import CSocketShims
import Synchronization
import WireProtocol

/// Protocol v1.1's translation caching (docs/protocol-v1.md, "v1.1" and "v1.2"): the pages where device
/// connections read the translation epoch and the invalidation log, and the opcodes.
///
/// The hypervisor's `TranslationEpoch` advances, inside the request that makes the change, before any change
/// that could alter a translation (a relevant physical register write or reset, an ownership change). Each
/// advance is stored here into every shared page at once, on the serial queue, so it is in the clients'
/// memory before the response to that request is sent: a client that caches DMA_CACHED answers and uses one
/// only while the page still shows its epoch never uses a translation after the host has seen the change
/// that ended it. Since v1.2 each advance is first recorded in the page's log (what it ended: one address
/// range, or anything), so such a client may keep what the change did not name.
final class EpochPages {
    /// At most this many pages (each is one 4 KiB mapping the daemon holds, G8).
    static let limit = 64
    static let pageSize = InvalidationLog.pageSize
    private var pages: [ConnectionID: UnsafeMutableRawPointer] = [:]
    /// Which file each page is (a restart checkpoint names it, to share it again from the fd store).
    private(set) var files: [ConnectionID: SharedFileRange] = [:]
    private let epoch: TranslationEpoch

    init(epoch: TranslationEpoch) {
        self.epoch = epoch
        // Weak: the hypervisor (and its epoch) may outlive this dispatcher (a fuzzer reuses one hypervisor under a
        // new dispatcher per input); an advance after that must find nobody to tell, not a freed object.
        epoch.publish = { [weak self] value, change in self?.store(value, change) }
    }

    deinit { for page in pages.values { SharedMemoryFile.unmap(page, size: Self.pageSize) } }

    /// The last record published and its epoch: the next advance's record may stand for both (v1.3 `covers`).
    private var last: (epoch: UInt64, record: InvalidationRecord)?

    private func store(_ value: UInt64, _ change: TranslationChange) {
        guard !pages.isEmpty else { last = nil; return }
        var record = InvalidationRecord(change)
        if let last, last.epoch &+ 1 == value, let merged = last.record.merging(record) { record = merged }
        last = (value, record)
        for page in pages.values { InvalidationLog.publish(record, epoch: value, to: SharedPageWords(base: page)) }
        atomicMemoryFence(ordering: .sequentiallyConsistent)
    }

    var count: Int { pages.count }

    /// Maps the first 4 KiB of `fd` (checked as MEM_MAP checks its files: a memfd sealed against shrinking,
    /// long enough, not hugetlbfs) and writes the current epoch there, with an empty log.
    func attach(fd: Int32, connection: ConnectionID) -> Status {
        guard pages[connection] == nil, pages.count < Self.limit else { return .invalid }
        guard case .success(let file) = SharedMemoryFile.map(fd: fd, offset: 0, size: UInt64(Self.pageSize)) else {
            return .invalid
        }
        InvalidationLog.initialize(SharedPageWords(base: file.pointer), epoch: epoch.value)
        pages[connection] = file.pointer
        files[connection] = file.file
        return .ok
    }

    func isAttached(_ connection: ConnectionID) -> Bool { pages[connection] != nil }

    func detach(connection: ConnectionID) {
        if let p = pages.removeValue(forKey: connection) { SharedMemoryFile.unmap(p, size: Self.pageSize) }
        files[connection] = nil
    }
}

/// The daemon's stores into a shared epoch page: little-endian `u64` words, as C11 atomics (the client reads
/// them concurrently from another process).
struct SharedPageWords: InvalidationLog.WritableMemory, @unchecked Sendable {
    let base: UnsafeMutableRawPointer

    func storeRelaxed(_ offset: Int, _ value: UInt64) {
        csock_store_relaxed64((base + offset).assumingMemoryBound(to: UInt64.self), value.littleEndian)
    }

    func storeRelease(_ offset: Int, _ value: UInt64) {
        csock_store_release64((base + offset).assumingMemoryBound(to: UInt64.self), value.littleEndian)
    }

    func fenceRelease() { csock_fence_release() }
}

extension InvalidationRecord {
    /// The log's words for what an advance of the epoch may have changed.
    init(_ change: TranslationChange) {
        switch change {
        case .anything:
            self = .everything
        case .address(let window, let bank, let asid, let address):
            // A window or bank the record cannot name ends everything (never a record naming another one).
            guard let w = UInt16(exactly: window), let b = UInt16(exactly: bank) else { self = .everything; return }
            self.init(kind: asid == nil ? .addressAnyASID : .address, address: address, pages: 1, window: w,
                      contextBank: b, asid: asid ?? 0)
        }
    }
}

extension Dispatcher {
    /// DMA_EPOCH: share the epoch page of this device connection.
    func attachEpochPage(fd: Int32, connection: ConnectionID) -> (Status, ResponsePayload) {
        let pages = epochPages ?? EpochPages(epoch: hypervisor.translationEpoch)
        epochPages = pages
        let status = pages.attach(fd: fd, connection: connection)
        return (status, status == .ok ? .epoch(hypervisor.translationEpoch.value) : .none)
    }

    /// DMA_PREFETCH: the access as DMA_CACHED, then speculative translations (none recorded, none counted): the
    /// ranges that follow it, or (v1.2, bit 31 of `pages`) that precede it, up to `pages` records, stopping before
    /// the first that would fault; or (v1.2, bit 30) the mapped ranges met probing up to `pages` pages after the
    /// access's range and then up to `pages` pages before it, holes skipped.
    /// Payload: `u64 epoch`, `u32 n`, `u32 reserved`, n records of `u64 physical_address` (of the range's
    /// first byte), `u8 size_shift`, `u8 access`, `u8 reach_shift` (v1.2), `u8 reserved`, `i32 page_offset` (v1.2:
    /// the range's first page minus the access's page).
    func prefetchDMA(_ p: DMAPrefetchRequest) -> (Status, ResponsePayload) {
        guard p.count >= 1, p.count <= DMAPrefetchRequest.maxPages, !(p.backward && p.window) else { return (.invalid, .none) }
        let d = p.access
        let (first, firstPayload) = cachedDMA(d)
        guard first == .ok, case .cachedDMA(let r) = firstPayload else { return (first, .none) }
        var out: [UInt8] = []
        out.reserveCapacity(16 + 16 * Int(p.window ? 2 * p.count + 1 : p.count))
        out.appendLE(r.epoch)
        out.appendLE(UInt32(0))   // n, patched below
        out.appendLE(UInt32(0))
        let accessPage = d.iova >> 12
        func record(_ pa: UInt64, _ shift: UInt8, _ access: UInt8, _ reach: UInt8, base: UInt64) {
            out.appendLE(pa)
            out.append(shift)
            out.append(access)
            out.append(reach)
            out.append(0)
            out.appendLE(Int32(truncatingIfNeeded: Int64(bitPattern: (base >> 12) &- accessPage)))
        }
        let firstBase = d.iova & ~((1 << UInt64(r.sizeShift)) - 1)
        record(r.physicalAddress, r.sizeShift, r.access, r.reachShift, base: firstBase)
        var n: UInt32 = 1
        let flags = DMAAccess(d.flags)
        /// Walks from `start` (the boundary the next range starts at, or ends at going down) for at most `limit`
        /// records (contiguous) or probes (window: holes skipped, each 4 KiB); 0 ends it either way.
        func walk(from start: UInt64, down: Bool, limit: UInt32, skipHoles: Bool) {
            var edge = start
            var steps: UInt32 = 0
            var stop = false
            /// One probe's answer: a record, or a hole (which ends the walk unless holes are skipped).
            func take(_ probe: UInt64, _ t: (physicalAddress: UInt64, extent: TranslationExtent)?) -> Bool {
                steps += 1
                guard let t else {
                    if !skipHoles { stop = true; return false }
                    edge = down ? probe : probe &+ 4096
                    return true
                }
                let mask: UInt64 = (1 << UInt64(t.extent.sizeShift)) - 1
                let base = probe & ~mask
                var access: UInt8 = 0
                if t.extent.read { access |= CachedDMAResult.readable }
                if t.extent.write { access |= CachedDMAResult.writable }
                record(t.physicalAddress - (probe - base), t.extent.sizeShift, access, t.extent.reachShift, base: base)
                n += 1
                edge = down ? base : base &+ mask &+ 1
                return true
            }
            while steps < limit, edge != 0, !stop {
                let probe = down ? edge - 4096 : edge
                // Pages of one last-level table, answered together; 0 when the first needs a probe of its own.
                if hypervisor.probeDMARun(window: Int(d.window), stream: d.streamID, iova: probe, access: flags, down: down,
                                          limit: Int(limit - steps), take) > 0 {
                    continue
                }
                _ = take(probe, hypervisor.probeDMA(window: Int(d.window), stream: d.streamID, iova: probe, access: flags))
            }
        }
        let firstEnd = firstBase &+ (1 << UInt64(r.sizeShift))
        hypervisor.speculating(window: Int(d.window), stream: d.streamID) {
            if p.window {
                walk(from: firstEnd, down: false, limit: p.count, skipHoles: true)
                walk(from: firstBase, down: true, limit: p.count, skipHoles: true)
            } else {
                walk(from: p.backward ? firstBase : firstEnd, down: p.backward, limit: p.count - 1, skipHoles: false)
            }
        }
        withUnsafeBytes(of: n.littleEndian) { for i in 0..<4 { out[8 + i] = $0[i] } }
        return (.ok, .bytes(out))
    }

    /// DMA_CACHED: DMA, plus what the device may cache of the answer and the epoch it is valid in.
    func cachedDMA(_ d: DMARequest) -> (Status, ResponsePayload) {
        let (result, extent) = hypervisor.dma(window: Int(d.window), stream: d.streamID, iova: d.iova,
                                              access: DMAAccess(d.flags), describe: true)
        switch result {
        case .ok(let pa):
            var access: UInt8 = 0
            if extent?.read == true { access |= CachedDMAResult.readable }
            if extent?.write == true { access |= CachedDMAResult.writable }
            return (.ok, .cachedDMA(CachedDMAResult(physicalAddress: pa, fault: 0, sizeShift: extent?.sizeShift ?? 12,
                                                    access: access, reachShift: extent?.reachShift ?? 12,
                                                    epoch: hypervisor.translationEpoch.value)))
        case .fault(let f):
            if !events.isEmpty { events.publishChanges(window: Int(d.window), to: server) }
            return (.fault, .cachedDMA(CachedDMAResult(physicalAddress: 0, fault: FaultCode(f).rawValue)))
        case let other:
            return (Status(other), .none)
        }
    }
}
