import ElementTypes
import Foundation
import GradScopeDiagnosis
import GradScopeMeasurement
import GradScopeModel
import GradScopeSources
import GradScopeStatistics

// Every tensor over steps: three overview charts (all tensors, the ones named
// in findings in colour), then one card per tensor with its own charts and
// the histogram evolution of its weights and gradients.
extension HTMLReportRenderer {
    /// The healthy band of the per-step update ratio ‖ΔW‖/‖W‖: around 1e-3, within a decade either way.
    package static let healthyUpdateBand = ValueBand(lower: 1e-4, upper: 1e-2, fill: Palette.healthyBand, label: "healthy 10⁻⁴–10⁻²")

    /// The three quantities drawn for each tensor.
    package enum TensorQuantity: CaseIterable {
        case norm, gradientNorm, updateRatio

        package var title: String {
            switch self {
            case .norm: return "weight norm ‖W‖"
            case .gradientNorm: return "gradient norm ‖g‖"
            case .updateRatio: return "update ratio ‖ΔW‖/‖W‖ per step"
            }
        }

        package func value(_ point: TimelinePoint) -> Double? {
            switch self {
            case .norm: return point.nonFinite > 0 ? .nan : point.norm
            case .gradientNorm: return (point.gradientNonFinite ?? 0) > 0 ? .nan : point.gradientNorm
            case .updateRatio: return point.updateRatio
            }
        }
    }

    package func tensorSection(_ layout: ReportLayout) -> String {
        let report = layout.report
        guard !report.timeline.isEmpty else { return "" }
        let quantities = TensorQuantity.allCases.filter { quantity in report.timeline.contains { $0.points.contains { quantity.value($0) != nil } } }
        var html = "<section class=\"panel\" id=\"tensors\"><h2>Tensors over steps</h2>"
        html +=
            "<p class=\"note\">Log scales. Coloured lines are the tensors named in findings; grey lines are the others. "
            + "The green band is the healthy update ratio (about a thousandth of the weights per step); a line in the “0” strip did not move at all, a red cross is NaN/Inf"
            + (plateauSpans(report).isEmpty ? "." : "; shaded steps are the loss plateau.") + "</p>"
        let greys = ReportLayout.sample(layout.healthy, max: limits.maxOverviewLines)
        let coloured = layout.flagged.filter { layout.colors[$0] != nil }
        // Tensors named in findings beyond those with a colour of their own: drawn in one muted warm colour.
        let warm = ReportLayout.sample(layout.flagged.filter { layout.colors[$0] == nil }, max: limits.maxOverviewLines)
        html += "<div class=\"row3\">"
        for quantity in quantities {
            var chart = LineChart(
                kind: "tensor-overview", label: "All tensors: \(quantity.title) over steps", title: quantity.title,
                width: 408, height: 230, steps: report.steps)
            for index in greys {
                chart.series.append(
                    LineSeries(
                        label: report.timeline[index].name, color: Palette.muted, width: 1.1, opacity: 0.8,
                        points: layout.sampled(report.timeline[index].points).map { ($0.step, quantity.value($0)) }))
            }
            for index in warm {
                chart.series.append(
                    LineSeries(
                        label: report.timeline[index].name, color: "#e9b98f", width: 1.2,
                        points: layout.sampled(report.timeline[index].points).map { ($0.step, quantity.value($0)) }))
            }
            for index in coloured.reversed() {
                chart.series.append(
                    LineSeries(
                        label: report.timeline[index].name, color: layout.colors[index] ?? Palette.ink, width: 2.4,
                        points: layout.sampled(report.timeline[index].points).map { ($0.step, quantity.value($0)) }))
            }
            if quantity == .updateRatio {
                chart.bands = [HTMLReportRenderer.healthyUpdateBand]
                chart.domainHints = [1e-4, 1e-2]
            }
            chart.spans = plateauSpans(report)
            html += chart.render()
        }
        html += "</div>"
        // The legend says what every line is, also when no tensor is named in a finding (all grey).
        var legend = coloured.map { index in
            let color = layout.colors[index] ?? Palette.ink
            let name = "<code>\(htmlEscape(report.timeline[index].name))</code>"
            let target = layout.cards.contains(index) ? "<a href=\"#\(ReportLayout.tensorAnchor(index))\">\(name)</a>" : name
            return "<span><span class=\"swatch\" style=\"background:\(color)\"></span>\(target) \(kindBadges(index, layout))</span>"
        }
        if layout.flagged.count > coloured.count {
            legend.append(
                "<span><span class=\"swatch\" style=\"background:#e9b98f\"></span>\(layout.flagged.count - coloured.count) more named in findings</span>"
            )
        }
        if !greys.isEmpty {
            let shown = greys.count < layout.healthy.count ? "\(greys.count) of \(layout.healthy.count)" : "\(layout.healthy.count)"
            legend.append(
                "<span><span class=\"swatch\" style=\"background:\(Palette.muted)\"></span>grey: \(shown) tensor\(layout.healthy.count == 1 ? "" : "s") not named in any finding</span>"
            )
        }
        if quantities.contains(.updateRatio) {
            legend.append(
                "<span><span class=\"swatch\" style=\"background:\(Palette.healthyBand);height:12px\"></span>green band: healthy update ratio 10⁻⁴–10⁻²</span>"
            )
        }
        html += "<div class=\"legend\" id=\"tensor-legend\">" + legend.joined() + "</div>"
        let heatRanges = exponentRanges(layout)
        for index in layout.flagged where layout.cards.contains(index) {
            html += card(index, layout, heatRanges)
        }
        let flaggedRest = layout.flagged.filter { !layout.cards.contains($0) }
        if !flaggedRest.isEmpty {
            html +=
                "<p class=\"note\">Cards for the first \(layout.flagged.count - flaggedRest.count) of \(layout.flagged.count) tensors named in findings; the others:</p>"
            html += restTable(flaggedRest, layout)
        }
        if !layout.healthy.isEmpty {
            html +=
                "<details class=\"healthy\"><summary>\(layout.healthy.count) tensor\(layout.healthy.count == 1 ? "" : "s") not named in any finding</summary>"
            for index in layout.healthy where layout.cards.contains(index) { html += card(index, layout, heatRanges) }
            let rest = layout.healthy.filter { !layout.cards.contains($0) }
            if !rest.isEmpty { html += restTable(rest, layout) }
            html += "</details>"
        }
        return html + "</section>\n"
    }

    package func kindBadges(_ index: Int, _ layout: ReportLayout) -> String {
        (layout.findingsByTensor[index] ?? []).map { findingIndex in
            let finding = layout.report.findings[findingIndex]
            return
                "<a class=\"badge \(finding.severity.rawValue)\" style=\"color:#fff;text-decoration:none\" href=\"#\(ReportLayout.findingAnchor(findingIndex))\">\(htmlEscape(finding.kind.rawValue))</a>"
        }.joined(separator: " ")
    }

    package func card(_ index: Int, _ layout: ReportLayout, _ ranges: (weights: ClosedRange<Int>?, gradients: ClosedRange<Int>?)) -> String {
        let report = layout.report
        let tensor = report.timeline[index]
        let severity = layout.severity(ofTensor: index)
        let color = layout.colors[index] ?? "#1f77b4"
        var html = "<div class=\"card \(severity?.rawValue ?? "ok")\" id=\"\(ReportLayout.tensorAnchor(index))\">"
        html +=
            "<h3><code>\(htmlEscape(tensor.name))</code> \(kindBadges(index, layout))<span class=\"meta\">layer <code>\(htmlEscape(tensor.layer))</code> · shape ["
            + tensor.shape.map(String.init).joined(separator: ", ") + "]" + (tensor.units.map { " · " + unitCount($0) } ?? "") + "</span>"
        if let first = layout.findingsByTensor[index]?.first {
            html += "<a class=\"back\" href=\"#\(ReportLayout.findingAnchor(first))\">↑ finding</a>"
        }
        html += "</h3>"
        let spans = (layout.findingsByTensor[index] ?? []).compactMap { findingIndex -> StepSpan? in
            let finding = report.findings[findingIndex]
            guard let first = finding.firstStep else { return nil }
            return StepSpan(
                first: first, last: finding.lastStep ?? first, fill: Palette.severity(finding.severity), opacity: 0.13,
                label: "\(finding.kind.rawValue), steps \(first)–\(finding.lastStep ?? first)")
        }
        let points = layout.sampled(tensor.points)
        html += "<div class=\"row3\">"
        for quantity in TensorQuantity.allCases where points.contains(where: { quantity.value($0) != nil }) {
            var chart = LineChart(
                kind: "tensor", label: "\(tensor.name): \(quantity.title) over steps", title: quantity.title,
                width: 408, height: 190, steps: report.steps)
            chart.series = [
                LineSeries(label: tensor.name, color: color, width: 2, points: points.map { ($0.step, quantity.value($0)) }, markers: true)
            ]
            chart.spans = spans
            if quantity == .updateRatio {
                chart.bands = [HTMLReportRenderer.healthyUpdateBand]
                chart.domainHints = [1e-4, 1e-2]
            }
            html += chart.render()
        }
        html += "</div>"
        if layout.heatmaps.contains(index) {
            html += "<div class=\"row2\">"
            if let range = ranges.weights, points.contains(where: { $0.log2Counts != nil }) {
                let rows = points.map {
                    HistogramRow(
                        step: $0.step, minExponent: $0.log2Min, counts: $0.log2Counts, zeroFraction: $0.zeroFraction, nonFinite: $0.nonFinite)
                }
                html += HistogramHeatmap(
                    label: "\(tensor.name): weight magnitudes per step", title: "weights: where |w| lies, per step (log₂)",
                    rows: rows, exponents: range, scale: Palette.blues, zeroColumn: true,
                    nonFiniteColumn: points.contains { $0.nonFinite > 0 }, width: 612
                ).render()
            }
            if let range = ranges.gradients, points.contains(where: { $0.gradientLog2Counts != nil }) {
                let rows = points.map {
                    HistogramRow(
                        step: $0.step, minExponent: $0.gradientLog2Min, counts: $0.gradientLog2Counts,
                        zeroFraction: $0.gradientZeroFraction, nonFinite: $0.gradientNonFinite)
                }
                html += HistogramHeatmap(
                    label: "\(tensor.name): gradient magnitudes per step", title: "gradients: where |g| lies, per step (log₂)",
                    rows: rows, exponents: range, scale: Palette.purples, zeroColumn: true,
                    nonFiniteColumn: points.contains { ($0.gradientNonFinite ?? 0) > 0 }, width: 612
                ).render()
            }
            html += "</div>"
        }
        return html + "</div>\n"
    }

    /// The exponent range shared by all weight heat maps, and the one shared by all gradient heat maps,
    /// so that the same column means the same magnitude everywhere.
    package func exponentRanges(_ layout: ReportLayout) -> (weights: ClosedRange<Int>?, gradients: ClosedRange<Int>?) {
        var weights: (Int, Int)?, gradients: (Int, Int)?
        func extend(_ range: inout (Int, Int)?, _ minExponent: Int?, _ counts: [Int]?) {
            guard let minExponent, let counts,
                let first = counts.firstIndex(where: { $0 > 0 }), let last = counts.lastIndex(where: { $0 > 0 })
            else { return }
            let low = minExponent + first, high = minExponent + last
            range = range.map { (min($0.0, low), max($0.1, high)) } ?? (low, high)
        }
        for index in layout.heatmaps {
            for point in layout.sampled(layout.report.timeline[index].points) {
                extend(&weights, point.log2Min, point.log2Counts)
                extend(&gradients, point.gradientLog2Min, point.gradientLog2Counts)
            }
        }
        func closed(_ range: (Int, Int)?) -> ClosedRange<Int>? {
            guard let range else { return nil }
            let padding = max(0, 12 - (range.1 - range.0)) / 2
            return (range.0 - padding)...(range.1 + padding)
        }
        return (closed(weights), closed(gradients))
    }

    /// The tensors beyond the card limit, as one line each.
    package func restTable(_ indices: [Int], _ layout: ReportLayout) -> String {
        var html = "<table class=\"rest\"><tr><th>tensor</th><th>shape</th><th>‖W‖ first → last</th><th>‖g‖ last</th><th>update ratio last</th></tr>"
        for index in indices {
            let tensor = layout.report.timeline[index]
            let norms = tensor.points.map { TensorQuantity.norm.value($0) }
            let gradient = tensor.points.last { $0.gradientNorm != nil }?.gradientNorm
            let ratio = tensor.points.last { $0.updateRatio != nil }?.updateRatio
            html +=
                "<tr><td><code>\(htmlEscape(tensor.name))</code></td><td>[\(tensor.shape.map(String.init).joined(separator: ", "))]</td>"
                + "<td>\(htmlEscape(formatNumber(norms.first ?? nil))) → \(htmlEscape(formatNumber(norms.last ?? nil)))</td>"
                + "<td>\(htmlEscape(formatNumber(gradient)))</td><td>\(htmlEscape(formatNumber(ratio)))</td></tr>"
        }
        return html + "</table>"
    }
}
