import ElementTypes
import GradScopeMeasurement
import GradScopeModel
import GradScopeSources
import GradScopeStatistics

/// `dead-units`: units (output neurons, filters) that get no gradient at all,
/// or never move, over the later half of the run, or over a trailing part of it
/// holding at least half its saves and three saves (units that died during it);
/// or whose ReLU output is zero for ≥ `dead_activation_fraction` (99%) of the
/// probe batch. Reported as a count out of the layer's units.
///
/// Needs: gradients, activations, or two saves or more (movement). Embedding
/// tables and biases are left out: rows of tokens absent from a batch get no gradient by design.
/// Thresholds: `dead_units_warning_fraction` (25%; a warning needs two saves of
/// evidence, one is at most info) and `dead_units_info_fraction` (5%).
package struct DeadUnitsDetector: Detector {
    package static let kind = FindingKind.deadUnits
    package let scope: DetectorScope = [.file, .run]
    package let thresholdNames: [String] = ["dead_units_warning_fraction", "dead_units_info_fraction", "dead_activation_fraction"]

    package func phrase(for finding: Finding) -> String {
        if case .int(let dead)? = finding.evidence["dead_units"], case .int(let units)? = finding.evidence["units"] {
            // One save shows units silent on its batch, not units that never recover.
            if finding.evidence["window_saves"] == .int(1) {
                return "\(finding.verdictSubject) has \(dead)/\(units) units silent \(finding.firstStep.map { "at step \($0)" } ?? "in this save")"
            }
            return "\(finding.verdictSubject) has \(dead)/\(units) dead units\(finding.verdictSince)"
        }
        return "\(finding.verdictSubject) has dead units\(finding.verdictSince)"
    }

    package func detect(_ run: RunMeasurements, thresholds: Thresholds) -> DetectorOutcome {
        let windows = run.unitWindows.filter {
            !DetectorSupport.isEmbedding($0.name, shape: DetectorSupport.weightShape(run, $0.name)) && !TensorNames.isBias($0.name) && $0.units >= 2
        }
        guard !windows.isEmpty else {
            return .lacking(
                run.hasGradients
                    ? "no gradient of a matrix or kernel with a unit axis was saved"
                    : "needs gradients, activations, or at least two saved steps of matrices")
        }
        var findings: [Finding] = []
        for whole in windows {
            // Units that die during the later half are alive somewhere in it: judge also the trailing parts
            // of the window that hold at least half of its saves (a quarter of the run) and three saves,
            // and keep the one with the most dead units (the longest among equals).
            var window = whole
            for from in 1..<max(whole.saves, 1) where whole.saves - from >= 3 && 2 * (whole.saves - from) >= whole.saves {
                let part = whole.trailing(from: from)
                if part.deadCount > window.deadCount { window = part }
            }
            let dead = window.deadCount
            guard dead > 0 else { continue }
            // A gradient that is zero everywhere is a dead path (zero-gradient), not dead units.
            if window.source != .activation && dead == window.units { continue }
            let fraction = Double(dead) / Double(window.units)
            guard fraction >= thresholds.deadUnitsInfoFraction else { continue }
            // One save cannot show that a unit never recovers: a live unit that fires with probability p per
            // example gets a zero-gradient batch of B examples with probability (1 − p)^B.
            let severity: Severity = fraction >= thresholds.deadUnitsWarningFraction && window.saves >= 2 ? .warning : .info
            let onset = onsetStep(run, window: window, dead: dead) ?? window.firstStep
            let percent = Int((fraction * 100).rounded())
            let how: String
            switch window.source {
            case .gradient: how = "get exactly zero gradient at every save"
            case .activation: how = "output zero for at least \(Int(thresholds.deadActivationFraction * 100))% of the probe batch at every save"
            case .movement: how = "never move"
            }
            let message: String
            if window.saves == 1 {
                // One save: what it shows, at that save; whether the units stay so takes several.
                let shown: String
                switch window.source {
                case .gradient: shown = "get exactly zero gradient"
                case .activation: shown = "output zero for at least \(Int(thresholds.deadActivationFraction * 100))% of the probe batch"
                case .movement: shown = "did not move"
                }
                message =
                    "\(dead) of \(window.units) units (\(percent)%) of \(window.name) \(shown) \(run.atStep(window.lastStep)), the only save read: dead units do so at every save, live ones can on one batch (scan the run to tell)."
            } else {
                message =
                    "\(dead) of \(window.units) units (\(percent)%) of \(window.name) are dead: they \(how)\(run.stepsKnown ? " from step \(onset) to \(window.lastStep)" : "")."
            }
            let explanation = DeadUnitsExplanation(
                wholeWindow: window.saves == whole.saves, saves: window.saves, firstStep: window.firstStep,
                lastStep: window.lastStep, source: window.source, percent: percent, stepsKnown: run.stepsKnown
            ).text
            var evidence: [String: EvidenceValue] = [
                "dead_units": .int(dead), "units": .int(window.units),
                "dead_fraction": .number(fraction), "evidence": .string(window.source.rawValue),
                "window_first_step": .int(window.firstStep), "window_saves": .int(window.saves),
            ]
            var why = explanation
            // A saved learning rate that jumped at the onset or the save before it: the step that killed them.
            if run.records.count >= 2, let index = run.records.firstIndex(where: { $0.step == onset }),
                let rate = PlateauLearningRate(records: run.records, start: index, end: index),
                case .spike(let value, let step, let median) = rate.course
            {
                evidence["lr_spike"] = .number(value)
                evidence["lr_spike_step"] = .int(step)
                evidence["lr_run_median"] = .number(median)
                why =
                    "The saved learning rate jumped to \(formatSignificant(value)) at step \(step) (the run's median is \(formatSignificant(median))), "
                    + "at or just before these units went silent: one update that large can push a unit's bias so negative that no example activates it. "
                    + explanation
            }
            findings.append(
                Finding(
                    kind: kind, severity: severity, tensor: window.name, layer: window.layer,
                    firstStep: onset, lastStep: window.lastStep, message: message, evidence: evidence, explanation: why))
        }
        return DetectorOutcome(findings: findings)
    }

    /// The first step from which at least `dead` units were all-zero at every later save.
    package func onsetStep(_ run: RunMeasurements, window: UnitWindow, dead: Int) -> Int? {
        guard window.source == .gradient else { return nil }
        let series = run.indexedSeries(window.key)
        var onset: Int?
        for entry in series.reversed() {
            guard let zero = entry.measurement.zeroUnits, zero >= dead else { break }
            onset = entry.step
        }
        return onset
    }
}
