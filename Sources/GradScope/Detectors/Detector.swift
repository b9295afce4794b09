import Foundation

/// What a detector produced: its findings, or why it could not look.
public struct DetectorOutcome: Sendable {
    public var findings: [Finding]
    /// Set when the detector lacked the data it needs.
    public var notChecked: String?

    public init(findings: [Finding] = [], notChecked: String? = nil) {
        self.findings = findings
        self.notChecked = notChecked
    }

    static func lacking(_ reason: String) -> DetectorOutcome { DetectorOutcome(notChecked: reason) }
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
enum DetectorSupport {
    /// Running statistics that are not trained by gradient descent.
    static func isRunningStatistic(_ name: String) -> Bool {
        let lower = name.lowercased()
        return lower.contains("moving_mean") || lower.contains("moving_variance") || lower.contains("running_mean")
            || lower.contains("running_var") || lower.contains("num_batches_tracked")
    }

    /// Embedding tables: their gradients are sparse (rows of tokens not in the batch are zero) by design.
    static func isEmbedding(_ name: String) -> Bool {
        let lower = name.lowercased()
        if lower.contains("embed") { return true }
        let parts = lower.split(whereSeparator: { $0 == "." || $0 == "/" || $0 == "_" })
        // `user_factors`, `item_factors`: the embedding tables of matrix factorisation.
        return parts.contains { ["emb", "embs", "wte", "wpe", "lookup", "factors"].contains(String($0)) }
    }

    /// Normalisation parameters (gamma, beta, LayerNorm/BatchNorm weights).
    static func isNormalization(_ name: String) -> Bool {
        let lower = name.lowercased()
        return lower.contains("norm") || lower.contains("bn") || lower.hasSuffix("gamma") || lower.hasSuffix("beta")
            || lower.contains(".ln") || lower.hasPrefix("ln")
    }

    /// A weight matrix or convolution kernel (rank ≥ 2), the tensors scale rules apply to.
    /// Biases are never kernels, whatever their rank (a Keras GRU's bias is [2, 3·units], zeros at
    /// initialisation).
    static func isKernel(_ measurement: TensorMeasurement) -> Bool {
        measurement.shape.count >= 2 && !isRunningStatistic(measurement.name) && !isNormalization(measurement.name)
            && !isBias(measurement.name)
    }

    /// A bias by name: the last component of the name starts or ends with `bias` (`bias`, `bias_hh_l0`,
    /// `recurrent_bias`, `bias:0`), or it is the weight of a layer named for biases (`user_biases.weight`,
    /// a per-user bias table of matrix factorisation, zeros at initialisation).
    static func isBias(_ name: String) -> Bool {
        let parts = name.lowercased().split(whereSeparator: { $0 == "." || $0 == "/" }).map(String.init)
        let last = parts.last ?? ""
        let bare = last.hasSuffix(":0") ? String(last.dropLast(2)) : last
        if bare.hasPrefix("bias") || bare.hasSuffix("bias") { return true }
        guard parts.count >= 2, ["weight", "kernel", "embeddings"].contains(bare) else { return false }
        let layer = parts[parts.count - 2]
        return layer.hasSuffix("bias") || layer.hasSuffix("biases")
    }

    /// Keys of the optimizer slots holding a second moment (Adam's v, RMSprop's mean square): a
    /// running average of g², so √mean(v) estimates the gradient's RMS where no gradient was saved.
    static func secondMomentKeys(_ run: RunMeasurements) -> [String] {
        run.keys(role: .optimizer).filter { run.series($0).first?.measurement.slot == .secondMoment }
    }

    /// A kernel still near zero: its RMS is below `init_too_small_factor` (0.1) times
    /// 1/√(3·fan_in), the smallest common initialisation's scale — a zero-initialised
    /// layer (a fine-tuning head, a residual branch's last projection) on its way up.
    /// Ratios relative to its norm are undefined there: one SGD step from W = 0 gives
    /// ‖g‖/‖W‖ = 1/lr exactly, and the next save's relative change is of order 1.
    static func nearZero(_ weight: TensorMeasurement, thresholds: Thresholds) -> Bool {
        guard let rms = rms(weight), let fanIn = fanIn(shape: weight.shape, unitAxis: weight.unitAxis), fanIn > 0 else { return false }
        return rms < thresholds.initTooSmallFactor / (3 * Double(fanIn)).squareRoot()
    }

    /// Fan-in of a kernel: PyTorch [out, in, k...] -> in·∏k; Keras [k..., in, out] -> ∏k·in.
    static func fanIn(shape: [Int], unitAxis: Int?) -> Int? {
        guard shape.count >= 2 else { return nil }
        if unitAxis == shape.count - 1 { return shape.dropLast().reduce(1, *) }
        return shape.dropFirst().reduce(1, *)
    }

    /// Number of output units of a kernel.
    static func units(shape: [Int], unitAxis: Int?) -> Int? {
        guard shape.count >= 2 else { return shape.first }
        if unitAxis == shape.count - 1 { return shape.last }
        return shape.first
    }

    /// The non-finite element count of a measurement.
    static func nonFinite(_ measurement: TensorMeasurement) -> Int {
        measurement.stats.nan + measurement.stats.posInf + measurement.stats.negInf
    }

    /// A number in 3 significant digits for messages: 0.000123 -> 1.23e-4, 0.5 -> 0.5.
    static func format(_ value: Double?) -> String {
        guard let value else { return "n/a" }
        guard value.isFinite else { return value.isNaN ? "NaN" : (value > 0 ? "inf" : "-inf") }
        if value == 0 { return "0" }
        let magnitude = abs(value)
        if magnitude >= 1e-3 && magnitude < 1e5 {
            let digits = max(0, 2 - Int(floor(log10(magnitude))))
            var text = String(format: "%.\(digits)f", value)
            if text.contains(".") {
                while text.hasSuffix("0") { text.removeLast() }
                if text.hasSuffix(".") { text.removeLast() }
            }
            return text
        }
        return String(format: "%.2e", value).replacingOccurrences(of: "e-0", with: "e-").replacingOccurrences(of: "e+0", with: "e+")
    }

    /// The median of a list (nil when empty).
    static func median(_ values: [Double]) -> Double? {
        let sorted = values.filter { !$0.isNaN }.sorted()
        guard !sorted.isEmpty else { return nil }
        let middle = sorted.count / 2
        return sorted.count % 2 == 1 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2
    }

    /// Whether the run's loss improved: the last recorded loss is at least 10%
    /// below the first. Nil when fewer than two losses were saved.
    static func lossImproving(_ run: RunMeasurements) -> Bool? {
        let losses = run.records.compactMap(\.loss).filter(\.isFinite)
        guard losses.count >= 2, let first = losses.first, let last = losses.last else { return nil }
        return last < 0.9 * first
    }

    /// Root-mean-square of a tensor: ‖x‖/√n.
    static func rms(_ measurement: TensorMeasurement) -> Double? {
        guard let norm = measurement.stats.l2Norm, measurement.stats.finiteCount > 0 else { return nil }
        return norm / Double(measurement.stats.finiteCount).squareRoot()
    }
}
