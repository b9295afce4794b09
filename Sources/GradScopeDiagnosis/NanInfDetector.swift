import ElementTypes
import GradScopeMeasurement
import GradScopeModel
import GradScopeSources
import GradScopeStatistics

/// `nan-inf`: the first saved step, and the first tensors, holding NaN or ±Inf
/// in weights, gradients, optimizer state or activations, or a non-finite loss.
/// The evidence gives the total gradient norm at the save before, and at the one
/// before that when the norm had grown threefold between them.
///
/// Needs: any tensor. Threshold: none — a single non-finite element in a
/// weight poisons every output it touches (IEEE 754 propagation), so one is enough.
package struct NanInfDetector: Detector {
    package static let kind = FindingKind.nanInf
    package let scope: DetectorScope = [.file, .pair, .run]
    package let thresholdNames: [String] = []

    package func phrase(for finding: Finding) -> String {
        "NaN/Inf\(finding.firstStep.map { " from step \($0)" } ?? "") (first in `\(finding.tensor ?? "the loss")`)"
    }

    package func detect(_ run: RunMeasurements, thresholds: Thresholds) -> DetectorOutcome {
        guard !run.records.isEmpty else { return .lacking("no tensors were read") }
        let roleOrder: [TensorRole: Int] = [.gradient: 0, .activation: 1, .optimizer: 2, .weight: 3]
        // Where each save holds a NaN or ±Inf: only those tensors are read out of their tables.
        let nonFinite = run.indexedNonFinite()
        for (index, record) in run.records.enumerated() {
            let lossBad = record.loss.map { !$0.isFinite } ?? false
            guard !nonFinite[index].isEmpty || lossBad else { continue }
            // The tensors holding a non-finite value, in the checkpoint's order.
            let bad = nonFinite[index].map { record.tensors.measurement(at: Int($0), log2: false) }
            let sorted = bad.sorted { (roleOrder[$0.role] ?? 9) < (roleOrder[$1.role] ?? 9) }
            let lastStep =
                run.records.indices.last { at in !nonFinite[at].isEmpty || (run.records[at].loss.map { !$0.isFinite } ?? false) }
                .map { run.records[$0].step } ?? record.step
            let first = sorted.first
            let nan = bad.reduce(0) { $0 + $1.stats.nan }
            let inf = bad.reduce(0) { $0 + $1.stats.posInf + $1.stats.negInf }
            let weightsBad = bad.filter { $0.role == .weight }.count
            var evidence: [String: EvidenceValue] = [
                "step": .int(record.step),
                "tensors": .list(sorted.prefix(12).map { .string($0.label) }),
                "tensor_count": .int(bad.count),
                "nan_elements": .int(nan),
                "inf_elements": .int(inf),
                "weights_affected": .int(weightsBad),
            ]
            if lossBad { evidence["loss"] = .string("non-finite") }
            var blowUp: (before: Double, previous: Double)?
            if index > 0 {
                let previous = run.records[index - 1]
                let gradientNorms = previous.compactOrdered.filter { $0.role == .gradient }.compactMap(\.stats.l2Norm)
                if !gradientNorms.isEmpty {
                    let total = gradientNorms.reduce(0) { $0 + $1 * $1 }.squareRoot()
                    evidence["previous_step"] = .int(previous.step)
                    evidence["previous_gradient_norm"] = .number(total)
                    if index > 1 {
                        let before = run.records[index - 2].compactOrdered.filter { $0.role == .gradient }.compactMap(\.stats.l2Norm)
                        let beforeTotal = before.reduce(0) { $0 + $1 * $1 }.squareRoot()
                        if beforeTotal > 0 && total / beforeTotal >= 3 {
                            blowUp = (beforeTotal, total)
                            evidence["gradient_norm_two_saves_before"] = .number(beforeTotal)
                        }
                    }
                }
                if let loss = previous.loss { evidence["previous_loss"] = .number(loss) }
            }
            let what =
                first.map { tensor -> String in
                    switch tensor.role {
                    case .weight: return "the weights \(tensor.name)"
                    case .gradient: return "the gradient of \(tensor.name)"
                    case .activation: return "the activation \(tensor.name)"
                    case .optimizer: return "the optimizer state (\(tensor.slotName ?? "slot")) of \(tensor.name)"
                    }
                } ?? "the loss"
            let others = bad.count > 1 ? " and \(bad.count - 1) other tensor(s)" : ""
            let message = "NaN/Inf first appears \(run.atStep(record.step)) in \(what)\(others); every step after it is garbage."
            let explanation = NanInfExplanation(
                step: run.stepsKnown ? record.step : nil, tensors: bad.count, nanElements: nan,
                infElements: inf, weights: weightsBad, blowUp: blowUp
            ).text
            return DetectorOutcome(findings: [
                Finding(
                    kind: kind, severity: .error, tensor: first?.name, layer: first?.layer,
                    firstStep: record.step, lastStep: lastStep, message: message,
                    evidence: evidence, explanation: explanation)
            ])
        }
        return DetectorOutcome()
    }
}

extension TensorMeasurement {
    /// A short label: the name, with the role for non-weights.
    package var label: String {
        switch role {
        case .weight: return name
        case .gradient: return name + " (gradient)"
        case .activation: return name + " (activation)"
        case .optimizer: return name + " (" + (slotName ?? "optimizer") + ")"
        }
    }
}
