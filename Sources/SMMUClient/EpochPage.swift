#if canImport(Glibc)
import Glibc
#endif
import CSocketShims
import WireProtocol

/// A device connection's shared epoch page (protocol v1.1 DMA_EPOCH; v1.2 adds the invalidation log): a sealed
/// memfd the daemon keeps current, mapped read-only here and read with C11 atomics (the daemon writes it from
/// another process while this one reads).
public final class EpochPage: InvalidationLog.ReadableMemory {
    let base: UnsafeRawPointer
    /// The epoch DMA_EPOCH answered.
    public let sharedAt: UInt64

    /// Shares a new page on `client`'s connection (one per connection).
    public convenience init(client: SMMUClient) throws(SMMUClientError) {
        let fd = try SMMUClient.makeSharedMemory(size: InvalidationLog.pageSize, name: "smmu-hypd-epoch")
        defer { close(fd) }
        try self.init(mapping: fd) { () throws(SMMUClientError) in try client.dmaEpoch(fd: fd) }
    }

    /// Maps `fd` read-only, then `share` gives it to the daemon (DMA_EPOCH, or a dispatcher in a test) and
    /// returns the epoch it answered.
    public init(mapping fd: Int32, share: () throws(SMMUClientError) -> UInt64) throws(SMMUClientError) {
        guard let p = mmap(nil, InvalidationLog.pageSize, PROT_READ, MAP_SHARED, fd, 0), p != MAP_FAILED else {
            throw .protocolViolation("cannot map the epoch page")
        }
        base = UnsafeRawPointer(p)
        do { sharedAt = try share() } catch {
            munmap(p, InvalidationLog.pageSize)
            throw error
        }
    }

    deinit { munmap(UnsafeMutableRawPointer(mutating: base), InvalidationLog.pageSize) }

    /// The epoch now (acquire).
    public var epoch: UInt64 { loadAcquire(0) }

    /// Whether the daemon keeps the invalidation log here (v1.2).
    public var keepsLog: Bool { InvalidationLog.isKept(in: self) }

    public func loadAcquire(_ offset: Int) -> UInt64 {
        UInt64(littleEndian: csock_load_acquire64((base + offset).assumingMemoryBound(to: UInt64.self)))
    }

    public func loadRelaxed(_ offset: Int) -> UInt64 {
        UInt64(littleEndian: csock_load_relaxed64((base + offset).assumingMemoryBound(to: UInt64.self)))
    }

    public func fenceAcquire() { csock_fence_acquire() }
}
