import Foundation
import WireProtocol
import Yams

/// The daemon's configuration file (YAML, snake_case keys; see Config/tegra234.yaml for a commented example).
/// Decoding rejects unknown keys; `validate()` checks ranges and layout and names the key that is wrong.
public struct DaemonConfiguration: Sendable, Equatable {
    /// Which SMMU topology preset the daemon builds (`TopologyPreset.topology` is SMMUModel's `Topology`).
    public enum TopologyPreset: String, Sendable, Equatable, CaseIterable, Decodable {
        case tegra234
        case generic4k
        case qemuVirt = "qemu-virt"
    }

    /// A physical address range [base, base + size).
    public struct MemoryRange: Sendable, Equatable, Decodable {
        public var base: UInt64
        public var size: UInt64
        public init(base: UInt64, size: UInt64) { self.base = base; self.size = size }
        public var end: UInt64 { base &+ size }
        func overlaps(_ other: MemoryRange) -> Bool { base < other.end && other.base < end }
    }

    public struct Memory: Sendable, Equatable {
        /// The host's RAM; the host stage-2 starts out owning all of it.
        public var hostRAM: [MemoryRange]
        /// EL2's own pages (VM stage-2 tables); never the host's.
        public var hypervisorRAM: MemoryRange
        /// Extra DMA targets for host streams (an MSI doorbell such as a GICv2m frame).
        public var hostDMARanges: [MemoryRange]
    }

    /// Streams of one logical SMMU that the hypervisor keeps for itself.
    public struct HypervisorStreams: Sendable, Equatable {
        public var smmu: String
        public var streams: [UInt16]
    }

    /// The `hypervisor:` section: what EL2 keeps for itself.
    public struct HypervisorSection: Sendable, Equatable {
        /// Context banks per instance hidden from the host (the top of the range).
        public var reservedContextBanks: Int
        /// Stream match register groups per instance hidden from the host.
        public var reservedSMRs: Int
        public var hypervisorStreams: [HypervisorStreams]
    }

    public enum FinalizationMode: String, Sendable, Equatable, Decodable {
        /// Finalize `delayMilliseconds` after start (Linux's device_initcall_sync comes shortly after boot).
        case delay
        /// Finalize on an admin FINALIZE request.
        case manual
        /// Finalize on the host's own PROT_FINALIZE (pKVM's finalize_pkvm() in a guest kernel under QEMU), once;
        /// an admin FINALIZE still may. In the other modes a PROT_FINALIZE is DENIED and audited.
        case host
    }

    public struct Finalization: Sendable, Equatable {
        public var mode: FinalizationMode
        public var delayMilliseconds: Int
    }

    public struct Socket: Sendable, Equatable {
        public var path: String
        /// File mode of the socket (octal in the file: `0660`).
        public var mode: UInt32
    }

    /// Who may take a HELLO role. uid 0 always may.
    public struct RoleAllowList: Sendable, Equatable {
        public var uids: [UInt32]
        public var gids: [UInt32]
        public init(uids: [UInt32] = [], gids: [UInt32] = []) { self.uids = uids; self.gids = gids }
        /// True when the peer is root, or its uid or primary gid is listed.
        public func permits(_ peer: PeerCredentials) -> Bool {
            peer.uid == 0 || uids.contains(peer.uid) || gids.contains(peer.gid)
        }
    }

    /// Who may take each HELLO role (SO_PEERCRED against these lists).
    public struct Roles: Sendable, Equatable {
        public var host: RoleAllowList
        public var device: RoleAllowList
        public var admin: RoleAllowList
        public init(host: RoleAllowList = .init(), device: RoleAllowList = .init(), admin: RoleAllowList = .init()) {
            self.host = host
            self.device = device
            self.admin = admin
        }
        public func permits(_ role: Role, _ peer: PeerCredentials) -> Bool {
            switch role {
            case .host: host.permits(peer)
            case .device: device.permits(peer)
            case .admin: admin.permits(peer)
            }
        }
    }

    public struct Audit: Sendable, Equatable {
        /// Denial records written per second per (peer, rule) before further ones are only counted.
        public var burst: Int
        /// How often the counted ones are summarized (one record per (peer, rule), with the count).
        public var summaryIntervalMilliseconds: Int
        /// Records (full and summaries) written per second across all peers, so journald's own rate limit
        /// (10,000 per 30 s per service by default) never drops one: 31 times this stays under it.
        public var maxRecordsPerSecond: Int
    }

    /// What one connection, or all of them, may hold of the daemon's descriptors and memory (G8).
    public struct Limits: Sendable, Equatable {
        /// Open connections at most. At the cap the oldest connection that has not said HELLO makes room for a
        /// newcomer; when every open one has, the newcomer is closed at once.
        public var maxConnections: Int
        /// A connection that has not been greeted (accepted HELLO) this long after it was accepted is closed.
        public var helloTimeoutMilliseconds: Int
        /// Unsent output across all connections at most; past it the most stalled, largest holder is closed.
        public var maxBufferedOutput: Int
    }

    public var topology: TopologyPreset
    public var memory: Memory
    public var hypervisor: HypervisorSection
    public var finalization: Finalization
    public var socket: Socket
    public var roles: Roles
    public var audit: Audit
    public var limits: Limits
    /// Ping systemd's watchdog when the unit sets WatchdogSec.
    public var watchdog: Bool
    /// Survive restarts and crashes through systemd's fd store (the unit needs FileDescriptorStoreMax=).
    public var fdStore: Bool = false
    /// The memory controller's stream-ID windows (DaemonConfiguration+MemoryController.swift); nil: the topology's.
    public var memoryController: MemoryController?
    /// The MMIO trace (DaemonConfiguration+Trace.swift).
    public var trace = Trace()

    /// Reads, decodes and validates a configuration file.
    public static func load(path: String) throws(ConfigurationError) -> DaemonConfiguration {
        let text: String
        do {
            text = try String(contentsOfFile: path, encoding: .utf8)
        } catch {
            throw .unreadable(path: path, reason: (error as NSError).localizedDescription)
        }
        return try parse(yaml: text)
    }

    /// Decodes and validates YAML text.
    public static func parse(yaml: String) throws(ConfigurationError) -> DaemonConfiguration {
        let configuration: DaemonConfiguration
        do {
            configuration = try YAMLDecoder().decode(DaemonConfiguration.self, from: yaml)
        } catch let error as DecodingError {
            throw ConfigurationError.from(error)
        } catch let error as ConfigurationError {
            throw error
        } catch {
            throw .syntax(String(describing: error))
        }
        try configuration.validate()
        return configuration
    }
}
