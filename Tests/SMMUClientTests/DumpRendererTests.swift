import Testing

@testable import SMMUClient

@Suite struct DumpRendererTests {
    static let dump = """
        {"state": "finalized", "windows": [{"index": 0, "name": "niso1a", "base": "0x8000000", "registers": [
          {"register": "sCR0", "index": 0, "offset": "0x0", "virtual": "0x201c36", "physical": "0x201c36"},
          {"register": "SMR", "index": 3, "offset": "0x80c", "virtual": "0x7f80000e", "physical": "0x0"}]}],
         "streams": [{"smmu": "niso1", "stream": "0x10", "owner": "hypervisor"}], "vms": []}
        """

    @Test("each window becomes a register table with differences marked; the rest is pretty JSON")
    func documentedShape() {
        let text = DumpRenderer.render(Self.dump)
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        #expect(lines.first == "state: finalized")
        #expect(lines.contains("window 0 niso1a @ 0x8000000 (2 registers, 1 differ: *)"))
        let scr0 = lines.first { $0.hasPrefix("sCR0[0]") }
        let smr = lines.first { $0.hasPrefix("SMR[3]") }
        #expect(scr0?.split(separator: " ", omittingEmptySubsequences: true) == ["sCR0[0]", "0x0", "0x201c36", "0x201c36"])
        #expect(smr?.split(separator: " ", omittingEmptySubsequences: true) == ["SMR[3]", "0x80c", "0x7f80000e", "0x0", "*"])
        #expect(lines.contains("streams:") && lines.contains("vms:"))
        #expect(text.contains("\"owner\" : \"hypervisor\""))
    }

    @Test("text that is not JSON, or not an object, comes back as it is")
    func fallback() {
        #expect(DumpRenderer.render("not json") == "not json")
        #expect(DumpRenderer.render("[1,2]") == "[1,2]")
    }
}
