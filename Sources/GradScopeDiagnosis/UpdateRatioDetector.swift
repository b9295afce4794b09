import ElementTypes
import GradScopeMeasurement
import GradScopeModel
import GradScopeSources
import GradScopeStatistics

/// `update-ratio`: the per-step ‖ΔW‖/‖W‖ of a matrix or kernel far outside the
/// healthy band around 1e-3 (CS231n, "Babysitting the learning process").
///
/// Saves are usually many steps apart: with r the relative change between two
/// saves k steps apart, r/k is a lower bound of the per-step ratio (updates all
/// in one direction) and r/√k an upper bound for random-walk updates. Too large:
/// r/k above `update_ratio_high` (0.1, a hundred times the healthy rate) at any
/// save. Too small: r/√k below `update_ratio_low` (1e-6) at every save while the
/// model's median is at least `update_ratio_low_contrast` (100) times higher —
/// weights that do not move at all are reported as `frozen` instead. A change
/// relative to a kernel still near zero (a zero-initialised layer) is not a rate
/// and is skipped.
/// Needs: two saves or more, whose step numbers count optimizer updates.
package struct UpdateRatioDetector: Detector {
    package static let kind = FindingKind.updateRatio
    package let scope: DetectorScope = [.pair, .run]
    package let thresholdNames: [String] = ["update_ratio_high", "update_ratio_low", "update_ratio_low_contrast", "init_too_small_factor"]

    package func phrase(for finding: Finding) -> String { "\(finding.verdictSubject) update ratio out of the healthy band\(finding.verdictSince)" }

    package func detect(_ run: RunMeasurements, thresholds: Thresholds) -> DetectorOutcome {
        guard run.records.count >= 2 else { return .lacking("needs at least two saved steps") }
        guard run.stepsCountUpdates else {
            return .lacking(
                "the step numbers do not count optimizer updates (epochs, numbers in file names not labelled as steps, or the files' order): per-step update ratios cannot be derived"
            )
        }
        var findings: [Finding] = []
        var perTensorUpper: [TensorKey: [Double]] = [:]
        var steps: [TensorKey: [Int]] = [:]
        // Each point's change, finiteness and norm are read where its table keeps them (``RunMeasurements/places(of:)``);
        // a point is built whole only where those do not tell (NaN or ±Inf in it, full statistics).
        let nonFinite = run.indexedNonFinite()
        for key in run.indexedWeightKeys where DetectorSupport.mayBeKernel(run, key) {
            let places = run.places(of: key)
            guard let lastPlace = places.last else { continue }
            let weight = run.records[lastPlace.record].tensors.layout.descriptors[lastPlace.position]
            guard DetectorSupport.isKernel(shape: weight.shape, name: weight.name) else { continue }
            var reportedHigh = false
            for index in 1..<max(places.count, 1) where places.count >= 2 {
                let place = places[index]
                let step = run.records[place.record].step
                let previousStep = run.records[places[index - 1].record].step
                let relative: Double
                if run.records[place.record].tensors.detail == .full || nonFinite[place.record].contains(Int32(place.position)) {
                    let measurement = run.measurement(at: place)
                    guard let drift = measurement.drift, let change = drift.relativeChange, change.isFinite,
                        DetectorSupport.nonFinite(measurement) == 0, drift.nonFinite == 0
                    else { continue }
                    relative = change
                } else {
                    // No NaN or ±Inf in it, and a compact drift counts none.
                    guard let change = run.records[place.record].tensors.normsAndChange(at: place.position).relativeChange, change.isFinite
                    else { continue }
                    relative = change
                }
                // Relative to a weight still near zero (a zero-initialised layer), a change is not a rate.
                if DetectorSupport.nearZero(run, at: places[index - 1], nonFinite: nonFinite, thresholds: thresholds) { continue }
                let k = Double(max(step - previousStep, 1))
                let lower = relative / k, upper = relative / k.squareRoot()
                perTensorUpper[key, default: []].append(upper)
                steps[key, default: []].append(step)
                if !reportedHigh && lower > thresholds.updateRatioHigh {
                    reportedHigh = true
                    let severity: Severity = lower > 1 ? .error : .warning
                    findings.append(
                        Finding(
                            kind: kind, severity: severity, tensor: weight.name, layer: weight.layer, firstStep: step, lastStep: step,
                            message:
                                "\(weight.name) changes by \(formatSignificant(lower)) of its norm per step at step \(step) (healthy is around 1e-3): updates this large are unstable.",
                            evidence: [
                                "relative_change": .number(relative), "steps_between_saves": .int(Int(k)),
                                "per_step_lower_bound": .number(lower), "per_step_upper_bound": .number(upper),
                            ],
                            explanation: UpdateRatioExplanation.tooLarge(from: previousStep, to: step, relative: relative, perStep: lower)
                                .text))
                }
            }
        }
        // Stuck tensors: moving, but orders of magnitude slower than the rest.
        let medians = perTensorUpper.compactMapValues { DetectorSupport.median($0) }
        if let modelMedian = DetectorSupport.median(Array(medians.values)) {
            for key in run.indexedWeightKeys {
                guard let uppers = perTensorUpper[key], !uppers.isEmpty, let highest = uppers.max(), highest > 0,
                    highest < thresholds.updateRatioLow, modelMedian >= thresholds.updateRatioLowContrast * highest,
                    let weight = run.indexedLast(key), let stepList = steps[key]
                else { continue }
                findings.append(
                    Finding(
                        kind: kind, severity: .warning, tensor: weight.name, layer: weight.layer, firstStep: stepList.first,
                        lastStep: stepList.last,
                        message:
                            "\(weight.name) barely moves: at most \(formatSignificant(highest)) of its norm per step, while the model's median is \(formatSignificant(modelMedian)).",
                        evidence: ["per_step_upper_bound_max": .number(highest), "model_median_per_step": .number(modelMedian)],
                        explanation: UpdateRatioExplanation.stuck(contrast: modelMedian / highest).text))
            }
        }
        return DetectorOutcome(findings: findings)
    }
}
