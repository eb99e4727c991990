import SMMUModel

/// What became of one request to the hypervisor: a host MMIO access, a host memory access, a hypercall or a
/// device's DMA. One type for all of them, so the daemon maps it to the protocol's statuses in one place.
///
/// A refusal is a normal answer at EL2, not an error: nothing changed, and a denial has been audited (G7).
public enum Outcome<Value> {
    case ok(Value)
    /// pKVM is not finalized: nothing was touched (G1).
    case deferred
    /// Refused by a rule; the event has gone to the audit sink (G7).
    case denied(AuditEvent)
    /// In no window (MMIO) or in no RAM (memory).
    case badAddress
    /// Width not 4 or 8, misaligned, or a 64-bit access to a 32-bit register.
    case badAccess
    /// Arguments wrong: unknown VM or window, unaligned range, a stream ID too wide, resources exhausted.
    case invalid(String)
    /// The DMA was translated and faulted; the fault is recorded where the hardware records it.
    case fault(DMAFault)

    public var value: Value? {
        if case .ok(let v) = self { return v }
        return nil
    }

    /// The same outcome with another value type (a refusal carries no value to transform).
    public func map<T>(_ transform: (Value) -> T) -> Outcome<T> {
        switch self {
        case .ok(let v): .ok(transform(v))
        case .deferred: .deferred
        case .denied(let e): .denied(e)
        case .badAddress: .badAddress
        case .badAccess: .badAccess
        case .invalid(let why): .invalid(why)
        case .fault(let f): .fault(f)
        }
    }
}

extension Outcome: CustomStringConvertible {
    public var description: String {
        switch self {
        case .ok(let v): "ok(\(v))"
        case .deferred: "deferred"
        case .denied(let e): "denied(\(e.rule.rawValue))"
        case .badAddress: "badAddress"
        case .badAccess: "badAccess"
        case .invalid(let why): "invalid(\(why))"
        case .fault(let f): "fault(\(f))"
        }
    }
}

extension Outcome: Sendable where Value: Sendable {}
extension Outcome: Equatable where Value: Equatable {}
