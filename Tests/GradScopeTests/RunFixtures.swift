import Foundation
import HDF5
@testable import GradScope

/// A fresh temporary directory for one test's files, removed when released.
final class TemporaryDirectory {
    let url: URL

    init() throws {
        url = FileManager.default.temporaryDirectory.appendingPathComponent("gradscope-tests-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    }

    func path(_ name: String) -> String { url.appendingPathComponent(name).path }

    deinit { try? FileManager.default.removeItem(at: url) }
}

/// Deterministic normal samples (SplitMix64 + Box-Muller).
struct Noise {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    mutating func uniform() -> Double { Double(next() >> 11) / Double(1 << 53) }
    mutating func normal() -> Double {
        let u = max(uniform(), 1e-300), v = uniform()
        return (-2 * Foundation.log(u)).squareRoot() * cos(2 * .pi * v)
    }
    mutating func normals(_ count: Int, std: Double) -> [Double] { (0..<count).map { _ in normal() * std } }
}

/// Where the package's root is (for SampleCheckpoints/ and the built binary).
let packageRoot: URL = {
    var url = URL(fileURLWithPath: #filePath)
    for _ in 0..<3 { url.deleteLastPathComponent() }
    return url
}()

func samplePath(_ run: String) -> String { packageRoot.appendingPathComponent("SampleCheckpoints").appendingPathComponent(run).path }

/// A real file of the shared corpus, when present.
func corpusFile(_ relative: String) -> String? {
    let path = packageRoot.deletingLastPathComponent().appendingPathComponent("shared/corpus").appendingPathComponent(relative).path
    return FileManager.default.fileExists(atPath: path) ? path : nil
}

/// Writes a synthetic training run in the native layout: a PyTorch-style MLP
/// (`l0` ... `lN`, weights [out, in], biases), one file per save, whose
/// weights move by about `updateRatio` of their norm per step, with hooks
/// to plant each pathology.
struct SyntheticRun {
    var widths: [Int] = [16, 32, 32, 32, 4]
    var steps: [Int] = Array(stride(from: 0, through: 1000, by: 100))
    var updateRatio: Double = 1e-3
    var seed: UInt64 = 1
    var losses: ((Int, Int) -> Double)? = { index, count in 1.4 * Foundation.exp(-2.5 * Double(index) / Double(max(count - 1, 1))) + 0.1 }
    var saveGradients = true
    var saveInitialGradients = false
    /// Per-layer, per-save adjustments: (layer index, save index, weights, gradient) -> (weights, gradient).
    var weightHook: ((Int, Int, [Double], [Double]) -> ([Double], [Double]))?
    var frozenLayers: Set<Int> = []
    var initScale: (Int) -> Double = { fanIn in (2.0 / Double(fanIn)).squareRoot() }
    var activations: ((Int) -> [String: ([Double], [Int])])?
    var optimizerName = "Adam"

    func write(to directory: String) throws {
        var noise = Noise(state: seed)
        var weights: [[Double]] = []
        var biases: [[Double]] = []
        for layer in 0..<(widths.count - 1) {
            let fanIn = widths[layer], fanOut = widths[layer + 1]
            weights.append(noise.normals(fanIn * fanOut, std: initScale(fanIn)))
            biases.append([Double](repeating: 0, count: fanOut))
        }
        var accumulated: [[Double]] = weights.map { [Double](repeating: 0, count: $0.count) }
        for (index, step) in steps.enumerated() {
            let path = (directory as NSString).appendingPathComponent(String(format: "step_%06d.h5", step))
            let writer = try HDF5Writer(creating: path)
            try writer.setAttribute("format", .string("gradscope/1", .variableUTF8), at: "/")
            try writer.setAttribute("step", .int(Int64(step)), at: "/")
            try writer.setAttribute("framework", .string("pytorch", .variableUTF8), at: "/")
            try writer.setAttribute("optimizer", .string(optimizerName, .variableUTF8), at: "/")
            if let losses { try writer.setAttribute("loss", .double(losses(index, steps.count)), at: "/") }
            try writer.setAttribute("lr", .double(1e-3), at: "/")
            let elapsed = index == 0 ? 0 : step - steps[index - 1]
            for layer in 0..<weights.count {
                let fanIn = widths[layer], fanOut = widths[layer + 1]
                var gradient = noise.normals(weights[layer].count, std: 0.01)
                if frozenLayers.contains(layer) {
                    for i in gradient.indices { accumulated[layer][i] += gradient[i] }
                    gradient = accumulated[layer]
                } else if index > 0 {
                    let norm = weights[layer].reduce(0) { $0 + $1 * $1 }.squareRoot()
                    let stepSize = updateRatio * norm / Double(weights[layer].count).squareRoot() * Double(elapsed).squareRoot()
                    for i in weights[layer].indices { weights[layer][i] += noise.normal() * stepSize }
                    for i in biases[layer].indices { biases[layer][i] += noise.normal() * 1e-3 }
                }
                if let weightHook { (weights[layer], gradient) = weightHook(layer, index, weights[layer], gradient) }
                try writer.write("/weights/l\(layer).weight", weights[layer], shape: [fanOut, fanIn])
                try writer.write("/weights/l\(layer).bias", biases[layer], shape: [fanOut])
                try writer.setAttribute("in_optimizer", .int(frozenLayers.contains(layer) ? 0 : 1), at: "/weights/l\(layer).weight")
                if saveGradients && (index > 0 || saveInitialGradients) {
                    try writer.write("/gradients/l\(layer).weight", gradient, shape: [fanOut, fanIn])
                    try writer.write("/gradients/l\(layer).bias", noise.normals(fanOut, std: 0.01), shape: [fanOut])
                }
            }
            if let activations {
                for (name, (values, shape)) in activations(index) {
                    try writer.write("/activations/\(name)", values, shape: shape)
                }
            }
            writer.close()
        }
    }

    /// Writes the run and scans it.
    func scan(_ thresholds: Thresholds = Thresholds()) throws -> (ScanReport, TemporaryDirectory) {
        let directory = try TemporaryDirectory()
        try write(to: directory.url.path)
        let (report, _) = try Analysis.scan(directory.url.path, thresholds: thresholds)
        return (report, directory)
    }
}

extension ScanReport {
    func findings(_ kind: FindingKind) -> [Finding] { findings.filter { $0.kind == kind } }
    var warnings: [Finding] { findings.filter { $0.severity >= .warning } }
}
