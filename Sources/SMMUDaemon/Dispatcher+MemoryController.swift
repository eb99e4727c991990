import PKVM
import SMMUModel
import WireProtocol

extension Dispatcher {
    /// MC_DMA: a DMA by a memory-controller client, through the stream its override produces (docs/protocol-v1.md).
    func answerMemoryControllerDMA(_ d: MCDMARequest, answer: (Status, ResponsePayload) -> Void) {
        switch hypervisor.memoryControllerDMA(client: d.client, iova: d.iova, access: DMAAccess(d.flags)) {
        case .failure:
            answer(.invalid, .none)
        case .success(let r):
            let route: UInt32
            switch r.route {
            case .aroundSMMU: route = MCDMAResult.aroundSMMU
            case .smmu(let w, let s): route = MCDMAResult.route(window: UInt32(w), stream: UInt32(s.rawValue))
            }
            switch r.result {
            case .ok(let pa): answer(.ok, .mcDMA(MCDMAResult(physicalAddress: pa, fault: 0, route: route)))
            case .fault(let f):
                answer(.fault, .mcDMA(MCDMAResult(physicalAddress: 0, fault: FaultCode(f).rawValue, route: route)))
                if !events.isEmpty, case .smmu(let w, _) = r.route { events.publishChanges(window: w, to: server) }
            case let other: answer(Status(other), .none)
            }
        }
    }
}

extension Dispatcher {
    /// STATS' `memory_controller` object: the host's accesses to the MC windows (every role), and for the admin the
    /// DMAs issued by MC client (their translations and faults also count in the DMA counters, by stream owner).
    func memoryControllerStatistics(for role: Role) -> [String: Int]? {
        guard hypervisor.memoryController != nil else { return nil }
        let h = hypervisor.statistics
        var out = ["reads": h.memoryControllerReads, "writes": h.memoryControllerWrites]
        if role == .admin { out["dma"] = h.memoryControllerDMA }
        return out
    }
}
