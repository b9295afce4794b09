import ElementTypes
import Foundation
import GradScopeDiagnosis
import GradScopeMeasurement
import GradScopeModel
import GradScopeSources
import GradScopeStatistics

/// One group of bars: one tensor, a bar per compared step.
package struct BarGroup {
    package var label: String
    package var values: [Double?]
    package var highlight: Severity?
}

/// Grouped bars on a log scale, groups in depth order (input on the left):
/// gradients that vanish toward the input form a staircase, exploding ones a wall.
package struct LogBarChart {
    package var kind = "gradient-flow"
    package var label: String
    package var title: String
    package var groups: [BarGroup]
    /// What each bar of a group is (e.g. "step 50"), with its colour.
    package var seriesLabels: [String]
    package var colors: [String]
    package var width: Double = 1240
    package var plotHeight: Double = 180

    package func render() -> String {
        let values = groups.flatMap { $0.values.compactMap { $0 } }
        let hasNonFinite = values.contains { !$0.isFinite }
        let longest = Double(min(groups.map(\.label.count).max() ?? 0, 24))
        let top = 40.0 + (hasNonFinite ? 16 : 0)
        let bottom = top + plotHeight
        let height = bottom + min(100, 30 + longest * 4.6)
        let left = 62.0, right = width - 12
        var canvas = SVGCanvas(width: width, height: height)
        let y = AxisScale.log(values, start: bottom, end: top, minDecades: 2, margin: 0.3)
        canvas.text(title, 4, 15, size: 12.5, fill: Palette.ink, bold: true)
        var legendX = right
        for (index, name) in seriesLabels.enumerated().reversed() {
            let textWidth = Double(name.count) * 6.4
            legendX -= textWidth + 22
            canvas.rect(legendX, 6, 12, 12, fill: colors[index % colors.count])
            canvas.text(name, legendX + 16, 16, size: 11, fill: Palette.ink)
        }
        for tick in y.ticks(maxTicks: 7) {
            guard let position = y.position(tick.value) else { continue }
            canvas.line(left, position, right, position, stroke: Palette.grid)
            canvas.text(tick.label, left - 6, position + 4, anchor: "end", size: ChartText.tickSize, fill: ChartText.tickColor)
        }
        if hasNonFinite {
            canvas.rect(left, top - 16, right - left, 14, fill: "#fdecea")
            canvas.text("NaN/Inf", left - 6, top - 5, anchor: "end", size: 10, fill: Palette.nonFinite)
        }
        let groupWidth = (right - left) / Double(max(groups.count, 1))
        let series = max(seriesLabels.count, 1)
        let barWidth = max(1.5, groupWidth * 0.78 / Double(series))
        let labelSize = groupWidth >= 16 ? 10.5 : 8.5
        let labelEvery = max(1, Int((14 / groupWidth).rounded(.up)))
        for (index, group) in groups.enumerated() {
            let groupLeft = left + Double(index) * groupWidth + groupWidth * 0.11
            if let severity = group.highlight {
                canvas.rect(left + Double(index) * groupWidth, top, groupWidth, bottom - top, fill: Palette.severityTint(severity), opacity: 0.8)
            }
            for (position, value) in group.values.enumerated() {
                guard let value else { continue }
                let x = groupLeft + Double(position) * barWidth
                let name = "\(group.label), \(position < seriesLabels.count ? seriesLabels[position] : ""): \(formatNumber(value))"
                if !value.isFinite {
                    canvas.cross(x + barWidth / 2, top - 9, min(3.5, barWidth), stroke: Palette.nonFinite, title: name)
                } else if let barTop = y.position(value) {
                    canvas.rect(x, barTop, barWidth - (barWidth > 3 ? 0.6 : 0), bottom - barTop, fill: colors[position % colors.count], title: name)
                } else {
                    canvas.text("0", x + barWidth / 2, bottom - 3, anchor: "middle", size: 10, fill: ChartText.tickColor, title: name)
                }
            }
            guard index % labelEvery == 0 else { continue }
            let center = left + (Double(index) + 0.5) * groupWidth
            canvas.text(
                truncated(group.label, 24), center + 3, bottom + 12, anchor: "end", size: labelSize,
                fill: group.highlight.map { Palette.severity($0) } ?? "#555", bold: group.highlight != nil, rotate: -40, title: group.label)
        }
        canvas.line(left, bottom, right, bottom, stroke: Palette.axis)
        canvas.line(left, top, left, bottom, stroke: Palette.axis)
        canvas.text("input →", left, height - 4, size: ChartText.captionSize, fill: ChartText.captionColor)
        canvas.text("→ output", right, height - 4, anchor: "end", size: ChartText.captionSize, fill: ChartText.captionColor)
        return canvas.svg(kind: kind, label: label)
    }
}

/// One finding as a bar over the steps it covers.
package struct SpanRow {
    package var label: String
    package var first: Int?
    package var last: Int?
    package var severity: Severity
    /// The in-page anchor the row links to (made by the renderer, never from file data).
    package var anchor: String
}

/// When each finding began and ended, one bar per finding over the run's steps.
package struct SpanTimeline {
    package var kind = "findings"
    package var label: String
    package var steps: [Int]
    package var rows: [SpanRow]
    package var width: Double = 1240

    package func render() -> String {
        let left = 330.0, right = width - 16, top = 4.0, rowHeight = 20.0
        let height = top + rowHeight * Double(rows.count) + 26
        var canvas = SVGCanvas(width: width, height: height)
        let x = AxisScale.steps(steps, start: left, end: right)
        let bottom = top + rowHeight * Double(rows.count)
        let ticks = x.ticks(maxTicks: max(2, Int((right - left) / 80)))
        for (tick, label) in zip(ticks, stepLabels(ticks.map(\.value))) {
            guard let position = x.position(tick.value) else { continue }
            canvas.line(position, top, position, bottom, stroke: Palette.grid)
            canvas.text(label, position, bottom + 15, anchor: "middle", size: ChartText.tickSize, fill: ChartText.tickColor)
        }
        for step in steps.count <= 120 ? steps : [] {
            guard let position = x.position(Double(step)) else { continue }
            canvas.line(position, bottom, position, bottom + 3, stroke: "#bbb")
        }
        for (index, row) in rows.enumerated() {
            let y = top + Double(index) * rowHeight
            let color = Palette.severity(row.severity)
            canvas.raw("<a href=\"#\(row.anchor)\">")
            if index % 2 == 0 { canvas.rect(0, y, width, rowHeight, fill: "#fafafa") }
            canvas.text(truncated(row.label, 48), 8, y + 14, size: 11.5, fill: color, title: row.label)
            if let first = row.first, let a = x.position(Double(first)), let b = x.position(Double(row.last ?? first)) {
                let barWidth = max(b - a, 8)
                canvas.rect(
                    b - a < 8 ? a - 4 : a, y + 4, barWidth, rowHeight - 8, fill: color, opacity: 0.9,
                    title: row.last.map { $0 != first ? "steps \(first)–\($0)" : "step \(first)" } ?? "step \(first)")
            }
            canvas.raw("</a>")
        }
        canvas.line(left, bottom, right, bottom, stroke: Palette.axis)
        return canvas.svg(kind: kind, label: label)
    }
}
