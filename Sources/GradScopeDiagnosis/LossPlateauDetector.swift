import ElementTypes
import Foundation
import GradScopeMeasurement
import GradScopeModel
import GradScopeSources
import GradScopeStatistics

/// `loss-plateau`: the loss stays within a small tolerance of ln K — ln 2 =
/// 0.693 for a binary model, ln K for K classes — for several consecutive
/// saves: the model predicts the uniform distribution (p = 0.5 for every
/// example), the loss of a coin.
///
/// K comes from the output layer (1 unit: binary, ln 2; K units: ln K); when the
/// loss shows no plateau at that K (the last matrix may not be the output), or
/// there is no output layer, from the loss itself (the integer K ≥ 2 with ln K
/// nearest, only while K's tolerance band is disjoint from its neighbours': K ≤ 7
/// at 3%, and only when no earlier save's loss was above 1.5·ln K). Thresholds:
/// `plateau_relative_tolerance` (3% of ln K), `plateau_min_saves` (3) and
/// `plateau_min_run_fraction` (10% of the run's steps, or the plateau lasts to
/// the end). Severity: error when it lasts to the last save, warning when it spans
/// `plateau_warning_run_fraction` (25%) of the run, else info (a slow start). The evidence points at the weights: the output bias, the logits'
/// spread (a saved activation whose name holds logit, output, out or head, else the last one saved), and (added by the diagnosis)
/// the layers found dead, frozen, collapsing, with zero or vanishing gradients, or poorly initialised, at warning or above.
/// Needs: a finite loss at `plateau_min_saves` saves or more.
package struct LossPlateauDetector: Detector {
    package static let kind = FindingKind.lossPlateau
    package let scope: DetectorScope = [.run]
    package let thresholdNames: [String] = [
        "plateau_relative_tolerance", "plateau_min_saves", "plateau_min_run_fraction", "plateau_warning_run_fraction",
    ]

    package func phrase(for finding: Finding) -> String {
        let k: String
        if case .int(let classes)? = finding.evidence["classes"] { k = classes == 2 ? "ln 2" : "ln \(classes)" } else { k = "ln K" }
        return "loss at \(k) from step \(finding.firstStep ?? 0) to \(finding.lastStep ?? 0)"
    }

    package func detect(_ run: RunMeasurements, thresholds: Thresholds) -> DetectorOutcome {
        let records = run.records.filter { $0.loss?.isFinite ?? false }
        guard !records.isEmpty else { return .lacking("no loss was saved in the checkpoints (the gradscope exporters save it)") }
        guard records.count >= thresholds.plateauMinSaves else {
            return .lacking("needs the loss at \(thresholds.plateauMinSaves) saves or more")
        }
        let outputUnits = outputLayerUnits(run)
        let modelK: Int? = outputUnits.map { $0 == 1 ? 2 : $0 }
        if let found = plateau(records, run: run, fixedK: modelK, thresholds: thresholds) { return found }
        // The last matrix may not be the output (several heads): fall back to the K the loss itself suggests.
        if modelK != nil, let found = plateau(records, run: run, fixedK: nil, thresholds: thresholds) { return found }
        return DetectorOutcome()
    }

    package func plateau(_ records: [StepRecord], run: RunMeasurements, fixedK: Int?, thresholds: Thresholds) -> DetectorOutcome? {
        // Guessed from the loss, K is only meaningful while the tolerance bands around ln K and ln (K+1)
        // are disjoint (K ≤ 7 at 3%): above that every loss falls in some band, and a flat loss of 2.81
        // (a language model at its data's entropy) would be "ln 17" for no reason.
        let tolerance = thresholds.plateauRelativeTolerance
        var largestGuess = 2
        while largestGuess < 100_000, log(Double(largestGuess + 2)) * (1 - tolerance) > log(Double(largestGuess + 1)) * (1 + tolerance) {
            largestGuess += 1
        }
        func classes(for loss: Double) -> Int {
            if let fixedK { return fixedK }
            let guess = max(2, Int(exp(min(loss, 12)).rounded()))
            return guess <= largestGuess ? guess : Int.max
        }
        func near(_ loss: Double, _ k: Int) -> Bool {
            let target = log(Double(k))
            return abs(loss - target) <= thresholds.plateauRelativeTolerance * target
        }
        // Longest run of consecutive saves at ln K for one K. With K guessed from the loss, a run counts only
        // if no earlier save's loss was far above it (1.5·ln K): a network at initialisation predicts nearly
        // uniformly, so a model that never learned starts near ln K and settles on it, while a converged
        // loss that happens to lie near some ln K (a language model ending at 1.12, near ln 3) came down
        // from far above it (3.9 = ln 49, its vocabulary).
        var best: (start: Int, end: Int, k: Int)?
        var index = 0
        // highestBefore[i]: the largest loss of the saves before i.
        var highestBefore: [Double] = []
        var highest = -Double.infinity
        for record in records {
            highestBefore.append(highest)
            if let loss = record.loss, loss.isFinite { highest = max(highest, loss) }
        }
        while index < records.count {
            guard let loss = records[index].loss else {
                index += 1
                continue
            }
            let k = classes(for: loss)
            guard k <= 100_000, near(loss, k), fixedK != nil || highestBefore[index] <= 1.5 * log(Double(k)) else {
                index += 1
                continue
            }
            var end = index
            while end + 1 < records.count, let next = records[end + 1].loss, near(next, k) { end += 1 }
            if best == nil || end - index > (best?.end ?? 0) - (best?.start ?? 0) { best = (index, end, k) }
            index = end + 1
        }
        guard let best else { return nil }
        let saves = best.end - best.start + 1
        let firstStep = records[best.start].step, lastStep = records[best.end].step
        let runSpan = max((records.last?.step ?? 0) - (records.first?.step ?? 0), 1)
        let reachesEnd = best.end == records.count - 1
        let fraction = Double(lastStep - firstStep) / Double(runSpan)
        guard saves >= thresholds.plateauMinSaves, lastStep > firstStep,
            fraction >= thresholds.plateauMinRunFraction || reachesEnd
        else { return nil }
        let target = log(Double(best.k))
        let losses = records[best.start...best.end].compactMap(\.loss)
        var evidence: [String: EvidenceValue] = [
            "classes": .int(best.k), "ln_k": .number(target), "saves": .int(saves),
            "loss_min": .number(losses.min()), "loss_max": .number(losses.max()),
            "max_deviation": .number(losses.map { abs($0 - target) }.max()),
            "run_fraction": .number(fraction),
        ]
        if let finalLoss = records.last?.loss { evidence["loss_at_last_save"] = .number(finalLoss) }
        var smallOutputBias: (name: String, mean: Double?)?
        var savedLogits: (name: String, std: Double?, maxAbs: Double?)?
        let plateauRecord = records[best.end]
        if let (biasName, bias) = outputBias(run, at: plateauRecord) {
            evidence["output_bias"] = .string(biasName)
            evidence["output_bias_mean"] = .number(bias.stats.mean)
            evidence["output_bias_max_abs"] = .number(bias.stats.maxAbs)
            if let maxAbs = bias.stats.maxAbs, maxAbs < 0.1 { smallOutputBias = (biasName, bias.stats.mean) }
        }
        if let (logitsName, logits) = logits(run, at: plateauRecord) {
            evidence["logits"] = .string(logitsName)
            evidence["logits_std"] = .number(logits.stats.std)
            evidence["logits_max_abs"] = .number(logits.stats.maxAbs)
            savedLogits = (logitsName, logits.stats.std, logits.stats.maxAbs)
        }
        let name = best.k == 2 ? "ln 2 = 0.693" : "ln \(best.k) = \(DetectorSupport.format(target))"
        let meaning = best.k == 2 ? "the model predicts p = 0.5 for everything" : "the model predicts the uniform distribution over \(best.k) classes"
        let tail = reachesEnd ? "and is still there at the last save" : "then falls to \(DetectorSupport.format(records.last?.loss))"
        let message = "The loss sits at \(name) from step \(firstStep) to \(lastStep) (\(saves) saves) \(tail): \(meaning)."
        let explanation = LossPlateauExplanation(
            saves: saves, tolerance: thresholds.plateauRelativeTolerance, target: name,
            lossMin: losses.min(), lossMax: losses.max(), smallOutputBias: smallOutputBias,
            logits: savedLogits
        ).text
        let severity: Severity = reachesEnd ? .error : (fraction >= thresholds.plateauWarningRunFraction ? .warning : .info)
        return DetectorOutcome(findings: [
            Finding(
                kind: kind, severity: severity, tensor: nil, layer: nil, firstStep: firstStep,
                lastStep: lastStep, message: message, evidence: evidence, explanation: explanation)
        ])
    }

    /// Units of the last matrix in depth order: the model's outputs.
    package func outputLayerUnits(_ run: RunMeasurements) -> Int? {
        guard
            let key = run.weightKeys.last(where: { key in
                run.series(key).last.map { DetectorSupport.isKernel($0.measurement) && !DetectorSupport.isEmbedding($0.measurement.name) } ?? false
            }), let weight = run.series(key).last?.measurement
        else { return nil }
        return DetectorSupport.units(shape: weight.shape, unitAxis: weight.unitAxis)
    }

    /// The bias of the output layer at a save.
    package func outputBias(_ run: RunMeasurements, at record: StepRecord) -> (String, TensorMeasurement)? {
        let weights = run.weightKeys.compactMap { record.tensors[$0] }
        guard let lastKernel = weights.last(where: { DetectorSupport.isKernel($0) }) else { return nil }
        guard let bias = weights.first(where: { $0.layer == lastKernel.layer && $0.shape.count == 1 }) else { return nil }
        return (bias.name, bias)
    }

    /// A saved activation that holds the logits (named so, or the last one saved).
    package func logits(_ run: RunMeasurements, at record: StepRecord) -> (String, TensorMeasurement)? {
        let activations = record.ordered.filter { $0.role == .activation }
        let hints = ["logit", "output", "out", "head"]
        if let named = activations.first(where: { activation in hints.contains { activation.name.lowercased().contains($0) } }) {
            return (named.name, named)
        }
        return activations.last.map { ($0.name, $0) }
    }
}
