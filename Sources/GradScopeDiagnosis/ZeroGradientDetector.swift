import ElementTypes
import GradScopeMeasurement
import GradScopeModel
import GradScopeSources
import GradScopeStatistics

/// `zero-gradient`: a gradient that is exactly zero at every save, or from some
/// save to the last (two saves or more, after a nonzero one: the onset is dated) — a dead
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

    package func phrase(for finding: Finding) -> String {
        finding.evidence["last_nonzero_step"] != nil
            ? "\(finding.verdictSubject) gets no gradient\(finding.verdictSince) (dead path)"
            : "\(finding.verdictSubject) gets zero gradient (dead path)"
    }

    package func detect(_ run: RunMeasurements, thresholds: Thresholds) -> DetectorOutcome {
        var findings: [Finding] = []
        let gradientKeys = run.indexedKeys(role: .gradient)
        if !gradientKeys.isEmpty {
            for key in gradientKeys {
                // Judged from the last save back: only the trailing zero saves and the one before them are
                // read (one save, for a gradient that is not zero at the last).
                let places = run.places(of: key)
                guard let from = Self.zeroSince(count: places.count, zero: { Self.zero(run.measurement(at: places[$0])) }),
                    let last = places.last
                else { continue }
                let gradient = run.measurement(at: last)
                findings.append(
                    finding(
                        name: gradient.name, layer: gradient.layer, first: run.records[places[from].record].step,
                        last: run.records[last.record].step, saves: places.count - from, source: "gradient", elements: gradient.stats.count,
                        run: run, lastNonzero: from > 0 ? run.records[places[from - 1].record].step : nil))
            }
            return DetectorOutcome(findings: findings)
        }
        let slotKeys = run.indexedKeys(role: .optimizer).filter { key in
            guard let slot = run.indexedFirst(key)?.slot else { return false }
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
            // The saves that hold every slot of the parameter, in step order.
            guard let series = slots.first?.series else { continue }
            let bySlot = slots.map { slot in Dictionary(slot.series.map { ($0.step, $0.measurement) }, uniquingKeysWith: { a, _ in a }) }
            let saves = series.compactMap { entry -> (step: Int, slots: [TensorMeasurement])? in
                let all = bySlot.compactMap { $0[entry.step] }
                return all.count == bySlot.count ? (entry.step, all) : nil
            }
            guard let from = Self.zeroSince(saves.map(\.slots)), let last = saves.last, let lastSlot = last.slots.first else { continue }
            let slotNames = slots.compactMap { $0.series.first?.measurement.slotName }.joined(separator: " and ")
            findings.append(
                finding(
                    name: name, layer: lastSlot.layer, first: saves[from].step, last: last.step,
                    saves: saves.count - from, source: "optimizer \(slotNames)", elements: lastSlot.stats.count, run: run,
                    lastNonzero: from > 0 ? saves[from - 1].step : nil))
        }
        if !checkedAny && findings.isEmpty {
            return .lacking("no gradients were saved, and the optimizer moments exist only at the first save (before any update)")
        }
        return DetectorOutcome(findings: findings)
    }

    /// The index of the first save of the trailing run of saves at which every tensor given is exactly
    /// zero (every element of each), when that run is the whole series, or begins after a nonzero save
    /// and holds two saves or more: one zero save after live ones cannot show that the gradient stays
    /// zero (a batch on which the path happened to carry nothing), two show it stopped. Nil otherwise.
    package static func zeroSince(_ saves: [[TensorMeasurement]]) -> Int? {
        zeroSince(count: saves.count) { !saves[$0].isEmpty && saves[$0].allSatisfy(zero) }
    }

    /// ``zeroSince(_:)`` of `count` saves, `zero` telling whether every tensor given at a save is exactly
    /// zero: a series of one tensor is judged without wrapping each of its points in a list.
    package static func zeroSince(count: Int, zero: (Int) -> Bool) -> Int? {
        var from = count
        while from > 0 && zero(from - 1) { from -= 1 }
        guard from < count else { return nil }
        return from == 0 || count - from >= 2 ? from : nil
    }

    /// Whether every element of `tensor` is exactly zero (and it has some).
    package static func zero(_ tensor: TensorMeasurement) -> Bool { tensor.stats.count > 0 && tensor.stats.zeros == tensor.stats.count }

    /// `lastNonzero` is the last save before `first` at which it was not zero, when the zero began after one.
    package func finding(
        name: String, layer: String, first: Int, last: Int, saves: Int, source: String, elements: Int,
        run: RunMeasurements, lastNonzero: Int? = nil
    ) -> Finding {
        let span = first == last ? run.atStep(first) : "at every save from step \(first) to \(last)"
        let message: String
        var evidence: [String: EvidenceValue] = ["saves": .int(saves), "elements": .int(elements), "source": .string(source)]
        if let lastNonzero {
            message =
                "\(name) receives no gradient since step \(first): exactly zero at every save from step \(first) to \(last) (\(source)), after a nonzero one at step \(lastNonzero); a dead path from then on, this parameter no longer learns."
            evidence["last_nonzero_step"] = .int(lastNonzero)
        } else {
            message = "\(name) receives exactly zero gradient \(span) (\(source)): a dead path; this parameter cannot learn."
        }
        let explanation = ZeroGradientExplanation(elements: elements, source: source, saves: saves, lastNonzero: lastNonzero).text
        return Finding(
            kind: kind, severity: .warning, tensor: name, layer: layer, firstStep: first, lastStep: last,
            message: message, evidence: evidence, explanation: explanation)
    }
}
