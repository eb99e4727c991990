/// Typed values that cross the model's boundary. Raw integers stay inside.

/// A stream ID as the SMMU sees it on a transaction (SMMUv2: up to 16 bits, MMU-500 implements 15).
public struct StreamID: RawRepresentable, Hashable, Comparable, Sendable, CustomStringConvertible {
    public var rawValue: UInt16
    public init(rawValue: UInt16) { self.rawValue = rawValue }
    public init(_ value: UInt16) { self.rawValue = value }
    public static func < (a: StreamID, b: StreamID) -> Bool { a.rawValue < b.rawValue }
    public var description: String { "0x" + String(rawValue, radix: 16) }
}

/// Width of one MMIO access. MMU-500 registers are 32 or 64 bits wide.
public enum AccessWidth: Int, Sendable, CaseIterable {
    case word = 4
    case doubleword = 8

    public init?(bytes: UInt32) { self.init(rawValue: Int(bytes)) }
    public var bytes: Int { rawValue }
    public var mask: UInt64 { self == .word ? 0xFFFF_FFFF : .max }
}

/// Attributes of one DMA transaction (the AXI AxPROT bits an SMMU checks: write, instruction fetch, privileged).
public struct DMAAccess: OptionSet, Hashable, Sendable {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }
    public static let write = DMAAccess(rawValue: 1 << 0)
    public static let instructionFetch = DMAAccess(rawValue: 1 << 1)
    public static let privileged = DMAAccess(rawValue: 1 << 2)
    public static let read: DMAAccess = []
    public var isWrite: Bool { contains(.write) }
}

/// Why a DMA translation failed.
public enum DMAFault: Sendable, CaseIterable, CustomStringConvertible {
    /// No SMR matched and sCR0.USFCFG = 1 (recorded as sGFSR.USF).
    case unidentifiedStream
    /// The matching S2CR has TYPE = FAULT, or the context bank is of type S1_TRANS_S2_FAULT / disabled.
    case streamFault
    /// No valid descriptor (FSR.TF).
    case translation
    /// Descriptor with AF = 0 and no hardware update (FSR.AFF).
    case accessFlag
    /// AP/S2AP/XN forbid the access (FSR.PF).
    case permission
    /// Input or output address beyond the configured size (FSR.ASF / TF).
    case addressSize
    /// The downstream filter (the owner's stage-2) refused a table walk or the output address.
    case ownership
    /// Two valid SMRs match the stream (sGFSR.SMCF).
    case multipleMatch

    public var description: String {
        switch self {
        case .unidentifiedStream: "unidentified stream"
        case .streamFault: "stream configured to fault"
        case .translation: "translation"
        case .accessFlag: "access flag"
        case .permission: "permission"
        case .addressSize: "address size"
        case .ownership: "ownership"
        case .multipleMatch: "multiple SMRs match"
        }
    }
}

/// The outcome of one DMA translation by one MMU-500 instance.
public struct Translation: Sendable, Equatable {
    public enum Outcome: Sendable, Equatable {
        case translated(physicalAddress: UInt64)
        case fault(DMAFault)
    }
    public var outcome: Outcome
    /// The context bank that handled the transaction, if any (nil for bypass and global faults).
    public var contextBank: Int?
    /// True if the translation came from the TLB without a table walk.
    public var tlbHit: Bool
    /// For a translated transaction, what `MMU500.extent(of:stream:)` needs: log2 of the mapping's size
    /// (0: not described) and of the range a TLBIVA ends it by, the access as the SMMU saw it (after S2CR's overrides), and whether the permissions
    /// also allow the other direction.
    var mappingShift: UInt8 = 0
    /// log2 of the range a TLBI by address must name an address of to end this translation (the TLB entry's
    /// stage-1 leaf; `TranslationExtent.reachShift`).
    var reachShift: UInt8 = 0
    var effectiveAccess: DMAAccess = []
    var otherDirectionPermitted = false

    public init(outcome: Outcome, contextBank: Int? = nil, tlbHit: Bool = false) {
        self.outcome = outcome
        self.contextBank = contextBank
        self.tlbHit = tlbHit
    }

    /// What the transaction got: the description kept for `MMU500.extent(of:stream:)` is not part of it.
    public static func == (a: Translation, b: Translation) -> Bool {
        a.outcome == b.outcome && a.contextBank == b.contextBank && a.tlbHit == b.tlbHit
    }

    public var physicalAddress: UInt64? {
        if case .translated(let pa) = outcome { return pa }
        return nil
    }
    public var fault: DMAFault? {
        if case .fault(let f) = outcome { return f }
        return nil
    }
}

/// What kind of memory access the SMMU makes downstream, as the filter sees it.
public enum MemoryAccessKind: Sendable, Equatable {
    /// A read of a translation table descriptor (stage 1 or stage 2).
    case tableWalk
    /// The transaction itself, at its output address.
    case data(write: Bool)
}

/// Simulated physical memory the SMMU walks tables in. Little-endian.
///
/// An interface so that the daemon can back RAM with memory shared by a client (MEM_MAP).
public protocol PhysicalMemory: AnyObject {
    /// Reads 8 bytes at `address` (8-byte aligned), or nil when no memory backs it.
    func read64(at address: UInt64) -> UInt64?
    /// Writes 8 bytes at `address`; false when no memory backs it.
    @discardableResult func write64(_ value: UInt64, at address: UInt64) -> Bool
    /// Reads `count` consecutive 8-byte words from `address` (8-byte aligned, all in one 4 KiB page) into `words`,
    /// as `count` `read64`s would; false (nothing promised in `words`) when any is not backed. A last-level table
    /// decoded in bulk (`MMU500.probeLeafRun`) reads its descriptors with one lookup of the backing memory.
    func read64Run(at address: UInt64, count: Int, into words: UnsafeMutablePointer<UInt64>) -> Bool
}

extension PhysicalMemory {
    public func read64Run(at address: UInt64, count: Int, into words: UnsafeMutablePointer<UInt64>) -> Bool {
        for i in 0..<count {
            guard let w = read64(at: address &+ UInt64(i) * 8) else { return false }
            words[i] = w
        }
        return true
    }
}

/// A check every memory access the SMMU makes must pass, after its own translation: the page-table
/// walks and the output address. The hypervisor installs one that enforces each stream owner's
/// stage-2 (an S2MPU-like filter downstream of the SMMU, as pKVM places one on Pixel).
/// A refused access is an `ownership` fault.
public protocol DownstreamFilter: AnyObject {
    func permits(stream: StreamID, address: UInt64, kind: MemoryAccessKind) -> Bool
}
