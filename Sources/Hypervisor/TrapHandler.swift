import SMMUModel

/// The result of one trapped host access or host request.
public enum HostAccessResult<Value>: CustomStringConvertible {
    case ok(Value)
    /// pKVM is not finalized: nothing was touched (G1).
    case deferred
    /// Refused by a trap rule; the event has gone to the audit sink (G7).
    case denied(AuditEvent)
    /// In no window (MMIO) or in no RAM (memory).
    case badAddress
    /// Width not 4 or 8, misaligned, or a 64-bit access to a 32-bit register.
    case badAccess

    public var value: Value? {
        if case .ok(let v) = self { return v }
        return nil
    }
    public var description: String {
        switch self {
        case .ok(let v): "ok(\(v))"
        case .deferred: "deferred"
        case .denied(let e): "denied(\(e.rule.rawValue))"
        case .badAddress: "badAddress"
        case .badAccess: "badAccess"
        }
    }
}

/// Decodes, checks and emulates one host MMIO access to one instance (layer 3).
///
/// Order: decode against the physical register table (so hidden indices are recognised), refuse what
/// a rule forbids before anything changes, then apply the access to the virtual register file (which
/// gives read-back, W1C and masks exactly as the hardware table says) and reconcile the physical SMMU.
struct TrapHandler {
    let ownership: Ownership

    /// A refusal before any state changed: the rule and the streams concerned.
    struct Refusal {
        var rule: TrapRule
        var streams: [StreamID] = []
    }

    func read(_ instance: HostedInstance, offset: UInt64, width: AccessWidth)
        -> Result<UInt64, TrapFailure>
    {
        switch instance.physical.decode(offset: offset, width: width) {
        case .failure: return .failure(.badAccess)
        case .success(.reserved): return .success(0)
        case .success(.register(let location, _)):
            if let refusal = hidden(location, in: instance) {
                return .failure(.refused(refusal, location))
            }
            // The virtual model differs from the physical one only in how many SMR groups and context banks it
            // implements, and `hidden` refused every index beyond those: the location decoded once serves both.
            return .success(instance.virtual.read(location, width: width))
        }
    }

    func write(_ instance: HostedInstance, offset: UInt64, value: UInt64, width: AccessWidth)
        -> Result<Void, TrapFailure>
    {
        switch instance.physical.decode(offset: offset, width: width) {
        case .failure: return .failure(.badAccess)
        case .success(.reserved): return .success(())
        case .success(.register(let location, _)):
            if let refusal = hidden(location, in: instance) ?? check(location, value: value, in: instance) {
                return .failure(.refused(refusal, location))
            }
            instance.virtual.write(location, value: value, width: width)
            instance.reconcile(after: location, value: value, width: width)
            return .success(())
        }
    }

    enum TrapFailure: Error {
        case badAccess
        case refused(Refusal, RegisterLocation)
    }

    // MARK: Rules

    /// G5: the hypervisor's context banks and SMR/S2CR pairs are outside the host's view, for reads too
    /// (no value of a VM's TTBR, FAR, FSR or SMR leaks).
    func hidden(_ location: RegisterLocation, in instance: HostedInstance) -> Refusal? {
        switch RegisterMap.descriptor(location.name).indexing {
        case .none: return nil
        case .contextBank:
            return location.index >= instance.hostContextBanks ? Refusal(rule: .hiddenContextBank) : nil
        case .streamMatchGroup:
            return location.index >= instance.hostSMRs ? Refusal(rule: .hiddenStreamMatchGroup) : nil
        }
    }

    /// G2: what a write would route, as the register's row says (`RegisterDescriptor.host`). Only a row that
    /// names a check has one; every other class is safe by its construction (virtual only, a host bank's own
    /// page behind the downstream filter, or derived and rewritten by the hypervisor). A register whose row
    /// does not say is not a register: the table has no default, so nothing is allowed by omission.
    func check(_ location: RegisterLocation, value: UInt64, in instance: HostedInstance) -> Refusal? {
        switch RegisterMap.descriptor(location.name).host {
        case .checked(let check, then: _):
            return self.check(check, value: UInt32(truncatingIfNeeded: value), in: instance)
        case .virtualOnly, .passThrough, .derived, .rewritten:
            return nil
        }
    }

    /// The rule each check enforces: what a refusal is audited as.
    static func rule(of check: HostCheck) -> TrapRule {
        switch check {
        case .smrMatchesOnlyHostStreams: .smrForeignStream
        case .s2crTranslatesToHostBank: .s2crHiddenContextBank
        case .cbarNestsOverHostBank: .cbarHiddenContextBank
        }
    }

    /// One check of a written value (G2, G5).
    func check(_ check: HostCheck, value raw: UInt32, in instance: HostedInstance) -> Refusal? {
        let rule = Self.rule(of: check)
        switch check {
        case .smrMatchesOnlyHostStreams:
            // The stored value is what matches: the table's writable mask gives the implemented width.
            let smr = SMR(raw: raw & UInt32(truncatingIfNeeded: RegisterMap.descriptor(.SMR).writableMask))
            guard smr.valid else { return nil }   // an invalid SMR matches nothing (Linux writes these)
            let foreign = ownership.foreignStreams(smmu: instance.smmu)
                .filter { smr.matches($0.stream, idMask: instance.idMask) }
                .map(\.stream)
            return foreign.isEmpty ? nil : Refusal(rule: rule, streams: foreign)
        case .s2crTranslatesToHostBank:
            let s2cr = S2CR(raw: raw)
            return s2cr.kind == .translate && s2cr.contextBank >= instance.hostContextBanks ? Refusal(rule: rule) : nil
        case .cbarNestsOverHostBank:
            let cbar = CBAR(raw: raw)
            return cbar.kind == .nested && cbar.stage2ContextBank >= instance.hostContextBanks ? Refusal(rule: rule) : nil
        }
    }
}
