import FuzzDriver
import GradScope
import HDF5

#if canImport(Glibc)
import Glibc
#endif

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

/// What the inputs are, from `GRADSCOPE_FUZZ_TARGET`: `hdf5` (the default) HDF5 file images;
/// `safetensors` safetensors files; `torch` torch.save zip archives; `pickle` the `data.pkl` of a
/// torch.save archive, wrapped here in a well-formed archive with 16 float storages, so that
/// every mutation reaches the pickle reader rather than the zip directory.
enum FuzzTarget: String {
    case hdf5, safetensors, torch, pickle

    static let current: FuzzTarget = {
        guard let name = getenv("GRADSCOPE_FUZZ_TARGET").map({ String(cString: $0) }), !name.isEmpty else { return .hdf5 }
        guard let target = FuzzTarget(rawValue: name) else {
            let message = Array("GRADSCOPE_FUZZ_TARGET must be hdf5, safetensors, torch or pickle, not \(name)\n".utf8)
            _ = message.withUnsafeBytes { write(2, $0.baseAddress, $0.count) }
            exit(2)
        }
        return target
    }()

    /// The file the inputs of the file targets are written to (tmpfs when there is one), one per
    /// process, removed after each input.
    static let path: String = {
        let directory = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : (getenv("TMPDIR").map { String(cString: $0) } ?? "/tmp")
        let name = current == .safetensors ? "input.safetensors" : "input.pt"
        return "\(directory)/gradscope-fuzz-\(getpid())-\(name)"
    }()
}

/// One input. Every Swift error is expected and caught; only a crash, a hang or a
/// sanitizer report is a finding.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let image = Array(UnsafeBufferPointer(start: data, count: size))
    switch FuzzTarget.current {
    case .hdf5:
        exerciseReader(image)
        exerciseLoader(image)
    case .safetensors, .torch:
        exerciseFile(image)
    case .pickle:
        exerciseFile(TorchArchiveImage.wrapping(pickle: image))
    }
    return 0
}

/// A safetensors file or torch.save archive, written to ``FuzzTarget/path`` and read as the
/// commands read one: recognised and opened by `CheckpointLoader`, its first tensors measured,
/// and listed as `ls` lists it.
func exerciseFile(_ bytes: [UInt8]) {
    let path = FuzzTarget.path
    let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
    guard fd >= 0 else { return }
    var written = 0
    bytes.withUnsafeBytes { buffer in
        while written < buffer.count {
            let count = write(fd, buffer.baseAddress! + written, buffer.count - written)
            if count <= 0 { break }
            written += count
        }
    }
    close(fd)
    guard written == bytes.count else { return }
    if let checkpoints = try? CheckpointLoader.open(path) { measureFirstTensors(checkpoints) }
    if let listing = try? FileListing.read(path, withAttributes: true) { _ = listing.items.count }
    // Each of libFuzzer's fork jobs is a new process with its own file: none is left behind.
    unlink(path)
}

/// A stored zip archive as torch.save writes one: `archive/data.pkl`, `archive/byteorder`, and
/// storages `archive/data/0` ... `15` of 64 float32 values each.
enum TorchArchiveImage {
    static let storages: [[UInt8]] = (0..<16).map { index in
        (0..<64).flatMap { value -> [UInt8] in
            let bits = Float(Double(value - 32) / Double(index + 3)).bitPattern
            return [UInt8(bits & 0xFF), UInt8(bits >> 8 & 0xFF), UInt8(bits >> 16 & 0xFF), UInt8(bits >> 24)]
        }
    }

    static func le16(_ value: Int) -> [UInt8] { [UInt8(value & 0xFF), UInt8(value >> 8 & 0xFF)] }
    static func le32(_ value: Int) -> [UInt8] { le16(value & 0xFFFF) + le16(value >> 16 & 0xFFFF) }

    static func wrapping(pickle: [UInt8]) -> [UInt8] {
        var entries: [(String, [UInt8])] = [("archive/data.pkl", pickle), ("archive/byteorder", Array("little".utf8))]
        for (index, storage) in storages.enumerated() { entries.append(("archive/data/\(index)", storage)) }
        var out: [UInt8] = []
        var central: [UInt8] = []
        for (name, bytes) in entries {
            let nameBytes = Array(name.utf8)
            let offset = out.count
            let head = le16(20) + le16(0) + le16(0) + le16(0) + le16(0) + le32(0)
            out += le32(0x0403_4b50) + head + le32(bytes.count) + le32(bytes.count) + le16(nameBytes.count) + le16(0) + nameBytes + bytes
            central +=
                le32(0x0201_4b50) + le16(20) + head + le32(bytes.count) + le32(bytes.count) + le16(nameBytes.count) + le16(0)
                + le16(0) + le16(0) + le16(0) + le32(0) + le32(offset) + nameBytes
        }
        let start = out.count
        out += central
        out += le32(0x0605_4b50) + le16(0) + le16(0) + le16(entries.count) + le16(entries.count) + le32(central.count) + le32(start) + le16(0)
        return out
    }
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
    measureFirstTensors(checkpoints)
}

/// Statistics of the first small tensors of the first two checkpoints, on one thread in small blocks.
func measureFirstTensors(_ checkpoints: [OpenCheckpoint]) {
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
