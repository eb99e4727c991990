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

    /// Live IOTLB entries over every instance (the benchmark's load).
    public var tlbEntryCount: Int { instances.reduce(0) { $0 + $1.physical.tlbEntryCount } }
}
