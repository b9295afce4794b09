import ElementTypes
import Foundation
import GradScopeDiagnosis
import GradScopeMeasurement
import GradScopeModel
import GradScopeSources
import GradScopeStatistics

/// One line of a chart over steps. A nil value leaves a gap; on a log axis a
/// zero is drawn in the "0" strip below the plot and a non-finite value as a
/// red cross in the "NaN/Inf" strip above it.
package struct LineSeries {
    package var label: String
    package var color: String
    package var width: Double = 1.6
    package var opacity: Double = 1
    package var points: [(step: Int, value: Double?)]
    /// Dots on the points (drawn only when there are few).
    package var markers = false
}

/// A shaded range of steps, e.g. a finding's first..last step.
package struct StepSpan {
    package var first: Int
    package var last: Int
    package var fill: String
    package var opacity: Double = 0.35
    package var label: String?
}

/// A shaded range of values, e.g. the healthy band of update ratios.
package struct ValueBand {
    package var lower: Double
    package var upper: Double
    package var fill: String
    package var label: String?
}

/// A horizontal reference line, e.g. ln 2.
package struct ReferenceLine {
    package var value: Double
    package var label: String
    package var color: String = "#444"
}

/// A line chart over the run's steps.
package struct LineChart {
    package var kind: String
    package var label: String
    package var title: String?
    package var width: Double = 420
    package var height: Double = 190
    package var logScale = true
    /// The run's saved steps: the x axis runs from the first to the last.
    package var steps: [Int]
    package var series: [LineSeries] = []
    package var spans: [StepSpan] = []
    package var bands: [ValueBand] = []
    package var references: [ReferenceLine] = []
    package var includeZero = false
    /// When set, the y axis covers at least these values (e.g. a band that should always show).
    package var domainHints: [Double] = []

    package func render() -> String {
        var canvas = SVGCanvas(width: width, height: height)
        let values = series.flatMap { $0.points.compactMap(\.value) }
        let hasZero = logScale && values.contains { $0 == 0 }
        let hasNonFinite = values.contains { !$0.isFinite }
        let left = 62.0, right = width - 14
        var top = title == nil ? 10.0 : 26.0
        if hasNonFinite { top += 16 }
        var bottom = height - 28
        if hasZero { bottom -= 16 }
        let x = AxisScale.steps(steps, start: left, end: right)
        let domainValues = values + bands.flatMap { [$0.lower, $0.upper] } + references.map(\.value) + domainHints
        let y =
            logScale
            ? AxisScale.log(domainValues, start: bottom, end: top) : AxisScale.linear(domainValues, start: bottom, end: top, includeZero: includeZero)

        if let title { canvas.text(title, 4, 15, size: 12.5, fill: Palette.ink, bold: true) }
        for band in bands {
            guard let a = y.position(band.upper), let b = y.position(band.lower) else { continue }
            canvas.rect(left, a, right - left, b - a, fill: band.fill, opacity: 0.75)
            if let text = band.label, title != nil {
                canvas.rect(right - 8 - Double(text.count) * 5.6, 6, 10, 10, fill: band.fill)
                canvas.text(text, right, 15, anchor: "end", size: 10, fill: "#3d7a3d")
            }
        }
        for span in spans {
            guard let a = x.position(Double(span.first)), let b = x.position(Double(span.last)) else { continue }
            let widthPixels = max(b - a, 3)
            canvas.rect(
                a - (b - a < 3 ? 1.5 : 0), top, widthPixels, bottom - top, fill: span.fill, opacity: span.opacity,
                title: span.label)
        }
        drawAxes(&canvas, x: x, y: y, top: top, bottom: bottom, left: left, right: right)
        let zeroY = bottom + 10, nanY = top - 9
        if hasZero {
            canvas.rect(left, bottom + 3, right - left, 14, fill: "#f3f3f3")
            canvas.text("0", left - 6, zeroY + 4, anchor: "end", size: ChartText.tickSize, fill: ChartText.tickColor)
        }
        if hasNonFinite {
            canvas.rect(left, top - 16, right - left, 14, fill: "#fdecea")
            canvas.text("NaN/Inf", left - 6, nanY + 4, anchor: "end", size: 10, fill: Palette.nonFinite)
        }
        for reference in references {
            guard let position = y.position(reference.value) else { continue }
            canvas.line(left, position, right, position, stroke: reference.color, width: 1.2, dash: "6 4")
            // Above the line, unless that would leave the plot.
            let labelY = position - top < 18 ? position + 15 : position - 5
            canvas.text(reference.label, right - 6, labelY, anchor: "end", size: 11.5, fill: reference.color, bold: true, halo: true)
        }
        for line in series {
            var segment: [(Double, Double)] = []
            var dots: [(Double, Double)] = []
            for point in line.points {
                guard let px = x.position(Double(point.step)) else { continue }
                guard let value = point.value else {
                    canvas.polyline(segment, stroke: line.color, width: line.width, opacity: line.opacity, title: line.label)
                    segment = []
                    continue
                }
                if !value.isFinite {
                    canvas.polyline(segment, stroke: line.color, width: line.width, opacity: line.opacity, title: line.label)
                    segment = []
                    canvas.cross(px, nanY, 3.5, stroke: Palette.nonFinite, title: "\(line.label): \(formatNumber(value)) at step \(point.step)")
                    continue
                }
                let py = (logScale && value == 0) ? zeroY : (y.position(value) ?? zeroY)
                segment.append((px, py))
                dots.append((px, py))
            }
            canvas.polyline(segment, stroke: line.color, width: line.width, opacity: line.opacity, title: line.label)
            if line.markers && dots.count <= 40 {
                for dot in dots { canvas.circle(dot.0, dot.1, line.width + 0.9, fill: line.color) }
            }
            if line.points.count == 1, let dot = dots.first { canvas.circle(dot.0, dot.1, 2.5, fill: line.color, title: line.label) }
        }
        return canvas.svg(kind: kind, label: label)
    }

    private func drawAxes(_ canvas: inout SVGCanvas, x: AxisScale, y: AxisScale, top: Double, bottom: Double, left: Double, right: Double) {
        for tick in y.ticks(maxTicks: max(3, Int((bottom - top) / 28))) {
            guard let position = y.position(tick.value) else { continue }
            canvas.line(left, position, right, position, stroke: Palette.grid)
            canvas.text(tick.label, left - 6, position + 4, anchor: "end", size: ChartText.tickSize, fill: ChartText.tickColor)
        }
        canvas.line(left, bottom, right, bottom, stroke: Palette.axis)
        canvas.line(left, top, left, bottom, stroke: Palette.axis)
        let labelY = height - 8
        let ticks = x.ticks(maxTicks: max(2, Int((right - left) / 70)))
        for (tick, label) in zip(ticks, stepLabels(ticks.map(\.value))) {
            guard let position = x.position(tick.value) else { continue }
            canvas.line(position, bottom, position, bottom + 4, stroke: Palette.axis)
            canvas.text(label, position, labelY, anchor: "middle", size: ChartText.tickSize, fill: ChartText.tickColor)
        }
        canvas.text("step", left - 8, labelY, anchor: "end", size: ChartText.captionSize, fill: ChartText.captionColor)
    }
}
