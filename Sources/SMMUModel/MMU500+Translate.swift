/// DMA translation: stream matching, context-bank selection, the TLB, table walks.

/// A context bank's configuration, decoded from CBAR, CBA2R, SCTLR, TCR2 and TTBRn.
struct ContextState {
    /// CBAR.TYPE.
    var type: CBAR.Kind
    /// SCTLR.M: the bank translates (otherwise its stage is flat).
    var enabled: Bool
    /// CBA2R.VA64: AArch64 descriptors.
    var aarch64: Bool
    var vmid: UInt16
    /// The stage-1 ASID (TTBR0 or TTBR1 by TCR.A1; 8 bits unless TCR2.AS).
    var asid: UInt16
    /// For nested banks: the bank holding stage 2 (CBAR[15:8]).
    var s2Bank: Int

    /// Whether the bank looks its transactions up in the TLB: only while it walks tables
    /// (a disabled bank or one of another format is not translating, so nothing cached applies).
    var usesTLB: Bool {
        aarch64 && type != .s1TranslateS2Fault && (enabled || type == .nested)
    }
}

extension MMU500 {
    /// Decoded configuration of context bank `bank` (cached until a write to the bank or sCR0).
    func context(_ bank: Int) -> ContextState {
        if bank < contexts.count, let c = contexts[bank] { return c }
        let cbar = CBAR(peek(.CBAR, index: bank))
        let cba2r = CBA2R(peek(.CBA2R, index: bank))
        let tcr = TCR(peek(.TCR, index: bank))
        let ttbr = TTBR(peek(tcr.asidFromTTBR1 ? .TTBR1 : .TTBR0, index: bank))
        let vmid16 = configuration.supportsVMID16 && SCR0(values[sCR0Slot]).vmid16
        let c = ContextState(
            type: cbar.kind,
            enabled: SCTLR(peek(.SCTLR, index: bank)).enabled,
            aarch64: cba2r.aarch64,
            vmid: vmid16 ? cba2r.vmid16 : UInt16(cbar.vmid),
            asid: ttbr.asid(wide: TCR2(peek(.TCR2, index: bank)).wideASID),
            s2Bank: cbar.stage2ContextBank)
        if bank < contexts.count { contexts[bank] = c }
        return c
    }

    /// The SMR that matches `sid`: index, `noMatch` or `multipleMatches` (cached per stream).
    @inline(__always)
    func matchStream(_ sid: UInt16) -> Int16 {
        let cached = streamCache[Int(sid)]
        if cached >> 16 == streamCacheGeneration[0] { return Int16(truncatingIfNeeded: cached & 0xFFFF) }
        let idMask = configuration.streamIDMask
        var found = Self.noMatch
        for i in 0..<configuration.numStreamMatchGroups
        where SMR(values[smrSlot + i]).matches(StreamID(sid), idMask: idMask) {
            if found != Self.noMatch { found = Self.multipleMatches; break }
            found = Int16(i)
        }
        streamCache[Int(sid)] = streamCacheGeneration[0] << 16 | UInt32(UInt16(bitPattern: found))
        return found
    }

    /// Translates one DMA transaction by `stream` at `iova`, recording any fault where the
    /// hardware records it.
    public func translate(stream: StreamID, iova: UInt64, access: DMAAccess) -> Translation {
        let scr0 = SCR0(values[sCR0Slot])
        if scr0.clientPD { return bypass(stream, iova, access) }
        let match = matchStream(stream.rawValue)
        if match == Self.multipleMatches {
            recordGlobalFault(FaultStatus.smcf, stream: stream, iova: iova, access: access)
            return Translation(outcome: .fault(.multipleMatch))
        }
        if match == Self.noMatch {
            guard scr0.unmatchedStreamsFault else { return bypass(stream, iova, access) }
            recordGlobalFault(FaultStatus.usf, stream: stream, iova: iova, access: access)
            return Translation(outcome: .fault(.unidentifiedStream))
        }
        let s2cr = S2CR(values[s2crSlot + Int(match)])
        let access = Self.override(access, s2cr: s2cr)
        switch s2cr.kind {
        case .translate:
            let bank = s2cr.contextBank
            guard bank < numContextBanks else {
                recordGlobalFault(FaultStatus.icf, stream: stream, iova: iova, access: access)
                return Translation(outcome: .fault(.streamFault))
            }
            return translate(bank: bank, stream: stream, iova: iova, access: access)
        case .bypass:
            return bypass(stream, iova, access)
        case .fault, .reserved:
            // S2CR TYPE = FAULT (and the reserved TYPE): terminated, not recorded (no fault status register
            // names it).
            return Translation(outcome: .fault(.streamFault))
        }
    }

    /// S2CR.PRIVCFG (unprivileged, privileged) and INSTCFG (data, instruction) replace the transaction's own
    /// attributes; the default and the reserved encoding keep them.
    @inline(__always)
    static func override(_ access: DMAAccess, s2cr: S2CR) -> DMAAccess {
        var a = access
        switch s2cr.privilege {
        case .clear: a.remove(.privileged)
        case .set: a.insert(.privileged)
        case .incoming, .reserved: break
        }
        switch s2cr.instruction {
        case .clear: a.remove(.instructionFetch)
        case .set: a.insert(.instructionFetch)
        case .incoming, .reserved: break
        }
        return a
    }

    /// Untranslated: the address goes downstream as is, checked by the filter; nothing recorded.
    private func bypass(_ stream: StreamID, _ address: UInt64, _ access: DMAAccess) -> Translation {
        guard address >> UInt64(configuration.outputAddressBits) == 0 else {
            return Translation(outcome: .fault(.addressSize))
        }
        if let filter, !filter.permits(stream: stream, address: address, kind: .data(write: access.isWrite)) {
            return Translation(outcome: .fault(.ownership))
        }
        var t = Translation(outcome: .translated(physicalAddress: address))
        t.mappingShift = 12
        t.reachShift = 12
        t.effectiveAccess = access
        t.otherDirectionPermitted = true
        return t
    }

    /// Translation in context bank `bank`: the TLB first, then the walks.
    private func translate(bank: Int, stream: StreamID, iova: UInt64, access: DMAAccess) -> Translation {
        let ctx = context(bank)
        let vaPage = iova >> 12
        if ctx.usesTLB, let e = tlb.lookup(bank: bank, vmid: ctx.vmid, asid: ctx.asid, vaPage: vaPage) {
            return finishHit(e, bank: bank, stream: stream, iova: iova, access: access)
        }
        guard ctx.aarch64 else {
            // Only AArch64 descriptors are modelled: a VA64 = 0 bank faults every transaction.
            return fail(bank, stream, iova, access, WalkFault(kind: .translation, level: 0, duringWalk: false))
        }
        if ctx.type == .s1TranslateS2Bypass, ctx.enabled, walkCache.isActive(for: stream),
           let t = translateInLeafTable(bank: bank, stream: stream, iova: iova, access: access) {
            return t
        }
        let walker = TableWalker(memory: memory, filter: filter, stream: stream,
                                 cache: walkCache.isActive(for: stream) ? walkCache : nil)
        var entry = TLB.Entry()
        entry.bank = Int16(bank)
        entry.vmid = ctx.vmid
        entry.asid = ctx.asid
        entry.vaPage = vaPage
        var address = iova
        var permissions = TLB.Permissions.all
        var level = 3
        var walked = false

        // Stage 2 for this transaction (its own bank, or the nested bank's), if any.
        var s2: (bank: Int, params: StageParameters)?
        switch ctx.type {
        case .s2Translate:
            if ctx.enabled { s2 = (bank, stage2Parameters(bank)) }
        case .nested:
            let b = ctx.s2Bank
            if b < configuration.numContextBanks, context(b).enabled { s2 = (b, stage2Parameters(b)) }
        case .s1TranslateS2Bypass, .s1TranslateS2Fault:
            break
        }
        let s2Walk: ((UInt64) -> Result<WalkLeaf, WalkFault>)? = s2.map { s2 in
            { ipa in walker.walk(s2.params, input: ipa) }
        }

        // Stage 1.
        if ctx.type != .s2Translate && ctx.enabled {
            let params: StageParameters
            switch stage1Parameters(bank, iova: iova, nextStageBits: s2 != nil || ctx.type == .nested
                                        ? configuration.inputAddressBits : configuration.outputAddressBits) {
            case .success(let p): params = p
            case .failure(let f): return fail(bank, stream, iova, access, f)
            }
            // Each stage-1 descriptor address is an IPA when stage 2 follows: it needs read permission.
            let tableAddress: ((UInt64) -> Result<UInt64, WalkFault>)? = s2Walk.map { s2Walk in
                { ipa in
                    s2Walk(ipa).flatMap { leaf in
                        leaf.permissions.contains(.privilegedRead) ? .success(leaf.output)
                            : .failure(WalkFault(kind: .permission, level: leaf.level, duringWalk: true, ipa: ipa))
                    }
                }
            }
            let walkInput = iova & ((1 << UInt64(params.inputBits)) - 1)    // TTBR1: drop the ones
            switch walker.walk(params, input: walkInput, tableAddress: tableAddress) {
            case .failure(let f): return fail(bank, stream, iova, access, f)
            case .success(let leaf):
                guard leaf.permissions.permits(access) else {
                    return fail(bank, stream, iova, access,
                                WalkFault(kind: .permission, level: leaf.level, duringWalk: false))
                }
                address = leaf.output
                permissions = leaf.permissions
                level = leaf.level
                entry.leafShift = UInt8(leaf.leafShift)
                entry.global = !leaf.nonGlobal
                walked = true
            }
        }
        if ctx.type == .s1TranslateS2Fault {
            return Translation(outcome: .fault(.streamFault), contextBank: bank)
        }

        // Stage 2.
        if let s2, let s2Walk {
            let ipa = address
            switch s2Walk(ipa) {
            case .failure(let f): return fail(bank, stream, iova, access, f)
            case .success(let leaf):
                guard leaf.permissions.permits(access) else {
                    return fail(bank, stream, iova, access,
                                WalkFault(kind: .permission, level: leaf.level, duringWalk: false, ipa: ipa))
                }
                permissions.formIntersection(leaf.permissions)
                entry.hasIPA = true
                entry.ipaPage = ipa >> 12
                entry.s2Bank = Int16(s2.bank)
                entry.s2VMID = context(s2.bank).vmid
                entry.s2LeafShift = UInt8(leaf.leafShift)
                if !walked {
                    // No stage-1 walk: the entry has no ASID and spans the stage-2 mapping.
                    entry.leafShift = UInt8(leaf.leafShift)
                    entry.global = true
                    level = leaf.level
                }
                address = leaf.output
                walked = true
            }
        }
        guard address >> UInt64(configuration.outputAddressBits) == 0 else {
            return fail(bank, stream, iova, access, WalkFault(kind: .addressSize, level: level, duringWalk: false))
        }
        if walked {
            entry.paPage = address >> 12
            entry.permissions = permissions
            entry.level = UInt8(level)
            tlb.insert(entry)
        }
        return finish(bank: bank, stream: stream, iova: iova, access: access, physical: address,
                      permissions: permissions, level: level, ipa: entry.hasIPA ? entry.ipaPage << 12 | iova & 0xFFF : nil,
                      tlbHit: false,
                      mappingShift: !walked ? 12 : entry.hasIPA ? min(entry.leafShift, entry.s2LeafShift) : entry.leafShift,
                      reachShift: walked ? entry.leafShift : 12)
    }

    /// A translation from the TLB entry `e` that covers `iova`.
    @inline(__always)
    func finishHit(_ e: TLB.Entry, bank: Int, stream: StreamID, iova: UInt64, access: DMAAccess) -> Translation {
        finish(bank: bank, stream: stream, iova: iova, access: access,
               physical: e.paPage << 12 | iova & 0xFFF, permissions: e.permissions,
               level: Int(e.level), ipa: e.hasIPA ? e.ipaPage << 12 | iova & 0xFFF : nil, tlbHit: true,
               mappingShift: e.hasIPA ? min(e.leafShift, e.s2LeafShift) : e.leafShift,
               reachShift: e.leafShift)
    }

    /// The last checks on a translated address: permissions (for TLB hits) and the filter.
    @inline(__always)
    func finish(bank: Int, stream: StreamID, iova: UInt64, access: DMAAccess, physical: UInt64,
                        permissions: TLB.Permissions, level: Int, ipa: UInt64?, tlbHit: Bool,
                        mappingShift: UInt8, reachShift: UInt8) -> Translation {
        guard permissions.permits(access) else {
            return fail(bank, stream, iova, access, WalkFault(kind: .permission, level: level, duringWalk: false))
        }
        if let filter, !filter.permits(stream: stream, address: physical, kind: .data(write: access.isWrite)) {
            return fail(bank, stream, iova, access, WalkFault(kind: .ownership, level: level, duringWalk: false))
        }
        var t = Translation(outcome: .translated(physicalAddress: physical), contextBank: bank, tlbHit: tlbHit)
        t.mappingShift = mappingShift
        t.reachShift = reachShift
        t.effectiveAccess = access
        t.otherDirectionPermitted = permissions.permits(access.symmetricDifference(.write))
        return t
    }

    /// A speculative translation (protocol v1.1's DMA_PREFETCH): as `translate`, but a fault is recorded
    /// nowhere (no syndrome, no interrupt); the TLB may be filled, as a hardware prefetch fills it.
    public func probe(stream: StreamID, iova: UInt64, access: DMAAccess) -> Translation {
        recordsFaults[0] = false
        defer { recordsFaults[0] = true }
        return translate(stream: stream, iova: iova, access: access)
    }

    /// What the initiator of `t` (by `stream`) may cache of it (protocol v1.1's DMA_CACHED): the mapping's
    /// naturally aligned range, at most 2 MiB, when the stream's owner may reach every page of its output
    /// (else 4 KiB), and the directions both the permissions and the owner's stage-2 allow. Nil for a fault.
    public func extent(of t: Translation, stream: StreamID) -> TranslationExtent? {
        guard case .translated(let physical) = t.outcome, t.mappingShift >= 12 else { return nil }
        let access = t.effectiveAccess
        let other = access.symmetricDifference(.write)
        let otherOK = t.otherDirectionPermitted
            && filter?.permits(stream: stream, address: physical, kind: .data(write: other.isWrite)) != false
        var shift = min(t.mappingShift, TranslationExtent.maxSizeShift)
        if shift > 12, let filter {
            let size: UInt64 = 1 << UInt64(shift)
            let base = physical & ~(size - 1)
            if !filter.permitsAll(stream: stream, base: base, size: size, kind: .data(write: access.isWrite))
                || (otherOK && !filter.permitsAll(stream: stream, base: base, size: size, kind: .data(write: other.isWrite))) {
                shift = 12
            }
        }
        return TranslationExtent(sizeShift: shift, read: access.isWrite ? otherOK : true,
                                 write: access.isWrite ? true : otherOK, reachShift: t.reachShift)
    }

    func fail(_ bank: Int, _ stream: StreamID, _ iova: UInt64, _ access: DMAAccess,
                      _ f: WalkFault) -> Translation {
        recordContextFault(bank: bank, fault: f, stream: stream, iova: iova, access: access)
        return Translation(outcome: .fault(f.kind), contextBank: bank)
    }

    // MARK: Walk parameters

    /// Stage-1 parameters for `iova`: TTBR0 or TTBR1 by address range (T0SZ/T1SZ, EPDn, TGn).
    func stage1Parameters(_ bank: Int, iova: UInt64, nextStageBits: Int) -> Result<StageParameters, WalkFault> {
        let tcr = TCR(peek(.TCR, index: bank))
        let upper = iova >> 63 != 0
        let inputBits = min(64 - tcr.sizeOffset(upper: upper), configuration.upstreamBusBits)
        let inRange = upper ? (~iova) >> UInt64(inputBits) == 0 : iova >> UInt64(inputBits) == 0
        guard inRange, !tcr.walksDisabled(upper: upper) else {
            return .failure(WalkFault(kind: .translation, level: 0, duringWalk: false))
        }
        let granule = tcr.granuleShift(upper: upper)
        let pasize = StageParameters.physicalAddressBits(TCR2(peek(.TCR2, index: bank)).physicalSize)
        let ttbr = TTBR(peek(upper ? .TTBR1 : .TTBR0, index: bank))
        return .success(StageParameters(
            stage2: false, tableBase: ttbr.tableBase, granuleShift: granule,
            startLevel: StageParameters.startLevel(inputBits: inputBits, granuleShift: granule),
            inputBits: inputBits, outputBits: min(pasize, nextStageBits)).withAlignedTableBase())
    }

    /// Stage-2 parameters from the bank's VTCR (TCR) and VTTBR (TTBR0).
    func stage2Parameters(_ bank: Int) -> StageParameters {
        let vtcr = VTCR(peek(.TCR, index: bank))
        let granule = vtcr.granuleShift
        let sl0 = vtcr.startLevelField
        let start = sl0 == 3 ? -1 : (granule == 12 ? 2 - sl0 : 3 - sl0)
        let inputBits = min(64 - vtcr.sizeOffset, configuration.inputAddressBits)
        return StageParameters(
            stage2: true, tableBase: TTBR(peek(.TTBR0, index: bank)).tableBase, granuleShift: granule,
            startLevel: start, inputBits: inputBits,
            outputBits: min(StageParameters.physicalAddressBits(vtcr.physicalSize), configuration.outputAddressBits))
            .withAlignedTableBase()
    }
}
