import Foundation
import PKVM
import SMMUModel

/// DUMP's JSON (docs/protocol-v1.md, DUMP): the hypervisor's snapshot in the document's words (snake_case keys,
/// addresses and register values in hex, "hidden" for what the host cannot read), kept under the protocol's
/// 64 KiB payload limit: when the full document is larger, register lists are cut (each window keeps its first
/// registers, the windows sharing the room) and `"truncated": true` says so; VM memory past the snapshot's limit
/// is counted in `memory_ranges_omitted`.
struct DumpDocument {
    let hypervisor: Hypervisor

    /// Bytes one register entry takes in the JSON, at most (`{"index":127,"offset":"0x7f058",...}`).
    static let registerEntryBytes = 160

    /// The document, encoded once in the usual case: the register lists are cut to what the limit can hold
    /// before encoding (round-robin over the windows), so the work is bounded by the limit, not by the state.
    func json(limit: Int) -> String {
        let snapshot = hypervisor.snapshot()
        var document = Document(snapshot)
        let all = document.windows.map(\.registers)
        for w in document.windows.indices { document.windows[w].registers = [] }
        document.truncated = true
        let rest = encode(document).utf8.count
        var keep = max(0, (limit - rest) / Self.registerEntryBytes)
        while true {
            var kept = all.map { _ in [Document.Register]() }
            var left = keep
            var round = 0
            while left > 0, all.contains(where: { $0.count > round }) {
                for w in all.indices where left > 0 && all[w].count > round {
                    kept[w].append(all[w][round])
                    left -= 1
                }
                round += 1
            }
            for w in document.windows.indices { document.windows[w].registers = kept[w] }
            document.truncated = kept.map(\.count) != all.map(\.count) || document.memory_ranges_omitted > 0
            let text = encode(document)
            if text.utf8.count <= limit { return text }
            guard keep > 0 else { return #"{"truncated":true}"# }
            keep /= 2
        }
    }

    private func encode(_ document: Document) -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let data = (try? encoder.encode(document)) ?? Data("{}".utf8)
        return String(decoding: data, as: UTF8.self)
    }

    /// The JSON's shape: what smmuctl's DumpRenderer and scripts read. Field names are the keys.
    struct Document: Encodable {
        struct Register: Encodable {
            var register: String
            var index: Int
            var offset: String
            var virtual: String
            var physical: String
        }
        struct Window: Encodable {
            var index: Int
            var name: String
            var smmu: String
            var base: String
            var host_context_banks: Int
            var host_smrs: Int
            var tlb_hits: Int
            var tlb_misses: Int
            var registers: [Register]
        }
        struct Stream: Encodable {
            var smmu: String
            var stream: String
            var owner: String
        }
        struct Memory: Encodable {
            var base: String
            var size: String
            var owner: String
        }
        struct VM: Encodable {
            var vm: UInt32
            var pages: Int
            var streams: [String]
            var stage2_root: String
        }
        var state: String
        var windows: [Window]
        var streams: [Stream]
        var memory: [Memory]
        var vms: [VM]
        var memory_ranges_omitted: Int
        var memory_controller: HypervisorSnapshot.MemoryControllerState?
        var truncated = false

        init(_ s: HypervisorSnapshot) {
            state = "\(s.state)"
            windows = s.windows.map { w in
                Window(index: w.index, name: w.name, smmu: w.smmu, base: hex(w.base),
                       host_context_banks: w.hostContextBanks, host_smrs: w.hostSMRs,
                       tlb_hits: w.tlb.hits, tlb_misses: w.tlb.misses,
                       registers: w.registers.map {
                           Register(register: registerNames[$0.location.name.rawValue], index: $0.location.index,
                                    offset: hex($0.offset), virtual: $0.virtual.map(hex) ?? "hidden",
                                    physical: hex($0.physical))
                       })
            }
            streams = s.streams.map { Stream(smmu: $0.smmu, stream: $0.stream.description, owner: $0.owner.description) }
            memory = s.memory.map { m in
                let owner = switch m.use {
                case .owned(let o): o.description
                case .hostDMAOnly: "host (DMA only)"
                }
                return Memory(base: hex(m.range.base), size: hex(m.range.size), owner: owner)
            }
            vms = s.vms.map { vm in
                VM(vm: vm.vm.rawValue, pages: vm.pages, streams: vm.streams.map { "\($0.smmu):\($0.stream)" },
                   stage2_root: hex(vm.stage2Root))
            }
            memory_ranges_omitted = s.memoryRangesOmitted
            memory_controller = s.memoryController
        }
    }
}

/// ARM names by table position, made once: interpolating an enum case reflects on it at every use.
private let registerNames = RegisterName.allCases.map { "\($0)" }
