import Testing
@testable import SMMUModel

/// Each row's `effect` against what the model does: a write to every register, on a model with live
/// translations, decoded contexts and cached stream matches.
@Suite("Register rows: what a write does")
struct RegisterEffectTests {
    static let s1Stream: UInt16 = 0x30
    static let s2Stream: UInt16 = 0x31
    static let ipa: UInt64 = 0x4000_0000

    /// Bank 0: stage 1 (VMID 0, ASID 0) with one non-global page at 0x1000, routed from SMR 0. Bank 1: stage 2
    /// (VMID 2) over IPA `ipa`, routed from SMR 1. One TLB entry for each; both contexts decoded and both streams
    /// matched (so every cache the model keeps is full).
    static func live(_ configuration: MMU500Configuration = .tegra234) throws -> Machine {
        var m = Machine(configuration)
        let d = m.driver
        d.reset()
        let s1 = try m.builder(.stage1)
        try s1.map(0x1000, to: Machine.ramBase + 0x5000, size: 0x1000)
        d.attachStage1(bank: 0, ttbr0: s1.root, tcr: s1.tcr)
        let s2 = try m.builder(.stage2, inputBits: 40)
        try s2.mapRange(ipa, to: Machine.ramBase, size: 2 << 20)
        d.attachStage2(bank: 1, vttbr: s2.root, vtcr: s2.vtcr, vmid: 2)
        d.route(smr: 0, stream: s1Stream, toBank: 0)
        d.route(smr: 1, stream: s2Stream, toBank: 1)
        #expect(m.smmu.translate(stream: StreamID(s1Stream), iova: 0x1000, access: .read).physicalAddress
                == Machine.ramBase + 0x5000)
        #expect(m.smmu.translate(stream: StreamID(s2Stream), iova: ipa, access: .read).physicalAddress
                == Machine.ramBase)
        #expect(m.smmu.tlbEntryCount == 2)
        return m
    }

    /// A decoded context, comparable.
    static func decoded(_ smmu: MMU500, _ bank: Int) -> String {
        let c = smmu.context(bank)
        return "\(c.type) enabled \(c.enabled) a64 \(c.aarch64) vmid \(c.vmid) asid \(c.asid) s2 \(c.s2Bank)"
    }

    /// A model holding the same register values, decoded from scratch.
    static func fresh(_ smmu: MMU500) -> MMU500 {
        let copy = MMU500(configuration: smmu.configuration, memory: smmu.memory)
        for (location, value) in smmu.registers() { copy.poke(location.name, index: location.index, value) }
        return copy
    }

    @Test func aReadOnlyRegisterHasNoEffect() {
        for d in RegisterMap.all where d.access == .readOnly {
            #expect(d.effect == .none, "\(d.name) is read-only but its row says \(d.effect)")
        }
    }

    /// Whatever is written to any register, what the model decoded before (contexts, stream matches) is what it
    /// decodes from scratch afterwards: every register a decoded value depends on has an effect that drops it.
    @Test(arguments: [UInt64(0), 0xFFFF_FFFF_FFFF_FFFF, 0x0003_5A5A_A5A5_1234, 0x8000_0031_0001_0302])
    func nothingDecodedGoesStale(value: UInt64) throws {
        var vmid16 = MMU500Configuration.tegra234
        vmid16.idr2 |= 1 << 15
        for configuration in [MMU500Configuration.tegra234, vmid16] {
            for name in RegisterName.allCases {
                let m = try Self.live(configuration)
                let d = RegisterMap.descriptor(name)
                for index in d.indexing == .none ? [0] : [0, 1] {
                    m.smmu.write(RegisterLocation(name: name, index: index), value: value & d.width.mask, width: d.width)
                }
                let oracle = Self.fresh(m.smmu)
                for bank in 0..<3 {
                    #expect(Self.decoded(m.smmu, bank) == Self.decoded(oracle, bank), "\(name) = \(value), bank \(bank)")
                }
                for stream: UInt16 in [Self.s1Stream, Self.s2Stream, 0x1234, 0x5A5A] {
                    #expect(m.smmu.matchStream(stream) == oracle.matchStream(stream), "\(name) = \(value), stream \(stream)")
                }
            }
        }
    }

    /// A write changes its own register and, by its effect, the restored status or the TLB; nothing else.
    @Test func everyWriteHasItsRowsEffectAndNoOther() throws {
        for name in RegisterName.allCases {
            let d = RegisterMap.descriptor(name)
            let m = try Self.live()
            let before = m.smmu.registers()
            var location = RegisterLocation(name: name)
            var value: UInt64 = 0x8000_0006
            var entriesLeft = 2
            var restored: RegisterLocation?
            switch d.effect {
            case .none, .globalConfiguration, .streamMatch, .streamRouting, .contextConfiguration, .sync,
                 .addressTranslation:
                break
            case .restore(let status):
                restored = RegisterLocation(name: status.register)
            case .invalidateTLB(let scope):
                // The operand and bank that hit one of the two entries (or, for the scopes with no entries, any).
                switch scope {
                case .allNonSecure: entriesLeft = 0
                case .vmid: value = 2; entriesLeft = 1
                case .hypervisor, .secure: entriesLeft = 2
                case .context: value = 0; entriesLeft = 1
                case .asid: value = 0; entriesLeft = 1
                case .address, .addressAnyASID: value = 0x1000 >> 12; entriesLeft = 1
                case .intermediateAddress: location = RegisterLocation(name: name, index: 1); value = Self.ipa >> 12
                    entriesLeft = 1
                }
            }
            m.smmu.write(location, value: value, width: d.width)
            #expect(m.smmu.tlbEntryCount == entriesLeft, "\(name): \(m.smmu.tlbEntryCount) TLB entries left")
            if let restored {
                let status = d.effect == .restore(.global) ? FaultStatus.global : .context
                #expect(m.smmu.peek(restored.name, index: restored.index) == value & UInt64(status.bits))
            }
            for ((l, old), (_, new)) in zip(before, m.smmu.registers()) where old != new {
                #expect(l == location || l == restored, "\(name) changed \(l)")
            }
        }
    }

    /// A TLB invalidation whose operand names nothing cached leaves the TLB alone.
    @Test func anInvalidationOfSomethingElseKeepsTheEntries() throws {
        for d in RegisterMap.all {
            guard case .invalidateTLB(let scope) = d.effect else { continue }
            let m = try Self.live()
            var index = 0
            let value: UInt64
            switch scope {
            case .allNonSecure: continue
            case .hypervisor, .secure: value = 0
            case .vmid: value = 7
            case .context:   // bank 2, given a VMID of its own (at reset it shares bank 0's VMID 0)
                m.driver.w32(.CBAR, 2, 0x0002_0009)
                index = 2; value = 0
            case .asid: value = 9
            case .address, .addressAnyASID: value = 0x7777
            case .intermediateAddress: index = 1; value = 0x7777
            }
            m.smmu.write(RegisterLocation(name: d.name, index: index), value: value, width: d.width)
            #expect(m.smmu.tlbEntryCount == 2, "\(d.name)")
        }
    }
}
