import PKVM
import SMMUModel
import WireProtocol

// The hypervisor and the model say what happened in their own words; these are the only places that turn those
// words into protocol v1's numbers (docs/protocol-v1.md), each an exhaustive switch, so neither layer promises
// the protocol's numbering and a new case is a compile error here.

extension Status {
    /// The status of every hypervisor outcome: the one mapping for MMIO, memory, hypercalls and DMA.
    init<T>(_ outcome: Outcome<T>) {
        switch outcome {
        case .ok: self = .ok
        case .deferred: self = .deferred
        case .denied: self = .denied
        case .badAddress: self = .badAddress
        case .badAccess: self = .badAccess
        case .invalid: self = .invalid
        case .fault: self = .fault
        }
    }
}

extension HelloState {
    /// HELLO's state field.
    init(_ state: LifecycleState) {
        switch state {
        case .notFinalized: self = .notFinalized
        case .finalized: self = .finalized
        case .stopping: self = .stopping
        }
    }
}

extension FaultCode {
    /// The DMA response's fault field.
    init(_ fault: DMAFault) {
        switch fault {
        case .unidentifiedStream: self = .unidentifiedStream
        case .streamFault: self = .streamFault
        case .translation: self = .translation
        case .accessFlag: self = .accessFlag
        case .permission: self = .permission
        case .addressSize: self = .addressSize
        case .ownership: self = .ownership
        case .multipleMatch: self = .multipleMatch
        }
    }
}

extension DMAAccess {
    /// A DMA request's flags as the transaction's attributes.
    init(_ flags: DMAFlags) {
        self = []
        if flags.contains(.write) { insert(.write) }
        if flags.contains(.instructionFetch) { insert(.instructionFetch) }
        if flags.contains(.privileged) { insert(.privileged) }
    }
}
