import ElementTypes
import GradScopeMeasurement
import GradScopeModel
import GradScopeSources
import GradScopeStatistics

/// `zero-gradient`: a gradient that is exactly zero at every save — a dead
/// path: nothing downstream depends on the parameter, an activation before it
/// is saturated everywhere, or the graph is cut (detach, `.data`, a
/// non-differentiable op). Without saved gradients, optimizer moments that stay
/// exactly zero after the first update say the same thing: Adam's first moment
/// and SGD's momentum are running averages of the gradient.
///
/// Needs: gradients, or first/second moments. Threshold: exact zero — a
/// gradient that received anything, however small, is not zero.
package struct ZeroGradientDetector: Detector {
    package static let kind = FindingKind.zeroGradient
    package let scope: DetectorScope = [.file, .pair, .run]
    package let thresholdNames: [String] = []

    package func phrase(for finding: Finding) -> String { "\(finding.verdictSubject) gets zero gradient (dead path)" }

    package func detect(_ run: RunMeasurements, thresholds: Thresholds) -> DetectorOutcome {
        var findings: [Finding] = []
        let gradientKeys = run.indexedKeys(role: .gradient)
        if !gradientKeys.isEmpty {
            for key in gradientKeys {
                let series = run.indexedSeries(key)
                guard let first = series.first, let last = series.last,
                    series.allSatisfy({ $0.measurement.stats.count > 0 && $0.measurement.stats.zeros == $0.measurement.stats.count })
                else { continue }
                let gradient = last.measurement
                findings.append(
                    finding(
                        name: gradient.name, layer: gradient.layer, first: first.step, last: last.step,
                        saves: series.count, source: "gradient", elements: gradient.stats.count, run: run))
            }
            return DetectorOutcome(findings: findings)
        }
        let slotKeys = run.indexedKeys(role: .optimizer).filter { key in
            guard let slot = run.indexedSeries(key).first?.measurement.slot else { return false }
            return slot == .firstMoment || slot == .secondMoment || slot == .momentum
        }
        guard !slotKeys.isEmpty else {
            return .lacking("no gradients and no optimizer moments were saved")
        }
        // Frameworks save zero-filled slots before the first update (JAX backend, step 0): judge saves after
        // it, and a save at step 0 only when another moment in it is nonzero, which shows the optimizer has
        // updated (a file that holds no step is step 0 by position).
        let updatedAtZero =
            run.records.first { $0.step == 0 }.map { record in
                slotKeys.contains { key in
                    guard let slot = record.tensors[key] else { return false }
                    return slot.stats.count > 0 && slot.stats.zeros < slot.stats.count
                }
            } ?? false
        var byName: [String: [(key: TensorKey, series: [(step: Int, measurement: TensorMeasurement)])]] = [:]
        for key in slotKeys {
            let series = run.indexedSeries(key).filter { $0.step > 0 || updatedAtZero }
            guard let name = series.first?.measurement.name else { continue }
            byName[name, default: []].append((key, series))
        }
        var checkedAny = false
        for (name, slots) in byName.sorted(by: { $0.key < $1.key }) {
            guard !slots.isEmpty, slots.allSatisfy({ !$0.series.isEmpty }) else { continue }
            checkedAny = true
            let allZero = slots.allSatisfy { slot in
                slot.series.allSatisfy { $0.measurement.stats.count > 0 && $0.measurement.stats.zeros == $0.measurement.stats.count }
            }
            guard allZero, let series = slots.first?.series, let first = series.first, let last = series.last else { continue }
            let slotNames = slots.compactMap { $0.series.first?.measurement.slotName }.joined(separator: " and ")
            findings.append(
                finding(
                    name: name, layer: last.measurement.layer, first: first.step, last: last.step,
                    saves: series.count, source: "optimizer \(slotNames)", elements: last.measurement.stats.count, run: run))
        }
        if !checkedAny && findings.isEmpty {
            return .lacking("no gradients were saved, and the optimizer moments exist only at the first save (before any update)")
        }
        return DetectorOutcome(findings: findings)
    }

    package func finding(
        name: String, layer: String, first: Int, last: Int, saves: Int, source: String, elements: Int,
        run: RunMeasurements
    ) -> Finding {
        let span = first == last ? run.atStep(first) : "at every save from step \(first) to \(last)"
        let message = "\(name) receives exactly zero gradient \(span) (\(source)): a dead path; this parameter cannot learn."
        let explanation = ZeroGradientExplanation(elements: elements, source: source, saves: saves).text
        return Finding(
            kind: kind, severity: .warning, tensor: name, layer: layer, firstStep: first, lastStep: last,
            message: message, evidence: ["saves": .int(saves), "elements": .int(elements), "source": .string(source)],
            explanation: explanation)
    }
}
