// swift-tools-version:6.0
import PackageDescription

// gradscope runs on Linux: it calls Glibc directly (pread and fstat on checkpoints, poll on its
// workers' pipes, setrlimit to cap their memory); the package builds and is tested on Linux only.
//
// The targets are layers, each depending only on the ones below it, so that the compiler rejects a
// backward arrow (README, "Layout of this repository"):
//
//   CHDF5, CDeflate -> HDF5 -> GradScopeSources -> GradScopeMeasurement -> GradScopeDiagnosis -> GradScopeRendering -> gradscope
//   ElementTypes -> GradScopeModel -> GradScopeSources;  CMapGuard -> GradScopeSources;  GradScopeKernels -> GradScopeStatistics -> GradScopeMeasurement
let package = Package(
    name: "gradscope",
    products: [
        .library(name: "HDF5", targets: ["HDF5"]),
        .library(name: "GradScope", targets: ["GradScope"]),
        .executable(name: "gradscope", targets: ["gradscope"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2")
    ],
    targets: [
        // libhdf5 as a Swift module (a C shim for the macros Swift cannot import).
        .systemLibrary(
            name: "CHDF5",
            pkgConfig: "hdf5",
            providers: [.apt(["libhdf5-dev"])]
        ),
        // libdeflate as a Swift module: inflates gzip-compressed HDF5 chunks on several threads.
        .systemLibrary(
            name: "CDeflate",
            pkgConfig: "libdeflate",
            providers: [.apt(["libdeflate-dev"])]
        ),
        // Element types of stored tensors and where contiguous ones lie: plain values, no library.
        .target(name: "ElementTypes"),
        // A safe, read-only layer over libhdf5. Knows nothing about machine learning.
        .target(name: "HDF5", dependencies: ["CHDF5", "CDeflate", "ElementTypes"]),
        // The statistics' SIMD chunk kernels in C (baseline, AVX2 and AVX-512 versions).
        .target(name: "GradScopeKernels"),
        // What training saved, as plain values: tensors and their roles, step metadata, skipped items.
        .target(name: "GradScopeModel", dependencies: ["ElementTypes"]),
        // Guards read-only file mappings against their file shrinking (a SIGBUS handler, in C).
        .target(name: "CMapGuard"),
        // Checkpoint sources: the HDF5 layouts (native, Keras 3, legacy Keras, generic), runs on disk, loss logs.
        .target(name: "GradScopeSources", dependencies: ["GradScopeModel", "HDF5", "CMapGuard"]),
        // Streaming statistics, drift and sketches: numbers only, no files and no model.
        .target(name: "GradScopeStatistics", dependencies: ["GradScopeKernels"]),
        // The scan engine: measures every tensor of every save, in this process or in isolated workers.
        .target(name: "GradScopeMeasurement", dependencies: ["GradScopeSources", "GradScopeStatistics"]),
        // Detectors, findings and the reports' data, from measurements alone.
        .target(name: "GradScopeDiagnosis", dependencies: ["GradScopeMeasurement"]),
        // Text, CSV, JSON and HTML: pure functions of the diagnosis.
        .target(name: "GradScopeRendering", dependencies: ["GradScopeDiagnosis"]),
        // Every layer as one import.
        .target(
            name: "GradScope",
            dependencies: [
                "GradScopeRendering", "GradScopeDiagnosis", "GradScopeMeasurement", "GradScopeSources",
                "GradScopeStatistics", "GradScopeModel", "ElementTypes", "HDF5",
            ]
        ),
        .executableTarget(
            name: "gradscope",
            dependencies: [
                "GradScope",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        // Test-only: writes HDF5 files for fixtures (the library itself never writes).
        .target(name: "HDF5Writer", dependencies: ["HDF5", "CHDF5", "CDeflate"], path: "Tests/HDF5Writer"),
        // Fixtures both test targets use: temporary directories, seeded numbers, sample and corpus paths.
        .target(name: "TestSupport", path: "Tests/TestSupport"),
        .testTarget(name: "HDF5Tests", dependencies: ["HDF5", "HDF5Writer", "TestSupport"]),
        .testTarget(
            name: "GradScopeTests",
            dependencies: ["GradScope", "HDF5", "HDF5Writer", "GradScopeKernels", "TestSupport"],
            // The recorded command output SnapshotTests compares with, read from the source tree.
            exclude: ["Snapshots"]
        ),
    ],
    swiftLanguageModes: [.v6]
)
