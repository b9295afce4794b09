import FuzzDriver
import GradScope
import HDF5

/// The names the images are opened under. libhdf5's in-memory driver still
/// opens the name as a path (and refuses the image if a file is there), and
/// treats two images open under one name as the same file: these names can
/// never exist (`/dev/null` is not a directory) and differ from each other.
enum FuzzNames {
    static let reader = "/dev/null/gradscope-fuzz-reader.h5"
    static let loader = "/dev/null/gradscope-fuzz-loader.h5"
}

/// Bounds on the work done for one input, so the fuzzer spends its time on
/// parsing rather than on arithmetic over large (valid) tensors.
enum FuzzLimits {
    /// Objects whose attributes are decoded.
    static let attributeObjects = 16
    /// Datasets opened and described directly through the HDF5 layer.
    static let datasets = 8
    /// Tensors measured per checkpoint.
    static let tensors = 4
    /// Largest tensor measured or read, in elements.
    static let elements = 1 << 16
}

/// The program's entry point. SwiftPM links an executable with `main` set to
/// this symbol (`<module>_main`), so it starts libFuzzer's driver itself.
@_cdecl("gradscope_fuzz_main")
public func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    var count = argc
    var arguments = argv
    return LLVMFuzzerRunDriver(&count, &arguments) { data, size in
        guard let data else { return 0 }
        return fuzz(data, size)
    }
}

/// One input: an HDF5 file image. Every Swift error is expected and caught;
/// only a crash, a hang or a sanitizer report is a finding.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let image = Array(UnsafeBufferPointer(start: data, count: size))
    exerciseReader(image)
    exerciseLoader(image)
    return 0
}

/// The HDF5 layer alone: open, walk, attributes, dataset metadata, small reads.
func exerciseReader(_ image: [UInt8]) {
    guard let file = try? HDF5File.open(image: image, name: FuzzNames.reader) else { return }
    guard let entries = try? file.walk() else { return }
    _ = try? file.attributes(at: "/")
    var attributeObjects = 0
    var datasets = 0
    for entry in entries {
        switch entry.kind {
        case .group where attributeObjects < FuzzLimits.attributeObjects:
            attributeObjects += 1
            if let attributes = try? file.attributes(at: entry.path) {
                for attribute in attributes { _ = attribute.value.description }
            }
        case .dataset where datasets < FuzzLimits.datasets:
            datasets += 1
            if attributeObjects < FuzzLimits.attributeObjects {
                attributeObjects += 1
                _ = try? file.attributes(at: entry.path)
            }
            guard let dataset = try? file.dataset(entry.path) else { continue }
            let info = dataset.info
            guard info.refusal(limits: file.options.limits, followLinks: false) == nil,
                  info.type.isNumeric, info.elementCount <= FuzzLimits.elements else { continue }
            if info.type.needsDouble {
                _ = try? dataset.read(as: Double.self, maxElements: FuzzLimits.elements)
            } else {
                _ = try? dataset.read(as: Float.self, maxElements: FuzzLimits.elements)
                var sum: Float = 0
                try? dataset.stream(as: Float.self, blockElements: 1000) { block, _ in
                    for value in block { sum += value }
                }
                _ = sum
            }
        default:
            continue
        }
    }
}

/// Layout detection and checkpoint loading, then statistics of the first few tensors.
func exerciseLoader(_ image: [UInt8]) {
    guard let checkpoints = try? CheckpointLoader.open(image: image, name: FuzzNames.loader) else { return }
    var options = MeasureOptions()
    options.threads = 1
    options.blockElements = 4096
    for checkpoint in checkpoints.prefix(2) {
        for tensor in checkpoint.checkpoint.tensors.prefix(FuzzLimits.tensors) where isSmall(tensor.shape) {
            _ = try? TensorMeasurer.stats(of: tensor, in: checkpoint, options: options)
        }
    }
}

/// Whether a shape has at most `FuzzLimits.elements` elements (no overflow, no negative dimension).
func isSmall(_ shape: [Int]) -> Bool {
    var count = 1
    for dimension in shape {
        guard dimension >= 0 else { return false }
        let (product, overflow) = count.multipliedReportingOverflow(by: dimension)
        if overflow || product > FuzzLimits.elements { return false }
        count = product
    }
    return true
}
