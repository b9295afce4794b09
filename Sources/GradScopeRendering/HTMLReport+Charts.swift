import ElementTypes
import Foundation
import GradScopeDiagnosis
import GradScopeMeasurement
import GradScopeModel
import GradScopeSources
import GradScopeStatistics

// The run-level charts: loss, gradient flow across depth, dead units, activations.
extension HTMLReportRenderer {
    package func lossSection(_ layout: ReportLayout) -> String {
        let report = layout.report
        guard layout.hasLoss else { return "" }
        let points = ReportLayout.sample(report.loss.map(\.step), max: limits.maxLossPoints, keep: layout.sampledSet)
        let shown = Set(points)
        let losses = report.loss.filter { shown.contains($0.step) }
        // The training log (every logging step), sampled as the saves are.
        let log = report.trainingLog ?? []
        let chosen = Set(StepSampling.indices(count: log.count, limit: max(limits.maxLossPoints, 2)))
        let findingSteps = Set(report.findings.compactMap(\.firstStep))
        let logged = log.indices.filter { chosen.contains($0) || findingSteps.contains(log[$0].step) }.map { log[$0] }
        let loggedLosses = logged.filter { $0.loss != nil }
        let finite = (losses.compactMap(\.loss) + loggedLosses.compactMap(\.loss)).filter(\.isFinite)
        // A loss spanning more than two orders of magnitude (a divergence) reads better on a log axis.
        let logScale = (finite.min() ?? 0) > 0 && (finite.max() ?? 0) / (finite.min() ?? 1) > 100
        let steps = log.isEmpty ? report.steps : Array(Set(report.steps + logged.map(\.step))).sorted()
        var chart = LineChart(
            kind: "loss", label: "Loss over steps", title: "loss", width: 1250, height: 300, logScale: logScale,
            steps: steps, includeZero: true)
        chart.series = [LineSeries(label: "loss", color: "#1a3d7c", width: 2.2, points: losses.map { ($0.step, $0.loss) }, markers: true)]
        var legend: [String] = []
        if !loggedLosses.isEmpty {
            chart.series.insert(
                LineSeries(label: "logged loss", color: "#7f9fcf", width: 1.4, points: loggedLosses.map { ($0.step, $0.loss) }), at: 0)
            legend.append(
                "<span><span class=\"swatch\" style=\"background:#7f9fcf;height:3px\"></span>loss at every logging step (training log)</span>")
            legend.append("<span><span class=\"swatch\" style=\"background:#1a3d7c;height:6px\"></span>loss at the saves</span>")
        }
        for finding in report.findings where finding.kind == .lossPlateau {
            let classes: Int?
            if case .int(let k)? = finding.evidence["classes"] { classes = k } else { classes = nil }
            var level: Double?
            if case .double(let value)? = finding.evidence["ln_k"] { level = value }
            if level == nil, let classes, classes >= 2 { level = Foundation.log(Double(classes)) }
            if let level, let classes {
                chart.references.append(
                    ReferenceLine(
                        value: level, label: "ln \(classes) = \(formatNumber(level)): the loss of predicting 1/\(classes) for every class",
                        color: "#6a1b9a"))
            }
            if let first = finding.firstStep {
                let last = finding.lastStep ?? first
                chart.spans.append(
                    StepSpan(
                        first: first, last: last, fill: Palette.severity(finding.severity), opacity: 0.16,
                        label: "loss plateau, steps \(first)–\(last)"))
                legend.append(
                    "<span><span class=\"swatch\" style=\"background:\(Palette.severity(finding.severity));height:12px;opacity:.35\"></span>plateau, steps \(first)–\(last)</span>"
                )
            }
        }
        for finding in report.findings where finding.kind == .nanInf {
            if let first = finding.firstStep {
                chart.spans.append(
                    StepSpan(
                        first: first, last: finding.lastStep ?? first, fill: Palette.nonFinite, opacity: 0.1,
                        label: "NaN/Inf, steps \(first)–\(finding.lastStep ?? first)"))
                legend.append(
                    "<span><span class=\"swatch\" style=\"background:\(Palette.nonFinite);height:12px;opacity:.3\"></span>NaN/Inf from step \(first)</span>"
                )
            }
        }
        var html = "<section class=\"panel\" id=\"loss\"><h2>Loss</h2>"
        html += chart.render()
        if !legend.isEmpty { html += "<div class=\"legend\">\(legend.joined())</div>" }
        let loggedRates = logged.filter { $0.lr != nil }
        let rates = losses.filter { $0.lr != nil }
        if !loggedRates.isEmpty {
            var lr = LineChart(
                kind: "learning-rate", label: "Learning rate over steps", title: "learning rate (logged)", width: 1250, height: 140,
                logScale: true, steps: steps)
            lr.series = [LineSeries(label: "learning rate", color: "#00796b", width: 1.8, points: loggedRates.map { ($0.step, $0.lr) })]
            lr.spans = chart.spans
            html += lr.render()
        } else if !rates.isEmpty {
            var lr = LineChart(
                kind: "learning-rate", label: "Learning rate over steps", title: "learning rate", width: 1250, height: 140,
                logScale: true, steps: report.steps)
            lr.series = [LineSeries(label: "learning rate", color: "#00796b", width: 1.8, points: rates.map { ($0.step, $0.lr) }, markers: true)]
            lr.spans = chart.spans
            html += lr.render()
        }
        let norms = logged.filter { $0.gradNorm != nil }
        if !norms.isEmpty {
            var gradient = LineChart(
                kind: "logged-gradient-norm", label: "Total gradient norm over steps, as logged", title: "gradient norm (logged)", width: 1250,
                height: 140, logScale: true, steps: steps)
            gradient.series = [
                LineSeries(label: "total gradient norm", color: "#8e5b00", width: 1.6, points: norms.map { ($0.step, $0.gradNorm) })
            ]
            gradient.spans = chart.spans
            for finding in report.findings where finding.kind == .explodingGradient {
                guard let first = finding.firstStep else { continue }
                gradient.spans.append(
                    StepSpan(
                        first: first, last: finding.lastStep ?? first, fill: Palette.severity(finding.severity), opacity: 0.2,
                        label: "gradients explode at step \(first)"))
            }
            html += gradient.render()
        }
        return html + "</section>\n"
    }

    package func gradientFlowSection(_ layout: ReportLayout) -> String {
        let report = layout.report
        guard layout.hasGradients else { return "" }
        let withGradients = report.timeline.indices.filter { report.timeline[$0].points.contains { $0.gradientNorm != nil } }
        let kernels = withGradients.filter { report.timeline[$0].shape.count >= 2 }
        var chosen = kernels.isEmpty ? withGradients : kernels
        if chosen.count > limits.maxFlowGroups {
            // Up to half of the bars for tensors named in findings, the rest spread evenly over depth; depth order kept.
            let flagged = Set(layout.flagged)
            let named = ReportLayout.sample(chosen.filter { flagged.contains($0) }, max: limits.maxFlowGroups / 2)
            let others = ReportLayout.sample(chosen.filter { !flagged.contains($0) }, max: limits.maxFlowGroups - named.count)
            let keep = Set(named + others)
            chosen = chosen.filter { keep.contains($0) }
        }
        let withGradient = Set(chosen.flatMap { index in report.timeline[index].points.filter { $0.gradientNorm != nil }.map(\.step) })
        let gradientSteps = report.steps.filter { withGradient.contains($0) }
        guard let first = gradientSteps.first, let last = gradientSteps.last else { return "" }
        var compared = [first]
        let middle = gradientSteps[gradientSteps.count / 2]
        if !compared.contains(middle) && middle != last { compared.append(middle) }
        if !compared.contains(last) { compared.append(last) }
        let colors = compared.count == 3 ? Palette.stepShades : Array(Palette.stepShades.suffix(compared.count))
        func groups(_ value: (TimelinePoint) -> Double?) -> [BarGroup] {
            chosen.map { index in
                let tensor = report.timeline[index]
                let values = compared.map { step in tensor.points.first { $0.step == step }.flatMap(value) }
                return BarGroup(label: tensor.name, values: values, highlight: layout.severity(ofTensor: index))
            }
        }
        let labels = compared.map { "step \($0)" }
        var html = "<section class=\"panel\" id=\"gradient-flow\"><h2>Gradient flow across depth</h2>"
        html +=
            "<p class=\"note\">One group of bars per \(kernels.isEmpty ? "tensor" : "weight matrix or kernel"), input on the left, at \(compared.count) step\(compared.count == 1 ? "" : "s"); "
            + "log scale. Bars that shrink toward the input are vanishing gradients; a wall of tall bars, exploding ones. Tinted groups are named in findings.</p>"
        html += LogBarChart(
            label: "Gradient norm per layer", title: "gradient norm ‖g‖", groups: groups(\.gradientNorm), seriesLabels: labels,
            colors: colors
        ).render()
        html += LogBarChart(
            label: "Gradient norm relative to the weight norm per layer", title: "‖g‖ / ‖W‖  (gradient relative to the weights)",
            groups: groups(\.gradientRatio), seriesLabels: labels, colors: colors
        ).render()
        if chosen.count < (kernels.isEmpty ? withGradients.count : kernels.count) {
            html +=
                "<p class=\"note\">\(chosen.count) of \((kernels.isEmpty ? withGradients : kernels).count) tensors shown, spread evenly over depth.</p>"
        }
        return html + "</section>\n"
    }

    package func unitSection(_ layout: ReportLayout) -> String {
        let report = layout.report
        guard layout.hasUnits else { return "" }
        let columns = layout.sampledSteps
        func counts(_ points: [TimelinePoint]) -> [Int?] {
            let byStep = Dictionary(points.map { ($0.step, $0.deadUnits) }, uniquingKeysWith: { a, _ in a })
            return columns.map { byStep[$0] ?? nil }
        }
        let unitKinds: Set<FindingKind> = [.deadUnits, .zeroGradient]
        var rows: [(row: UnitGridRow, dead: Bool, flagged: Bool)] = []
        for (index, tensor) in report.timeline.enumerated() where tensor.points.contains(where: { $0.deadUnits != nil }) {
            let row = UnitGridRow(
                label: tensor.name, detail: "gradient" + (tensor.units.map { " · " + unitCount($0) } ?? ""),
                units: tensor.units, counts: counts(tensor.points), highlight: layout.severity(ofTensor: index, kinds: unitKinds))
            rows.append((row, tensor.points.contains { ($0.deadUnits ?? 0) > 0 }, row.highlight != nil))
        }
        for (index, activation) in report.activations.enumerated() where activation.points.contains(where: { $0.deadUnits != nil }) {
            let row = UnitGridRow(
                label: activation.name, detail: "activation" + (activation.units.map { " · " + unitCount($0) } ?? ""),
                units: activation.units, counts: counts(activation.points), highlight: layout.severity(ofActivation: index, kinds: unitKinds))
            rows.append((row, activation.points.contains { ($0.deadUnits ?? 0) > 0 }, row.highlight != nil))
        }
        var shown = rows
        if rows.count > limits.maxGridRows {
            // Rows named in findings, then rows with dead units at some step, then the rest; depth order within each.
            let ranked = rows.indices.sorted { a, b in
                let ra = rows[a].flagged ? 0 : (rows[a].dead ? 1 : 2), rb = rows[b].flagged ? 0 : (rows[b].dead ? 1 : 2)
                return ra != rb ? ra < rb : a < b
            }
            let keep = Set(ranked.prefix(limits.maxGridRows))
            shown = rows.indices.filter { keep.contains($0) }.map { rows[$0] }
        }
        var html = "<section class=\"panel\" id=\"dead-units\"><h2>Dead units</h2>"
        html +=
            "<p class=\"note\">Per layer and step, how many units are dead: for a weight, units whose gradient is exactly zero; for a saved activation, "
            + "units silent on the probe batch. Redder as a larger share of the layer is gone; green-grey cells are 0.</p>"
        html += UnitGrid(label: "Dead units per layer over steps", steps: columns, rows: shown.map(\.row)).render()
        if shown.count < rows.count {
            let hidden = rows.count - shown.count
            html +=
                "<p class=\"note\">\(hidden) more layer\(hidden == 1 ? "" : "s") not drawn\(rows.filter(\.dead).count <= shown.filter(\.dead).count ? ", none with a dead unit at any step" : "").</p>"
        }
        return html + "</section>\n"
    }

    /// The steps of each loss plateau, shaded lightly behind the charts over time; a plateau over
    /// the whole run tells nothing about when, so it is left out.
    package func plateauSpans(_ report: ScanReport) -> [StepSpan] {
        report.findings.filter { $0.kind == .lossPlateau }.compactMap { finding in
            guard let first = finding.firstStep else { return nil }
            let last = finding.lastStep ?? first
            if first <= (report.steps.first ?? first) && last >= (report.steps.last ?? last) { return nil }
            return StepSpan(
                first: first, last: last, fill: Palette.severity(finding.severity), opacity: 0.12, label: "loss plateau, steps \(first)–\(last)")
        }
    }

    package func activationSection(_ layout: ReportLayout) -> String {
        let report = layout.report
        guard report.activations.contains(where: { $0.points.contains { $0.norm != nil } }) else { return "" }
        var chart = LineChart(
            kind: "activations", label: "Spread of the saved activations over steps",
            title: "spread (std) of each saved activation on the probe batch",
            width: 1250, height: 230, steps: report.steps)
        chart.spans = plateauSpans(layout.report)
        var legend: [String] = []
        for (index, activation) in report.activations.enumerated().prefix(limits.maxOverviewLines) {
            let color = layout.activationColors[index] ?? Palette.calm[index % Palette.calm.count]
            let points = layout.sampled(activation.points).map { ($0.step, $0.nonFinite > 0 ? Double.nan : $0.norm) }
            chart.series.append(
                LineSeries(
                    label: activation.name, color: color, width: layout.activationColors[index] != nil ? 2.6 : 1.6,
                    points: points, markers: true))
            let severity = layout.severity(ofActivation: index)
            legend.append(
                "<span><span class=\"swatch\" style=\"background:\(color)\"></span><code>\(htmlEscape(activation.name))</code>"
                    + (severity.map { " <span class=\"badge \($0.rawValue)\">\($0.rawValue)</span>" } ?? "") + "</span>")
        }
        var html = "<section class=\"panel\" id=\"activations\"><h2>Activations</h2>"
        html +=
            "<p class=\"note\">Outputs saved on a fixed probe batch. A spread near 0 means every input gets the same output (logits that cannot tell the classes apart)"
            + (chart.spans.isEmpty ? "." : "; the shaded steps are the loss plateau.") + "</p>"
        html += chart.render() + "<div class=\"legend\">\(legend.joined())</div>"
        return html + "</section>\n"
    }
}
