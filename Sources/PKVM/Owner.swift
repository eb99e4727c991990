import SMMUModel

/// A protected VM's handle, as VM_CREATE returns it (>= 1).
public struct VMHandle: RawRepresentable, Hashable, Comparable, Sendable, CustomStringConvertible {
    public var rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }
    public static func < (a: VMHandle, b: VMHandle) -> Bool { a.rawValue < b.rawValue }
    public var description: String { "vm\(rawValue)" }
}

/// Who owns a stream ID, a page of memory, a context bank or an SMR.
public enum Owner: Hashable, Sendable, CustomStringConvertible {
    /// The EL1 host kernel (the client).
    case host
    /// A protected VM, after a donation or a stream assignment.
    case vm(VMHandle)
    /// EL2 itself: its own memory, the context banks and SMRs it reserves, streams the config gives it.
    case hypervisor

    public var description: String {
        switch self {
        case .host: "host"
        case .vm(let vm): vm.description
        case .hypervisor: "hypervisor"
        }
    }
}

/// Identifies who made a trapped access, for the audit.
public struct ClientIdentity: Sendable, Equatable {
    public var name: String
    public var pid: Int32
    public var uid: UInt32
    public init(name: String, pid: Int32 = 0, uid: UInt32 = 0) {
        self.name = name
        self.pid = pid
        self.uid = uid
    }
}

/// A physical address range [base, base + size).
public struct PhysicalRange: Sendable, Equatable, Codable {
    public var base: UInt64
    public var size: UInt64
    public init(base: UInt64, size: UInt64) {
        self.base = base
        self.size = size
    }
    public var end: UInt64 { base &+ size }
    public func contains(_ address: UInt64) -> Bool { address >= base && address - base < size }
    public func contains(_ other: PhysicalRange) -> Bool {
        other.size <= size && other.base >= base && other.base - base <= size - other.size
    }
    public func overlaps(_ other: PhysicalRange) -> Bool { base < other.end && other.base < end }
}
