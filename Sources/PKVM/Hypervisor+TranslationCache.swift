import SMMUModel

extension Hypervisor {
    /// A speculative translation for DMA_PREFETCH: what `stream` would get at `iova`, and what it may cache of
    /// it; nil when it would fault. Nothing is recorded or counted, no fault reaches anyone.
    public func probeDMA(window w: Int, stream raw: UInt32, iova: UInt64,
                         access: DMAAccess) -> (physicalAddress: UInt64, extent: TranslationExtent)? {
        guard instances.indices.contains(w), raw <= UInt32(instances[w].idMask) else { return nil }
        let instance = instances[w]
        let stream = StreamID(UInt16(raw))
        let t = instance.physical.probe(stream: stream, iova: iova, access: access)
        guard let pa = t.physicalAddress, let extent = instance.physical.extent(of: t, stream: stream) else { return nil }
        return (pa, extent)
    }

    /// Inside `speculating`: `probeDMA` of consecutive pages from `iova` (up, or down from it) in one last-level
    /// table, answered together (`MMU500.probeLeafRun`): `each` gets each page and what `probeDMA` answers for it,
    /// and returns false to stop. Returns how many pages it answered; 0: probe the first one with `probeDMA`.
    public func probeDMARun(window w: Int, stream raw: UInt32, iova: UInt64, access: DMAAccess, down: Bool, limit: Int,
                            _ each: (_ page: UInt64, _ answer: (physicalAddress: UInt64, extent: TranslationExtent)?) -> Bool)
        -> Int {
        guard instances.indices.contains(w), raw <= UInt32(instances[w].idMask) else { return 0 }
        let smmu = instances[w].physical
        let stream = StreamID(UInt16(raw))
        return smmu.probeLeafRun(stream: stream, iova: iova, access: access, down: down, limit: limit) { page, t in
            guard let pa = t.physicalAddress, let extent = smmu.extent(of: t, stream: stream) else { return each(page, nil) }
            return each(page, (pa, extent))
        }
    }

    /// Runs `body` (a run of `probeDMA`s by `stream` through window `w`) with that instance's walk cache on: one
    /// request's probes of neighbouring pages then share the table descriptors above their leaves.
    public func speculating<T>(window w: Int, stream raw: UInt32, _ body: () -> T) -> T {
        guard instances.indices.contains(w), raw <= UInt32(instances[w].idMask) else { return body() }
        return instances[w].physical.speculating(stream: StreamID(UInt16(raw)), body)
    }

    /// Live IOTLB entries over every instance (the benchmark's load).
    public var tlbEntryCount: Int { instances.reduce(0) { $0 + $1.physical.tlbEntryCount } }
}
