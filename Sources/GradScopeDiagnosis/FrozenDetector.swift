import ElementTypes
import GradScopeMeasurement
import GradScopeModel
import GradScopeSources
import GradScopeStatistics

/// `frozen`: a parameter that does not change at all between any two saves
/// while the rest of the model trains — and which case it is:
///
/// - its gradient is present but never applied: left out of the optimizer
///   (in PyTorch its `.grad` keeps accumulating, since `zero_grad()` clears
///   only the optimizer's parameters), a learning rate of zero, or
///   `trainable=False` (Keras layers without optimizer slots);
/// - its gradient underflows the float format (`lr·max|g|` below half an ulp of
///   the weights' RMS in their dtype): then it is vanishing, and reported as
///   `vanishing-gradient`.
///
/// Needs: two saves or more. Threshold: none — "does not change" means not one
/// element changed bit for bit, while some other weight did.
package struct FrozenDetector: Detector {
    package static let kind = FindingKind.frozen
    package let scope: DetectorScope = [.pair, .run]
    package let thresholdNames: [String] = []

    package func phrase(for finding: Finding) -> String {
        if finding.evidence["last_moved_step"] != nil { return "\(finding.verdictSubject) stopped changing\(finding.verdictSince)" }
        return finding.severity == .info ? "\(finding.verdictSubject) not trained (frozen)" : "\(finding.verdictSubject) frozen (never changes)"
    }

    package func detect(_ run: RunMeasurements, thresholds: Thresholds) -> DetectorOutcome {
        guard run.records.count >= 2 else { return .lacking("needs at least two saved steps") }
        var findings: [Finding] = []
        let keys = run.indexedWeightKeys.filter { !DetectorSupport.isRunningStatistic($0.name) }
        var movingKeys = Set<TensorKey>()
        var frozenKeys: [TensorKey] = []
        // Each weight's drift series is read once, here, for everything the detector asks of it: frozen
        // or moving, a moving weight's median relative change, the saves at which weights changed, and a
        // moving weight's trailing unchanged saves (``stopped(_:keys:medianOther:)``).
        var otherRatios: [Double] = []
        var changes = StopCandidates()
        for key in keys {
            let series = run.driftSeries(key)
            changes.add(key, series)
            let drifts = series.compactMap(\.drift)
            guard !drifts.isEmpty else { continue }
            if drifts.allSatisfy({ $0.changed == 0 && $0.count > 0 }) {
                frozenKeys.append(key)
            } else {
                movingKeys.insert(key)
                if let median = DetectorSupport.median(series.compactMap { $0.drift?.relativeChange }) { otherRatios.append(median) }
            }
        }
        guard !movingKeys.isEmpty else {
            if !frozenKeys.isEmpty {
                return .lacking("no weight changed between any two saves: the saves may all be of the same step, or training never ran")
            }
            return DetectorOutcome()
        }
        let medianOther = DetectorSupport.median(otherRatios)
        // Frozen weights whose layers all come before the first trained layer in depth order: a frozen
        // backbone (transfer learning freezes the layers nearest the input; Yosinski et al. 2014).
        let layerIndex = Dictionary(run.layers.enumerated().map { ($0.element, $0.offset) }, uniquingKeysWith: { a, _ in a })
        let firstMoving = movingKeys.compactMap { run.indexedLast($0).flatMap { layerIndex[$0.layer] } }.min()
        let frozenPrefix = Set(
            frozenKeys.filter { key in
                guard let firstMoving, let layer = run.indexedLast(key)?.layer, let index = layerIndex[layer] else { return false }
                return index < firstMoving
            })
        for key in frozenKeys {
            let series = run.indexedSeries(key)
            guard let first = series.first, let last = series.last else { continue }
            let weight = last.measurement
            let gradients = run.indexedSeries(.gradient(weight.name)).map(\.measurement)
            let gradientNorms = gradients.compactMap(\.stats.l2Norm)
            // An all-zero gradient is a dead path, reported by zero-gradient.
            if !gradients.isEmpty && gradientNorms.allSatisfy({ $0 == 0 }) { continue }
            var evidence: [String: EvidenceValue] = [
                "saves": .int(series.count),
                "elements_changed": .int(0),
                "elements": .int(weight.stats.count),
                "median_relative_change_of_other_weights": .number(medianOther),
            ]
            if let trainable = weight.trainable { evidence["trainable"] = .bool(trainable) }
            var severity = Severity.warning
            var reportKind = kind
            var cause: String
            var found: FrozenExplanation.Case
            let learningRates = run.records.compactMap(\.learningRate)
            let growing =
                gradientNorms.count >= 2 && (gradientNorms.first ?? 0) > 0 && (gradientNorms.last ?? 0) >= 1.5 * (gradientNorms.first ?? 0)
                && zip(gradientNorms, gradientNorms.dropFirst()).allSatisfy { $1 >= 0.95 * $0 }
            if let firstNorm = gradientNorms.first, let lastNorm = gradientNorms.last {
                evidence["gradient_norm_first"] = .number(firstNorm)
                evidence["gradient_norm_last"] = .number(lastNorm)
            }
            // The underflow bound: lr·max|g| below half an ulp of the weights. Without a saved learning
            // rate, lr = 1 bounds every plain-SGD rate in use; adaptive optimizers (Adam, RMSprop) divide
            // the gradient by its own scale, so a small gradient does not make a small step there.
            let optimizerName = (run.optimizer ?? "").lowercased()
            let adaptive = ["adam", "rmsprop", "adagrad", "adadelta", "adafactor", "lamb", "lion", "nadam", "ftrl"].contains {
                optimizerName.contains($0)
            }
            let lr = learningRates.max() ?? (adaptive ? nil : 1.0)
            let gradientMax = gradients.compactMap(\.stats.maxAbs).max() ?? 0
            let weightRMS = DetectorSupport.rms(weight) ?? 0
            let underflows =
                gradientMax > 0 && !growing
                && (lr.map { $0 > 0 && weightRMS > 0 && $0 * gradientMax < 0.5 * ulpFraction(weight.dtype) * weightRMS } ?? false)
            // A gradient identical at every save while the others change is a leftover .grad that nothing
            // recomputes (requires_grad=False after an earlier backward pass): no gradient reaches it.
            let stale =
                gradients.count >= 2
                && Set(gradients.map { [$0.stats.l2Norm ?? 0, $0.stats.mean ?? 0, $0.stats.min ?? 0, $0.stats.max ?? 0] }).count == 1
                && gradientNorms.allSatisfy { $0 > 0 }
            if growing {
                cause =
                    "its gradient is present and grows save after save (from \(formatSignificant(gradientNorms.first)) to \(formatSignificant(gradientNorms.last))) but is never applied: the parameter is almost certainly not in the optimizer (optimizer.zero_grad() clears only the optimizer's own parameters, so its .grad accumulates)"
                found = .notInOptimizer
            } else if stale {
                severity = .info
                cause =
                    "its saved gradient is identical at every save while the others change: a leftover .grad that nothing recomputes, so no gradient reaches it (requires_grad=False, as when fine-tuning with a frozen backbone)"
                found = .staleGradient
            } else if weight.trainable == false && !gradientNorms.contains(where: { $0 > 0 }) {
                severity = .info
                cause =
                    "it is excluded from training: it has no optimizer state and no gradient (Keras trainable=False, PyTorch requires_grad=False or left out of the optimizer)"
                found = .excluded
            } else if underflows, let lr {
                reportKind = .vanishingGradient
                let rate =
                    learningRates.isEmpty
                    ? "even at a learning rate of 1, max|g| = \(formatSignificant(gradientMax))"
                    : "lr × max|g| = \(formatSignificant(lr * gradientMax))"
                cause =
                    "its gradient is too small to move it: \(rate) is below half a unit in the last place of weights of size \(formatSignificant(weightRMS)) in \(weight.dtype)"
                found = .underflow
                if !learningRates.isEmpty { evidence["learning_rate"] = .number(lr) }
            } else if let lastNorm = gradientNorms.last, lastNorm > 0 {
                let marked = weight.trainable == false ? " (the file marks it as not in the optimizer, yet its gradient is computed)" : ""
                cause =
                    "its gradient is present (norm \(formatSignificant(lastNorm)) at the last save) but never applied\(marked): it is not in the optimizer, its param group's learning rate is zero, or the optimizer step skips it"
                found = .notApplied
            } else if learningRates.count >= 1 && learningRates.allSatisfy({ $0 == 0 }) {
                cause = "the learning rate is zero at every save"
                found = .zeroLearningRate
            } else if (gradients.isEmpty && run.hasGradients) || looksLikeBuffer(weight.name) {
                severity = .info
                if gradients.isEmpty && run.hasGradients {
                    cause =
                        "it never receives a gradient while the other parameters do: a buffer (a mask, a positional encoding) or a parameter with requires_grad=False"
                } else {
                    cause = "its name marks a buffer (a mask, positional encoding or running statistic), not a trained parameter"
                }
                found = .buffer
            } else if frozenPrefix.contains(key) {
                severity = .info
                cause =
                    "it is one of the first layers of the model, all of which stay fixed while every later layer trains: the usual pattern of fine-tuning a pre-trained backbone (no gradient or optimizer state was saved to confirm it)"
                found = .frozenBackbone
            } else {
                cause =
                    "no gradient was saved to tell why: it is not in the optimizer, frozen (requires_grad=False / trainable=False), or its learning rate is zero"
                found = .unexplained
            }
            let message =
                reportKind == .vanishingGradient
                ? "\(weight.name) never changes because \(cause)."
                : "\(weight.name) never changed from step \(first.step) to \(last.step) while the rest of the model trained: \(cause)."
            let explanation = FrozenExplanation(
                saves: series.count, elements: weight.stats.count, medianOtherChange: medianOther,
                found: found
            ).text
            findings.append(
                Finding(
                    kind: reportKind, severity: severity, tensor: weight.name, layer: weight.layer,
                    firstStep: first.step, lastStep: last.step, message: message, evidence: evidence,
                    explanation: explanation))
        }
        findings.append(contentsOf: stopped(run, candidates: changes.stopped(keys.filter { movingKeys.contains($0) }), medianOther: medianOther))
        return DetectorOutcome(findings: findings)
    }

    /// The weights that may have stopped, gathered from each weight's drift series as it is read: per
    /// step, the weights that changed there, and per weight, where its trailing run of unchanged saves
    /// begins when that run holds two saves or more after a save at which it changed.
    struct StopCandidates {
        private var changedAt: [Int: Int] = [:]
        private var trailing: [TensorKey: (from: Int, steps: [Int])] = [:]

        mutating func add(_ key: TensorKey, _ series: [(step: Int, drift: DriftStats?)]) {
            for entry in series where (entry.drift?.changed ?? 0) > 0 { changedAt[entry.step, default: 0] += 1 }
            var from = series.count
            while from > 0, let drift = series[from - 1].drift, drift.changed == 0, drift.count > 0 { from -= 1 }
            guard from > 0, series.count - from >= 2, (series[from - 1].drift?.changed ?? 0) > 0 else { return }
            trailing[key] = (from, series[from...].map(\.step))
        }

        /// Of `keys`, in their order, those whose trailing unchanged saves each saw another weight
        /// change, with where that run begins in the series.
        func stopped(_ keys: [TensorKey]) -> [(key: TensorKey, from: Int)] {
            keys.compactMap { key in
                guard let run = trailing[key], run.steps.allSatisfy({ (changedAt[$0] ?? 0) > 0 }) else { return nil }
                return (key, run.from)
            }
        }
    }

    /// Weights that moved, then stopped: not one element changed at any save of a trailing run of two
    /// saves or more (one unchanged save between moving ones is not a stop), while some other weight
    /// changed at each of them. Dated at the first unchanged save; the save before it is the last at
    /// which it had moved. A gradient saved and zero at those saves is zero-gradient's finding instead.
    package func stopped(_ run: RunMeasurements, keys: [TensorKey], medianOther: Double?) -> [Finding] {
        var changes = StopCandidates()
        for key in run.indexedWeightKeys where !DetectorSupport.isRunningStatistic(key.name) { changes.add(key, run.driftSeries(key)) }
        return stopped(run, candidates: changes.stopped(keys), medianOther: medianOther)
    }

    /// The findings of ``stopped(_:keys:medianOther:)`` for the weights that may have stopped, each with
    /// where its trailing unchanged saves begin (``StopCandidates``): only their series are built.
    func stopped(_ run: RunMeasurements, candidates: [(key: TensorKey, from: Int)], medianOther: Double?) -> [Finding] {
        var findings: [Finding] = []
        for (key, from) in candidates {
            let series = run.indexedSeries(key)
            guard from < series.count, let last = series.last else { continue }
            let weight = last.measurement
            let stoppedSteps = Set(series[from...].map(\.step))
            let gradients = run.indexedSeries(.gradient(weight.name)).filter { stoppedSteps.contains($0.step) }.map(\.measurement)
            if !gradients.isEmpty && gradients.allSatisfy({ $0.stats.count > 0 && $0.stats.zeros == $0.stats.count }) { continue }
            let lastMoved = series[from - 1].step, first = series[from].step
            let cause: String
            if let norm = gradients.compactMap(\.stats.l2Norm).last(where: { $0 > 0 }) {
                cause =
                    "its saved gradient is not zero (norm \(formatSignificant(norm)) at the last save where it is not) but no longer moves it: its learning rate fell to zero, it left the optimizer, or the updates fall below the float precision of weights this large"
            } else if gradients.isEmpty {
                cause =
                    "no gradient was saved to tell why: its gradient stopped arriving (a dead path), it was frozen, or its learning rate fell to zero"
            } else {
                cause = "its saved gradient is zero or missing at those saves: a dead path, or a parameter frozen part-way through"
            }
            var evidence: [String: EvidenceValue] = [
                "saves": .int(series.count - from), "elements_changed": .int(0), "elements": .int(weight.stats.count),
                "last_moved_step": .int(lastMoved), "median_relative_change_of_other_weights": .number(medianOther),
            ]
            if let trainable = weight.trainable { evidence["trainable"] = .bool(trainable) }
            findings.append(
                Finding(
                    kind: kind, severity: weight.trainable == false ? .info : .warning, tensor: weight.name, layer: weight.layer,
                    firstStep: first, lastStep: last.step,
                    message:
                        "\(weight.name) stopped changing after step \(lastMoved): not one element changed from step \(first) to \(last.step) while the rest of the model trained; \(cause).",
                    evidence: evidence,
                    explanation: FrozenExplanation(
                        saves: series.count - from, elements: weight.stats.count, medianOtherChange: medianOther, found: .stopped
                    ).text))
        }
        return findings
    }

    /// The spacing of floats just above 1 for the tensor's dtype (2^-23 for float32).
    package func ulpFraction(_ dtype: String) -> Double {
        switch dtype {
        case "float16": return 0x1p-10
        case "bfloat16": return 0x1p-7
        case "float64": return 0x1p-52
        default: return 0x1p-23
        }
    }

    /// Names PyTorch and Keras give to tensors saved with the weights that are
    /// not trained: masks, positional encodings, rotary frequencies, anchors.
    package func looksLikeBuffer(_ name: String) -> Bool {
        let lower = name.lowercased()
        let parts = lower.split(whereSeparator: { $0 == "." || $0 == "/" }).map(String.init)
        let last = parts.last ?? lower
        let markers = ["mask", "inv_freq", "freqs", "rope", "position_ids", "pos_enc", "positional_encoding", "anchor", "buffer", "causal"]
        if markers.contains(where: { lower.contains($0) }) { return true }
        return ["pe", "bias_mask", "masked_bias"].contains(last)
    }
}
