import ElementTypes
import GradScopeMeasurement
import GradScopeModel
import GradScopeSources
import GradScopeStatistics

/// `dead-units`: units (output neurons, filters) that get no gradient at all,
/// or never move, over the later half of the run, or over a trailing part of it
/// holding at least half its saves and three saves (units that died during it);
/// or whose ReLU output is zero for ≥ `dead_activation_fraction` (99%) of the
/// probe batch. Reported as a count out of the layer's units; each death dated at the save after
/// which its unit never got a gradient, moved or fired again, over the whole run.
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
            $0.source != .inputs && !DetectorSupport.isEmbedding($0.name, shape: DetectorSupport.weightShape(run, $0.name))
                && !TensorNames.isBias($0.name) && $0.units >= 2
        }
        guard !windows.isEmpty else {
            return .lacking(
                run.hasGradients
                    ? "no gradient of a matrix or kernel with a unit axis was saved"
                    : "needs gradients, activations, or at least two saved steps of matrices")
        }
        var findings: [Finding] = []
        // A saved activation exactly zero in every unit to the end is a layer that outputs zero (`collapsing`).
        let silent = Set(CollapsingDetector.silentActivations(run).map(\.key))
        // The later half of the run's saves is judged; the saves before it only date deaths.
        let judgedFromStep = run.records.isEmpty ? 0 : run.records[RunMeasurer.windowStart(count: run.records.count)].step
        for full in windows {
            guard let (window, offset) = Self.judged(full, fromStep: judgedFromStep) else { continue }
            let dead = window.deadCount
            guard dead > 0 else { continue }
            // A gradient that is zero everywhere is a dead path (zero-gradient), not dead units.
            if window.source != .activation && dead == window.units { continue }
            if window.source == .activation && dead == window.units && silent.contains(window.key) { continue }
            let fraction = Double(dead) / Double(window.units)
            guard fraction >= thresholds.deadUnitsInfoFraction else { continue }
            // One save cannot show that a unit never recovers: a live unit that fires with probability p per
            // example gets a zero-gradient batch of B examples with probability (1 − p)^B.
            let severity: Severity = fraction >= thresholds.deadUnitsWarningFraction && window.saves >= 2 ? .warning : .info
            // Each death dated at the save after which its unit was never alive again, over the whole run.
            let deaths = Self.deaths(full, before: offset)
            let onset = deaths.onset
            let percent = Int((fraction * 100).rounded())
            let how: String
            switch window.source {
            case .gradient: how = "get exactly zero gradient at every save"
            case .activation: how = "output zero for at least \(Int(thresholds.deadActivationFraction * 100))% of the probe batch at every save"
            case .movement, .inputs: how = "never move"
            }
            let message: String
            if window.saves == 1 {
                // One save: what it shows, at that save; whether the units stay so takes several.
                let shown: String
                switch window.source {
                case .gradient: shown = "get exactly zero gradient"
                case .activation: shown = "output zero for at least \(Int(thresholds.deadActivationFraction * 100))% of the probe batch"
                case .movement, .inputs: shown = "did not move"
                }
                message =
                    "\(dead) of \(window.units) units (\(percent)%) of \(window.name) \(shown) \(run.atStep(window.lastStep)), the only save read: dead units do so at every save, live ones can on one batch (scan the run to tell)."
            } else {
                message =
                    "\(dead) of \(window.units) units (\(percent)%) of \(window.name) are dead: they \(how)\(run.stepsKnown ? deaths.span(to: window.lastStep, source: window.source) : "")."
            }
            let explanation = DeadUnitsExplanation(
                wholeWindow: window.saves == full.saves - full.index(atOrAfter: judgedFromStep), saves: window.saves, firstStep: window.firstStep,
                lastStep: window.lastStep, source: window.source, percent: percent, stepsKnown: run.stepsKnown
            ).text
            var evidence: [String: EvidenceValue] = [
                "dead_units": .int(dead), "units": .int(window.units),
                "dead_fraction": .number(fraction), "evidence": .string(window.source.rawValue),
                "window_first_step": .int(window.firstStep), "window_saves": .int(window.saves),
            ]
            if !deaths.groups.isEmpty {
                evidence["death_steps"] = .list(deaths.groups.map { .int($0.step) })
                evidence["death_units"] = .list(deaths.groups.map { .int($0.units) })
                evidence["never_alive"] = .int(deaths.neverAlive)
            }
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
        findings.append(contentsOf: neighbourFindings(run, thresholds: thresholds, judgedFromStep: judgedFromStep))
        return DetectorOutcome(findings: findings)
    }

    /// The part of `full` judged: the saves from `fromStep` on (the later half of the run) or, for
    /// units that die during it and so are alive somewhere in it, the trailing part holding at least
    /// half of its saves (a quarter of the run) and three saves with the most dead units (the longest
    /// among equals); and the index in `full` of its first save. Nil when no save is that late.
    package static func judged(_ full: UnitWindow, fromStep: Int) -> (window: UnitWindow, offset: Int)? {
        let judgedFrom = full.index(atOrAfter: fromStep)
        guard judgedFrom < full.saves else { return nil }
        let whole = full.trailing(from: judgedFrom)
        var window = whole
        var offset = judgedFrom
        for from in 1..<max(whole.saves, 1) where whole.saves - from >= 3 && 2 * (whole.saves - from) >= whole.saves {
            let part = whole.trailing(from: from)
            if part.deadCount > window.deadCount {
                window = part
                offset = judgedFrom + from
            }
        }
        return (window, offset)
    }

    /// Dead units read from the next layer (docs/DETECTORS.md, "Evidence from neighbours"): along a
    /// link of the simple chain, the next layer's weight gradient (or second moment) exactly zero in
    /// some of its input units at every judged save, but not in all (all is `collapsing`'s zero output,
    /// or a dead path). Reported on the layer whose units they are.
    package func neighbourFindings(_ run: RunMeasurements, thresholds: Thresholds, judgedFromStep: Int) -> [Finding] {
        var findings: [Finding] = []
        for link in LayerChain.links(run) where link.units >= 2 {
            guard let evidence = LayerChain.evidence(run, link), evidence.inputs.units == link.units,
                let (window, offset) = Self.judged(evidence.inputs, fromStep: judgedFromStep)
            else { continue }
            let dead = window.deadCount
            guard dead > 0, dead < window.units else { continue }
            let fraction = Double(dead) / Double(window.units)
            guard fraction >= thresholds.deadUnitsInfoFraction else { continue }
            let severity: Severity = fraction >= thresholds.deadUnitsWarningFraction && window.saves >= 2 ? .warning : .info
            let deaths = Self.deaths(evidence.inputs, before: offset)
            let percent = Int((fraction * 100).rounded())
            let inputs = LayerChain.inputWord(run, kernel: evidence.kernel)
            let saves =
                window.saves == 1
                ? run.atStep(window.lastStep) + ", the only save judged"
                : run.stepsKnown ? "at every save\(deaths.span(to: window.lastStep, source: .inputs))" : "at every save"
            let how =
                evidence.fromMoments
                ? "they have output zero on every example at every update so far: \(evidence.what) of the next layer's \(link.consumerKernel), a running average of g², is exactly zero in those \(dead) input \(inputs) \(saves)"
                : "they output zero on every example that carries gradient: \(evidence.what) of the next layer, \(link.consumerKernel), is exactly zero in those \(dead) input \(inputs) \(saves), while it is not in the others"
            var evidenceValues: [String: EvidenceValue] = [
                "dead_units": .int(dead), "units": .int(window.units), "dead_fraction": .number(fraction),
                "evidence": .string(evidence.fromMoments ? "next-layer-second-moment" : "next-layer-gradient"),
                "next_layer": .string(link.consumer), "next_kernel": .string(link.consumerKernel),
                "window_first_step": .int(window.firstStep), "window_saves": .int(window.saves),
            ]
            if !deaths.groups.isEmpty {
                evidenceValues["death_steps"] = .list(deaths.groups.map { .int($0.step) })
                evidenceValues["death_units"] = .list(deaths.groups.map { .int($0.units) })
                evidenceValues["never_alive"] = .int(deaths.neverAlive)
            }
            findings.append(
                Finding(
                    kind: kind, severity: severity, tensor: link.producerKernel, layer: link.producer, firstStep: deaths.onset,
                    lastStep: window.lastStep,
                    message: "\(dead) of \(window.units) units (\(percent)%) of layer `\(link.producer)` are dead: \(how).",
                    evidence: evidenceValues,
                    explanation: DeadUnitsExplanation.neighbour(consumer: link.consumerKernel, inputs: inputs, percent: percent)))
        }
        return findings
    }

    /// When the units dead from save `before` of `window` on died: grouped by the last save at which
    /// each was alive (the save after which it never got a gradient, moved or fired again), and how
    /// many were never alive at any save. `onset` is the first save at which one of them was dead for good.
    package static func deaths(_ window: UnitWindow, before: Int) -> UnitDeaths {
        var byIndex: [Int: Int] = [:]
        var neverAlive = 0
        for last in window.lastAlive where last < before {
            if last < 0 { neverAlive += 1 } else { byIndex[last, default: 0] += 1 }
        }
        let groups = byIndex.keys.sorted().map { (step: window.steps[$0], units: byIndex[$0] ?? 0) }
        let onsetIndex = neverAlive > 0 ? 0 : (byIndex.keys.min().map { $0 + 1 } ?? 0)
        let onset = window.steps.indices.contains(onsetIndex) ? window.steps[onsetIndex] : window.lastStep
        return UnitDeaths(groups: groups, neverAlive: neverAlive, onset: onset)
    }
}

/// The deaths of a layer's dead units: see ``DeadUnitsDetector/deaths(_:before:)``.
package struct UnitDeaths: Sendable, Equatable {
    /// The last save at which units were alive, and how many, in step order.
    package var groups: [(step: Int, units: Int)]
    /// Units alive at no save.
    package var neverAlive: Int
    /// The first save at which one of the units was dead for good.
    package var onset: Int

    package static func == (a: UnitDeaths, b: UnitDeaths) -> Bool {
        a.neverAlive == b.neverAlive && a.onset == b.onset && a.groups.map(\.step) == b.groups.map(\.step)
            && a.groups.map(\.units) == b.groups.map(\.units)
    }

    /// " from step 250 to 600" when the units died together (or were never alive), with the save at
    /// which they were last alive (" (the last gradient came at step 200)"); else " since dying after
    /// steps 50, 100 and 200, to step 600", each dated by its last live save (how many died after each
    /// is in the evidence).
    package func span(to last: Int, source: UnitEvidence) -> String {
        let together = " from step \(onset) to \(last)"
        guard !groups.isEmpty else { return together }
        if groups.count == 1 && neverAlive == 0, let group = groups.first {
            let event: String
            switch source {
            case .gradient: event = "the last gradient came"
            case .activation: event = "they last fired"
            case .movement: event = "they last moved"
            case .inputs: event = "they last output something"
            }
            return together + " (\(event) at step \(group.step))"
        }
        let steps = groups.map { "\($0.step)" }
        let list = steps.count == 1 ? "step \(steps[0])" : "steps " + steps.dropLast().joined(separator: ", ") + " and " + (steps.last ?? "")
        return " since dying after \(list)\(neverAlive > 0 ? " (or from the start)" : ""), to step \(last)"
    }
}
