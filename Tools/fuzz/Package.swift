// swift-tools-version:6.0
// A libFuzzer target over gradscope's HDF5 reader and layout detection.
// Build and run with ./run-fuzz.sh SECONDS (see README.md).
import PackageDescription

let package = Package(
    name: "gradscope-fuzz",
    dependencies: [
        // Named explicitly: the package identity otherwise comes from the checkout's directory name.
        .package(name: "gradscope", path: "../.."),
    ],
    targets: [
        // The declaration of libFuzzer's driver entry point.
        .target(name: "FuzzDriver"),
        .executableTarget(
            name: "gradscope-fuzz",
            dependencies: [
                "FuzzDriver",
                .product(name: "HDF5", package: "gradscope"),
                .product(name: "GradScope", package: "gradscope"),
            ]
        ),
    ],
    swiftLanguageModes: [.v6]
)
