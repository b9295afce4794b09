import ElementTypes
import GradScopeMeasurement
import GradScopeModel
import GradScopeSources
import GradScopeStatistics

/// `exploding-gradient`: gradients large relative to their weights and growing
/// fast, or non-finite while the weights are still finite.
///
/// Reported at the first save where (a) a gradient holds NaN/Inf while every
/// weight is finite (error), or (b) the total gradient norm is at least
/// `exploding_growth` (10x) the median total norm of the last ten saves before it
/// (saves with gradients; not the one save before, which may have been an
/// unusually small batch) while some kernel's ‖g‖/‖W‖ ≥ `exploding_ratio` (1), or
/// (c) some kernel's ‖g‖/‖W‖ ≥ `exploding_absolute_ratio` (100); (b) and (c) are
/// a warning, an error when NaN/Inf appears at a later save. The ratios are taken
/// over kernels (weight matrices and convolution kernels) only, and not over
/// kernels still near zero (``DetectorSupport/nearZero(_:thresholds:)``): a bias
/// or a normalisation shift may sit near zero by design (biases start at 0; an
/// output bias converges to a small offset while its minibatch gradient stays at
/// the size of the residual), so ‖g‖/‖b‖ can be huge in healthy training. The
/// total gradient norm still counts every gradient. Parameters whose weights
/// never change are left out: their gradient accumulates because they are not in
/// the optimizer (see `frozen`).
/// When the saves show nothing and the run carries a training log with the total gradient norm (a
/// Hugging Face Trainer's `grad_norm`), (d) a logged norm at least `exploding_growth` times the median
/// of the ten logged before it (``fromTrainingLog(_:thresholds:)``) is reported too.
/// Needs: gradients, Adam's or RMSprop's second moments (``fromSecondMoments(_:thresholds:)``), or a
/// logged gradient norm.
package struct ExplodingGradientDetector: Detector {
    package static let kind = FindingKind.explodingGradient
    package let scope: DetectorScope = [.file, .pair, .run]
    package let thresholdNames: [String] = ["exploding_growth", "exploding_ratio", "exploding_absolute_ratio", "init_too_small_factor"]

    package func phrase(for finding: Finding) -> String { "gradients explode\(finding.firstStep.map { " at step \($0)" } ?? "")" }

    package func detect(_ run: RunMeasurements, thresholds: Thresholds) -> DetectorOutcome {
        let fromSaves = run.hasGradients ? fromGradients(run, thresholds: thresholds) : fromSecondMoments(run, thresholds: thresholds)
        guard fromSaves.findings.isEmpty, let fromLog = fromTrainingLog(run, thresholds: thresholds) else { return fromSaves }
        return fromLog
    }

    /// The fewest logged norms a logged norm is measured against: the first few logging steps of a run
    /// (initialisation, warm-up) set no baseline.
    package static let minimumLoggedBaseline = 3

    /// From the training log: the first logged total gradient norm at least `exploding_growth` times the
    /// median of the (up to ten) finite norms logged before it, with at least ``minimumLoggedBaseline`` of
    /// them. A warning; an error when a later logged loss, or a later save, holds NaN or Inf. Non-finite
    /// logged norms are left out (a float16 loss scaler logs them at the steps it skips). Nil when the log
    /// holds no finite norm.
    package func fromTrainingLog(_ run: RunMeasurements, thresholds: Thresholds) -> DetectorOutcome? {
        let log = run.trainingLog ?? []
        let norms = log.compactMap { entry in entry.gradNorm.flatMap { $0.isFinite && $0 > 0 ? (step: entry.step, norm: $0) : nil } }
        guard !norms.isEmpty else { return nil }
        for index in norms.indices where index >= Self.minimumLoggedBaseline {
            let before = norms[max(0, index - 10)..<index].map(\.norm)
            guard let baseline = DetectorSupport.median(Array(before)), baseline > 0 else { continue }
            let (step, norm) = norms[index]
            let growth = norm / baseline
            guard growth >= thresholds.explodingGrowth else { continue }
            let lossLater = log.first { $0.step > step && ($0.loss.map { !$0.isFinite } ?? false) }?.step
            let saveLater = run.firstNonFiniteSave(after: step, run.indexedNonFinite()).map { run.records[$0].step }
            let nanStep = [lossLater, saveLater].compactMap { $0 }.min()
            let message =
                "Gradients explode at step \(step): the total gradient norm the training log holds there is \(formatSignificant(norm)), \(formatSignificant(growth))x its median of \(formatSignificant(baseline)) over the \(before.count) logging steps before."
            let evidence: [String: EvidenceValue] = [
                "total_gradient_norm": .number(norm), "previous_total_gradient_norm": .number(norms[index - 1].norm),
                "median_recent_total_gradient_norm": .number(baseline), "growth": .number(growth), "source": .string("training log"),
            ]
            return DetectorOutcome(findings: [
                Finding(
                    kind: kind, severity: nanStep == nil ? .warning : .error, tensor: nil, layer: nil, firstStep: step,
                    lastStep: nanStep ?? step, message: message, evidence: evidence,
                    explanation: ExplodingGradientExplanation.gradients(nanStep: nanStep).text)
            ])
        }
        return DetectorOutcome()
    }

    /// Rules (a) to (c), from the saved gradients.
    package func fromGradients(_ run: RunMeasurements, thresholds: Thresholds) -> DetectorOutcome {
        let frozen = Set(
            run.indexedWeightKeys.filter { key in
                let drifts = run.driftSeries(key).compactMap(\.drift)
                return !drifts.isEmpty && drifts.allSatisfy { $0.changed == 0 }
            }.map(\.name))
        // Minibatch gradient norms are noisy by a multiplicative factor (a healthy run's spread can reach
        // 10^2.5 between saves), so growth is measured against a robust baseline: the median total norm of
        // the last ten saves, not the one save before, which may have been an unusually small batch.
        var previousTotals: [Double] = []
        var previousTotal: Double?
        // Which tensors of a save are the gradients looked at, its weights, and each gradient's weight (the
        // first of its key, as the table's lookup) when that is a kernel: the same for every save of one
        // table layout (consecutive saves share theirs), so worked out once per layout.
        var plan: (layout: ObjectIdentifier, gradients: [Int], weights: [Int], kernelPartner: [Int?])?
        // Where each save holds a NaN or ±Inf: the tensors of a save are read out of its table only when
        // the numbers kept in place (norm and count) do not tell (``MeasurementTable/normsAndChange(at:)``).
        let nonFinite = run.indexedNonFinite()
        for (recordIndex, record) in run.records.enumerated() {
            let table = record.tensors
            let layout = ObjectIdentifier(table.layout)
            if plan?.layout != layout {
                let descriptors = table.layout.descriptors
                let gradients = descriptors.indices.filter { descriptors[$0].role == .gradient && !frozen.contains(descriptors[$0].name) }
                let weights = descriptors.indices.filter { descriptors[$0].role == .weight }
                var weightIndex: [TensorKey: Int] = [:]
                for (index, position) in weights.enumerated() where weightIndex[descriptors[position].key] == nil {
                    weightIndex[descriptors[position].key] = index
                }
                let kernelPartner = gradients.map { position -> Int? in
                    guard let index = weightIndex[.weight(descriptors[position].name)] else { return nil }
                    let weight = descriptors[weights[index]]
                    return DetectorSupport.isKernel(shape: weight.shape, name: weight.name) ? index : nil
                }
                plan = (layout, gradients, weights, kernelPartner)
            }
            guard let plan, !plan.gradients.isEmpty else { continue }
            let badPositions = Set(nonFinite[recordIndex].map { Int($0) })
            let weightsFinite = badPositions.isEmpty || !plan.weights.contains { badPositions.contains($0) }
            if weightsFinite, let badPosition = plan.gradients.first(where: { badPositions.contains($0) }) {
                let bad = table.measurement(at: badPosition, log2: false)
                return DetectorOutcome(findings: [
                    finding(
                        record: record, tensor: bad, severity: .error,
                        message:
                            "The gradient of \(bad.name) holds NaN/Inf \(run.atStep(record.step)) while every weight is still finite: the gradients exploded.",
                        evidence: ["nan_elements": .int(bad.stats.nan), "inf_elements": .int(bad.stats.posInf + bad.stats.negInf)], run: run)
                ])
            }
            var total = 0.0
            var worst: (position: Int, ratio: Double)?
            for (index, position) in plan.gradients.enumerated() {
                guard let gn = table.normsAndChange(at: position).l2Norm, gn.isFinite else { continue }
                total += gn * gn
                guard let partner = plan.kernelPartner[index] else { continue }
                let weightPosition = plan.weights[partner]
                let (count, weightNorm, _) = table.normsAndChange(at: weightPosition)
                // A weight without NaN or ±Inf has all its elements finite; the others (and full statistics,
                // which keep their own count) are read whole.
                let finiteCount =
                    badPositions.contains(weightPosition) || table.detail == .full
                    ? table.measurement(at: weightPosition, log2: false).stats.finiteCount : count
                let descriptor = table.layout.descriptors[weightPosition]
                if !DetectorSupport.nearZero(
                    shape: descriptor.shape, unitAxis: descriptor.unitAxis, l2Norm: weightNorm, finiteCount: finiteCount, thresholds: thresholds),
                    let wn = weightNorm, wn > 0, wn.isFinite
                {
                    let ratio = gn / wn
                    if worst == nil || ratio > worst?.ratio ?? 0 { worst = (position, ratio) }
                }
            }
            total = total.squareRoot()
            // The median of the last ten saves: robust to a few small batches (a noisy RNN dips 20x every few
            // saves), and following norms that fall as training converges (the median of all earlier saves
            // would stay high and miss a jump).
            let baseline = DetectorSupport.median(Array(previousTotals.suffix(10)))
            defer {
                previousTotal = total
                if total.isFinite && total > 0 { previousTotals.append(total) }
            }
            guard let (position, ratio) = worst else { continue }
            let growth = baseline.map { $0 > 0 ? total / $0 : 0 } ?? 0
            if (growth >= thresholds.explodingGrowth && ratio >= thresholds.explodingRatio) || ratio >= thresholds.explodingAbsoluteRatio {
                let tensor = table.measurement(at: position, log2: false)
                let severity: Severity = run.firstNonFiniteSave(after: record.step, nonFinite) != nil ? .error : .warning
                let grew =
                    growth >= thresholds.explodingGrowth
                    ? "the total gradient norm is \(formatSignificant(growth))x its median over the ten saves before and " : ""
                return DetectorOutcome(findings: [
                    finding(
                        record: record, tensor: tensor, severity: severity,
                        message:
                            "Gradients explode \(run.atStep(record.step)): \(grew)the gradient of \(tensor.name) is \(formatSignificant(ratio))x the size of its weights.",
                        evidence: evidence(ratio: ratio, total: total, previous: previousTotal, baseline: baseline, growth: growth), run: run)
                ])
            }
        }
        return DetectorOutcome()
    }

    /// The numbers behind a jump: the ratio and the total norm always; the earlier norms and the growth
    /// only when there were earlier saves to measure against (at the first save they mean nothing).
    func evidence(ratio: Double, total: Double, previous: Double?, baseline: Double?, growth: Double) -> [String: EvidenceValue] {
        var evidence: [String: EvidenceValue] = ["gradient_to_weight_ratio": .number(ratio), "total_gradient_norm": .number(total)]
        if let previous { evidence["previous_total_gradient_norm"] = .number(previous) }
        if let baseline, baseline > 0 {
            evidence["median_recent_total_gradient_norm"] = .number(baseline)
            evidence["growth"] = .number(growth)
        }
        return evidence
    }

    package func finding(
        record: StepRecord, tensor: TensorMeasurement, severity: Severity, message: String,
        evidence: [String: EvidenceValue], run: RunMeasurements
    ) -> Finding {
        let nanLater = run.firstNonFiniteSave(after: record.step, run.indexedNonFinite()).map { run.records[$0] }
        let explanation = ExplodingGradientExplanation.gradients(nanStep: nanLater?.step).text
        return Finding(
            kind: kind, severity: severity, tensor: tensor.name, layer: tensor.layer, firstStep: record.step,
            lastStep: nanLater?.step ?? record.step, message: message, evidence: evidence, explanation: explanation)
    }

    /// Without saved gradients, Adam's (or RMSprop's) second moment v is a running
    /// average of g², so √mean(v) estimates the gradient's RMS. A gradient estimated at
    /// `exploding_absolute_ratio` (100) times the weights' RMS or more is reported.
    package func fromSecondMoments(_ run: RunMeasurements, thresholds: Thresholds) -> DetectorOutcome {
        let slotKeys = DetectorSupport.secondMomentKeys(run)
        guard !slotKeys.isEmpty else {
            return .lacking("no gradients and no second moments (Adam, RMSprop) were saved (the gradscope exporters save gradients)")
        }
        for record in run.records {
            var worst: (TensorMeasurement, Double, Double)?
            for key in slotKeys {
                guard let slot = record.tensors[key], let meanSquare = slot.stats.mean, meanSquare.isFinite, meanSquare > 0,
                    let weight = record.weight(slot.name), DetectorSupport.isKernel(weight),
                    !DetectorSupport.nearZero(weight, thresholds: thresholds),
                    let weightRMS = DetectorSupport.rms(weight), weightRMS > 0
                else { continue }
                let gradientRMS = meanSquare.squareRoot()
                let ratio = gradientRMS / weightRMS
                if worst == nil || ratio > worst?.1 ?? 0 { worst = (slot, ratio, gradientRMS) }
            }
            guard let (slot, ratio, gradientRMS) = worst, ratio >= thresholds.explodingAbsoluteRatio else { continue }
            let nanLater = run.firstNonFiniteSave(after: record.step, run.indexedNonFinite()).map { run.records[$0] }
            let message =
                "Gradients exploded \(run.stepsKnown ? "by step \(record.step)" : "in this file"): the optimizer's second moment of \(slot.name) puts its gradient at about \(formatSignificant(gradientRMS)) (RMS), \(formatSignificant(ratio))x the size of its weights."
            let explanation = ExplodingGradientExplanation.secondMoment(slot: slot.slotName ?? "v", ratio: ratio).text
            return DetectorOutcome(findings: [
                Finding(
                    kind: kind, severity: nanLater == nil ? .warning : .error, tensor: slot.name,
                    layer: slot.layer, firstStep: record.step, lastStep: nanLater?.step ?? record.step,
                    message: message,
                    evidence: [
                        "estimated_gradient_rms": .number(gradientRMS), "gradient_to_weight_ratio": .number(ratio),
                        "second_moment_mean": .number(slot.stats.mean), "source": .string("optimizer \(slot.slotName ?? "second moment")"),
                    ],
                    explanation: explanation)
            ])
        }
        return DetectorOutcome()
    }
}
