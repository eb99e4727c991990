import Foundation
import PKVM
import SMMUModel
import WireProtocol

/// STATS: what a requester may know depends on its role. A host sees only what is its own (its requests, its
/// denials, its streams' DMA and faults, the connections); the admin sees everything, including protected VMs'
/// streams and the TLBs. A host that could read a VM's fault counts would learn what the VM's devices do.
extension Dispatcher {
    func statisticsJSON(for role: Role) -> String {
        var object = role == .admin ? adminStatistics() : hostStatistics()
        object["state"] = "\(hypervisor.lifecycle)"
        if let finalizedBy { object["finalized_by"] = finalizedBy.statistics }
        object["denials"] = hypervisor.statistics.denials
        object["denials_by_rule"] = Dictionary(uniqueKeysWithValues: hypervisor.statistics.denialsByRule.map { ($0.key.rawValue, $0.value) })
        object["connections"] = connectionsObject()
        object["audit"] = auditCounters()
        if let mc = memoryControllerStatistics(for: role) { object["memory_controller"] = mc }
        let data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])) ?? Data("{}".utf8)
        return String(decoding: data, as: UTF8.self)
    }

    /// The host's own: its requests (by host connections), and DMA by host streams only.
    private func hostStatistics() -> [String: Any] {
        let host = hypervisor.statistics.hostDMA
        return [
            "operations": stats.byOpcode(of: [.host]),
            "operations_total": stats.totalOperations(role: .host),
            "faults_by_kind": Self.named(host.faultsByKind),
            "dma_translations": host.translations,
        ]
    }

    /// Everything: every role's requests, DMA of every stream (split by owner), framing errors, the TLBs.
    private func adminStatistics() -> [String: Any] {
        let h = hypervisor.statistics
        return [
            "operations": stats.byOpcode(),
            "operations_by_role": Dictionary(uniqueKeysWithValues: DispatcherStatistics.everyone.map {
                ($0.map { "\($0)" } ?? "ungreeted", stats.byOpcode(of: [$0]))
            }),
            "operations_total": stats.totalOperations,
            "faults_by_kind": Self.named(h.faultsByKind),
            "dma_translations": h.dmaTranslations,
            "dma_by_owner": [
                "host": ["translations": h.hostDMA.translations, "faults_by_kind": Self.named(h.hostDMA.faultsByKind)],
                "vm_and_hypervisor": ["translations": h.foreignDMA.translations,
                                      "faults_by_kind": Self.named(h.foreignDMA.faultsByKind)],
            ],
            "framing": ["malformed": stats.malformed, "unsupported": stats.unsupported],
            "tlb": ["hits": hypervisor.tlbStatistics.hits, "misses": hypervisor.tlbStatistics.misses],
        ]
    }

    private func connectionsObject() -> [String: Int] {
        let c = server?.connectionCounters ?? ConnectionCounters()
        return ["open": stats.connectionsOpen, "opened": stats.connectionsOpened, "refused": Int(c.refused),
                "evicted_ungreeted": Int(c.evicted), "hello_timeouts": Int(c.helloTimeouts),
                "closed_for_output": Int(c.closedForOutput), "closed_for_unread_events": Int(c.closedForUnreadEvents)]
    }

    private static func named(_ faults: [DMAFault: Int]) -> [String: Int] {
        Dictionary(uniqueKeysWithValues: faults.map { ("\($0.key)", $0.value) })
    }
}
