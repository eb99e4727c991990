import SMMUModel

/// The host's MMIO to this instance (layer 3): the instance is the device, the hypervisor the bus. The bus
/// resolves an address to (instance, offset) and audits what the device refuses, as in firecracker's
/// `Bus::write` handing `BusDevice::write` an offset.
///
/// Order: decode against the physical register table (so hidden indices are recognised), refuse what
/// a rule forbids before anything changes, then apply the access to the virtual register file (which
/// gives read-back, W1C and masks exactly as the hardware table says) and reconcile the physical SMMU.
extension HostedInstance {
    /// A refusal before any state changed: the rule, the streams concerned and the register refused.
    struct Refusal {
        var rule: TrapRule
        var streams: [StreamID] = []
    }

    enum TrapFailure: Error {
        case badAccess
        case refused(Refusal, RegisterLocation)
    }

    func hostRead(offset: UInt64, width: AccessWidth) -> Result<UInt64, TrapFailure> {
        switch physical.decode(offset: offset, width: width) {
        case .failure: return .failure(.badAccess)
        case .success(.reserved): return .success(0)
        case .success(.register(let location, _)):
            if let refusal = hidden(location) {
                return .failure(.refused(refusal, location))
            }
            // The virtual model differs from the physical one only in how many SMR groups and context banks it
            // implements, and `hidden` refused every index beyond those: the location decoded once serves both.
            return .success(virtual.read(location, width: width))
        }
    }

    func hostWrite(offset: UInt64, value: UInt64, width: AccessWidth) -> Result<Void, TrapFailure> {
        switch physical.decode(offset: offset, width: width) {
        case .failure: return .failure(.badAccess)
        case .success(.reserved): return .success(())
        case .success(.register(let location, _)):
            if let refusal = hidden(location) ?? check(location, value: value) {
                return .failure(.refused(refusal, location))
            }
            virtual.write(location, value: value, width: width)
            reconcile(after: location, value: value, width: width)
            return .success(())
        }
    }

    // MARK: Rules

    /// G5: the hypervisor's context banks and SMR/S2CR pairs are outside the host's view, for reads too
    /// (no value of a VM's TTBR, FAR, FSR or SMR leaks).
    func hidden(_ location: RegisterLocation) -> Refusal? {
        switch RegisterMap.descriptor(location.name).indexing {
        case .none: return nil
        case .contextBank:
            return location.index >= hostContextBanks ? Refusal(rule: .hiddenContextBank) : nil
        case .streamMatchGroup:
            return location.index >= hostSMRs ? Refusal(rule: .hiddenStreamMatchGroup) : nil
        }
    }

    /// G2: what a write would route, as the register's row says (`RegisterDescriptor.host`). Only a row that
    /// names a check has one; every other class is safe by its construction (virtual only, a host bank's own
    /// page behind the downstream filter, or derived and rewritten by the hypervisor). A register whose row
    /// does not say is not a register: the table has no default, so nothing is allowed by omission.
    func check(_ location: RegisterLocation, value: UInt64) -> Refusal? {
        switch RegisterMap.descriptor(location.name).host {
        case .checked(let check, then: _):
            return self.check(check, value: UInt32(truncatingIfNeeded: value))
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
    func check(_ check: HostCheck, value raw: UInt32) -> Refusal? {
        let rule = Self.rule(of: check)
        switch check {
        case .smrMatchesOnlyHostStreams:
            // The stored value is what matches: the table's writable mask gives the implemented width.
            let smr = SMR(raw: raw & UInt32(truncatingIfNeeded: RegisterMap.descriptor(.SMR).writableMask))
            guard smr.valid else { return nil }   // an invalid SMR matches nothing (Linux writes these)
            let foreign = ownership.foreignStreams(smmu: smmu)
                .filter { smr.matches($0.stream, idMask: idMask) }
                .map(\.stream)
            return foreign.isEmpty ? nil : Refusal(rule: rule, streams: foreign)
        case .s2crTranslatesToHostBank:
            let s2cr = S2CR(raw: raw)
            return s2cr.kind == .translate && s2cr.contextBank >= hostContextBanks ? Refusal(rule: rule) : nil
        case .cbarNestsOverHostBank:
            let cbar = CBAR(raw: raw)
            return cbar.kind == .nested && cbar.stage2ContextBank >= hostContextBanks ? Refusal(rule: rule) : nil
        }
    }
}
