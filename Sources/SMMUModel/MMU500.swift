/// One MMU-500 instance: its register file, driven by `RegisterMap`, and the side effects of
/// register writes. Translation lives in MMU500+Translate.swift, fault recording in
/// MMU500+Faults.swift.
///
/// A pure model: no I/O, no clocks, no globals. Not thread-safe; its owner serialises access.
public final class MMU500 {
    public let configuration: MMU500Configuration
    public let memory: PhysicalMemory
    /// Every memory access the SMMU makes downstream must pass this (walks and output addresses).
    public var filter: DownstreamFilter? {
        get { filterBox[0] }
        set { filterBox[0] = newValue }
    }
    let filterBox: FixedArray<DownstreamFilter?>

    let layout: RegisterLayout
    /// The register file: one slot per implemented register element (context-bank registers:
    /// one per bank), 64-bit registers in one slot.
    let values: FixedArray<UInt64>
    /// First slot of each register, by `RegisterMap` ordinal.
    let slotBase: [Int]
    /// Implemented elements of each register, by ordinal.
    let slotCount: [Int]
    /// The register file at reset, slot by slot (the table's resets and the configuration's ID values): `reset()`
    /// copies it, so finalization and a fuzzer's per-input reset cost one copy.
    let resetImage: [UInt64]

    // Slots read on every translation, looked up once.
    let sCR0Slot, smrSlot, s2crSlot, cbarSlot, cba2rSlot: Int
    let sctlrSlot, tcrSlot, tcr2Slot, ttbr0Slot, ttbr1Slot, fsrSlot: Int

    let tlb = TLB()
    /// Advanced before any write or reset that could change a translation takes effect (TranslationEpoch.swift);
    /// nil for a model nobody caches translations of (the host's virtual view).
    public var epoch: TranslationEpoch?
    /// The number of this instance's window on the bus: what the epoch's ranged changes name.
    public var windowIndex = 0
    /// [0]: faults are recorded (false only inside `probe`, the speculative translation of a prefetch).
    let recordsFaults = FixedArray<Bool>(repeating: true, count: 1)
    /// The table (non-leaf) descriptors read during one run of speculative translations (`speculating`), as
    /// an SMMU's walk cache holds them: consecutive probes then read only their leaf (`WalkCache`).
    let walkCache = WalkCache()
    /// Stream ID → (generation << 16 | matching SMR index, or `noMatch`/`multipleMatches`); an
    /// entry of an older generation is unresolved, so invalidating is one increment.
    let streamCache: FixedArray<UInt32>
    /// [0]: the current generation (never 0).
    let streamCacheGeneration = FixedArray<UInt32>(repeating: 1, count: 1)
    static let noMatch: Int16 = -2
    static let multipleMatches: Int16 = -3
    /// Decoded context-bank configuration, rebuilt after any write to that bank.
    let contexts: FixedArray<ContextState?>
    let numContextBanks: Int

    public init(configuration: MMU500Configuration, memory: PhysicalMemory, filter: DownstreamFilter? = nil) {
        self.configuration = configuration
        self.memory = memory
        self.filterBox = FixedArray(repeating: filter, count: 1)
        self.numContextBanks = configuration.numContextBanks
        self.layout = RegisterLayout(configuration)
        var bases: [Int] = []
        var counts: [Int] = []
        var total = 0
        for d in RegisterMap.all {
            let n = configuration.implementedCount(d)
            bases.append(total)
            counts.append(n)
            total += n
        }
        slotBase = bases
        slotCount = counts
        values = FixedArray(repeating: 0, count: total)
        var image = [UInt64](repeating: 0, count: total)
        for (ordinal, d) in RegisterMap.all.enumerated() {
            let value: UInt64
            switch d.reset {
            case .value(let v): value = v
            case .identification(let id): value = UInt64(configuration.value(of: id))
            }
            for i in 0..<counts[ordinal] { image[bases[ordinal] + i] = value }
        }
        resetImage = image
        func base(_ name: RegisterName) -> Int { bases[RegisterMap.ordinal(name)] }
        sCR0Slot = base(.sCR0)
        smrSlot = base(.SMR)
        s2crSlot = base(.S2CR)
        cbarSlot = base(.CBAR)
        cba2rSlot = base(.CBA2R)
        sctlrSlot = base(.SCTLR)
        tcrSlot = base(.TCR)
        tcr2Slot = base(.TCR2)
        ttbr0Slot = base(.TTBR0)
        ttbr1Slot = base(.TTBR1)
        fsrSlot = base(.FSR)
        streamCache = FixedArray(zeroedCount: 1 << 16)
        contexts = FixedArray(repeating: nil, count: configuration.numContextBanks)
        reset()
    }

    deinit {
        filterBox.deallocate()
        values.deallocate()
        streamCache.deallocate()
        streamCacheGeneration.deallocate()
        recordsFaults.deallocate()
        walkCache.deallocate()
        contexts.deallocate()
    }

    /// Puts every register at its reset value and empties the TLB.
    public func reset() { reset(to: resetImage) }

    /// The register file as it is, slot by slot: what `reset(to:)` takes back (a fuzzer's checkpoint).
    public var registerImage: [UInt64] { Array(UnsafeBufferPointer(start: values.base, count: values.count)) }

    /// A reset to `image` (this model's `registerImage`) instead of the reset values: the register file is
    /// copied, the TLB emptied and everything decoded from the registers dropped, as `reset()` does.
    public func reset(to image: [UInt64]) {
        precondition(image.count == values.count, "a register image of another configuration")
        load(registers: image)
        tlb.invalidateAll()
        tlb.resetStatistics()
        epoch?.advance()
    }

    /// Copies a whole register file in (as many slots as the model implements: the callers check the count), with
    /// no write side effect, and drops what was decoded from the old one (stream cache, context banks).
    func load(registers image: [UInt64]) {
        image.withUnsafeBufferPointer { values.base.update(from: $0.baseAddress!, count: min($0.count, values.count)) }
        invalidateStreamCache()
        invalidateContexts()
    }

    /// The slot of element `index` of `name`, nil if not implemented.
    @inline(__always)
    func slot(_ name: RegisterName, _ index: Int) -> Int? {
        let ordinal = RegisterMap.ordinal(name)
        guard index >= 0, index < slotCount[ordinal] else { return nil }
        return slotBase[ordinal] + index
    }

    // MARK: MMIO

    public func decode(offset: UInt64, width: AccessWidth) -> Result<DecodedAccess, AccessError> {
        layout.decode(offset: offset, width: width)
    }

    /// An MMIO read. Write-only registers and reserved offsets read as zero.
    public func read(offset: UInt64, width: AccessWidth) -> Result<UInt64, AccessError> {
        decode(offset: offset, width: width).map { decoded in
            guard case .register(let location, _) = decoded else { return 0 }
            return read(location, width: width)
        }
    }

    /// The read of an access already decoded, possibly by another model with the same page geometry (the trap
    /// handler decodes on the physical model and reads the virtual one with it). An element this model does not
    /// implement reads as zero.
    public func read(_ location: RegisterLocation, width: AccessWidth) -> UInt64 {
        if RegisterMap.descriptor(location.name).access == .writeOnly { return 0 }
        let raw = peek(location.name, index: location.index)
        return (raw >> UInt64(location.byteOffset * 8)) & width.mask
    }

    /// An MMIO write: writable masks, write-1-to-clear, TLB maintenance, restore registers.
    public func write(offset: UInt64, value: UInt64, width: AccessWidth) -> Result<Void, AccessError> {
        decode(offset: offset, width: width).map { decoded in
            guard case .register(let location, _) = decoded else { return }
            write(location, value: value, width: width)
        }
    }

    /// The write of an access already decoded (see `read(_:width:)`); an element this model does not implement
    /// ignores it.
    public func write(_ location: RegisterLocation, value: UInt64, width: AccessWidth) {
        store(location, value: value & width.mask, width: width)
    }

    /// Applies one decoded register write.
    func store(_ location: RegisterLocation, value: UInt64, width: AccessWidth) {
        let d = RegisterMap.descriptor(location.name)
        guard d.access != .readOnly, let s = slot(location.name, location.index) else { return }
        let old = values[s]
        // A 32-bit half of a 64-bit register changes only its half.
        let shift = UInt64(location.byteOffset * 8)
        let laneMask: UInt64 = width == .doubleword || d.width == .word ? d.width.mask : 0xFFFF_FFFF << shift
        let written = (value << shift) & laneMask
        let mask = d.writableMask & laneMask
        switch d.access {
        case .writeOneToClear:
            values[s] = old & ~(written & mask)
        case .readWrite, .writeOnly:
            values[s] = (old & ~mask) | (written & mask)
        case .readOnly:
            return
        }
        if let epoch, Self.mayAlterTranslations(d.effect, changed: values[s] != old) {
            epoch.advance(change(d.effect, index: location.index, value: values[s]))
        }
        // Actions complete with the low (or only) half: a split 64-bit write goes high then low.
        if location.byteOffset == 0 {
            sideEffect(of: d, index: location.index, value: values[s])
        }
        invalidateCaches(after: d, index: location.index)
    }

    /// What a register write does beyond storing its value: the row's effect.
    private func sideEffect(of d: RegisterDescriptor, index: Int, value: UInt64) {
        switch d.effect {
        case .restore(let status):
            poke(status.register, index: index, value & UInt64(status.bits))
        case .invalidateTLB(let scope):
            invalidateTLB(scope, bank: index, operand: TLBIOperand(value))
        case .none, .globalConfiguration, .streamMatch, .streamRouting, .contextConfiguration:
            break   // stored; decoded state is dropped by `invalidateCaches`
        case .sync:
            break   // maintenance is synchronous: nothing is ever pending
        case .addressTranslation:
            break   // latched only (IDR0.ATOSNS: no address translation operations)
        }
    }

    /// TLB maintenance; `bank` is the context bank of a per-bank operation.
    private func invalidateTLB(_ scope: TLBInvalidation, bank: Int, operand: TLBIOperand) {
        switch scope {
        case .allNonSecure:
            tlb.invalidateAll()
        case .vmid:
            tlb.invalidate(vmid: operand.vmid)
        case .hypervisor, .secure:
            break   // no hypervisor or secure entries are ever made
        case .context:
            tlb.invalidateContext(vmid: context(bank).vmid)
        case .asid:
            tlb.invalidate(vmid: context(bank).vmid, asid: operand.lowASID)
        case .address:
            tlb.invalidate(vmid: context(bank).vmid, asid: operand.asid, va: operand.address)
        case .addressAnyASID:
            tlb.invalidate(vmid: context(bank).vmid, asid: nil, va: operand.address)
        case .intermediateAddress:
            tlb.invalidate(s2Bank: bank, vmid: context(bank).vmid, ipa: operand.intermediateAddress)
        }
    }

    /// Drops decoded state that depends on a register just written (by a write or a raw `poke`).
    @inline(__always)
    private func invalidateCaches(after d: RegisterDescriptor, index: Int) {
        switch d.effect {
        case .globalConfiguration:
            invalidateContexts()
        case .streamMatch:
            invalidateStreamCache()
        case .contextConfiguration:
            if index < contexts.count { contexts[index] = nil }
        case .none, .streamRouting, .restore, .invalidateTLB, .sync, .addressTranslation:
            break   // nothing decoded derives from these
        }
    }

    func invalidateStreamCache() {
        streamCacheGeneration[0] = (streamCacheGeneration[0] + 1) & 0xFFFF
        if streamCacheGeneration[0] == 0 {
            streamCacheGeneration[0] = 1
            streamCache.fill(0)
        }
    }

    func invalidateContexts() {
        contexts.fill(nil)
    }

    // MARK: Raw access

    /// The raw stored value, no side effects (0 for an element that is not implemented).
    public func peek(_ name: RegisterName, index: Int = 0) -> UInt64 {
        slot(name, index).map { values[$0] } ?? 0
    }

    /// A raw store, no side effects beyond dropping decoded state (the hypervisor mirrors with it).
    public func poke(_ name: RegisterName, index: Int = 0, _ value: UInt64) {
        guard let s = slot(name, index) else { return }
        let d = RegisterMap.descriptor(name)
        let changed = values[s] != value & d.width.mask
        values[s] = value & d.width.mask
        if let epoch, Self.mayAlterTranslations(d.effect, changed: changed) {
            epoch.advance(change(d.effect, index: index, value: values[s]))
        }
        invalidateCaches(after: d, index: index)
    }

    /// Whether a register write with this effect may change what a transaction translates to. TLB maintenance
    /// always does (it ends cached translations); the configuration rows (the only ones `translate` decodes:
    /// sCR0, SMR, S2CR, CBAR, CBA2R, SCTLR, TCR, TCR2, TTBRn) do when their value changed. Fault syndromes,
    /// attributes (MAIR), sync and address-translation rows change nothing a transaction is translated to, so
    /// recording a fault does not advance the epoch.
    @inline(__always)
    static func mayAlterTranslations(_ effect: RegisterEffect, changed: Bool) -> Bool {
        switch effect {
        case .invalidateTLB: true
        case .globalConfiguration, .streamMatch, .streamRouting, .contextConfiguration: changed
        case .none, .restore, .sync, .addressTranslation: false
        }
    }

    /// What a write that advances the epoch may have changed: a TLBI by address (a 64-bit register whose value
    /// is, once the low half is written, the whole operand; an earlier half invalidates nothing) only what its
    /// address names in the bank's context; everything else, anything.
    @inline(__always)
    private func change(_ effect: RegisterEffect, index bank: Int, value: UInt64) -> TranslationChange {
        guard case .invalidateTLB(let scope) = effect else { return .anything }
        let operand = TLBIOperand(value)
        switch scope {
        case .address:
            return .address(window: windowIndex, bank: bank, asid: operand.asid, address: operand.address)
        case .addressAnyASID:
            return .address(window: windowIndex, bank: bank, asid: nil, address: operand.address)
        case .allNonSecure, .vmid, .hypervisor, .secure, .context, .asid, .intermediateAddress:
            return .anything
        }
    }

    /// Every implemented register and its raw value, in table order (for DUMP).
    public func registers() -> [(location: RegisterLocation, value: UInt64)] {
        var out: [(location: RegisterLocation, value: UInt64)] = []
        out.reserveCapacity(values.count)
        for (ordinal, d) in RegisterMap.all.enumerated() {
            for i in 0..<slotCount[ordinal] {
                out.append((RegisterLocation(name: d.name, index: i), values[slotBase[ordinal] + i]))
            }
        }
        return out
    }

    // MARK: Interrupts and statistics

    /// The global fault interrupt: sGFSR has fault bits and sCR0.GFIE is set.
    public var globalInterruptAsserted: Bool {
        peek(.sGFSR) & UInt64(FaultStatus.globalFaultBits) != 0 && SCR0(values[sCR0Slot]).globalFaultInterrupt
    }

    /// Context bank `bank`'s interrupt: FSR has fault bits and SCTLR.CFIE is set.
    public func contextInterruptAsserted(bank: Int) -> Bool {
        guard bank >= 0, bank < numContextBanks else { return false }
        return values[fsrSlot + bank] & UInt64(FaultStatus.contextFaultBits) != 0
            && SCTLR(values[sctlrSlot + bank]).faultInterrupt
    }

    public var tlbStatistics: (hits: Int, misses: Int) { (tlb.hits, tlb.misses) }

    /// Live TLB entries.
    public var tlbEntryCount: Int { tlb.count }
}
