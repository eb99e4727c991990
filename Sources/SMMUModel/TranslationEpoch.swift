/// A counter that advances before any change that could alter a DMA translation takes effect: a register
/// write that reaches a physical SMMU and matters to translation (stream matching and routing, global and
/// context-bank configuration, TLB maintenance), a reset, and (through the hypervisor) every change of
/// ownership of a stream or a page.
///
/// It lets a bus master cache translations outside the SMMU (protocol v1.1, DMA_EPOCH): an entry is usable
/// only while the epoch it was answered in is still current. The counter says nothing about what changed, so
/// it may advance when nothing relevant did (a miss, never a stale hit); it must never fail to advance when
/// something did. `publish` is called with each new value before the change it announces can be observed
/// (the owner then stores it where clients read it).
public final class TranslationEpoch {
    public private(set) var value: UInt64 = 1
    /// Called with every new value, synchronously, from `advance`.
    public var publish: ((UInt64) -> Void)?

    public init() {}

    /// After a restore (docs/state-image.md): continues strictly after `value`, the highest epoch any client can
    /// have seen, so that no translation cached before the restore is ever current again. Publishes the new value.
    public func resume(after value: UInt64) {
        self.value = value &+ 1
        publish?(self.value)
    }

    @inline(__always)
    public func advance() {
        value &+= 1
        publish?(value)
    }
}

/// What the initiator of a translated transaction may cache of it (protocol v1.1): the naturally aligned
/// IOVA range of size 2^`sizeShift` around the address maps linearly onto the same-aligned physical range,
/// for reads and/or writes with the transaction's other attributes (privilege, instruction fetch).
public struct TranslationExtent: Sendable, Equatable {
    /// log2 of the range's size in bytes: 12 (4 KiB) up to 21 (2 MiB; larger mappings are described in
    /// 2 MiB pieces, so checking a piece's ownership is bounded work).
    public var sizeShift: UInt8
    public var read: Bool
    public var write: Bool

    public init(sizeShift: UInt8, read: Bool, write: Bool) {
        self.sizeShift = sizeShift
        self.read = read
        self.write = write
    }

    public static let maxSizeShift: UInt8 = 21
}

extension DownstreamFilter {
    /// True when every 4 KiB page of [base, base + size) passes for `stream` (a range a cached translation
    /// spans). Filters with a faster answer may provide their own.
    public func permitsAll(stream: StreamID, base: UInt64, size: UInt64, kind: MemoryAccessKind) -> Bool {
        var page = base
        while page < base &+ size {
            if !permits(stream: stream, address: page, kind: kind) { return false }
            page += 4096
        }
        return true
    }
}
