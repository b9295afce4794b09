// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "gradscope",
    platforms: [.macOS(.v13)],
    products: [
        .library(name: "HDF5", targets: ["HDF5"]),
        .library(name: "GradScope", targets: ["GradScope"]),
        .executable(name: "gradscope", targets: ["gradscope"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
    ],
    targets: [
        .systemLibrary(
            name: "CHDF5",
            pkgConfig: "hdf5",
            providers: [.apt(["libhdf5-dev"])]
        ),
        .target(
            name: "HDF5",
            dependencies: ["CHDF5"]
        ),
        .target(
            name: "GradScopeKernels"
        ),
        .target(
            name: "GradScope",
            dependencies: ["HDF5", "GradScopeKernels"]
        ),
        .executableTarget(
            name: "gradscope",
            dependencies: [
                "GradScope",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        // Fixtures both test targets use: temporary directories, seeded numbers, sample and corpus paths.
        .target(
            name: "TestSupport",
            path: "Tests/TestSupport"
        ),
        .testTarget(
            name: "HDF5Tests",
            dependencies: ["HDF5", "TestSupport"]
        ),
        .testTarget(
            name: "GradScopeTests",
            dependencies: ["GradScope", "HDF5", "GradScopeKernels", "TestSupport"],
            // The recorded command output SnapshotTests compares with, read from the source tree.
            exclude: ["Snapshots"]
        ),
    ],
    swiftLanguageModes: [.v6]
)
