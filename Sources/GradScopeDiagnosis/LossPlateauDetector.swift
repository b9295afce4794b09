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
/// `plateau_warning_run_fraction` (25%) of the run, else info (a slow start). The evidence, taken over the plateau's
/// saves, points at the weights: the output bias, the logits' spread (a saved activation whose name holds logit,
/// output, out or head, else the last one saved), the saved learning rate and its course (``PlateauLearningRate``),
/// and (added by the diagnosis) the layers found dead, frozen, collapsing, with zero or vanishing gradients, or
/// poorly initialised, at warning or above.
/// When the run carries a training log with more finite losses than its saves (a Hugging Face Trainer's
/// `log_history`), the rule reads the logged losses and learning rates instead, with the same thresholds
/// (`plateau_min_saves` counts logging steps then); the weights' evidence is taken over the saves within it.
/// Needs: a finite loss at `plateau_min_saves` saves (or logging steps) or more.
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

    /// One loss the rule reads: a save's, or a logging step's.
    package struct LossSample: Sendable, Equatable {
        package var step: Int
        package var loss: Double
        package var learningRate: Double?
    }

    /// The losses the rule reads, and whether they come from the training log: the logged ones when the
    /// log holds more finite losses than the saves, else the saves'.
    package func samples(_ run: RunMeasurements) -> (samples: [LossSample], logged: Bool) {
        let saved = run.records.compactMap { record in
            record.loss.flatMap { $0.isFinite ? LossSample(step: record.step, loss: $0, learningRate: record.learningRate) : nil }
        }
        let logged = (run.trainingLog ?? []).compactMap { entry in
            entry.loss.flatMap { $0.isFinite ? LossSample(step: entry.step, loss: $0, learningRate: entry.learningRate) : nil }
        }
        return logged.count > saved.count ? (logged, true) : (saved, false)
    }

    package func detect(_ run: RunMeasurements, thresholds: Thresholds) -> DetectorOutcome {
        let (records, logged) = samples(run)
        guard !records.isEmpty else { return .lacking("no loss was saved in the checkpoints (the gradscope exporters save it)") }
        guard records.count >= thresholds.plateauMinSaves else {
            return .lacking("needs the loss at \(thresholds.plateauMinSaves) saves or more")
        }
        let outputUnits = outputLayerUnits(run)
        let modelK: Int? = outputUnits.map { $0 == 1 ? 2 : $0 }
        if let found = plateau(records, logged: logged, run: run, fixedK: modelK, thresholds: thresholds) { return found }
        // The last matrix may not be the output (several heads): fall back to the K the loss itself suggests.
        if modelK != nil, let found = plateau(records, logged: logged, run: run, fixedK: nil, thresholds: thresholds) { return found }
        return DetectorOutcome()
    }

    /// The longest plateau in `records` (a run's saves, or its logged losses when `logged`).
    package func plateau(
        _ records: [LossSample], logged: Bool = false, run: RunMeasurements, fixedK: Int?, thresholds: Thresholds
    ) -> DetectorOutcome? {
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
            if record.loss.isFinite { highest = max(highest, record.loss) }
        }
        while index < records.count {
            let loss = records[index].loss
            let k = classes(for: loss)
            guard k <= 100_000, near(loss, k), fixedK != nil || highestBefore[index] <= 1.5 * log(Double(k)) else {
                index += 1
                continue
            }
            var end = index
            while end + 1 < records.count, near(records[end + 1].loss, k) { end += 1 }
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
        let losses = records[best.start...best.end].map(\.loss)
        // The saves the weights' evidence is taken over: the plateau's own, or (from the log) those within its steps.
        let plateauRecords =
            logged
            ? run.records.filter { $0.step >= firstStep && $0.step <= lastStep }
            : run.records.filter { $0.loss?.isFinite ?? false }.filter { $0.step >= firstStep && $0.step <= lastStep }
        var evidence: [String: EvidenceValue] = [
            "classes": .int(best.k), "ln_k": .number(target), "saves": .int(logged ? plateauRecords.count : saves),
            "loss_min": .number(losses.min()), "loss_max": .number(losses.max()),
            "max_deviation": .number(losses.map { abs($0 - target) }.max()),
            "run_fraction": .number(fraction),
        ]
        if let finalLoss = run.records.last(where: { $0.loss?.isFinite ?? false })?.loss { evidence["loss_at_last_save"] = .number(finalLoss) }
        if logged {
            evidence["logged_steps"] = .int(saves)
            evidence["loss_source"] = .string("training log")
            if let last = records.last { evidence["loss_at_last_logged_step"] = .number(last.loss) }
        }
        var smallOutputBias: (name: String, mean: Double?)?
        var savedLogits: PlateauLogits?
        // The weights' evidence is taken over the plateau's saves, not at one of them.
        if let plateauRecord = plateauRecords.last, let (biasName, bias) = outputBias(run, at: plateauRecord) {
            let over = plateauRecords.compactMap { record in record.tensors.values.first { $0.name == biasName && $0.role == .weight } }
            let largest = over.compactMap(\.stats.maxAbs).max()
            evidence["output_bias"] = .string(biasName)
            evidence["output_bias_mean"] = .number(bias.stats.mean)
            evidence["output_bias_max_abs"] = .number(largest)
            if let largest, largest < 0.1 { smallOutputBias = (biasName, bias.stats.mean) }
        }
        if let plateauRecord = plateauRecords.last, let (logitsName, _) = logits(run, at: plateauRecord) {
            let over = plateauRecords.compactMap { record in
                record.tensors.values.first { $0.name == logitsName && $0.role == .activation }.map { (record.step, $0) }
            }
            let spreads = over.compactMap { step, logits in logits.stats.std.map { (step, $0) } }
            if let low = spreads.min(by: { $0.1 < $1.1 }), let high = spreads.max(by: { $0.1 < $1.1 }) {
                let largest = over.compactMap(\.1.stats.maxAbs).max()
                evidence["logits"] = .string(logitsName)
                evidence["logits_std_min"] = .number(low.1)
                evidence["logits_std_max"] = .number(high.1)
                evidence["logits_max_abs"] = .number(largest)
                evidence["logits_saves"] = .int(spreads.count)
                savedLogits = PlateauLogits(
                    name: logitsName, saves: spreads.count, lowest: low.1, highest: high.1, highestStep: high.0, maxAbs: largest)
            }
        }
        let learningRate = PlateauLearningRate(records: records, start: best.start, end: best.end)
        if let learningRate { evidence.merge(learningRate.evidence) { _, new in new } }
        let name = best.k == 2 ? "ln 2 = 0.693" : "ln \(best.k) = \(formatSignificant(target))"
        let meaning = best.k == 2 ? "the model predicts p = 0.5 for everything" : "the model predicts the uniform distribution over \(best.k) classes"
        let tail =
            reachesEnd
            ? "and is still there at the last \(logged ? "logging step" : "save")" : "then falls to \(formatSignificant(records.last?.loss))"
        let counted = logged ? "\(saves) logged losses, \(plateauRecords.count) save\(plateauRecords.count == 1 ? "" : "s")" : "\(saves) saves"
        let message = "The loss sits at \(name) from step \(firstStep) to \(lastStep) (\(counted)) \(tail): \(meaning)."
        let explanation = LossPlateauExplanation(
            saves: saves, unit: logged ? "logging steps" : "saves", tolerance: thresholds.plateauRelativeTolerance, target: name,
            lossMin: losses.min(), lossMax: losses.max(), smallOutputBias: smallOutputBias,
            logits: savedLogits, learningRate: learningRate
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
            let key = run.indexedWeightKeys.last(where: { key in
                run.indexedLast(key).map {
                    DetectorSupport.isKernel($0) && !DetectorSupport.isEmbedding($0.name, shape: $0.shape)
                }
                    ?? false
            }), let weight = run.indexedLast(key)
        else { return nil }
        return TensorNames.units(shape: weight.shape, unitAxis: weight.unitAxis, gates: weight.gates)
    }

    /// The bias of the output layer at a save.
    package func outputBias(_ run: RunMeasurements, at record: StepRecord) -> (String, TensorMeasurement)? {
        let weights = run.indexedWeightKeys.compactMap { record.tensors[$0] }
        guard let lastKernel = weights.last(where: { DetectorSupport.isKernel($0) }) else { return nil }
        guard let bias = weights.first(where: { $0.layer == lastKernel.layer && $0.shape.count == 1 }) else { return nil }
        return (bias.name, bias)
    }

    /// A saved activation that holds the logits: named so by a word (`logits`, `output`, `out`, `head`;
    /// not `dropout` or `layout`) and, when the output layer's units are known, as wide as it; else the
    /// last one saved.
    package func logits(_ run: RunMeasurements, at record: StepRecord) -> (String, TensorMeasurement)? {
        let activations = record.ordered.filter { $0.role == .activation }
        let hints = ["logit", "logits", "output", "outputs", "out", "head"]
        let units = outputLayerUnits(run)
        if let named = activations.first(where: { activation in
            DetectorSupport.nameWords(activation.name).contains { hints.contains($0) }
                && (units == nil || activation.unitCount == nil || activation.unitCount == units)
        }) {
            return (named.name, named)
        }
        return activations.last.map { ($0.name, $0) }
    }
}

/// The saved logits over a plateau's saves: their spread, lowest and highest, and their largest size.
package struct PlateauLogits: Sendable {
    var name: String
    var saves: Int
    var lowest: Double
    var highest: Double
    var highestStep: Int
    var maxAbs: Double?
}

/// The learning rate saved around a plateau, and what its course says. A rate that jumped just before
/// or during the plateau (at least ``spikeFactor`` times the median of the rates before it and of those
/// after it) is a step too large: it can
/// push a ReLU layer's pre-activations below 0 for every example, or the output bias to the class
/// frequencies, and the loss settles at ln K. A rate that starts the plateau at most 1/``spikeFactor`` of
/// the run's highest and rises through it is a warm-up: updates that small leave the logits at ~0.
package struct PlateauLearningRate: Sendable {
    /// How far from the run's median (up) or highest (down) a rate must be to count as a jump or a warm-up:
    /// ten times, one order of magnitude, beyond the variation of a schedule's ordinary decay.
    package static let spikeFactor = 10.0

    /// The course of the rate around the plateau.
    package enum Course: Sendable, Equatable {
        /// It jumped to `value` at `step`; `median` is the run's median rate.
        case spike(value: Double, step: Int, median: Double)
        /// It rose from `from` at the plateau's start to `to` at `step` (a warm-up).
        case warmUp(from: Double, to: Double, step: Int, peak: Double)
        /// Neither: the lowest and highest over the plateau.
        case steady(low: Double, high: Double)
    }

    var course: Course
    var firstStep: Int
    var lastStep: Int
    /// Lowest and highest over the plateau's saves.
    var low: Double
    var high: Double

    /// The same over saves.
    init?(records: [StepRecord], start: Int, end: Int) {
        let samples = records.map { LossPlateauDetector.LossSample(step: $0.step, loss: $0.loss ?? .nan, learningRate: $0.learningRate) }
        self.init(records: samples, start: start, end: end)
    }

    /// Nil when no finite, positive rate was saved (or logged) over the plateau.
    init?(records: [LossPlateauDetector.LossSample], start: Int, end: Int) {
        let rates = records.map { $0.learningRate.flatMap { $0.isFinite && $0 > 0 ? $0 : nil } }
        let plateau = (start...end).compactMap { index in rates[index].map { (records[index].step, $0) } }
        guard let lowest = plateau.map(\.1).min(), let highest = plateau.map(\.1).max(),
            let median = DetectorSupport.median(rates.compactMap { $0 }), let runHighest = rates.compactMap({ $0 }).max()
        else { return nil }
        (firstStep, lastStep, low, high) = (records[start].step, records[end].step, lowest, highest)
        // The save before the plateau belongs to it for a jump: a step's damage shows at the next save. A jump
        // stands above the rates before it and those after it alike (a schedule's decay from a high rate, or a
        // warm-up's rise, does not).
        let around = (max(start - 1, 0)...end).filter { rates[$0] != nil }
        let isJump: (Int) -> Bool = { index in
            guard let value = rates[index] else { return false }
            let sides = [rates[..<index].compactMap { $0 }, rates[(index + 1)...].compactMap { $0 }].compactMap(DetectorSupport.median)
            return !sides.isEmpty && sides.allSatisfy { value >= Self.spikeFactor * $0 }
        }
        if let jump = around.filter(isJump).max(by: { (rates[$0] ?? 0) < (rates[$1] ?? 0) }), let value = rates[jump] {
            course = .spike(value: value, step: records[jump].step, median: median)
        } else if let first = plateau.first, let top = plateau.max(by: { $0.1 < $1.1 }), first.1 * Self.spikeFactor <= runHighest,
            top.1 > first.1
        {
            course = .warmUp(from: first.1, to: top.1, step: top.0, peak: runHighest)
        } else {
            course = .steady(low: lowest, high: highest)
        }
    }

    /// The evidence entries: the rate over the plateau and, for a jump, where it was.
    var evidence: [String: EvidenceValue] {
        var entries: [String: EvidenceValue] = ["lr_min": .number(low), "lr_max": .number(high)]
        if case .spike(let value, let step, let median) = course {
            entries["lr_spike"] = .number(value)
            entries["lr_spike_step"] = .int(step)
            entries["lr_run_median"] = .number(median)
        }
        return entries
    }
}
