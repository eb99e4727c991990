/// The Tegra186+ memory controller's stream-ID side (layer 1, pure): per memory client an override
/// register (bits 7:0, the stream ID the SMMU sees) and a security register (bit 8 = use the override,
/// bit 16 = write access disabled), in the MC's `sid` window; and the broadcast window's
/// `MC_SMMU_BYPASS_CONFIG`, which decides whether the passthrough stream ID goes around the SMMUs.
///
/// Sources: Linux `drivers/memory/tegra/tegra186.c` (`tegra186_mc_client_sid_override`), `tegra234.c`
/// (`tegra234_mc_clients[]`), TF-A `memctrl_v2` (`MC_SMMU_BYPASS_CONFIG`).

/// One memory client that has a stream-ID override, as Linux's `tegra234_mc_clients[]` lists it.
public struct MemoryControllerClient: Sendable, Equatable, Hashable {
    /// Linux's client name ("sdmmcrab").
    public var name: String
    /// The client ID (`TEGRA234_MEMORY_CLIENT_*`, what a device tree's `interconnects` names).
    public var id: UInt16
    /// The logical SMMU the client's transactions go to (a `LogicalSMMU.name` of the topology).
    public var smmu: String
    /// The client's own stream ID (`.sid`): what the boot firmware programs, what the engine drives when the
    /// override is off, and the stream whose owner owns the client.
    public var sid: UInt8
    /// Offset of the override register in the `sid` window; the security register is `security`.
    public var overrideOffset: UInt32
    public var securityOffset: UInt32

    public init(name: String, id: UInt16, smmu: String, sid: UInt8, override: UInt32, security: UInt32? = nil) {
        self.name = name
        self.id = id
        self.smmu = smmu
        self.sid = sid
        overrideOffset = override
        securityOffset = security ?? override + 4
    }
}

/// Where the MC sits and which clients it has.
public struct MemoryControllerConfiguration: Sendable, Equatable {
    /// Each window is 64 KiB.
    public static let windowSize: UInt64 = 0x1_0000
    /// `TEGRA234_SID_PASSTHROUGH`.
    public static let passthroughSID: UInt8 = 0x7F

    /// The `sid` window (override and security registers).
    public var sidBase: UInt64
    /// The `broadcast` window (channel registers; `MC_SMMU_BYPASS_CONFIG` at 0x1820).
    public var broadcastBase: UInt64
    public var clients: [MemoryControllerClient]
    /// Policy: whether the passthrough stream ID (0x7F, routed around the SMMUs by the bypass configuration) may be
    /// written by the host as a host route. Off by default: such DMA reaches physical memory with no SMMU on its way.
    public var passthroughIsHost: Bool

    public init(sidBase: UInt64, broadcastBase: UInt64, clients: [MemoryControllerClient], passthroughIsHost: Bool = false) {
        self.sidBase = sidBase
        self.broadcastBase = broadcastBase
        self.clients = clients
        self.passthroughIsHost = passthroughIsHost
    }

    /// The bases of both windows, `sid` first.
    public var windowBases: [UInt64] { [sidBase, broadcastBase] }

    /// Whether the 64 KiB window at `window` overlaps [base, base + size).
    public static func window(at window: UInt64, overlaps base: UInt64, size: UInt64) -> Bool {
        window < base &+ size && base < window &+ windowSize
    }

    /// The offset of an access lying entirely inside the 64 KiB window at `window`.
    static func offset(of address: UInt64, width: AccessWidth, inWindowAt window: UInt64) -> UInt64? {
        let (last, overflow) = address.addingReportingOverflow(UInt64(width.bytes))
        guard !overflow, address >= window, last <= window &+ windowSize else { return nil }
        return address - window
    }

    /// The client with this client ID.
    public func client(id: UInt16) -> Int? { clients.firstIndex { $0.id == id } }
    /// The client with this name.
    public func client(named name: String) -> Int? { clients.firstIndex { $0.name == name } }
}

/// Which MC window an access falls in.
public enum MemoryControllerWindow: String, Sendable, Equatable {
    case sid
    case broadcast
}

/// A register of the MC as the model decodes it.
public enum MemoryControllerRegister: Sendable, Equatable, CustomStringConvertible {
    /// Client n's stream-ID override (`MC_SID_STREAMID_OVERRIDE_CONFIG_*`).
    case override(Int)
    /// Client n's security configuration (`MC_SID_STREAMID_SECURITY_CONFIG_*`).
    case security(Int)
    /// `MC_INTSTATUS` (broadcast 0x00): no MC interrupt is modelled, reads 0, W1C.
    case interruptStatus
    /// `MC_INTMASK` (broadcast 0x04), the one register Linux's MC probe writes: plain storage.
    case interruptMask
    /// `MC_SMMU_BYPASS_CONFIG` (broadcast 0x1820): locked by the boot firmware.
    case bypassConfig
    /// Anything else: reads as zero, writes ignored.
    case reserved

    public var description: String {
        switch self {
        case .override(let n): "MC.OVERRIDE[\(n)]"
        case .security(let n): "MC.SECURITY[\(n)]"
        case .interruptStatus: "MC_INTSTATUS"
        case .interruptMask: "MC_INTMASK"
        case .bypassConfig: "MC_SMMU_BYPASS_CONFIG"
        case .reserved: "MC.reserved"
        }
    }
}

/// Where a client's transactions go, as the MC's registers say.
public enum MemoryControllerRoute: Sendable, Equatable {
    /// To the client's SMMU with this stream ID.
    case stream(StreamID)
    /// Around every SMMU (the passthrough stream ID under `MC_SMMU_BYPASS_CONFIG`): raw physical addresses.
    case aroundSMMU
}

/// The MC's stream-ID registers, as the hardware holds them.
public final class MemoryController {
    public enum Security {
        /// Use the override register's stream ID instead of the engine's own.
        public static let override: UInt32 = 1 << 8
        /// Write access disabled: the client's override and security registers ignore writes.
        public static let writeDisabled: UInt32 = 1 << 16
        /// The bits the model implements; the rest read as zero.
        public static let implemented: UInt32 = override | writeDisabled
    }
    public enum Override {
        /// MC_SID_STREAMID_OVERRIDE_MASK.
        public static let mask: UInt32 = 0xFF
    }
    public enum Bypass {
        public static let offset: UInt64 = 0x1820
        public static let controlMask: UInt32 = 0x3
        /// Every transaction bypasses the TBUs.
        public static let bypassAll: UInt32 = 0
        /// Only the passthrough stream ID bypasses the TBUs (what TF-A programs).
        public static let bypassPassthroughStreamID: UInt32 = 2
        /// Nothing bypasses the TBUs.
        public static let bypassNone: UInt32 = 3
        /// The register is locked against further writes.
        public static let writeAccessLocked: UInt32 = 1 << 31
        /// The boot firmware's value (TF-A `MC_SMMU_BYPASS_CONFIG_SETTINGS`).
        public static let bootValue: UInt32 = writeAccessLocked | bypassPassthroughStreamID
    }
    public static let interruptStatusOffset: UInt64 = 0x00
    public static let interruptMaskOffset: UInt64 = 0x04

    public let configuration: MemoryControllerConfiguration
    public private(set) var overrides: [UInt32]
    public private(set) var securities: [UInt32]
    public private(set) var bypassConfig: UInt32 = Bypass.bootValue
    public private(set) var interruptMask: UInt32 = 0
    /// Register offset -> (client, is security), for decoding.
    private let byOffset: [UInt32: (client: Int, security: Bool)]

    public init(_ configuration: MemoryControllerConfiguration) {
        self.configuration = configuration
        overrides = configuration.clients.map { UInt32($0.sid) }
        securities = configuration.clients.map { _ in Security.override }
        var table: [UInt32: (Int, Bool)] = [:]
        for (i, c) in configuration.clients.enumerated() {
            table[c.overrideOffset] = (i, false)
            table[c.securityOffset] = (i, true)
        }
        byOffset = table
    }

    /// The state the boot firmware leaves: every client's override is its own stream ID with the override on
    /// and writes allowed; the bypass configuration lets only the passthrough stream ID around the TBUs, locked.
    public func reset() {
        overrides = configuration.clients.map { UInt32($0.sid) }
        securities = configuration.clients.map { _ in Security.override }
        bypassConfig = Bypass.bootValue
        interruptMask = 0
    }

    /// Puts the registers in a saved state (docs/state-image.md); returns why not, changing nothing, when the values
    /// are not ones this MC could hold (wrong client count, bits it does not implement).
    public func restore(overrides: [UInt32], securities: [UInt32], bypassConfig: UInt32, interruptMask: UInt32) -> String? {
        guard overrides.count == configuration.clients.count, securities.count == configuration.clients.count else {
            return "\(overrides.count) override and \(securities.count) security registers for \(configuration.clients.count) clients"
        }
        guard overrides.allSatisfy({ $0 & ~Override.mask == 0 }), securities.allSatisfy({ $0 & ~Security.implemented == 0 }),
              bypassConfig & ~(Bypass.controlMask | Bypass.writeAccessLocked) == 0 else {
            return "a memory-controller register holds bits the MC does not implement"
        }
        self.overrides = overrides
        self.securities = securities
        self.bypassConfig = bypassConfig
        self.interruptMask = interruptMask
        return nil
    }

    /// The window and offset of an access, nil when it is in neither MC window.
    public func resolve(address: UInt64, width: AccessWidth) -> (window: MemoryControllerWindow, offset: UInt64)? {
        typealias C = MemoryControllerConfiguration
        if let o = C.offset(of: address, width: width, inWindowAt: configuration.sidBase) { return (.sid, o) }
        if let o = C.offset(of: address, width: width, inWindowAt: configuration.broadcastBase) { return (.broadcast, o) }
        return nil
    }

    /// The register an access names; nil for a 64-bit or misaligned access (MC registers are 32 bits wide).
    public func decode(window: MemoryControllerWindow, offset: UInt64, width: AccessWidth) -> MemoryControllerRegister? {
        guard width == .word, offset % 4 == 0 else { return nil }
        switch window {
        case .sid:
            guard let entry = byOffset[UInt32(truncatingIfNeeded: offset)], offset <= UInt64(UInt32.max) else { return .reserved }
            return entry.security ? .security(entry.client) : .override(entry.client)
        case .broadcast:
            switch offset {
            case Self.interruptStatusOffset: return .interruptStatus
            case Self.interruptMaskOffset: return .interruptMask
            case Bypass.offset: return .bypassConfig
            default: return .reserved
            }
        }
    }

    /// What the register holds.
    public func read(_ register: MemoryControllerRegister) -> UInt32 {
        switch register {
        case .override(let n): overrides[n]
        case .security(let n): securities[n]
        case .interruptStatus, .reserved: 0
        case .interruptMask: interruptMask
        case .bypassConfig: bypassConfig
        }
    }

    /// Stores a value as the hardware would, with no policy (the hypervisor's programming, or an access it
    /// accepted). A client whose security register has write access disabled ignores writes to both of its
    /// registers, and so does a locked bypass configuration.
    public func store(_ register: MemoryControllerRegister, _ value: UInt32) {
        switch register {
        case .override(let n):
            guard securities[n] & Security.writeDisabled == 0 else { return }
            overrides[n] = value & Override.mask
        case .security(let n):
            guard securities[n] & Security.writeDisabled == 0 else { return }
            securities[n] = value & Security.implemented
        case .interruptStatus, .reserved: break
        case .interruptMask: interruptMask = value
        case .bypassConfig:
            guard bypassConfig & Bypass.writeAccessLocked == 0 else { return }
            bypassConfig = value & (Bypass.controlMask | Bypass.writeAccessLocked)
        }
    }

    /// The stream ID client n's transactions carry: the override when its security register says so, else the
    /// engine's own (modelled as the client's configured stream ID).
    public func streamID(ofClient n: Int) -> UInt8 {
        securities[n] & Security.override != 0
            ? UInt8(truncatingIfNeeded: overrides[n]) : configuration.clients[n].sid
    }

    /// Where client n's transactions go: around the SMMUs when the bypass configuration says so for its stream ID.
    public func route(ofClient n: Int) -> MemoryControllerRoute { route(of: streamID(ofClient: n)) }

    /// Where a transaction carrying this stream ID goes under the current bypass configuration.
    public func route(of sid: UInt8) -> MemoryControllerRoute {
        switch bypassConfig & Bypass.controlMask {
        case Bypass.bypassAll: return .aroundSMMU
        case Bypass.bypassPassthroughStreamID where sid == MemoryControllerConfiguration.passthroughSID: return .aroundSMMU
        default: return .stream(StreamID(UInt16(sid)))
        }
    }
}
