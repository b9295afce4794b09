import ElementTypes
import Foundation
import GradScopeMeasurement
import GradScopeModel
import GradScopeSources
import GradScopeStatistics

/// `vanishing-gradient`: gradients, relative to their weights, orders of
/// magnitude smaller in the early layers than in the late ones.
///
/// At each save with gradients, ρ = ‖g‖/‖W‖ is taken for every matrix or
/// kernel (embeddings, normalisation parameters and kernels still near zero left out), in depth order;
/// the median ρ of the first third of the layers is divided by the median of
/// the last third. Threshold: `vanishing_depth_ratio` (1e-3: three orders of
/// magnitude; each saturated sigmoid passes back at most 0.25 of the signal,
/// Glorot & Bengio 2010, so five already give 1e-3) at `vanishing_persistence`
/// (half) of the saves. Gated on the loss (AUTOTRAINER): a warning when the loss
/// is not improving, info when it is. The underflow case (an update smaller than
/// the float format can represent) is reported by `frozen`'s analysis under this kind.
/// Without gradients, Adam's or RMSprop's second moment stands in: √mean(v)
/// estimates the gradient's RMS, so √mean(v)/RMS(W) estimates ρ.
/// Needs: gradients, or second moments, of at least three layers.
package struct VanishingGradientDetector: Detector {
    package static let kind = FindingKind.vanishingGradient
    package let scope: DetectorScope = [.file, .run]
    package let thresholdNames: [String] = ["vanishing_depth_ratio", "vanishing_persistence", "init_too_small_factor"]

    package func phrase(for finding: Finding) -> String { "gradients vanish toward the input\(finding.verdictSince)" }

    package func detect(_ run: RunMeasurements, thresholds: Thresholds) -> DetectorOutcome {
        // Without saved gradients, Adam's or RMSprop's second moment v, a running average of g², gives
        // √mean(v) ≈ RMS(g): ‖g‖/‖W‖ = RMS(g)/RMS(W) is estimated as √mean(v)/RMS(W), layer by layer at one
        // save, so the optimizer's common averaging cancels out of the comparison across depth.
        var momentKeys: [String: TensorKey] = [:]
        if !run.hasGradients {
            for key in DetectorSupport.secondMomentKeys(run) {
                guard let name = run.indexedFirst(key)?.name, momentKeys[name] == nil else { continue }
                momentKeys[name] = key
            }
            guard !momentKeys.isEmpty else {
                return .lacking("no gradients and no second moments (Adam, RMSprop) were saved (the gradscope exporters save gradients)")
            }
        }
        let estimated = !run.hasGradients
        let kernelKeys = run.indexedWeightKeys.filter { key in
            guard let weight = run.indexedLast(key) else { return false }
            return DetectorSupport.isKernel(weight) && !DetectorSupport.isEmbedding(weight.name, shape: weight.shape)
        }
        var profiles: [(step: Int, early: Double, late: Double, earlyName: String, lateName: String, ratios: [Double])] = []
        // Where each kernel, and its gradient (or second moment), is in a save's table: the same for every
        // save of one table layout (consecutive saves share theirs), so looked up once per layout.
        var lastLayout: ObjectIdentifier?
        var places: [(weight: Int, partner: Int?)?] = []
        for record in run.records {
            let table = record.tensors
            if ObjectIdentifier(table.layout) != lastLayout {
                lastLayout = ObjectIdentifier(table.layout)
                places = kernelKeys.map { key in
                    guard let position = table.layout.index[key] else { return nil }
                    let name = table.layout.descriptors[position].name
                    let partner: TensorKey? = estimated ? momentKeys[name] : .gradient(name)
                    return (position, partner.flatMap { table.layout.index[$0] })
                }
            }
            var ratios: [(String, Double)] = []
            for place in places {
                guard let place else { continue }
                let weight = table.measurement(at: place.weight, log2: false)
                guard let wn = weight.stats.l2Norm, wn > 0, wn.isFinite, !DetectorSupport.nearZero(weight, thresholds: thresholds) else { continue }
                if estimated {
                    // Zero-filled slots (saved before the first update) say nothing.
                    guard let slot = place.partner.map({ table.measurement(at: $0, log2: false) }), DetectorSupport.nonFinite(slot) == 0,
                        let meanSquare = slot.stats.mean, meanSquare > 0, meanSquare.isFinite,
                        let weightRMS = DetectorSupport.rms(weight), weightRMS > 0
                    else { continue }
                    ratios.append((weight.name, meanSquare.squareRoot() / weightRMS))
                } else {
                    // Only the gradient's norm and non-finite count are read, in place.
                    guard let gradient = place.partner.map({ table.point(at: $0) }), let gn = gradient.l2Norm, gn.isFinite,
                        gradient.nonFinite == 0
                    else { continue }
                    ratios.append((weight.name, gn / wn))
                }
            }
            guard ratios.count >= 3 else { continue }
            let third = max(1, ratios.count / 3)
            let early = Array(ratios.prefix(third)), late = Array(ratios.suffix(third))
            guard let earlyMedian = DetectorSupport.median(early.map(\.1)),
                let lateMedian = DetectorSupport.median(late.map(\.1)), lateMedian > 0
            else { continue }
            profiles.append((record.step, earlyMedian, lateMedian, early[0].0, late[late.count - 1].0, ratios.map(\.1)))
        }
        guard !profiles.isEmpty else {
            return .lacking(
                estimated
                    ? "fewer than three layers have both weights and nonzero second moments"
                    : "fewer than three layers have both weights and gradients")
        }
        let vanishing = profiles.filter { $0.early <= thresholds.vanishingDepthRatio * $0.late }
        guard !vanishing.isEmpty, Double(vanishing.count) >= thresholds.vanishingPersistence * Double(profiles.count),
            let first = vanishing.first, let last = vanishing.last
        else { return DetectorOutcome() }
        let improving = DetectorSupport.lossImproving(run)
        let severity: Severity = improving == true ? .info : .warning
        let depthRatio = first.early / first.late
        let orders = -Foundation.log10(depthRatio)
        let layerName = run.indexedLast(.weight(first.earlyName))?.layer
        // A zero side is said in words: the ratio is 0 and its orders of magnitude are unbounded.
        let gap =
            first.early > 0
            ? "relative to their weights, the early layers' gradients are \(formatSignificant(orders)) orders of magnitude smaller than the late layers'"
            : "the early layers get no gradient at all, while the late layers' ‖g‖/‖W‖ is \(formatSignificant(first.late))"
        let message =
            "Gradients vanish toward the input: \(gap) (\(run.stepsKnown ? "first at step \(first.step), \(vanishing.count) of \(profiles.count) saves" : "in this file"))\(estimated ? "; gradients estimated from the optimizer's second moments" : "")."
        let explanation = VanishingGradientExplanation(
            step: run.stepsKnown ? first.step : nil, early: first.early, late: first.late,
            earlyName: first.earlyName, lateName: first.lateName, lossImproving: improving
        ).text
        return DetectorOutcome(findings: [
            Finding(
                kind: kind, severity: severity, tensor: first.earlyName, layer: layerName, firstStep: first.step, lastStep: last.step,
                message: message,
                evidence: [
                    "early_ratio": .number(first.early), "late_ratio": .number(first.late), "depth_ratio": .number(depthRatio),
                    "saves_vanishing": .int(vanishing.count), "saves_with_gradients": .int(profiles.count),
                    "ratios_by_depth": .list(first.ratios.map { .number($0) }),
                    "loss_improving": improving.map { .bool($0) } ?? .null,
                    "source": .string(estimated ? "optimizer second moments (√mean(v) / RMS(W))" : "gradients (‖g‖ / ‖W‖)"),
                ],
                explanation: explanation)
        ])
    }
}
