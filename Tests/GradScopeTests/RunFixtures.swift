import ElementTypes
import Foundation
import GradScopeDiagnosis
import GradScopeMeasurement
import GradScopeModel
import GradScopeRendering
import GradScopeSources
import GradScopeStatistics
import HDF5
import HDF5Writer
import TestSupport

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
    /// The `module` attribute of each saved activation, by name (the layer it is the output of).
    var activationModules: [String: String] = [:]
    var optimizerName = "Adam"
    /// The name of each layer (`l0`, `l1`, ... by default).
    var layerName: @Sendable (Int) -> String = { "l\($0)" }
    /// Layers whose bias gradient is exactly zero at every save.
    var zeroBiasGradients: Set<Int> = []
    /// Also save Adam's second moment (`/optimizer/exp_avg_sq`, a running average of g²) of every parameter.
    var saveSecondMoments = false

    func write(to directory: String) throws {
        var noise = SplitMix64(state: seed)
        var weights: [[Double]] = []
        var biases: [[Double]] = []
        for layer in 0..<(widths.count - 1) {
            let fanIn = widths[layer], fanOut = widths[layer + 1]
            weights.append(noise.normals(fanIn * fanOut, std: initScale(fanIn)))
            biases.append([Double](repeating: 0, count: fanOut))
        }
        var accumulated: [[Double]] = weights.map { [Double](repeating: 0, count: $0.count) }
        var moments: [[Double]] = weights.map { [Double](repeating: 0, count: $0.count) }
        var biasMoments: [[Double]] = biases.map { [Double](repeating: 0, count: $0.count) }
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
                let name = layerName(layer)
                try writer.write("/weights/\(name).weight", weights[layer], shape: [fanOut, fanIn])
                try writer.write("/weights/\(name).bias", biases[layer], shape: [fanOut])
                try writer.setAttribute("in_optimizer", .int(frozenLayers.contains(layer) ? 0 : 1), at: "/weights/\(name).weight")
                let biasGradient = zeroBiasGradients.contains(layer) ? [Double](repeating: 0, count: fanOut) : noise.normals(fanOut, std: 0.01)
                if saveGradients && (index > 0 || saveInitialGradients) {
                    try writer.write("/gradients/\(name).weight", gradient, shape: [fanOut, fanIn])
                    try writer.write("/gradients/\(name).bias", biasGradient, shape: [fanOut])
                }
                if saveSecondMoments && index > 0 {
                    for i in moments[layer].indices { moments[layer][i] = 0.999 * moments[layer][i] + 0.001 * gradient[i] * gradient[i] }
                    for i in biasMoments[layer].indices {
                        biasMoments[layer][i] = 0.999 * biasMoments[layer][i] + 0.001 * biasGradient[i] * biasGradient[i]
                    }
                    try writer.write("/optimizer/exp_avg_sq/\(name).weight", moments[layer], shape: [fanOut, fanIn])
                    try writer.write("/optimizer/exp_avg_sq/\(name).bias", biasMoments[layer], shape: [fanOut])
                }
            }
            if let activations {
                for (name, (values, shape)) in activations(index) {
                    try writer.write("/activations/\(name)", values, shape: shape)
                    if let module = activationModules[name] {
                        try writer.setAttribute("module", .string(module, .variableUTF8), at: "/activations/\(name)")
                    }
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
