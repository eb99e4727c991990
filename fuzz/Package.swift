// swift-tools-version:6.0
// libFuzzer targets, kept out of the main package so normal builds never see the fuzzer flags.
// Build: swift build -c release --sanitize=fuzzer --sanitize=address   (see fuzz/run.sh)
import PackageDescription

let package = Package(
    name: "smmu-hypd-fuzz",
    dependencies: [.package(name: "smmu-hypd", path: "..")],
    targets: [
        .target(
            name: "FuzzSupport",
            dependencies: [
                .product(name: "PKVM", package: "smmu-hypd"),
                .product(name: "SMMUModel", package: "smmu-hypd"),
            ]
        ),
        .executableTarget(
            name: "FuzzProtocol",
            dependencies: [
                "FuzzSupport",
                "CFuzzShims",
                .product(name: "SMMUDaemon", package: "smmu-hypd"),
                .product(name: "PKVM", package: "smmu-hypd"),
                .product(name: "SMMUModel", package: "smmu-hypd"),
                .product(name: "WireProtocol", package: "smmu-hypd"),
            ]
        ),
        // memfd_create and seals for Swift, and ASan's defaults for every target (sanitizer_options.c).
        .target(name: "CFuzzShims"),
        .executableTarget(
            name: "FuzzMemory",
            dependencies: [
                "FuzzSupport",
                "CFuzzShims",
                .product(name: "SMMUDaemon", package: "smmu-hypd"),
                .product(name: "PKVM", package: "smmu-hypd"),
                .product(name: "SMMUModel", package: "smmu-hypd"),
                .product(name: "WireProtocol", package: "smmu-hypd"),
            ]
        ),
        .executableTarget(
            name: "FuzzStateImage",
            dependencies: [
                "FuzzSupport",
                "CFuzzShims",
                .product(name: "PKVM", package: "smmu-hypd"),
                .product(name: "SMMUModel", package: "smmu-hypd"),
            ]
        ),
        .executableTarget(
            name: "FuzzTrap",
            dependencies: [
                "FuzzSupport",
                "CFuzzShims",
                .product(name: "PKVM", package: "smmu-hypd"),
                .product(name: "SMMUModel", package: "smmu-hypd"),
            ]
        ),
    ]
)
