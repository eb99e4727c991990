import SMMUModel

/// A broken isolation invariant, with what was seen.
public struct InvariantViolation: Sendable, Equatable, CustomStringConvertible {
    public var window: String
    public var what: String
    public var description: String { "\(window): \(what)" }
}

/// Checks, on any state, what G2..G5 promise; tests and fuzzers call it after every step.
///
/// 1. Every stream that is not the host's is routed, physically, only to its owner: exactly one SMR
///    matches it, a reserved one the hypervisor programmed for it, leading to the owner's bank or FAULT.
/// 2. Hidden resources are as the hypervisor left them (the host cannot have reached them).
/// 3. Sampled DMAs by host streams land only in host pages or host DMA ranges; by VM streams, only in
///    that VM's pages.
/// 4. Memory a client's shared file backs (MEM_MAP) is host-owned, so no VM page is ever in a host's file. The probe
///    DMAs are real translations that record no fault (`MMU500.probe`, a prefetch's), so checking changes no
///    register the host or a VM can see.
/// 5. Every memory-controller client routes to its owner's stream (`Hypervisor.memoryControllerViolations`).
public struct InvariantChecker {
    public let hypervisor: Hypervisor
    public init(_ hypervisor: Hypervisor) { self.hypervisor = hypervisor }

    /// - Parameter iovas: addresses to probe with DMAs, in addition to a default set spanning
    ///   host RAM, hypervisor RAM, every VM page and the host DMA ranges.
    /// - Parameter sampleDMA: false skips part 3 (most of the cost): fuzzers check routing after every step and
    ///   sample DMAs once per input.
    public func check(streams extraStreams: [StreamID] = [], iovas extraIOVAs: [UInt64] = [],
                      sampleDMA: Bool = true) -> [InvariantViolation] {
        var violations: [InvariantViolation] = []
        let h = hypervisor
        guard h.lifecycle != .notFinalized else { return [] }
        var iovas = extraIOVAs
        for r in h.policy.hostRAM { iovas += [r.base, r.base + r.size / 2, r.end - Ownership.pageSize] }
        iovas += [h.policy.hypervisorRAM.base, h.policy.hypervisorRAM.end - Ownership.pageSize]
        iovas += h.policy.hostDMARanges.map(\.base)
        for vm in h.vms.keys { iovas += h.ownership.pages(of: vm).prefix(4) }
        for vm in h.vms.keys where h.ownership.pageCount(of: vm) != h.ownership.pages(of: vm).count {
            violations.append(InvariantViolation(window: "memory", what: "\(vm)'s page count is not its pages'"))
        }
        // 4. Memory a client's file backs is the host's, every page of it, and marked shared (G4).
        for mapping in h.sharedMappings {
            if !h.ownership.owns(.host, mapping.range) || !h.ownership.isShared(mapping.range) {
                violations.append(InvariantViolation(window: "memory", what: "client mapping at 0x\(String(mapping.range.base, radix: 16)) is not host-owned shared memory"))
            }
        }

        violations += h.memoryControllerViolations()   // 5. MC clients route to their owners' streams

        for instance in h.instances {
            let name = instance.window.name
            func fail(_ s: String) { violations.append(InvariantViolation(window: name, what: s)) }
            let p = instance.physical
            if p.filter == nil { fail("no downstream filter installed") }
            if p.peek(.sCR0) & UInt64(SCR0.clientPD) != 0 { fail("physical sCR0.CLIENTPD is set") }

            // 1. Routing of foreign streams.
            for (stream, owner) in h.ownership.foreignStreams(smmu: instance.smmu) {
                let matches = (0..<p.configuration.numStreamMatchGroups).filter {
                    SMR(raw: UInt32(truncatingIfNeeded: p.peek(.SMR, index: $0))).matches(stream, idMask: instance.idMask)
                }
                guard matches.count == 1, let slot = matches.first, instance.reservedSMRs.contains(slot),
                      instance.reservedSMRUse[slot] == .init(stream: stream, owner: owner) else {
                    fail("stream \(stream) of \(owner) matched by SMRs \(matches)")
                    continue
                }
                let s2cr = S2CR(raw: UInt32(truncatingIfNeeded: p.peek(.S2CR, index: slot)))
                switch (s2cr.kind, owner) {
                case (.fault, _): break
                case (.translate, .vm(let vm)) where instance.reservedContextBankUse[s2cr.contextBank] == vm: break
                default: fail("stream \(stream) of \(owner) routed by S2CR 0x\(String(s2cr.raw, radix: 16))")
                }
            }
            // 2. Hidden resources.
            for slot in instance.reservedSMRs {
                let smr = SMR(raw: UInt32(truncatingIfNeeded: p.peek(.SMR, index: slot)))
                if let use = instance.reservedSMRUse[slot] {
                    if smr != SMR(id: use.stream.rawValue, mask: 0, valid: true) { fail("reserved SMR \(slot) altered") }
                } else if smr.valid {
                    fail("free reserved SMR \(slot) is valid")
                }
            }
            for bank in instance.reservedContextBanks {
                if let vm = instance.reservedContextBankUse[bank], let machine = h.vms[vm] {
                    let cbar = CBAR(raw: UInt32(truncatingIfNeeded: p.peek(.CBAR, index: bank)))
                    if cbar.kind != .s2Translate || cbar.vmid != instance.vmid(ofContextBank: bank)
                        || p.peek(.TTBR0, index: bank) != machine.stage2.root
                        || p.peek(.TCR, index: bank) != UInt64(VMStage2.vtcr) {
                        fail("reserved bank \(bank) of \(vm) altered")
                    }
                } else if p.peek(.SCTLR, index: bank) & 1 != 0 {
                    fail("free reserved bank \(bank) is enabled")
                }
            }
            // 3. Sampled DMAs.
            guard sampleDMA else { continue }
            var streams = Set(extraStreams)
            for n in 0..<instance.hostSMRs {
                let smr = SMR(raw: UInt32(truncatingIfNeeded: instance.virtual.peek(.SMR, index: n)))
                if smr.valid { streams.insert(StreamID(smr.id)) }
            }
            for (s, _) in h.ownership.foreignStreams(smmu: instance.smmu) { streams.insert(s) }
            streams.formUnion([StreamID(0), StreamID(1), StreamID(instance.idMask)])
            for stream in streams.sorted() {
                let owner = h.ownership.owner(ofStream: stream, smmu: instance.smmu)
                for iova in iovas {
                    for access: DMAAccess in [.read, .write] {
                        guard let pa = p.probe(stream: stream, iova: iova, access: access).physicalAddress else { continue }
                        if !h.ownership.permits(owner, address: pa, kind: .data(write: access.isWrite)) {
                            fail("DMA by \(stream) (\(owner)) at 0x\(String(iova, radix: 16)) reached 0x\(String(pa, radix: 16)) owned by \(h.ownership.owner(ofAddress: pa).map { "\($0)" } ?? "nobody")")
                        }
                    }
                }
            }
        }
        return violations
    }
}
