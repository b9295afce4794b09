import Foundation
import ElementTypes
import GradScopeModel
import GradScopeSources
import GradScopeStatistics
import GradScopeMeasurement

/// What a detector produced: its findings, or why it could not look.
public struct DetectorOutcome: Sendable {
    public var findings: [Finding]
    /// Set when the detector lacked the data it needs.
    public var notChecked: String?

    public init(findings: [Finding] = [], notChecked: String? = nil) {
        self.findings = findings
        self.notChecked = notChecked
    }

    package static func lacking(_ reason: String) -> DetectorOutcome { DetectorOutcome(notChecked: reason) }
}

/// One kind of training pathology, found from measurements alone (no detector reads files).
public protocol Detector: Sendable {
    var kind: FindingKind { get }
    func detect(_ run: RunMeasurements, thresholds: Thresholds) -> DetectorOutcome
}

/// The detectors, in the order their findings are reported.
public let allDetectors: [any Detector] = [
    NanInfDetector(), ExplodingGradientDetector(), LossPlateauDetector(), FrozenDetector(), ZeroGradientDetector(),
    DeadUnitsDetector(), CollapsingDetector(), VanishingGradientDetector(), UpdateRatioDetector(), PoorInitDetector(),
]

/// Helpers the detectors share.
package enum DetectorSupport {
    /// Running statistics that are not trained by gradient descent.
    package static func isRunningStatistic(_ name: String) -> Bool {
        let lower = name.lowercased()
        return lower.contains("moving_mean") || lower.contains("moving_variance") || lower.contains("running_mean")
            || lower.contains("running_var") || lower.contains("num_batches_tracked")
    }

    /// Embedding tables: their gradients are sparse (rows of tokens not in the batch are zero) by design.
    package static func isEmbedding(_ name: String) -> Bool {
        let lower = name.lowercased()
        if lower.contains("embed") { return true }
        let parts = lower.split(whereSeparator: { $0 == "." || $0 == "/" || $0 == "_" })
        // `user_factors`, `item_factors`: the embedding tables of matrix factorisation.
        return parts.contains { ["emb", "embs", "wte", "wpe", "lookup", "factors"].contains(String($0)) }
    }

    /// Normalisation parameters (gamma, beta, LayerNorm/BatchNorm weights).
    package static func isNormalization(_ name: String) -> Bool {
        let lower = name.lowercased()
        return lower.contains("norm") || lower.contains("bn") || lower.hasSuffix("gamma") || lower.hasSuffix("beta")
            || lower.contains(".ln") || lower.hasPrefix("ln")
    }

    /// A weight matrix or convolution kernel (rank ≥ 2), the tensors scale rules apply to.
    /// Biases are never kernels, whatever their rank (a Keras GRU's bias is [2, 3·units], zeros at
    /// initialisation).
    package static func isKernel(_ measurement: TensorMeasurement) -> Bool {
        measurement.shape.count >= 2 && !isRunningStatistic(measurement.name) && !isNormalization(measurement.name)
            && !isBias(measurement.name)
    }

    /// A bias by name (``TensorNames/isBias(_:)``).
    package static func isBias(_ name: String) -> Bool { TensorNames.isBias(name) }

    /// Keys of the optimizer slots holding a second moment (Adam's v, RMSprop's mean square): a
    /// running average of g², so √mean(v) estimates the gradient's RMS where no gradient was saved.
    package static func secondMomentKeys(_ run: RunMeasurements) -> [String] {
        run.keys(role: .optimizer).filter { run.series($0).first?.measurement.slot == .secondMoment }
    }

    /// A kernel still near zero: its RMS is below `init_too_small_factor` (0.1) times
    /// 1/√(3·fan_in), the smallest common initialisation's scale — a zero-initialised
    /// layer (a fine-tuning head, a residual branch's last projection) on its way up.
    /// Ratios relative to its norm are undefined there: one SGD step from W = 0 gives
    /// ‖g‖/‖W‖ = 1/lr exactly, and the next save's relative change is of order 1.
    package static func nearZero(_ weight: TensorMeasurement, thresholds: Thresholds) -> Bool {
        guard let rms = rms(weight), let fanIn = fanIn(shape: weight.shape, unitAxis: weight.unitAxis), fanIn > 0 else { return false }
        return rms < thresholds.initTooSmallFactor / (3 * Double(fanIn)).squareRoot()
    }

    /// Fan-in of a kernel: PyTorch [out, in, k...] -> in·∏k; Keras [k..., in, out] -> ∏k·in.
    package static func fanIn(shape: [Int], unitAxis: Int?) -> Int? {
        guard shape.count >= 2 else { return nil }
        if unitAxis == shape.count - 1 { return shape.dropLast().reduce(1, *) }
        return shape.dropFirst().reduce(1, *)
    }

    /// Number of output units of a kernel (``TensorNames/units(shape:unitAxis:)``).
    package static func units(shape: [Int], unitAxis: Int?) -> Int? { TensorNames.units(shape: shape, unitAxis: unitAxis) }

    /// The non-finite element count of a measurement.
    package static func nonFinite(_ measurement: TensorMeasurement) -> Int {
        measurement.stats.nan + measurement.stats.posInf + measurement.stats.negInf
    }

    /// A number in 3 significant digits for messages (``formatSignificant(_:)``).
    package static func format(_ value: Double?) -> String { formatSignificant(value) }

    /// The median of a list (nil when empty).
    package static func median(_ values: [Double]) -> Double? {
        let sorted = values.filter { !$0.isNaN }.sorted()
        guard !sorted.isEmpty else { return nil }
        let middle = sorted.count / 2
        return sorted.count % 2 == 1 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2
    }

    /// Whether the run's loss improved: the last recorded loss is at least 10%
    /// below the first. Nil when fewer than two losses were saved.
    package static func lossImproving(_ run: RunMeasurements) -> Bool? {
        let losses = run.records.compactMap(\.loss).filter(\.isFinite)
        guard losses.count >= 2, let first = losses.first, let last = losses.last else { return nil }
        return last < 0.9 * first
    }

    /// Root-mean-square of a tensor: ‖x‖/√n.
    package static func rms(_ measurement: TensorMeasurement) -> Double? {
        guard let norm = measurement.stats.l2Norm, measurement.stats.finiteCount > 0 else { return nil }
        return norm / Double(measurement.stats.finiteCount).squareRoot()
    }
}
