import Testing
@testable import SMMUModel

@Suite("Topology presets, the bus, Tegra instance pairs")
struct TopologyTests {
    @Test func tegraWindowsInOrder() {
        let t = Topology.tegra234
        #expect(t.windows.map(\.name) == ["niso1a", "niso1b", "iso", "niso0a", "niso0b"])
        #expect(t.windows.map(\.base) == [0x0800_0000, 0x0700_0000, 0x1000_0000, 0x1200_0000, 0x1100_0000])
        #expect(t.windows.allSatisfy { $0.size == 0x100_0000 })
        #expect(t.smmus.map(\.name) == ["niso1", "iso", "niso0"])
        #expect(t.smmus.map(\.windows) == [[0, 1], [2], [3, 4]])
        #expect(t.smmus.allSatisfy { $0.streamMatchMask == 0x7F80 })
        for (i, w) in t.windows.enumerated() { #expect(t.smmus[w.logicalSMMU].windows.contains(i)) }
    }

    @Test func busRoutesToWindowAndOffset() throws {
        let bus = Bus(.tegra234)
        // smmu_niso1 instance 0: CB0 at 0x08800000, CB127 FSR at 0x08FF0058 (arm-smmu.h's ARM_SMMU_CB(): numpage + n pages in).
        let cb0 = try #require(bus.resolve(address: 0x0880_0000, width: .word))
        #expect(cb0.window == 0 && cb0.offset == MMU500Configuration.tegra234.offset(of: .SCTLR, index: 0))
        let fsr = try #require(bus.resolve(address: 0x08FF_0058, width: .word))
        #expect(fsr.window == 0 && fsr.offset == MMU500Configuration.tegra234.offset(of: .FSR, index: 127))
        let b = try #require(bus.resolve(address: 0x0700_0024, width: .word))
        #expect(b.window == 1 && b.offset == 0x24)
        let iso = try #require(bus.resolve(address: 0x10FF_FFF8, width: .doubleword))
        #expect(iso.window == 2 && iso.offset == 0xFF_FFF8)
        #expect(bus.resolve(address: 0x1100_0000, width: .word)?.window == 4)
        #expect(bus.resolve(address: 0x1200_0000, width: .word)?.window == 3)
        // Outside every window, and straddling a window's end.
        #expect(bus.resolve(address: 0x06FF_FFFC, width: .word) == nil)
        #expect(bus.resolve(address: 0x10FF_FFFC, width: .doubleword) == nil)
        #expect(bus.resolve(address: 0x1300_0000, width: .word) == nil)
        #expect(bus.resolve(address: .max - 3, width: .doubleword) == nil)
    }

    @Test func genericAndVirtPresets() {
        let g = Topology.generic4K(base: 0xFD80_0000)
        #expect(g.windows.count == 1 && g.windows[0].name == "mmu500" && g.windows[0].size == 0x2_0000)
        let bus = Bus(g)
        #expect(bus.resolve(address: 0xFD81_0000, width: .word)?.offset == MMU500Configuration.generic4K.offset(of: .SCTLR))
        #expect(bus.resolve(address: 0xFD82_0000, width: .word) == nil)
        let v = Topology.qemuVirt
        #expect(v.windows[0].name == "virt0" && v.windows[0].base == 0x0B00_0000 && v.windows[0].size == 16 << 20)
        #expect(Bus(v).resolve(address: 0x0BFF_FFFC, width: .word)?.window == 0)
    }

    /// The NVIDIA impl writes every register to both instances, in order (`nvidia_smmu_write_reg` in
    /// drivers/iommu/arm/arm-smmu/arm-smmu-nvidia.c):
    /// programmed alike, they translate alike and fault alike.
    @Test func tegraPairProgrammedAliketranslatesAlike() throws {
        let memory = try MemoryMap(regions: [(Machine.ramBase, Machine.ramSize)])
        let t = Topology.tegra234
        let pair = t.smmus[0].windows.map { MMU500(configuration: t.windows[$0].configuration, memory: memory) }
        let bus = Bus(t)
        let pt = try PageTableBuilder(memory: memory, stage: .stage1, tablePool: Machine.ramBase..<(Machine.ramBase + (1 << 20)))
        try pt.map(0x10_0000, to: Machine.ramBase + (8 << 20), size: 0x1000)
        // The mirrored driver writes go to absolute addresses of instance 0 and 1.
        for (i, smmu) in pair.enumerated() {
            let base = t.windows[t.smmus[0].windows[i]].base
            let d = Driver(smmu: smmu)
            d.reset()
            d.attachStage1(bank: 2, ttbr0: pt.root)
            d.route(smr: 0, stream: 0x02, mask: 0x7F80, toBank: 2)
            let routed = try #require(bus.resolve(address: base + d.offset(.SCTLR, 2), width: .word))
            #expect(routed.window == t.smmus[0].windows[i])
        }
        for iova: UInt64 in [0x10_0010, 0x20_0000] {
            let results = pair.map { $0.translate(stream: StreamID(2), iova: iova, access: .read) }
            #expect(results[0] == results[1])
        }
        #expect(pair[0].translate(stream: StreamID(2), iova: 0x10_0010, access: .read).physicalAddress == Machine.ramBase + (8 << 20) + 0x10)
        #expect(pair.map { $0.peek(.FSR, index: 2) } == [0x2, 0x2])
        #expect(pair.map { $0.peek(.FAR, index: 2) } == [0x20_0000, 0x20_0000])
    }
}
