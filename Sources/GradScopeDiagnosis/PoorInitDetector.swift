import ElementTypes
import GradScopeMeasurement
import GradScopeModel
import GradScopeSources
import GradScopeStatistics

/// `poor-init`: at the first saved step, kernels whose scale is far from what
/// their fan-in calls for, or whose units are identical (symmetry never broken).
///
/// The common initialisations give a kernel with fan-in n a standard deviation
/// between 1/√(3n) (PyTorch's default, kaiming_uniform with a = √5; LeCun
/// uniform) and √(2/n) (He/Kaiming normal); Xavier/Glorot falls between. A
/// kernel below `init_too_small_factor` (0.1) times the lower bound shrinks the
/// signal about 10x per layer, one above `init_too_large_factor` (10) times the
/// upper bound grows it as much. A constant kernel (std 0, nonzero) makes every
/// unit compute the same thing: an error when no random kernel follows it to tell
/// the units apart, else a warning; an all-zero hidden kernel is a warning (a
/// zero-initialised output layer is a known technique and only noted). Zero
/// biases and norm layers' gamma = 1, beta = 0 are normal and not checked.
/// Embedding tables have no fan-in rule and are judged against their own common
/// scales instead: a standard deviation below `init_too_small_factor` times 0.02
/// (BERT, GPT-2) or above `init_too_large_factor` times 1 (PyTorch's default).
/// Needs: for the scale rules, a first save known to be the initialisation (step 0
/// read from the file or its name, or step 1 counted in optimizer updates), or a
/// kernel whose scale held: when the first save comes after training began but the
/// kernel's std at the last save is within `heldScaleFactor` (2) of the first's,
/// over a stretch of the run at least as long as the training before the first
/// save (in the run's own unit: updates, epochs), training is not moving its scale,
/// and the first save's scale is taken as the initial one. The verdict then allows
/// for the change seen: a std r times off at most is flagged only when it is still
/// beyond the bound after dividing (too large) or multiplying (too small) by r.
/// A factor of 2 is well inside the factor-10 margins of the rules, so a kernel
/// flagged this way is off whichever way the unseen part of training moved it
/// within that factor. Symmetry is checked at any step.
package struct PoorInitDetector: Detector {
    package static let kind = FindingKind.poorInit
    package let scope: DetectorScope = [.file, .run]
    package let thresholdNames: [String] = ["init_too_small_factor", "init_too_large_factor"]

    package func phrase(for finding: Finding) -> String { "\(finding.verdictSubject) poorly initialised" }

    /// Largest change of a kernel's std between the first and the last save for its scale to count
    /// as held (see the type's documentation).
    package static let heldScaleFactor = 2.0

    /// For each kernel whose scale held from a first save after training began to the last save,
    /// the change factor (≥ 1) and the last step; empty when the run does not allow the judgement.
    package static func heldScales(_ run: RunMeasurements) -> (last: Int, change: [TensorKey: Double]) {
        guard run.records.count >= 2, let first = run.records.first, let last = run.records.last, run.stepsKnown,
            let origin = run.stepSource, origin != .position,
            // One run: no save whose weights are unrelated to the save before (``RunJumps``).
            RunJumps.unrelatedSaves(run).isEmpty
        else { return (0, [:]) }
        // The training before the first save: `step` updates, or up to `step + 1` epochs or saves
        // (epoch numbers may count from 0 or from 1).
        let before = run.stepsCountUpdates ? first.step : first.step + 1
        guard last.step - first.step >= before else { return (last.step, [:]) }
        var change: [TensorKey: Double] = [:]
        for key in run.indexedWeightKeys {
            guard let a = first.tensors[key]?.stats.std, let b = last.tensors[key]?.stats.std, a > 0, b > 0, a.isFinite, b.isFinite else {
                continue
            }
            let factor = max(a, b) / min(a, b)
            if factor <= heldScaleFactor { change[key] = factor }
        }
        return (last.step, change)
    }

    package func detect(_ run: RunMeasurements, thresholds: Thresholds) -> DetectorOutcome {
        guard let record = run.records.first else { return .lacking("no tensors were read") }
        // Step 0 is the initialisation when the file or its name says so (not an epoch, not the
        // file's position in the run); step 1 only when it counts optimizer steps (not "epoch 1").
        let atInit = (record.step == 0 && run.startsAtInitialisation) || (record.step == 1 && run.stepsCountUpdates)
        let kernels = run.indexedWeightKeys.compactMap { record.tensors[$0] }.filter { DetectorSupport.isKernel($0) }
        let held = atInit ? (last: record.step, change: [:]) : Self.heldScales(run)
        var judgedHeld = false
        guard !kernels.isEmpty else { return .lacking("no weight matrices or kernels to check") }
        var findings: [Finding] = []
        let lastKernel = kernels.last?.name
        for (position, kernel) in kernels.enumerated() where DetectorSupport.nonFinite(kernel) == 0 {
            guard let std = kernel.stats.std, let fanIn = DetectorSupport.fanIn(shape: kernel.shape, unitAxis: kernel.unitAxis), fanIn > 0,
                kernel.stats.count > 1
            else { continue }
            let isOutput = kernel.name == lastKernel
            // Units are interchangeable only while both their incoming and their outgoing weights are equal
            // (Goodfellow et al. 2016, §8.4): a random layer after this one tells them apart, slowly.
            let nextRandom = position + 1 < kernels.count && (kernels[position + 1].stats.std ?? 0) > 0
            let symmetry =
                nextRandom
                ? "its units start identical, and only the random weights of the next layer tell them apart, so they learn as near-copies at first"
                : "every unit computes the same thing and receives the same update, so symmetry is never broken"
            if std == 0 {
                let value = kernel.stats.mean ?? 0
                if value == 0 {
                    findings.append(
                        Finding(
                            kind: kind, severity: isOutput ? .info : .warning, tensor: kernel.name, layer: kernel.layer,
                            firstStep: record.step, lastStep: record.step,
                            message: isOutput
                                ? "\(kernel.name) (the output layer) starts at exactly zero: fine if intended (zero-initialised head), but every output starts identical."
                                : "\(kernel.name) is all zeros \(run.atStep(record.step)): \(symmetry).",
                            evidence: ["std": 0.0, "mean": 0.0, "elements": .int(kernel.stats.count)],
                            explanation: PoorInitExplanation.allZero.text))
                } else {
                    findings.append(
                        Finding(
                            kind: kind, severity: nextRandom ? .warning : .error, tensor: kernel.name, layer: kernel.layer,
                            firstStep: record.step, lastStep: record.step,
                            message:
                                "Every element of \(kernel.name) equals \(formatSignificant(value)) \(run.atStep(record.step)): \(symmetry).",
                            evidence: ["std": 0.0, "value": .number(value), "elements": .int(kernel.stats.count)],
                            explanation: PoorInitExplanation.constant.text))
                }
                continue
            }
            // A first save after training began: judged only when the kernel's scale held to the last save,
            // allowing for the change seen (`margin`).
            let margin = atInit ? 1.0 : held.change[kernel.key] ?? 0
            guard margin > 0 else { continue }
            if !atInit { judgedHeld = true }
            let heldNote =
                atInit
                ? ""
                : " (the first save, after training began; its std stayed within \(formatSignificant(margin))x of it to step \(held.last), so training has not been changing its scale)"
            if DetectorSupport.isEmbedding(kernel.name, shape: kernel.shape) {
                if var finding = embeddingScale(kernel, std: std, step: record.step, thresholds: thresholds, margin: margin) {
                    if !atInit {
                        finding.message = String(finding.message.dropLast()) + heldNote + "."
                        finding.evidence["scale_held_to_step"] = .int(held.last)
                        finding.evidence["scale_change"] = .number(margin)
                    }
                    findings.append(finding)
                }
                continue
            }
            let lower = 1 / (3 * Double(fanIn)).squareRoot()
            let upper = (2 / Double(fanIn)).squareRoot()
            var problem: (String, Severity)?
            if std * margin < thresholds.initTooSmallFactor * lower {
                problem = (
                    "too small: std \(formatSignificant(std)) is \(formatSignificant(lower / std))x below 1/√(3·fan_in) = \(formatSignificant(lower)) (fan-in \(fanIn)); signals shrink layer after layer toward zero output",
                    .warning
                )
            } else if std / margin > thresholds.initTooLargeFactor * upper {
                problem = (
                    "too large: std \(formatSignificant(std)) is \(formatSignificant(std / upper))x above √(2/fan_in) = \(formatSignificant(upper)) (fan-in \(fanIn)); signals grow layer after layer and saturate or explode",
                    .warning
                )
            }
            guard let (what, severity) = problem else { continue }
            var evidence: [String: EvidenceValue] = [
                "std": .number(std), "fan_in": .int(fanIn), "expected_std_min": .number(lower), "expected_std_max": .number(upper),
            ]
            if !atInit {
                evidence["scale_held_to_step"] = .int(held.last)
                evidence["scale_change"] = .number(margin)
            }
            findings.append(
                Finding(
                    kind: kind, severity: severity, tensor: kernel.name, layer: kernel.layer, firstStep: record.step, lastStep: record.step,
                    message: "\(kernel.name) is initialised \(what)\(heldNote).",
                    evidence: evidence,
                    explanation: PoorInitExplanation.scale(fanIn: fanIn, lower: lower, upper: upper).text))
        }
        if !atInit && findings.isEmpty && !judgedHeld {
            let reason =
                record.step == 0
                ? "the first save's step is not known to be the initialisation (no step in the file; a file name's order or an epoch number): initial scales cannot be judged (symmetry was checked)"
                : "the first save is at step \(record.step), after training began: initial scales cannot be judged (symmetry was checked)"
            return DetectorOutcome(findings: [], notChecked: reason)
        }
        return DetectorOutcome(findings: findings)
    }

    /// Embedding tables have no fan-in rule: common initialisations range from
    /// N(0, 0.02) (BERT, GPT-2) through Keras's U(−0.05, 0.05) to PyTorch's N(0, 1).
    package func embeddingScale(_ table: TensorMeasurement, std: Double, step: Int, thresholds: Thresholds, margin: Double = 1) -> Finding? {
        let lower = 0.02, upper = 1.0
        let problem: String
        if std * margin < thresholds.initTooSmallFactor * lower {
            problem =
                "too small: std \(formatSignificant(std)) is \(formatSignificant(lower / std))x below 0.02, the smallest common embedding initialisation (BERT, GPT-2); every input starts as a near-zero vector, so the layers after it see almost no signal"
        } else if std / margin > thresholds.initTooLargeFactor * upper {
            problem =
                "too large: std \(formatSignificant(std)) is \(formatSignificant(std / upper))x above N(0, 1), PyTorch's default for embeddings"
        } else {
            return nil
        }
        return Finding(
            kind: kind, severity: .warning, tensor: table.name, layer: table.layer, firstStep: step, lastStep: step,
            message: "The embedding table \(table.name) is initialised \(problem).",
            evidence: ["std": .number(std), "expected_std_min": .number(lower), "expected_std_max": .number(upper)],
            explanation: PoorInitExplanation.embedding.text)
    }
}
