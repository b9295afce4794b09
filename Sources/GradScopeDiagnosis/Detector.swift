import ElementTypes
import Foundation
import GradScopeMeasurement
import GradScopeModel
import GradScopeSources
import GradScopeStatistics

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

/// The analyses a detector takes part in.
public struct DetectorScope: OptionSet, Sendable, Hashable {
    public let rawValue: Int

    public init(rawValue: Int) { self.rawValue = rawValue }

    /// `inspect`: one checkpoint.
    public static let file = DetectorScope(rawValue: 1 << 0)
    /// `diff`: two checkpoints.
    public static let pair = DetectorScope(rawValue: 1 << 1)
    /// `scan`: every saved step of a run.
    public static let run = DetectorScope(rawValue: 1 << 2)
}

/// One kind of training pathology, found from measurements alone (no detector reads files).
///
/// A detector declares everything the rest of gradscope needs from it: the kind of finding it reports,
/// the analyses it takes part in, the thresholds it reads and how the verdict names its findings. Adding
/// one is its own file and a line in ``allDetectors``; `inspect`, `diff`, `scan`, the not-checked list
/// and the verdict take it from there (docs/DETECTORS.md, "Adding a detector").
public protocol Detector: Sendable {
    /// The kind of finding it reports; each kind has exactly one detector.
    static var kind: FindingKind { get }
    /// The analyses that run it. `inspect` lists the kinds of detectors without `.file` as needing
    /// several saved steps.
    var scope: DetectorScope { get }
    /// The names of the thresholds it reads (``Thresholds/names``), helpers it calls included.
    var thresholdNames: [String] { get }
    func detect(_ run: RunMeasurements, thresholds: Thresholds) -> DetectorOutcome
    /// A few words naming one of its findings in the verdict, e.g. "layer `head.3` frozen (never changes)".
    func phrase(for finding: Finding) -> String
}

extension Detector {
    /// The kind of finding it reports.
    public var kind: FindingKind { Self.kind }
}

/// The detectors: the one registry every analysis selects from by scope. Their order is the order
/// `scan` runs them in, which orders its not-checked entries and the findings that tie on severity,
/// onset step and tensor.
public let allDetectors: [any Detector] = [
    NanInfDetector(), ExplodingGradientDetector(), LossPlateauDetector(), FrozenDetector(), ZeroGradientDetector(),
    DeadUnitsDetector(), CollapsingDetector(), VanishingGradientDetector(), UpdateRatioDetector(), PoorInitDetector(),
]

/// Which detectors an analysis runs, chosen from ``allDetectors`` by their scope.
package enum DetectorRegistry {
    /// The reason `inspect` gives for the kinds it cannot judge from one file.
    package static let severalSavesReason = "needs several saved steps: use gradscope scan on the run"

    /// The order in which `inspect` and `diff` ran their detectors before these were chosen by scope, kept
    /// so that their not-checked entries, and findings that tie on severity, onset step and tensor, come
    /// out as they always have. It only orders: which detectors run is their scope. A detector of the
    /// scope not named here runs after these, in registry order (in `inspect`, after the diagnosis:
    /// ``fileDetectors(in:)``).
    package static let establishedOrder: [DetectorScope: [FindingKind]] = [
        .file: [.nanInf, .zeroGradient, .deadUnits, .poorInit, .explodingGradient],
        .pair: [.nanInf, .frozen, .collapsing, .updateRatio, .explodingGradient, .zeroGradient],
    ]

    /// The detector that reports `kind`.
    package static func detector(for kind: FindingKind) -> (any Detector)? { byKind[kind] }

    private static let byKind: [FindingKind: any Detector] =
        Dictionary(allDetectors.map { ($0.kind, $0) }, uniquingKeysWith: { first, _ in first })

    /// The detectors of `scope`: those named in the established order first, in that order, then the
    /// others in registry order.
    package static func detectors(for scope: DetectorScope, in registry: [any Detector] = allDetectors) -> [any Detector] {
        let (named, others) = split(scope, registry)
        return named + others
    }

    /// The detectors `inspect` runs on one file: `diagnosed` go through the diagnosis together, in the
    /// established order; `after` (vanishing-gradient, and any file detector not in the established
    /// order) are judged after it, their findings and not-checked entries following the others', as
    /// vanishing-gradient's always have.
    package static func fileDetectors(in registry: [any Detector] = allDetectors) -> (diagnosed: [any Detector], after: [any Detector]) {
        let (named, others) = split(.file, registry)
        return (named, others)
    }

    /// The kinds `inspect` reports as needing several saved steps: those of the detectors without
    /// `.file`, in the order ``FindingKind`` declares them.
    package static func needingSeveralSaves(in registry: [any Detector] = allDetectors) -> [FindingKind] {
        let kinds = Set(registry.filter { !$0.scope.contains(.file) }.map(\.kind))
        return FindingKind.allCases.filter { kinds.contains($0) }
    }

    /// The detectors of `scope` in the established order, and the rest of them in registry order.
    private static func split(_ scope: DetectorScope, _ registry: [any Detector]) -> (named: [any Detector], others: [any Detector]) {
        let inScope = registry.filter { $0.scope.contains(scope) }
        let order = establishedOrder[scope] ?? []
        let named = order.compactMap { kind in inScope.first { $0.kind == kind } }
        let others = inScope.filter { !order.contains($0.kind) }
        return (named, others)
    }
}

/// Helpers the detectors share.
package enum DetectorSupport {
    /// Running statistics that are not trained by gradient descent.
    package static func isRunningStatistic(_ name: String) -> Bool {
        let lower = name.lowercased()
        return lower.contains("moving_mean") || lower.contains("moving_variance") || lower.contains("running_mean")
            || lower.contains("running_var") || lower.contains("num_batches_tracked")
    }

    /// The words of a name: lower-cased, split at `.`, `/`, `\\`, `_`, `-`, `:` and spaces, and each
    /// word's trailing digits dropped (`bn1` -> `bn`, `norm2` -> `norm`), words of digits alone dropped
    /// (`layers.0.norm` -> `layers`, `norm`; `gamma:0` -> `gamma`).
    /// Name rules match whole words, never pieces of one (`subnet` holds no `bn`, `abnormal` no `norm`).
    package static func nameWords(_ name: String) -> [String] {
        name.lowercased().split(whereSeparator: { "./\\_-: ".contains($0) }).map { word in
            var word = Substring(word)
            while let last = word.last, last.isNumber, word.count > 1 { word = word.dropLast() }
            return String(word)
        }.filter { !$0.isEmpty && !$0.allSatisfy(\.isNumber) }
    }

    /// Embedding tables: their gradients are sparse (rows of tokens not in the batch are zero) by design.
    /// The name says so by a word (`embedding`, `embeddings`, `tok_embeddings`, `emb`, `wte`, `wpe`,
    /// `lookup`, matrix factorisation's `user_factors`); the shape must agree: a lookup table is a matrix
    /// `[rows, dim]`, so a convolution in a `patch_embed` module or a `pos_embed` of rank 3 is not one.
    /// `shape` nil: the shape is not known, the name alone decides.
    package static func isEmbedding(_ name: String, shape: [Int]? = nil) -> Bool {
        if let shape, shape.count != 2 { return false }
        return nameWords(name).contains { word in
            word.hasPrefix("embed") || word.hasSuffix("embed") || word.hasSuffix("embedding") || word.hasSuffix("embeddings")
                || ["emb", "embs", "wte", "wpe", "lookup", "factors"].contains(word)
        }
    }

    /// A normalisation layer's name: a word `bn`, `ln`, `gn`, `norm`, `normalization`, or one ending in
    /// `norm` (`layernorm`, `batchnorm`, `rmsnorm`, `groupnorm`), or a last word `gamma` or `beta`.
    package static func isNormalizationName(_ name: String) -> Bool {
        let words = nameWords(name)
        if let last = words.last, last == "gamma" || last == "beta" { return true }
        return words.contains { word in
            ["bn", "ln", "gn", "norm", "normalization", "normalisation"].contains(word) || (word.hasSuffix("norm") && word.count > 4)
        }
    }

    /// Normalisation parameters (BatchNorm/LayerNorm gamma and beta, their `weight` and `bias`): named
    /// so (``isNormalizationName(_:)``) and shaped so: one value per feature, a vector or a tensor whose
    /// dimensions are all 1 but one (Keras broadcast shapes `[1, 1, C]`). A matrix is never one, whatever
    /// its name (a spectrally normalised kernel is a kernel).
    package static func isNormalization(_ name: String, shape: [Int]) -> Bool {
        guard shape.filter({ $0 != 1 }).count <= 1 else { return false }
        return isNormalizationName(name)
    }

    /// A weight matrix or convolution kernel (rank ≥ 2), the tensors scale rules apply to.
    /// Biases are never kernels, whatever their rank (a Keras GRU's bias is [2, 3·units], zeros at
    /// initialisation).
    package static func isKernel(_ measurement: TensorMeasurement) -> Bool { isKernel(shape: measurement.shape, name: measurement.name) }

    /// ``isKernel(_:)`` from a tensor's shape and name, all it depends on.
    package static func isKernel(shape: [Int], name: String) -> Bool {
        shape.count >= 2 && !isRunningStatistic(name) && !isNormalization(name, shape: shape) && !TensorNames.isBias(name)
    }

    /// Whether the tensor `key` is a kernel (``isKernel(shape:name:)``) at some save of the run: false
    /// tells, from each table layout's descriptor alone, that no point of its series is one, so a
    /// detector judging kernels only need not build the series.
    package static func mayBeKernel(_ run: RunMeasurements, _ key: TensorKey) -> Bool {
        var lastLayout: ObjectIdentifier?
        for record in run.records {
            let layout = record.tensors.layout
            guard ObjectIdentifier(layout) != lastLayout else { continue }
            lastLayout = ObjectIdentifier(layout)
            if let position = layout.index[key], isKernel(shape: layout.descriptors[position].shape, name: layout.descriptors[position].name) {
                return true
            }
        }
        return false
    }

    /// ``nearZero(_:thresholds:)`` of the weight at `place` (``RunMeasurements/places(of:)``), from its
    /// descriptor and the numbers its table keeps in place; the measurement is built only where those do
    /// not give the finite count (a weight holding NaN or ±Inf, by `nonFinite`, or full statistics).
    package static func nearZero(
        _ run: RunMeasurements, at place: (record: Int, position: Int), nonFinite: [[Int32]], thresholds: Thresholds
    ) -> Bool {
        let table = run.records[place.record].tensors
        if table.detail == .full || nonFinite[place.record].contains(Int32(place.position)) {
            return nearZero(run.measurement(at: place), thresholds: thresholds)
        }
        let (count, norm, _) = table.normsAndChange(at: place.position)
        let descriptor = table.layout.descriptors[place.position]
        return nearZero(shape: descriptor.shape, unitAxis: descriptor.unitAxis, l2Norm: norm, finiteCount: count, thresholds: thresholds)
    }

    /// The shape of the weight `name` at its last save in the run, when it has one.
    package static func weightShape(_ run: RunMeasurements, _ name: String) -> [Int]? {
        run.indexedLast(.weight(name))?.shape
    }

    /// Keys of the optimizer slots holding a second moment (Adam's v, RMSprop's mean square): a
    /// running average of g², so √mean(v) estimates the gradient's RMS where no gradient was saved.
    package static func secondMomentKeys(_ run: RunMeasurements) -> [TensorKey] {
        run.indexedKeys(role: .optimizer).filter { run.indexedFirst($0)?.slot == .secondMoment }
    }

    /// A kernel still near zero: its RMS is below `init_too_small_factor` (0.1) times
    /// 1/√(3·fan_in), the smallest common initialisation's scale — a zero-initialised
    /// layer (a fine-tuning head, a residual branch's last projection) on its way up.
    /// Ratios relative to its norm are undefined there: one SGD step from W = 0 gives
    /// ‖g‖/‖W‖ = 1/lr exactly, and the next save's relative change is of order 1.
    package static func nearZero(_ weight: TensorMeasurement, thresholds: Thresholds) -> Bool {
        nearZero(
            shape: weight.shape, unitAxis: weight.unitAxis, l2Norm: weight.stats.l2Norm, finiteCount: weight.stats.finiteCount,
            thresholds: thresholds)
    }

    /// ``nearZero(_:thresholds:)`` from what it reads of the weight: its shape, unit axis, norm and finite count.
    package static func nearZero(shape: [Int], unitAxis: Int?, l2Norm: Double?, finiteCount: Int, thresholds: Thresholds) -> Bool {
        guard let norm = l2Norm, finiteCount > 0, let fanIn = fanIn(shape: shape, unitAxis: unitAxis), fanIn > 0 else { return false }
        let rms = norm / Double(finiteCount).squareRoot()
        return rms < thresholds.initTooSmallFactor / (3 * Double(fanIn)).squareRoot()
    }

    /// Fan-in of a kernel: PyTorch [out, in, k...] -> in·∏k; Keras [k..., in, out] -> ∏k·in.
    package static func fanIn(shape: [Int], unitAxis: Int?) -> Int? {
        guard shape.count >= 2 else { return nil }
        if unitAxis == shape.count - 1 { return shape.dropLast().reduce(1, *) }
        return shape.dropFirst().reduce(1, *)
    }

    /// The non-finite element count of a measurement.
    package static func nonFinite(_ measurement: TensorMeasurement) -> Int {
        measurement.stats.nan + measurement.stats.posInf + measurement.stats.negInf
    }

    /// The median of a list, NaN left out (nil when nothing is left).
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
