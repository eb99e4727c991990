import SMMUModel

extension Hypervisor {
    /// Live IOTLB entries over every instance (the benchmark's load).
    public var tlbEntryCount: Int { instances.reduce(0) { $0 + $1.physical.tlbEntryCount } }
}
