// swift-tools-version:6.0
//
// smmu-hypd: an emulated pKVM hypervisor (EL2) owning ARM MMU-500 SMMUs, served over a Unix socket.
// The layers are modules; see docs/ARCHITECTURE.md for what each owns.
import PackageDescription

/// Release builds of the layers on the request path may skip Swift's run-time exclusivity checks: a TLS lookup per
/// class-property access, 17% of the daemon's instructions per request under pipelined load (README, "Performance").
/// Only when SMMU_RELEASE_FLAGS is set (scripts/install.sh, scripts/load-test.sh and the benchmark commands set it):
/// SwiftPM refuses `unsafeFlags` in a package used by version, so by default the libraries (SMMUClient among them)
/// carry none and can be another package's dependency. Debug builds, the tests and the fuzzers keep the checks.
let hotPath: [SwiftSetting] = Context.environment["SMMU_RELEASE_FLAGS"] == nil ? [] :
    [.unsafeFlags(["-enforce-exclusivity=unchecked"], .when(configuration: .release))]

let package = Package(
    name: "smmu-hypd",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "smmu-hypd", targets: ["smmu-hypd"]),
        .executable(name: "smmuctl", targets: ["smmuctl"]),
        .library(name: "SMMUClient", targets: ["SMMUClient"]),
        .library(name: "ArmSMMUDriver", targets: ["ArmSMMUDriver"]),
        .library(name: "SMMUModel", targets: ["SMMUModel"]),
        .library(name: "PKVM", targets: ["PKVM"]),
        .library(name: "WireProtocol", targets: ["WireProtocol"]),
        .library(name: "SMMUDaemon", targets: ["SMMUDaemon"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/jpsim/Yams", from: "6.2.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-system", from: "1.8.1"),
    ],
    targets: [
        // C interop: libsystemd (sd_notify, sd_listen_fds, sd_journal_sendv).
        .systemLibrary(
            name: "CSystemd",
            pkgConfig: "libsystemd",
            providers: [.apt(["libsystemd-dev"])]
        ),
        // The one errno type (swift-system's `Errno`) and the one helper turning a call's -1/errno into an error;
        // daemon, client and benchmark.
        .target(name: "POSIXCalls", dependencies: [.product(name: "SystemPackage", package: "swift-system")]),
        // Layer 1: the MMU-500 hardware, pure (no I/O, no clocks, no globals).
        .target(name: "SMMUModel", swiftSettings: hotPath),
        // Layers 2 and 3: pKVM's EL2 hypervisor (the class `Hypervisor`: ownership, lifecycle, hypercalls) and the
        // host's view of each SMMU instance with its trap rules (`HostedInstance`).
        .target(name: "PKVM", dependencies: ["SMMUModel"], swiftSettings: hotPath),
        // The wire contract (docs/protocol-v1.md), a pure codec.
        .target(name: "WireProtocol", swiftSettings: hotPath),
        // The daemon: Dispatch socket server, config, systemd, journald audit, request dispatch.
        .target(
            name: "SMMUDaemon",
            dependencies: [
                "SMMUModel", "PKVM", "WireProtocol", "CSystemd", "CSocketShims", "POSIXCalls",
                .product(name: "SystemPackage", package: "swift-system"),
                .product(name: "Yams", package: "Yams"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: hotPath
        ),
        // C helpers for sockets: SCM_RIGHTS fd passing (CMSG macros), SO_PEERCRED, accept4, epoll, eventfd, fstatfs,
        // memfds; client and daemon.
        .target(name: "CSocketShims", cSettings: [.define("_GNU_SOURCE")]),
        // The Linux arm-smmu driver's register sequences in Linux's offsets, over register ports.
        .target(name: "ArmSMMUDriver"),
        // A blocking client library for protocol v1; smmuctl and the tests use it.
        .target(
            name: "SMMUClient",
            dependencies: [
                "WireProtocol", "CSocketShims", "ArmSMMUDriver", "POSIXCalls",
                .product(name: "SystemPackage", package: "swift-system"),
            ]
        ),
        .executableTarget(
            name: "smmu-hypd",
            dependencies: [
                "SMMUDaemon",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .executableTarget(
            name: "smmuctl",
            dependencies: [
                "SMMUClient", "WireProtocol", "ArmSMMUDriver", "SMMUModel",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        // The benchmark: the socket floor, the daemon's round trips and throughput, DMA translation,
        // the Linux probe and the daemon's memory, in one table.
        .executableTarget(
            name: "smmu-bench",
            dependencies: [
                "SMMUModel", "PKVM", "WireProtocol", "SMMUClient", "SMMUDaemon", "ArmSMMUDriver", "POSIXCalls",
                "TestSupport",   // NotifyReceiver: a stand-in service manager for --ring-only's restart mode
                .product(name: "SystemPackage", package: "swift-system"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        // Test support: the driver's port onto a bare MMU-500 by offset, for the model's and the hypervisor's tests.
        .target(name: "ArmSMMUTestPorts", dependencies: ["SMMUModel", "ArmSMMUDriver"], path: "Tests/ArmSMMUTestPorts"),
        // Test support for every test target: SplitMix64, the repository root, temporary directories, polling, and
        // the real-daemon spawner (`DaemonChild`).
        .target(name: "TestSupport", dependencies: ["CSocketShims"], path: "Tests/TestSupport"),
        .testTarget(name: "ArmSMMUDriverTests", dependencies: ["ArmSMMUDriver"]),
        .testTarget(name: "SMMUModelTests", dependencies: ["SMMUModel", "ArmSMMUDriver", "ArmSMMUTestPorts", "TestSupport"]),
        .testTarget(name: "PKVMTests", dependencies: ["PKVM", "SMMUModel", "ArmSMMUDriver", "ArmSMMUTestPorts", "TestSupport"]),
        .testTarget(name: "WireProtocolTests", dependencies: ["WireProtocol"]),
        .testTarget(name: "SMMUClientTests", dependencies: ["SMMUClient", "WireProtocol", "CSocketShims", "ArmSMMUDriver", "TestSupport"]),
        .testTarget(name: "SMMUDaemonTests", dependencies: ["SMMUDaemon", "SMMUClient", "WireProtocol", "CSocketShims", "TestSupport"]),
    ]
)
