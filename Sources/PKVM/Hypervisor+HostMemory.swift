import SMMUModel

/// Where a client's shared memory comes from, so that one file page is never RAM at two addresses.
/// The daemon fills it in from `fstat` of the descriptor it mapped.
public struct SharedFileRange: Sendable, Equatable {
    public var device: UInt64
    public var inode: UInt64
    /// Byte offset of the mapping in the file.
    public var offset: UInt64
    public var size: UInt64
    public init(device: UInt64, inode: UInt64, offset: UInt64, size: UInt64) {
        self.device = device
        self.inode = inode
        self.offset = offset
        self.size = size
    }

    /// Same file, overlapping bytes.
    func aliases(_ other: SharedFileRange) -> Bool {
        device == other.device && inode == other.inode
            && offset < other.offset &+ other.size && other.offset < offset &+ size
    }
}

/// Memory a host client shares with the daemon (MEM_MAP): the range it backs and the file bytes behind it.
struct SharedMapping {
    var range: PhysicalRange
    var file: SharedFileRange
}

/// The host CPU's memory paths (G3, G4, G8): MEM_READ and MEM_WRITE pass the host's stage-2; MEM_MAP lets a
/// host client back host pages with its own shared file, only where that can never reach another owner's page.
extension Hypervisor {
    /// Client mappings at once, across all connections: each memory access looks its page up among them, and a
    /// QEMU guest needs one per RAM region (a handful).
    public static let maxSharedMappings = 64

    // MARK: MEM_READ / MEM_WRITE

    /// A host CPU read: it passes the host stage-2, so only host pages (G3).
    public func memRead(address: UInt64, length: Int, client: ClientIdentity) -> Outcome<[UInt8]> {
        switch hostMemoryCheck(address: address, length: length, write: false, client: client) {
        case .ok:
            guard let bytes = memory.readBytes(at: address, count: length) else { return .badAddress }
            return .ok(bytes)
        case let other: return other.map { [] }
        }
    }

    /// A host CPU write: same stage-2 rule as `memRead`.
    public func memWrite(address: UInt64, bytes: [UInt8], client: ClientIdentity) -> Outcome<Void> {
        switch hostMemoryCheck(address: address, length: bytes.count, write: true, client: client) {
        case .ok: return memory.writeBytes(bytes, at: address) ? .ok(()) : .badAddress
        case let other: return other
        }
    }

    private func hostMemoryCheck(address: UInt64, length: Int, write: Bool,
                                 client: ClientIdentity) -> Outcome<Void> {
        guard length > 0 else { return length == 0 ? .ok(()) : .badAddress }   // a negative length is no range
        let range = PhysicalRange(base: address, size: UInt64(length))
        guard ownership.isRAM(range) else { return .badAddress }
        guard ownership.owns(.host, range) else {
            return .denied(record(AuditEvent(rule: .hostMemoryAccess, client: client, window: nil,
                                             register: write ? "MEM_WRITE" : "MEM_READ", offset: address,
                                             value: 0, width: length)))
        }
        return .ok(())
    }

    // MARK: MEM_MAP

    /// Backs the host pages of `range` with a client's shared memory (`pointer`, `file.size` bytes, mapped by
    /// the caller; `release` unmaps it when the daemon lets go). Refused unless every page is the host's and
    /// no other client memory backs it, and unless no other mapping shows the same file bytes (an alias would
    /// keep a second address on a page whatever happens to the first). The caller has made sure the file
    /// cannot shrink under the mapping; the pages stay the host's until `unmapHostMemory`.
    public func mapHostMemory(_ range: PhysicalRange, file: SharedFileRange, pointer: UnsafeMutableRawPointer,
                              release: @escaping () -> Void, client: ClientIdentity) -> Outcome<Void> {
        guard range.size > 0, range.size == file.size, range.base % Ownership.pageSize == 0,
              range.size % Ownership.pageSize == 0, file.offset % Ownership.pageSize == 0,
              ownership.isHostRAM(range) else {
            return .invalid("MEM_MAP range must be page-aligned and inside one host RAM range")
        }
        let denial = { (rule: TrapRule) in
            Outcome<Void>.denied(self.record(AuditEvent(
                rule: rule, client: client, window: nil, register: "MEM_MAP", offset: range.base,
                value: range.size, width: 0)))
        }
        guard ownership.owns(.host, range) else { return denial(.mapNotHostOwned) }
        guard !sharedMappings.contains(where: { $0.file.aliases(file) }) else { return denial(.mapAlias) }
        guard !ownership.isShared(range) else { return .invalid("part of the range is already mapped") }
        guard sharedMappings.count < Self.maxSharedMappings else {
            return .invalid("at most \(Self.maxSharedMappings) client mappings at once")
        }
        do {
            try memory.replace(base: range.base, size: range.size, with: pointer, release: release)
        } catch {
            return .invalid("the memory map refused the range: \(error)")
        }
        ownership.setShared(range, true)
        sharedMappings.append(SharedMapping(range: range, file: file))
        return .ok(())
    }

    /// Ends the mapping that starts at `base` (its connection closed): the pages show the daemon's own memory
    /// again, zeroed, and are ordinary host pages once more.
    public func unmapHostMemory(base: UInt64) {
        guard let i = sharedMappings.firstIndex(where: { $0.range.base == base }) else { return }
        let range = sharedMappings.remove(at: i).range
        try? memory.restore(base: base)
        _ = memory.zero(at: range.base, count: Int(range.size))
        ownership.setShared(range, false)
    }

    /// The ranges client memory backs now, by base.
    public var sharedRanges: [PhysicalRange] { sharedMappings.map(\.range).sorted { $0.base < $1.base } }
}
