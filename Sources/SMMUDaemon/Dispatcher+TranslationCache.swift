#if canImport(Glibc)
import Glibc
#endif
import PKVM
import SMMUModel
import Synchronization
import WireProtocol

/// Protocol v1.1's translation caching (docs/protocol-v1.md, "v1.1"): the pages where device connections
/// read the translation epoch, and the two opcodes.
///
/// The hypervisor's `TranslationEpoch` advances, inside the request that makes the change, before any change
/// that could alter a translation (a relevant physical register write or reset, an ownership change). Each
/// advance is stored here into every shared page at once, on the serial queue, so it is in the clients'
/// memory before the response to that request is sent: a client that caches DMA_CACHED answers and uses one
/// only while the page still shows its epoch never uses a translation after the host has seen the change
/// that ended it.
final class EpochPages {
    /// At most this many pages (each is one 4 KiB mapping the daemon holds, G8).
    static let limit = 64
    static let pageSize = 4096
    private var pages: [ConnectionID: UnsafeMutableRawPointer] = [:]
    /// Which file each page is (a restart checkpoint names it, to share it again from the fd store).
    private(set) var files: [ConnectionID: SharedFileRange] = [:]
    private let epoch: TranslationEpoch

    init(epoch: TranslationEpoch) {
        self.epoch = epoch
        // Weak: the hypervisor (and its epoch) may outlive this dispatcher (a fuzzer reuses one hypervisor under a
        // new dispatcher per input); an advance after that must find nobody to tell, not a freed object.
        epoch.publish = { [weak self] value in self?.store(value) }
    }

    deinit { for page in pages.values { SharedMemoryFile.unmap(page, size: Self.pageSize) } }

    private func store(_ value: UInt64) {
        guard !pages.isEmpty else { return }
        for page in pages.values { page.storeBytes(of: value.littleEndian, as: UInt64.self) }
        atomicMemoryFence(ordering: .sequentiallyConsistent)
    }

    var count: Int { pages.count }

    /// Maps the first 4 KiB of `fd` (checked as MEM_MAP checks its files: a memfd sealed against shrinking,
    /// long enough, not hugetlbfs) and writes the current epoch there.
    func attach(fd: Int32, connection: ConnectionID) -> Status {
        guard pages[connection] == nil, pages.count < Self.limit else { return .invalid }
        guard case .success(let file) = SharedMemoryFile.map(fd: fd, offset: 0, size: UInt64(Self.pageSize)) else {
            return .invalid
        }
        file.pointer.storeBytes(of: epoch.value.littleEndian, as: UInt64.self)
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

extension Dispatcher {
    /// DMA_EPOCH: share the epoch page of this device connection.
    func attachEpochPage(fd: Int32, connection: ConnectionID) -> (Status, ResponsePayload) {
        let pages = epochPages ?? EpochPages(epoch: hypervisor.translationEpoch)
        epochPages = pages
        let status = pages.attach(fd: fd, connection: connection)
        return (status, status == .ok ? .epoch(hypervisor.translationEpoch.value) : .none)
    }

    /// DMA_PREFETCH: the access as DMA_CACHED, then speculative translations of the ranges that follow it,
    /// up to `pages` records, stopping before the first that would fault (which is recorded nowhere).
    /// Payload: `u64 epoch`, `u32 n`, `u32 reserved`, n records of `u64 physical_address` (of the range's
    /// first byte at or after the access), `u8 size_shift`, `u8 access`, `u16 reserved`, `u32 reserved`.
    func prefetchDMA(_ p: DMAPrefetchRequest) -> (Status, ResponsePayload) {
        guard p.pages >= 1, p.pages <= DMAPrefetchRequest.maxPages else { return (.invalid, .none) }
        let d = p.access
        let (first, firstPayload) = cachedDMA(d)
        guard first == .ok, case .cachedDMA(let r) = firstPayload else { return (first, .none) }
        var out: [UInt8] = []
        out.reserveCapacity(16 + 16 * Int(p.pages))
        out.appendLE(r.epoch)
        out.appendLE(UInt32(0))   // n, patched below
        out.appendLE(UInt32(0))
        func record(_ pa: UInt64, _ shift: UInt8, _ access: UInt8) {
            out.appendLE(pa)
            out.append(shift)
            out.append(access)
            out.appendLE(UInt16(0))
            out.appendLE(UInt32(0))
        }
        record(r.physicalAddress, r.sizeShift, r.access)
        var n: UInt32 = 1
        let flags = DMAAccess(d.flags)
        var next = (d.iova & ~((1 << UInt64(r.sizeShift)) - 1)) &+ (1 << UInt64(r.sizeShift))
        while n < p.pages, next != 0,
              let t = hypervisor.probeDMA(window: Int(d.window), stream: d.streamID, iova: next, access: flags) {
            var access: UInt8 = 0
            if t.extent.read { access |= CachedDMAResult.readable }
            if t.extent.write { access |= CachedDMAResult.writable }
            record(t.physicalAddress, t.extent.sizeShift, access)
            n += 1
            next = (next & ~((1 << UInt64(t.extent.sizeShift)) - 1)) &+ (1 << UInt64(t.extent.sizeShift))
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
                                                    access: access, epoch: hypervisor.translationEpoch.value)))
        case .fault(let f):
            if !events.isEmpty { events.publishChanges(window: Int(d.window), to: server) }
            return (.fault, .cachedDMA(CachedDMAResult(physicalAddress: 0, fault: FaultCode(f).rawValue)))
        case let other:
            return (Status(other), .none)
        }
    }
}
