import SMMUModel

/// The byte layout of a hypervisor state image (docs/state-image.md, "Layout"): the envelope (magic, version,
/// length, CRC-32), then the fields in the order of `HypervisorStateImage`'s declaration.
extension HypervisorStateImage {
    /// The whole image, sealed.
    public func encoded() -> [UInt8] {
        var w = StateImageWriter.sealable(capacity: 64 << 10 + (memory?.count ?? 0) * 4104)
        w.array(configuration.lines) { w, l in
            w.string(l.key)
            w.string(l.value)
        }
        w.u32(lifecycle.rawValue)
        w.u64(translationEpoch)
        w.u32(nextVM)
        Self.encode(statistics, into: &w)
        w.array(instances) { w, i in
            Self.encode(i.physical, into: &w)
            Self.encode(i.virtual, into: &w)
            w.array(i.reservedSMRUse) { w, r in
                w.int(r.slot)
                w.u16(r.stream.rawValue)
                Self.encode(r.owner, into: &w)
            }
            w.array(i.reservedContextBankUse) { w, r in
                w.int(r.bank)
                w.u32(r.vm.rawValue)
            }
        }
        w.bool(memoryController != nil)
        if let mc = memoryController {
            w.array(mc.overrides) { $0.u32($1) }
            w.array(mc.securities) { $0.u32($1) }
            w.u32(mc.bypassConfig)
            w.u32(mc.interruptMask)
            w.array(mc.hostLocked) { $0.bool($1) }
        }
        w.array(streamOwners) { w, owners in
            w.array(owners) { w, o in
                w.u16(o.stream.rawValue)
                Self.encode(o.owner, into: &w)
            }
        }
        w.array(pageCodes) { w, runs in
            w.array(runs) { w, r in
                w.u32(r.code)
                w.int(r.count)
            }
        }
        w.array(freeHypervisorPages) { w, r in
            w.u64(r.first)
            w.int(r.count)
            w.bool(r.descending)
        }
        w.array(vms) { w, vm in
            w.u32(vm.handle.rawValue)
            w.u64(vm.stage2Root)
            w.u64Array(vm.tablePages)
            w.array(vm.streams) { w, s in
                w.int(s.smmu)
                w.u16(s.stream.rawValue)
            }
            w.array(vm.contextBanks) { w, b in
                w.int(b.smmu)
                w.int(b.bank)
            }
        }
        w.array(sharedMappings) { w, m in
            w.u64(m.range.base)
            w.u64(m.range.size)
            w.u64(m.file.device)
            w.u64(m.file.inode)
            w.u64(m.file.offset)
            w.u64(m.file.size)
        }
        w.bool(memory != nil)
        if let memory {
            w.array(memory) { w, page in
                w.u64(page.address)
                w.raw(page.bytes)
            }
        }
        return w.sealed(magic: Self.magic, version: Self.formatVersion)
    }

    /// Decodes an image: every field checked for what it can say on its own (counts, enumerations, page sizes); what
    /// needs the configuration is checked by `Hypervisor.restore`. Never traps, whatever the bytes.
    public init(decoding bytes: some Collection<UInt8>) throws(StateImageError) {
        try self.init(reading: try StateImageEnvelope.open(bytes, magic: Self.magic, version: Self.formatVersion))
    }

    /// Decodes a body without its envelope (no magic, version, length or checksum to check): the fuzz target's way
    /// to reach the fields without computing a CRC-32 of the whole body twice per input (sealing, then opening).
    @_spi(Fuzzing)
    public init(decodingBody body: [UInt8]) throws(StateImageError) {
        try self.init(reading: StateImageReader(body))
    }

    private init(reading reader: StateImageReader) throws(StateImageError) {
        var r = reader
        configuration = ConfigurationFingerprint(lines: try r.array(minimumSize: 16) { r throws(StateImageError) in
            ConfigurationFingerprint.Line(key: try r.string(), value: try r.string())
        })
        let at = r.offset
        guard let lifecycle = LifecycleState(rawValue: try r.u32()) else {
            throw .corrupt(reason: "byte \(at): no lifecycle state \(r.bytes[at])")
        }
        self.lifecycle = lifecycle
        translationEpoch = try r.u64()
        nextVM = try r.u32()
        statistics = try Self.decodeStatistics(&r)
        instances = try r.array(minimumSize: 64) { r throws(StateImageError) in
            InstanceImage(
                physical: try Self.decodeMMU500(&r), virtual: try Self.decodeMMU500(&r),
                reservedSMRUse: try r.array(minimumSize: 11) { r throws(StateImageError) in
                    ReservedSMR(slot: try r.int(), stream: StreamID(try r.u16()), owner: try Self.decodeOwner(&r))
                },
                reservedContextBankUse: try r.array(minimumSize: 12) { r throws(StateImageError) in
                    ReservedBank(bank: try r.int(), vm: VMHandle(rawValue: try r.u32()))
                })
        }
        if try r.bool() {
            memoryController = MemoryControllerImage(
                overrides: try r.array(minimumSize: 4) { r throws(StateImageError) in try r.u32() },
                securities: try r.array(minimumSize: 4) { r throws(StateImageError) in try r.u32() },
                bypassConfig: try r.u32(), interruptMask: try r.u32(),
                hostLocked: try r.array { r throws(StateImageError) in try r.bool() })
        } else {
            memoryController = nil
        }
        streamOwners = try r.array(minimumSize: 8) { r throws(StateImageError) in
            try r.array(minimumSize: 3) { r throws(StateImageError) in
                StreamOwner(stream: StreamID(try r.u16()), owner: try Self.decodeOwner(&r))
            }
        }
        pageCodes = try r.array(minimumSize: 8) { r throws(StateImageError) in
            try r.array(minimumSize: 12) { r throws(StateImageError) in CodeRun(code: try r.u32(), count: try r.int()) }
        }
        freeHypervisorPages = try r.array(minimumSize: 17) { r throws(StateImageError) in
            PageRun(first: try r.u64(), count: try r.int(), descending: try r.bool())
        }
        vms = try r.array(minimumSize: 36) { r throws(StateImageError) in
            VMImage(handle: VMHandle(rawValue: try r.u32()), stage2Root: try r.u64(),
                    tablePages: try r.u64Array(),
                    streams: try r.array(minimumSize: 10) { r throws(StateImageError) in
                        AssignedStream(smmu: try r.int(), stream: StreamID(try r.u16()))
                    },
                    contextBanks: try r.array(minimumSize: 16) { r throws(StateImageError) in
                        AssignedBank(smmu: try r.int(), bank: try r.int())
                    })
        }
        sharedMappings = try r.array(minimumSize: 48) { r throws(StateImageError) in
            SharedMappingImage(range: PhysicalRange(base: try r.u64(), size: try r.u64()),
                               file: SharedFileRange(device: try r.u64(), inode: try r.u64(), offset: try r.u64(),
                                                     size: try r.u64()))
        }
        if try r.bool() {
            let size = Int(Ownership.pageSize)
            memory = try r.array(minimumSize: 8 + size) { r throws(StateImageError) in
                MemoryPage(address: try r.u64(), bytes: Array(try r.raw(size)))
            }
        } else {
            memory = nil
        }
        guard r.isAtEnd else { throw .corrupt(reason: "\(r.bytes.count - r.offset) bytes left after the last field") }
    }

    // MARK: Parts

    static func encode(_ owner: Owner, into w: inout StateImageWriter) {
        switch owner {
        case .host: w.u8(0)
        case .hypervisor: w.u8(1)
        case .vm(let vm):
            w.u8(2)
            w.u32(vm.rawValue)
        }
    }

    static func decodeOwner(_ r: inout StateImageReader) throws(StateImageError) -> Owner {
        let at = r.offset
        switch try r.u8() {
        case 0: return .host
        case 1: return .hypervisor
        case 2:
            let handle = try r.u32()
            guard handle >= 1, handle <= Ownership.maxVMHandle else { throw .corrupt(reason: "byte \(at): VM handle \(handle)") }
            return .vm(VMHandle(rawValue: handle))
        case let tag: throw .corrupt(reason: "byte \(at): no owner kind \(tag)")
        }
    }

    static func encode(_ m: MMU500StateImage, into w: inout StateImageWriter) {
        w.u64Array(m.registers)
        w.array(m.tlbEntries) { w, e in
            w.int(e.slot)
            w.u64(e.vaPage)
            w.u64(e.paPage)
            w.u64(e.ipaPage)
            w.u16(UInt16(bitPattern: e.bank))
            w.u16(UInt16(bitPattern: e.s2Bank))
            w.u16(e.vmid)
            w.u16(e.s2VMID)
            w.u16(e.asid)
            w.bool(e.global)
            w.bool(e.hasIPA)
            w.u8(e.permissions)
            w.u8(e.level)
            w.u8(e.leafShift)
            w.u8(e.s2LeafShift)
        }
        w.int(m.tlbHits)
        w.int(m.tlbMisses)
        w.int(m.directVAInvalidations)
        w.int(m.scannedVAInvalidations)
    }

    static func decodeMMU500(_ r: inout StateImageReader) throws(StateImageError) -> MMU500StateImage {
        MMU500StateImage(
            registers: try r.u64Array(),
            tlbEntries: try r.array(minimumSize: 48) { r throws(StateImageError) in
                TLBEntryImage(slot: try r.int(), vaPage: try r.u64(), paPage: try r.u64(), ipaPage: try r.u64(),
                              bank: Int16(bitPattern: try r.u16()), s2Bank: Int16(bitPattern: try r.u16()),
                              vmid: try r.u16(), s2VMID: try r.u16(), asid: try r.u16(), global: try r.bool(),
                              hasIPA: try r.bool(), permissions: try r.u8(), level: try r.u8(), leafShift: try r.u8(),
                              s2LeafShift: try r.u8())
            },
            tlbHits: try r.int(), tlbMisses: try r.int(), directVAInvalidations: try r.int(),
            scannedVAInvalidations: try r.int())
    }

    static func encode(_ s: HypervisorStatistics, into w: inout StateImageWriter) {
        w.array(s.denialsByRule.sorted { $0.key.rawValue < $1.key.rawValue }) { w, e in
            w.string(e.key.rawValue)
            w.int(e.value)
        }
        for counters in [s.hostDMA, s.foreignDMA] {
            w.int(counters.translations)
            w.array(counters.faultsByKind.sorted { "\($0.key)" < "\($1.key)" }) { w, e in
                w.string("\(e.key)")
                w.int(e.value)
            }
        }
        for v in [s.deferred, s.hostReads, s.hostWrites, s.memoryControllerReads, s.memoryControllerWrites,
                  s.memoryControllerDMA] { w.int(v) }
    }

    static func decodeStatistics(_ r: inout StateImageReader) throws(StateImageError) -> HypervisorStatistics {
        var s = HypervisorStatistics()
        for _ in 0..<(try r.count(minimumSize: 16)) {
            let at = r.offset
            guard let rule = TrapRule(rawValue: try r.string()) else { throw .corrupt(reason: "byte \(at): no such trap rule") }
            s.denialsByRule[rule] = try r.int()
        }
        func counters(_ r: inout StateImageReader) throws(StateImageError) -> HypervisorStatistics.DMACounters {
            var c = HypervisorStatistics.DMACounters()
            c.translations = try r.int()
            for _ in 0..<(try r.count(minimumSize: 16)) {
                let at = r.offset
                let name = try r.string()
                guard let fault = DMAFault.allCases.first(where: { "\($0)" == name }) else {
                    throw .corrupt(reason: "byte \(at): no DMA fault \"\(name)\"")
                }
                c.faultsByKind[fault] = try r.int()
            }
            return c
        }
        s.hostDMA = try counters(&r)
        s.foreignDMA = try counters(&r)
        s.deferred = try r.int()
        s.hostReads = try r.int()
        s.hostWrites = try r.int()
        s.memoryControllerReads = try r.int()
        s.memoryControllerWrites = try r.int()
        s.memoryControllerDMA = try r.int()
        return s
    }
}
