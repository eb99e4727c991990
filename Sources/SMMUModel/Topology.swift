/// Where MMU-500 instances sit in the physical address space, and which instances form one
/// logical SMMU (Tegra234 drives two instances as one, mirroring every write to both).

/// One MMU-500 register window.
public struct Window: Sendable, Equatable {
    public let name: String
    public let base: UInt64
    public let configuration: MMU500Configuration
    /// Index into `Topology.smmus`.
    public let logicalSMMU: Int

    public init(name: String, base: UInt64, configuration: MMU500Configuration, logicalSMMU: Int) {
        self.name = name
        self.base = base
        self.configuration = configuration
        self.logicalSMMU = logicalSMMU
    }

    public var size: UInt64 { configuration.windowSize }
    public func contains(_ address: UInt64) -> Bool { address >= base && address - base < size }
}

/// An SMMU as the device tree describes it: one node, one or two instances.
public struct LogicalSMMU: Sendable, Equatable {
    public let name: String
    /// Indices into `Topology.windows`, instance 0 first.
    public let windows: [Int]
    /// The DT `stream-match-mask` (0 when the node has none).
    public let streamMatchMask: UInt16

    public init(name: String, windows: [Int], streamMatchMask: UInt16) {
        self.name = name
        self.windows = windows
        self.streamMatchMask = streamMatchMask
    }
}

public struct Topology: Sendable, Equatable {
    public let windows: [Window]
    public let smmus: [LogicalSMMU]
    /// The memory controller whose stream-ID overrides feed these SMMUs (Tegra186 and later), if modelled.
    public var memoryController: MemoryControllerConfiguration?

    public init(windows: [Window], smmus: [LogicalSMMU], memoryController: MemoryControllerConfiguration? = nil) {
        self.windows = windows
        self.smmus = smmus
        self.memoryController = memoryController
    }

    /// Tegra234 (the `iommu@` nodes of Linux's arch/arm64/boot/dts/nvidia/tegra234.dtsi): niso1 (0x08000000, 0x07000000),
    /// iso (0x10000000), niso0 (0x12000000, 0x11000000), all with `stream-match-mask = <0x7f80>`; the memory
    /// controller's stream-ID windows at 0x02c00000 and 0x02c10000 (`memory-controller@2c00000`).
    public static let tegra234: Topology = {
        let c = MMU500Configuration.tegra234
        let windows = [
            Window(name: "niso1a", base: 0x0800_0000, configuration: c, logicalSMMU: 0),
            Window(name: "niso1b", base: 0x0700_0000, configuration: c, logicalSMMU: 0),
            Window(name: "iso", base: 0x1000_0000, configuration: c, logicalSMMU: 1),
            Window(name: "niso0a", base: 0x1200_0000, configuration: c, logicalSMMU: 2),
            Window(name: "niso0b", base: 0x1100_0000, configuration: c, logicalSMMU: 2),
        ]
        let smmus = [
            LogicalSMMU(name: "niso1", windows: [0, 1], streamMatchMask: 0x7F80),
            LogicalSMMU(name: "iso", windows: [2], streamMatchMask: 0x7F80),
            LogicalSMMU(name: "niso0", windows: [3, 4], streamMatchMask: 0x7F80),
        ]
        return Topology(windows: windows, smmus: smmus, memoryController: .tegra234)
    }()

    /// One generic 4 KiB-page MMU-500 (the Xilinx QEMU model's IDs) named "mmu500".
    public static func generic4K(base: UInt64) -> Topology {
        Topology(windows: [Window(name: "mmu500", base: base, configuration: .generic4K, logicalSMMU: 0)],
                 smmus: [LogicalSMMU(name: "mmu500", windows: [0], streamMatchMask: 0)])
    }

    /// One generic MMU-500 for a QEMU `virt` machine, "virt0" at 0x0b000000 (16 MiB, 64 KiB pages).
    public static let qemuVirt = Topology(
        windows: [Window(name: "virt0", base: 0x0B00_0000, configuration: .qemuVirt, logicalSMMU: 0)],
        smmus: [LogicalSMMU(name: "virt0", windows: [0], streamMatchMask: 0)])

    /// The window with this name.
    public func window(named name: String) -> Int? { windows.firstIndex { $0.name == name } }
}

/// Routes a physical address to (window, offset). Devices see offsets, never absolute addresses.
public struct Bus: Sendable {
    public let topology: Topology
    /// Windows sorted by base, for a binary search.
    private let sorted: [(base: UInt64, end: UInt64, window: Int)]

    public init(_ topology: Topology) {
        self.topology = topology
        sorted = topology.windows.enumerated()
            .map { (base: $0.element.base, end: $0.element.base + $0.element.size, window: $0.offset) }
            .sorted { $0.base < $1.base }
    }

    /// The window and offset of an access, nil unless the whole access lies inside one window.
    public func resolve(address: UInt64, width: AccessWidth) -> (window: Int, offset: UInt64)? {
        var lo = 0
        var hi = sorted.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if sorted[mid].base <= address { lo = mid + 1 } else { hi = mid }
        }
        guard lo > 0 else { return nil }
        let w = sorted[lo - 1]
        let (last, overflow) = address.addingReportingOverflow(UInt64(width.bytes))
        guard !overflow, address < w.end, last <= w.end else { return nil }
        return (w.window, address - w.base)
    }
}
