import ElementTypes
import Foundation
import GradScopeMeasurement
import GradScopeModel
import GradScopeSources
import GradScopeStatistics

/// `collapsing`: a layer whose weights or outputs shrink toward zero over the
/// run — the "collapsing toward zero output" layer.
///
/// Weights: the norm of a matrix or kernel falls by at least `collapse_factor`
/// (10x, an order of magnitude) from its largest value at any earlier save to the
/// last save (saves holding NaN/Inf left out).
/// Outputs: a saved activation (e.g. the logits) whose standard deviation
/// falls by `activation_collapse_factor` (10x). Healthy training, weight decay
/// included, changes a layer's norm by well under an order of magnitude.
/// The onset is the first save at which the norm had halved from its peak.
/// Zero output: a layer that outputs zero for every input, read from the next layer's
/// gradient (``zeroOutputs(_:)``) or from its saved activation, exactly zero everywhere
/// (``silentActivations(_:)``).
/// Needs: two saves or more.
package struct CollapsingDetector: Detector {
    package static let kind = FindingKind.collapsing
    package let scope: DetectorScope = [.pair, .run]
    package let thresholdNames: [String] = ["collapse_factor", "activation_collapse_factor"]

    package func phrase(for finding: Finding) -> String {
        finding.evidence["zero_output"] == .bool(true)
            ? "\(finding.verdictSubject) outputs zero for every input\(finding.verdictSince)"
            : "\(finding.verdictSubject) collapsing toward zero output\(finding.verdictSince)"
    }

    package func detect(_ run: RunMeasurements, thresholds: Thresholds) -> DetectorOutcome {
        guard run.records.count >= 2 else { return .lacking("needs at least two saved steps") }
        var findings = zeroOutputs(run)
        // The saved activations say it directly; the next layer's evidence, when it says the same, joins it.
        let silentActivations = Self.silentActivations(run)
        for silent in silentActivations {
            if let at = findings.firstIndex(where: { $0.evidence["next_layer"] == .string(silent.nextLayer ?? "") }) {
                findings[at].evidence["activation"] = .string(silent.name)
                findings[at].evidence["activation_saves"] = .int(silent.saves)
                findings[at].message +=
                    " The saved activation \(silent.name) says the same: every value of it is exactly zero \(silent.span(run))."
            } else {
                findings.append(silent.finding(run))
            }
        }
        // A kernel's norms are read where the tables keep them, at the saves where it holds no NaN or ±Inf.
        let nonFinite = run.indexedNonFinite()
        for key in run.indexedWeightKeys where DetectorSupport.mayBeKernel(run, key) {
            let places = run.places(of: key).filter { !nonFinite[$0.record].contains(Int32($0.position)) }
            guard places.count >= 2, let last = places.last else { continue }
            let weight = run.records[last.record].tensors.layout.descriptors[last.position]
            guard DetectorSupport.isKernel(shape: weight.shape, name: weight.name) else { continue }
            let norms = places.map { run.records[$0.record].tensors.normsAndChange(at: $0.position).l2Norm ?? 0 }
            if let finding = shrink(
                norms: norms, steps: places.map { run.records[$0.record].step }, factor: thresholds.collapseFactor,
                name: weight.name, layer: weight.layer, what: "weight norm ‖W‖")
            {
                findings.append(finding)
            }
        }
        // A spread fallen to zero in an activation found silent above is that finding, said once.
        let silentKeys = Set(silentActivations.map(\.key))
        for key in run.indexedKeys(role: .activation) where !silentKeys.contains(key) {
            let series = run.indexedSeries(key).filter { DetectorSupport.nonFinite($0.measurement) == 0 && $0.measurement.stats.std != nil }
            guard series.count >= 2, let activation = series.last?.measurement else { continue }
            let spreads = series.map { $0.measurement.stats.std ?? 0 }
            if let finding = shrink(
                norms: spreads, steps: series.map(\.step), factor: thresholds.activationCollapseFactor,
                name: activation.name, layer: activation.layer, what: "output spread (std)")
            {
                findings.append(finding)
            }
        }
        return DetectorOutcome(findings: findings)
    }

    /// Layers that output zero for every input, read from the next layer (docs/DETECTORS.md, "Evidence
    /// from neighbours"): along a link of the simple chain, the next layer's weight gradient (or second
    /// moment) exactly zero in every input unit while its bias's is not — Σ g is not zero, yet Σ g xᵀ is
    /// zero in every column, which holds only when every input x the layer passes on is zero. Found
    /// at every save of a trailing run holding the whole series, or two saves or more after one that
    /// does not show it (as zero-gradient's onsets). Without a bias on the next layer, an all-zero
    /// weight gradient may as well be a gradient that never arrives: nothing is said.
    package func zeroOutputs(_ run: RunMeasurements) -> [Finding] {
        var findings: [Finding] = []
        for link in LayerChain.links(run) {
            guard let evidence = LayerChain.evidence(run, link), let biasKey = evidence.bias else { continue }
            let bias = Dictionary(run.indexedSeries(biasKey).map { ($0.step, $0.measurement) }, uniquingKeysWith: { a, _ in a })
            var series = run.indexedSeries(evidence.kernel)
            // Zero-filled moments saved before the first update show nothing.
            if evidence.fromMoments {
                while let first = series.first, !(bias[first.step].map(LayerChain.nonzero) ?? false), !LayerChain.nonzero(first.measurement) {
                    series.removeFirst()
                }
            }
            let shows = series.map { entry -> Bool in
                guard let b = bias[entry.step], LayerChain.nonzero(b), let zero = entry.measurement.zeroInputs,
                    entry.measurement.inputCount == link.units
                else { return false }
                return zero == link.units
            }
            var from = shows.count
            while from > 0 && shows[from - 1] { from -= 1 }
            guard from < shows.count, from == 0 || shows.count - from >= 2, let last = series.last else { continue }
            let first = series[from].step
            let inputs = LayerChain.inputWord(run, kernel: evidence.kernel)
            let biasWhat = evidence.fromMoments ? "its bias's is not" : "its bias gradient is not"
            let span = first == last.step ? run.atStep(first) : "at every save from step \(first) to \(last.step)"
            var values: [String: EvidenceValue] = [
                "zero_output": .bool(true), "units": .int(link.units), "saves": .int(shows.count - from),
                "evidence": .string(evidence.fromMoments ? "next-layer-second-moment" : "next-layer-gradient"),
                "next_layer": .string(link.consumer), "next_kernel": .string(link.consumerKernel),
            ]
            if from > 0 { values["last_output_step"] = .int(series[from - 1].step) }
            findings.append(
                Finding(
                    kind: kind, severity: .warning, tensor: link.producerKernel, layer: link.producer, firstStep: first,
                    lastStep: last.step,
                    message:
                        "Layer `\(link.producer)` outputs zero for every input\(run.stepsKnown ? " since step \(first)" : ""): \(evidence.what) of the next layer, \(link.consumerKernel), is exactly zero in all \(link.units) input \(inputs) \(span) while \(biasWhat): every input it received from `\(link.producer)`, on every example \(evidence.fromMoments ? "of every update so far" : "of those batches"), was zero.",
                    evidence: values,
                    explanation: CollapsingExplanation.zeroOutput(consumer: link.consumerKernel, inputs: inputs, fromMoments: evidence.fromMoments)))
        }
        return findings
    }

    /// A saved activation that is exactly zero in every unit for every example of the saved batch,
    /// at every save of a trailing run holding the whole series, or two saves or more after one that
    /// does not show it (as ``zeroOutputs(_:)``): the layer that produced it outputs zero for every
    /// input. Some units silent is `dead-units`; all of them, exactly zero, is this.
    package struct SilentActivation: Sendable, Equatable {
        package var key: TensorKey
        package var name: String
        /// The layer that outputs it: its module, or the layer that produces a parameter-free module's output.
        package var layer: String
        package var units: Int
        /// Values per save (units × examples and positions).
        package var values: Int
        /// The steps of the saves that show it, and the save before them that did not (nil: none did).
        package var firstStep: Int
        package var lastStep: Int
        package var saves: Int
        package var lastOutputStep: Int?
        /// The next layer holding weights in depth order after the activation's layer (or, for a
        /// parameter-free module, after the layer that produces it: ``Diagnoser/activationProducers(_:)``),
        /// when it has a place in that order.
        package var nextLayer: String?

        /// "at step 100" or "at every save from step 100 to 300".
        package func span(_ run: RunMeasurements) -> String {
            firstStep == lastStep ? run.atStep(firstStep) : "at every save from step \(firstStep) to \(lastStep)"
        }

        package func finding(_ run: RunMeasurements) -> Finding {
            var values: [String: EvidenceValue] = [
                "zero_output": .bool(true), "units": .int(units), "saves": .int(saves), "evidence": .string("activation"),
                "activation": .string(name), "activation_values": .int(self.values),
            ]
            if let nextLayer { values["next_layer"] = .string(nextLayer) }
            if let lastOutputStep { values["last_output_step"] = .int(lastOutputStep) }
            let subject = layer == name ? "Layer `\(layer)`" : "Layer `\(layer)` (activation \(name))"
            return Finding(
                kind: .collapsing, severity: .warning, tensor: name, layer: layer, firstStep: firstStep, lastStep: lastStep,
                message:
                    "\(subject) outputs zero for every input\(run.stepsKnown ? " since step \(firstStep)" : ""): every value of the saved activation \(name), all \(units) units on every example of the saved batch, is exactly zero \(span(run)).",
                evidence: values, explanation: CollapsingExplanation.zeroActivation(name: name, nextLayer: nextLayer))
        }
    }

    /// The saved activations that are exactly zero everywhere to the end of the run (``SilentActivation``).
    package static func silentActivations(_ run: RunMeasurements) -> [SilentActivation] {
        guard run.records.count >= 2 else { return [] }
        // The layers that hold a matrix or kernel: the next of them after an activation's layer reads its output.
        var weighted = Set<String>()
        for key in run.indexedWeightKeys {
            if let weight = run.indexedLast(key), DetectorSupport.isKernel(weight) { weighted.insert(weight.layer) }
        }
        let producers = Diagnoser.activationProducers(run)
        var silent: [SilentActivation] = []
        for key in run.indexedKeys(role: .activation) {
            let series = run.indexedSeries(key)
            let shows = series.map { entry in entry.measurement.stats.count > 0 && entry.measurement.stats.zeros == entry.measurement.stats.count }
            var from = shows.count
            while from > 0 && shows[from - 1] { from -= 1 }
            guard from < shows.count, from == 0 || shows.count - from >= 2, let last = series.last?.measurement else { continue }
            let units = last.unitCount ?? (last.unitAxis.map { last.shape[$0] } ?? last.shape.last ?? 0)
            // Its place: its own layer, or for a parameter-free module (a ReLU) the layer that produces it.
            var next: String?
            if let place = run.layers.firstIndex(of: producers[last.name] ?? last.layer) {
                next = run.layers[(place + 1)...].first { weighted.contains($0) }
            }
            silent.append(
                SilentActivation(
                    key: key, name: last.name, layer: producers[last.name] ?? last.layer, units: units, values: last.stats.count,
                    firstStep: series[from].step,
                    lastStep: series[series.count - 1].step, saves: shows.count - from, lastOutputStep: from > 0 ? series[from - 1].step : nil,
                    nextLayer: next))
        }
        return silent
    }

    package func shrink(norms: [Double], steps: [Int], factor: Double, name: String, layer: String, what: String) -> Finding? {
        guard let last = norms.last, let peakIndex = norms.indices.dropLast().max(by: { norms[$0] < norms[$1] }) else { return nil }
        let peak = norms[peakIndex]
        guard peak > 0, peak.isFinite, last.isFinite, last * factor <= peak else { return nil }
        let onsetIndex = norms.indices.first { $0 > peakIndex && norms[$0] <= peak / 2 } ?? norms.count - 1
        let ratio = last > 0 ? peak / last : .infinity
        let orders = last > 0 ? Foundation.log10(ratio) : .infinity
        let message =
            "\(name) is collapsing toward zero: its \(what) fell \(last > 0 ? "\(formatSignificant(ratio))x" : "to 0") from \(formatSignificant(peak)) at step \(steps[peakIndex]) to \(formatSignificant(last)) at step \(steps.last ?? 0)."
        let explanation = CollapsingExplanation(measure: what, orders: orders, halvingStep: steps[onsetIndex]).text
        return Finding(
            kind: kind, severity: .warning, tensor: name, layer: layer, firstStep: steps[onsetIndex],
            lastStep: steps.last, message: message,
            evidence: [
                "peak": .number(peak), "peak_step": .int(steps[peakIndex]), "last": .number(last),
                "shrink_factor": last > 0 ? .number(ratio) : .string("inf"), "measure": .string(what),
                "series": .list(norms.map { .number($0) }),
            ],
            explanation: explanation)
    }
}
