import Foundation
import PKVM
import SMMUModel
import Testing
import WireProtocol
@testable import SMMUDaemon

/// G8 for DUMP: whatever state a host built, the answer is one frame of valid JSON, and what did not fit is
/// said (`truncated`, `memory_ranges_omitted`), never silently dropped.
@Suite struct DumpBoundTests {
    @Test func aFullStateStillDumpsInOneFrameAndSaysWhatWasLeftOut() throws {
        let hostRAM = PhysicalRange(base: 0x8000_0000, size: 256 << 20)
        let policy = HypervisorPolicy(topology: .tegra234, hostRAM: [hostRAM],
                                      hypervisorRAM: PhysicalRange(base: 0x7F00_0000, size: 4 << 20))
        let memory = try MemoryMap(regions: [(hostRAM.base, hostRAM.size), (0x7F00_0000, 4 << 20)])
        let hv = try Hypervisor(policy: policy, memory: memory, audit: CollectingAuditSink())
        #expect(hv.finalize())
        let client = ClientIdentity(name: "dump-test")
        // Every host bank of every instance programmed, so every window has thousands of registers to show.
        for (w, window) in hv.windows.enumerated() {
            let c = policy.topology.windows[w].configuration
            for bank in 0..<Int(window.contextBanks) {
                for (name, value) in [(RegisterName.TCR, UInt64(0x0080_2010)), (.MAIR0, 0xF404_FF44), (.TTBR0, 0x8100_0000)] {
                    _ = hv.hostWrite(address: window.base + c.offset(of: name, index: bank), value: value,
                                     width: name == .TTBR0 ? .doubleword : .word, client: client)
                }
            }
        }
        // 16 VMs of 256 pages each, every other page: 4,096 separate ranges.
        for n in 0..<UInt64(16) {
            let vm = try #require(hv.vmCreate(client: client).value)
            for p in 0..<UInt64(256) {
                let base = 0x8800_0000 + (n * 256 + p) * 0x2000
                #expect(hv.vmDonate(vm, range: PhysicalRange(base: base, size: 0x1000), client: client).value != nil)
            }
        }
        let dispatcher = Dispatcher(hypervisor: hv)
        final class Sink: ServerHandle { func send(_ bytes: [UInt8], to connection: ConnectionID) {} }
        let session = dispatcher.makeSession(connection: ConnectionID(rawValue: 1), peer: PeerCredentials(pid: 1, uid: 0, gid: 0),
                                             server: Sink())
        var output: [UInt8] = []
        var fds: [Int32] = []
        let bytes = Request.hello(HelloRequest(role: .admin, name: "adm")).encoded(tag: 1) + Request.dump.encoded(tag: 2)
        _ = bytes.withUnsafeBytes { session.receive($0, fds: &fds, output: &output) }
        let dump = try #require(responseFrames(output).last)
        #expect(dump.0.statusCode == .ok && dump.0.tag == 2)
        #expect(dump.1.count <= Int(FrameHeader.maxPayloadLength))
        let object = try #require(try JSONSerialization.jsonObject(with: Data(dump.1)) as? [String: Any])
        #expect(object["truncated"] as? Bool == true)
        #expect(object["memory_ranges_omitted"] as? Int == 16 * 256 - 256)
        let vms = try #require(object["vms"] as? [[String: Any]])
        #expect(vms.count == 16 && vms.allSatisfy { $0["pages"] as? Int == 256 }, "page counts stay exact")
        let windows = try #require(object["windows"] as? [[String: Any]])
        #expect(windows.count == 5 && windows.allSatisfy { !(($0["registers"] as? [Any]) ?? []).isEmpty },
                "every window keeps some registers")
    }
}
