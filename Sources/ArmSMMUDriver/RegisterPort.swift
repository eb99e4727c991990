/// How the driver's MMIO reaches one SMMU instance: 32- and 64-bit accesses at offsets from the instance's base
/// (Linux's `readl_relaxed(smmu->base + offset)` and friends, with `readq`/`writeq` single 8-byte accesses as on
/// arm64).
///
/// A port may post writes (a CPU's MMIO stores are posted): a read then answers only after every earlier access
/// of the port, as a device does, so the values the driver reads are the same either way. A port whose accesses
/// cannot fail uses `Never`; one that can (a socket, a trap handler that refuses) throws its own `Failure`, and
/// the driver stops at the first one.
public protocol RegisterPort {
    associatedtype Failure: Error = Never
    func read32(_ offset: UInt64) throws(Failure) -> UInt32
    func write32(_ offset: UInt64, _ value: UInt32) throws(Failure)
    func read64(_ offset: UInt64) throws(Failure) -> UInt64
    func write64(_ offset: UInt64, _ value: UInt64) throws(Failure)
}

/// One access as a port saw it: for comparing what two ports were asked, or replaying a sequence.
public struct PortAccess: Hashable, Sendable, CustomStringConvertible {
    public enum Kind: Hashable, Sendable { case read, write }
    public var kind: Kind
    public var offset: UInt64
    /// The value written, or the value the read returned.
    public var value: UInt64
    /// 4 or 8.
    public var width: Int

    public init(kind: Kind, offset: UInt64, value: UInt64, width: Int) {
        self.kind = kind
        self.offset = offset
        self.value = value
        self.width = width
    }

    public var description: String {
        "\(kind == .read ? "R" : "W")\(width * 8) 0x\(String(offset, radix: 16))"
            + (kind == .read ? " -> " : " = ") + "0x\(String(value, radix: 16))"
    }
}

/// The accesses a ``RecordingPort`` saw, in order.
public final class PortAccessLog {
    public var accesses: [PortAccess] = []
    public init() {}
}

/// A port that passes every access to `base` and appends it to `log`.
public struct RecordingPort<Base: RegisterPort>: RegisterPort {
    public typealias Failure = Base.Failure
    public let base: Base
    /// Shared by every copy of the port.
    public let log: PortAccessLog

    public init(_ base: Base, log: PortAccessLog = PortAccessLog()) {
        self.base = base
        self.log = log
    }

    public func read32(_ offset: UInt64) throws(Failure) -> UInt32 {
        let v = try base.read32(offset)
        log.accesses.append(PortAccess(kind: .read, offset: offset, value: UInt64(v), width: 4))
        return v
    }

    public func write32(_ offset: UInt64, _ value: UInt32) throws(Failure) {
        log.accesses.append(PortAccess(kind: .write, offset: offset, value: UInt64(value), width: 4))
        try base.write32(offset, value)
    }

    public func read64(_ offset: UInt64) throws(Failure) -> UInt64 {
        let v = try base.read64(offset)
        log.accesses.append(PortAccess(kind: .read, offset: offset, value: v, width: 8))
        return v
    }

    public func write64(_ offset: UInt64, _ value: UInt64) throws(Failure) {
        log.accesses.append(PortAccess(kind: .write, offset: offset, value: value, width: 8))
        try base.write64(offset, value)
    }
}
