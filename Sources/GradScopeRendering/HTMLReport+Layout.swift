import ElementTypes
import Foundation
import GradScopeDiagnosis
import GradScopeMeasurement
import GradScopeModel
import GradScopeSources
import GradScopeStatistics

/// What the HTML report shows and in which order: the steps sampled for the
/// charts, the tensors named in findings (shown first, in colour), the cards
/// and anchors. Chooses and orders what the scan measured; computes nothing new.
package struct ReportLayout {
    package let report: ScanReport
    package let limits: HTMLReportRenderer.Limits
    /// The steps the charts over time show: all of them, or at most `limits.maxSteps`
    /// spread evenly, always with the steps where findings begin and end.
    package let sampledSteps: [Int]
    package let sampledSet: Set<Int>
    /// Finding indices by timeline index, for the tensors findings name.
    package let findingsByTensor: [Int: [Int]]
    /// Finding indices by activation index.
    package let findingsByActivation: [Int: [Int]]
    /// The timeline index of the tensor each finding names, by finding index.
    package let tensorOfFinding: [Int: Int]
    /// Timeline indices of tensors named in findings, worst first, then in depth order.
    package let flagged: [Int]
    /// The other timeline indices, in depth order.
    package let healthy: [Int]
    /// Timeline indices that get a card (flagged ones and the first healthy ones).
    package let cards: Set<Int>
    /// Timeline indices whose cards carry histogram heat maps.
    package let heatmaps: Set<Int>
    /// The colour of each flagged tensor's line, the same in every chart.
    package let colors: [Int: String]
    package let activationColors: [Int: String]

    package init(report: ScanReport, limits: HTMLReportRenderer.Limits) {
        self.report = report
        self.limits = limits
        let boundaries = report.findings.flatMap { [$0.firstStep, $0.lastStep].compactMap { $0 } }
        sampledSteps = ReportLayout.sample(report.steps, max: limits.maxSteps, keep: Set(boundaries.prefix(24)))
        sampledSet = Set(sampledSteps)

        var byName: [String: Int] = [:]
        for (index, tensor) in report.timeline.enumerated() where byName[tensor.name] == nil { byName[tensor.name] = index }
        var byActivation: [String: Int] = [:]
        for (index, tensor) in report.activations.enumerated() where byActivation[tensor.name] == nil { byActivation[tensor.name] = index }
        var tensorFindings: [Int: [Int]] = [:], activationFindings: [Int: [Int]] = [:]
        for (findingIndex, finding) in report.findings.enumerated() {
            guard let name = finding.tensor else { continue }
            if let index = byName[name] {
                tensorFindings[index, default: []].append(findingIndex)
            } else if let index = byActivation[name] {
                activationFindings[index, default: []].append(findingIndex)
            }
        }
        findingsByTensor = tensorFindings
        var tensorOfFinding: [Int: Int] = [:]
        for (tensor, indices) in tensorFindings { for finding in indices { tensorOfFinding[finding] = tensor } }
        self.tensorOfFinding = tensorOfFinding
        findingsByActivation = activationFindings
        let worst = tensorFindings.mapValues { indices in indices.map { report.findings[$0].severity }.max() ?? .info }
        flagged = tensorFindings.keys.sorted { a, b in
            let sa = worst[a] ?? .info, sb = worst[b] ?? .info
            return sa != sb ? sa > sb : a < b
        }
        healthy = report.timeline.indices.filter { tensorFindings[$0] == nil }
        let shownFlagged = Array(flagged.prefix(limits.maxFlaggedCards))
        cards = Set(shownFlagged + healthy.prefix(limits.maxHealthyCards))
        heatmaps = Set((shownFlagged + healthy).prefix(limits.maxHeatmapTensors))
        var colors: [Int: String] = [:]
        for (position, index) in flagged.prefix(limits.maxColouredLines).enumerated() {
            colors[index] = Palette.series[position % Palette.series.count]
        }
        self.colors = colors
        var activationColors: [Int: String] = [:]
        for (position, index) in activationFindings.keys.sorted().enumerated() {
            activationColors[index] = Palette.series[position % Palette.series.count]
        }
        self.activationColors = activationColors
    }

    /// At most `max` of `steps` (in order), evenly spread, always with the first and the last;
    /// the steps in `keep` are added on top when present.
    package static func sample(_ steps: [Int], max limit: Int, keep: Set<Int> = []) -> [Int] {
        guard steps.count > Swift.max(limit, 2) else { return steps }
        let chosen = Set(StepSampling.indices(count: steps.count, limit: limit))
        var result: [Int] = []
        for (index, step) in steps.enumerated() where chosen.contains(index) || keep.contains(step) { result.append(step) }
        return result
    }

    /// A tensor's points at the sampled steps.
    package func sampled(_ points: [TimelinePoint]) -> [TimelinePoint] {
        guard sampledSteps.count < report.steps.count else { return points }
        return points.filter { sampledSet.contains($0.step) }
    }

    /// The worst severity of the findings naming timeline tensor `index` (of `kinds`, when given).
    package func severity(ofTensor index: Int, kinds: Set<FindingKind>? = nil) -> Severity? {
        worst(findingsByTensor[index], kinds)
    }

    package func severity(ofActivation index: Int, kinds: Set<FindingKind>? = nil) -> Severity? {
        worst(findingsByActivation[index], kinds)
    }

    private func worst(_ indices: [Int]?, _ kinds: Set<FindingKind>?) -> Severity? {
        (indices ?? []).map { report.findings[$0] }.filter { kinds?.contains($0.kind) ?? true }.map(\.severity).max()
    }

    // MARK: - Anchors (made here, never from file data)

    package static func tensorAnchor(_ index: Int) -> String { "tensor-\(index)" }
    package static func findingAnchor(_ index: Int) -> String { "finding-\(index)" }

    package var hasLoss: Bool { report.loss.contains { $0.loss != nil } || (report.trainingLog ?? []).contains { $0.loss != nil } }
    package var hasGradients: Bool { report.timeline.contains { $0.points.contains { $0.gradientNorm != nil } } }
    package var hasUnits: Bool {
        report.timeline.contains { $0.points.contains { $0.deadUnits != nil } }
            || report.activations.contains { $0.points.contains { $0.deadUnits != nil } }
    }

    /// Where a finding's evidence is drawn: the loss chart, the gradient-flow bars,
    /// the dead-unit grid, or the card of the tensor it names.
    package func evidenceAnchor(_ findingIndex: Int) -> String {
        let finding = report.findings[findingIndex]
        switch finding.kind {
        case .lossPlateau where hasLoss: return "loss"
        case .vanishingGradient where hasGradients: return "gradient-flow"
        case .deadUnits where hasUnits: return "dead-units"
        default: break
        }
        if let index = tensorOfFinding[findingIndex] {
            return cards.contains(index) ? ReportLayout.tensorAnchor(index) : "tensors"
        }
        if findingsByActivation.values.contains(where: { $0.contains(findingIndex) }) {
            return hasUnits && finding.kind == .deadUnits ? "dead-units" : "activations"
        }
        if finding.kind == .lossPlateau || finding.kind == .explodingGradient || finding.kind == .nanInf { return hasLoss ? "loss" : "tensors" }
        return "tensors"
    }
}
