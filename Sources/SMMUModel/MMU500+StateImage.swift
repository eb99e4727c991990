/// The state of one MMU-500 as a value, for the daemon's state image (docs/state-image.md): the register file
/// slot by slot and the TLB entry by entry. Everything else the model holds is decoded from these (the stream
/// cache, the decoded context banks) and is rebuilt on restore.

/// One live TLB entry and the slot it sits in (the slot is the hash of its bank and input page: a restore checks it).
public struct TLBEntryImage: Sendable, Equatable {
    public var slot: Int
    public var vaPage: UInt64
    public var paPage: UInt64
    public var ipaPage: UInt64
    public var bank: Int16
    public var s2Bank: Int16
    public var vmid: UInt16
    public var s2VMID: UInt16
    public var asid: UInt16
    public var global: Bool
    public var hasIPA: Bool
    public var permissions: UInt8
    public var level: UInt8
    public var leafShift: UInt8
    public var s2LeafShift: UInt8

    public init(slot: Int, vaPage: UInt64, paPage: UInt64, ipaPage: UInt64, bank: Int16, s2Bank: Int16, vmid: UInt16,
                s2VMID: UInt16, asid: UInt16, global: Bool, hasIPA: Bool, permissions: UInt8, level: UInt8,
                leafShift: UInt8, s2LeafShift: UInt8) {
        self.slot = slot
        self.vaPage = vaPage
        self.paPage = paPage
        self.ipaPage = ipaPage
        self.bank = bank
        self.s2Bank = s2Bank
        self.vmid = vmid
        self.s2VMID = s2VMID
        self.asid = asid
        self.global = global
        self.hasIPA = hasIPA
        self.permissions = permissions
        self.level = level
        self.leafShift = leafShift
        self.s2LeafShift = s2LeafShift
    }
}

/// One MMU-500's complete state.
public struct MMU500StateImage: Sendable, Equatable {
    /// Every implemented register element, in `RegisterMap` order (the model's slots).
    public var registers: [UInt64]
    /// Live TLB entries, by ascending slot.
    public var tlbEntries: [TLBEntryImage]
    /// The TLB's counters: hits, misses (DUMP and STATS show them), TLBIVAs answered by probing and by scanning.
    public var tlbHits: Int
    public var tlbMisses: Int
    public var directVAInvalidations: Int
    public var scannedVAInvalidations: Int

    public init(registers: [UInt64], tlbEntries: [TLBEntryImage], tlbHits: Int, tlbMisses: Int,
                directVAInvalidations: Int, scannedVAInvalidations: Int) {
        self.registers = registers
        self.tlbEntries = tlbEntries
        self.tlbHits = tlbHits
        self.tlbMisses = tlbMisses
        self.directVAInvalidations = directVAInvalidations
        self.scannedVAInvalidations = scannedVAInvalidations
    }
}

extension MMU500 {
    /// How many register slots this configuration implements (the length `restore` expects).
    public var registerSlotCount: Int { values.count }

    /// The model's state now. Pure: nothing changes, no counter moves.
    public func stateImage() -> MMU500StateImage {
        MMU500StateImage(registers: (0..<values.count).map { values[$0] }, tlbEntries: tlb.image(),
                         tlbHits: tlb.hits, tlbMisses: tlb.misses,
                         directVAInvalidations: tlb.directVAInvalidations,
                         scannedVAInvalidations: tlb.scannedVAInvalidations)
    }

    /// Puts the model in `image`'s state: registers as they are (no write side effect runs, no epoch advances),
    /// the TLB as it was. Returns why not (and changes nothing) when the image cannot be this model's: wrong
    /// register count, or a TLB entry no translation of this configuration could have made where it sits.
    public func restore(_ image: MMU500StateImage) -> String? {
        guard image.registers.count == values.count else {
            return "\(image.registers.count) register slots, the configuration implements \(values.count)"
        }
        if let why = TLB.problem(with: image.tlbEntries, contextBanks: numContextBanks) { return why }
        load(registers: image.registers)
        tlb.restore(image)
        return nil
    }
}

extension TLB {
    func image() -> [TLBEntryImage] {
        var out: [TLBEntryImage] = []
        out.reserveCapacity(count)
        for i in 0..<Self.capacity {
            let e = entry(atSlot: i)
            guard e.bank >= 0 else { continue }
            out.append(TLBEntryImage(slot: i, vaPage: e.vaPage, paPage: e.paPage, ipaPage: e.ipaPage, bank: e.bank,
                                     s2Bank: e.s2Bank, vmid: e.vmid, s2VMID: e.s2VMID, asid: e.asid, global: e.global,
                                     hasIPA: e.hasIPA, permissions: e.permissions.rawValue, level: e.level,
                                     leafShift: e.leafShift, s2LeafShift: e.s2LeafShift))
        }
        return out
    }

    /// Why these entries cannot be a TLB of a model with `contextBanks` banks, or nil.
    static func problem(with entries: [TLBEntryImage], contextBanks: Int) -> String? {
        var previous = -1
        for e in entries {
            guard e.slot > previous, e.slot < capacity else { return "TLB entry slot \(e.slot) out of order or range" }
            previous = e.slot
            guard e.bank >= 0, Int(e.bank) < contextBanks, e.s2Bank >= -1, Int(e.s2Bank) < contextBanks else {
                return "TLB entry in slot \(e.slot) names context bank \(e.bank)/\(e.s2Bank) of \(contextBanks)"
            }
            guard (12...52).contains(e.leafShift), (12...52).contains(e.s2LeafShift), e.level <= 3,
                  e.permissions & ~Permissions.all.rawValue == 0 else {
                return "TLB entry in slot \(e.slot) has an impossible mapping size, level or permission"
            }
            let tlb = Self.self
            guard tlb.slot(bank: Int(e.bank), vaPage: e.vaPage) == e.slot else {
                return "TLB entry in slot \(e.slot) belongs in another slot"
            }
        }
        return nil
    }

    /// Replaces the contents and counters with the image's (checked by `problem(with:contextBanks:)`).
    func restore(_ image: MMU500StateImage) {
        invalidateAll()
        for e in image.tlbEntries {
            var entry = Entry(vaPage: e.vaPage, paPage: e.paPage, ipaPage: e.ipaPage, s2Bank: e.s2Bank,
                              vmid: e.vmid, s2VMID: e.s2VMID, asid: e.asid, global: e.global, hasIPA: e.hasIPA,
                              permissions: Permissions(rawValue: e.permissions), level: e.level, leafShift: e.leafShift,
                              s2LeafShift: e.s2LeafShift)
            entry.bank = e.bank
            insert(entry)
        }
        setCounters(hits: image.tlbHits, misses: image.tlbMisses, direct: image.directVAInvalidations,
                    scanned: image.scannedVAInvalidations)
    }
}
