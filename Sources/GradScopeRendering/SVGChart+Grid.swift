import ElementTypes
import Foundation
import GradScopeDiagnosis
import GradScopeMeasurement
import GradScopeModel
import GradScopeSources
import GradScopeStatistics

/// One step of a log2-magnitude histogram: counts of floor(log2 |x|) from `minExponent`.
package struct HistogramRow {
    package var step: Int
    package var minExponent: Int?
    package var counts: [Int]?
    /// Share of exact zeros (not part of the log2 histogram), when known.
    package var zeroFraction: Double?
    package var nonFinite: Int?
}

/// TensorBoard-style histogram evolution: one row per step (time downward),
/// one column per power of two of |x|, darker where more of the tensor's
/// elements lie. Each row is scaled to its own total, so a row shows where the
/// tensor's mass is at that step. Optional columns at the sides show the share
/// of exact zeros and whether any value was NaN/Inf.
package struct HistogramHeatmap {
    package var kind = "histogram"
    package var label: String
    package var title: String
    package var rows: [HistogramRow]
    /// The exponents shown; values outside are piled into the end columns.
    package var exponents: ClosedRange<Int>
    package var scale: [String]
    package var zeroColumn = false
    package var nonFiniteColumn = false
    package var width: Double = 600
    /// At most this many columns: wider ranges put several exponents in one column.
    package var maxColumns = 96

    package func render() -> String {
        let left = 60.0, top = 26.0, bottom = 38.0
        let side = 14.0
        let plotLeft = left + (zeroColumn ? side + 4 : 0)
        let plotRight = width - 8 - (nonFiniteColumn ? side + 4 : 0)
        let span = exponents.upperBound - exponents.lowerBound + 1
        let perColumn = max(1, (span + maxColumns - 1) / maxColumns)
        let columns = (span + perColumn - 1) / perColumn
        let cellWidth = (plotRight - plotLeft) / Double(max(columns, 1))
        let rowHeight = min(14, max(4, 320 / Double(max(rows.count, 1))))
        let height = top + rowHeight * Double(rows.count) + bottom
        var canvas = SVGCanvas(width: width, height: height)
        canvas.text(title, 4, 15, size: 12.5, fill: Palette.ink, bold: true)
        canvas.rect(plotLeft, top, plotRight - plotLeft, rowHeight * Double(rows.count), fill: "#fbfbfb")

        var paths = [String](repeating: "", count: scale.count)
        let labelEvery = max(1, Int((ChartText.tickSize * 1.25 / rowHeight).rounded(.up)))
        let labelled = rows.indices.filter { index in
            index % labelEvery == 0 || (index == rows.count - 1 && index % labelEvery >= max(1, labelEvery / 2))
        }
        // The step labels of the rows, in one form for the whole axis.
        let rowLabels = Dictionary(uniqueKeysWithValues: zip(labelled, stepLabels(labelled.map { Double(rows[$0].step) })))
        for (index, row) in rows.enumerated() {
            let y = top + Double(index) * rowHeight
            if let label = rowLabels[index] {
                canvas.text(label, left - 6, y + rowHeight / 2 + 4, anchor: "end", size: ChartText.tickSize, fill: ChartText.tickColor)
            }
            if zeroColumn, let zeros = row.zeroFraction, zeros > 0 {
                canvas.rect(
                    left, y, side, rowHeight, fill: Palette.level(zeros, in: scale),
                    title: "step \(row.step): \(formatNumber(zeros * 100))% exact zeros")
            }
            if nonFiniteColumn, let bad = row.nonFinite, bad > 0 {
                canvas.rect(plotRight + 4, y, side, rowHeight, fill: Palette.nonFinite, title: "step \(row.step): \(bad) NaN/Inf")
            }
            guard let minExponent = row.minExponent, let counts = row.counts else { continue }
            let total = counts.reduce(0, +)
            guard total > 0 else { continue }
            var binned = [Int](repeating: 0, count: columns)
            for (offset, count) in counts.enumerated() where count > 0 {
                let exponent = min(max(minExponent + offset, exponents.lowerBound), exponents.upperBound)
                binned[(exponent - exponents.lowerBound) / perColumn] += count
            }
            // Cells in units of one column by one row (scaled below); runs of one shade become one rectangle.
            var column = 0
            while column < columns {
                guard binned[column] > 0 else {
                    column += 1
                    continue
                }
                let shade = min(scale.count - 1, max(0, Int((Double(binned[column]) / Double(total)).squareRoot() * Double(scale.count))))
                var end = column + 1
                while end < columns, binned[end] > 0,
                    min(scale.count - 1, Int((Double(binned[end]) / Double(total)).squareRoot() * Double(scale.count))) == shade
                { end += 1 }
                paths[shade] += "M\(column) \(index)h\(end - column)v1h-\(end - column)z"
                column = end
            }
        }
        canvas.raw(
            "<g transform=\"translate(\(svgNumber(plotLeft)) \(svgNumber(top))) scale(\(String(format: "%.4f", cellWidth)) \(String(format: "%.4f", rowHeight)))\" shape-rendering=\"crispEdges\">"
        )
        for (shade, d) in paths.enumerated() where !d.isEmpty {
            canvas.raw("<path d=\"\(d)\" fill=\"\(scale[shade])\"/>")
        }
        canvas.raw("</g>")
        let plotBottom = top + rowHeight * Double(rows.count)
        // |x| = 1 for reference, and exponent labels.
        if exponents.contains(0) {
            let x = plotLeft + Double((0 - exponents.lowerBound) / perColumn) * cellWidth
            canvas.line(x, top, x, plotBottom, stroke: "#777", width: 1, dash: "3 3")
        }
        let wanted = max(2, Int((plotRight - plotLeft) / 52))
        let stride = [1, 2, 4, 5, 8, 10, 16, 20, 32, 50, 64].first { span / $0 <= wanted } ?? 100
        var exponent = Int((Double(exponents.lowerBound) / Double(stride)).rounded(.up)) * stride
        // The "0" and "NaN" columns carry labels of their own: an exponent label is left out where it
        // would run into one of them ("02⁻¹⁰").
        let zeroLabelX = left + side / 2, nanLabelX = plotRight + 4 + side / 2
        while exponent <= exponents.upperBound {
            let x = plotLeft + (Double((exponent - exponents.lowerBound) / perColumn) + 0.5) * cellWidth
            canvas.line(x, plotBottom, x, plotBottom + 4, stroke: Palette.axis)
            let label = powerLabel(base: 2, exponent: exponent)
            let halfWidth = Double(label.count) * ChartText.tickSize * 0.32
            let clear =
                (!zeroColumn || x - halfWidth >= zeroLabelX + ChartText.tickSize * 0.5)
                && (!nonFiniteColumn || x + halfWidth <= nanLabelX - ChartText.tickSize * 1.1)
            if clear {
                canvas.text(label, x, plotBottom + 16, anchor: "middle", size: ChartText.tickSize, fill: ChartText.tickColor)
            }
            exponent += stride
        }
        canvas.text(
            "← smaller   |x|   larger →", (plotLeft + plotRight) / 2, plotBottom + 31, anchor: "middle", size: ChartText.captionSize,
            fill: ChartText.captionColor)
        if zeroColumn { canvas.text("0", zeroLabelX, plotBottom + 16, anchor: "middle", size: ChartText.tickSize, fill: ChartText.tickColor) }
        if nonFiniteColumn { canvas.text("NaN", nanLabelX, plotBottom + 16, anchor: "middle", size: 10, fill: Palette.nonFinite) }
        return canvas.svg(kind: kind, label: label)
    }
}

/// One row of the dead-unit grid: a layer's dead-unit count at each shown step.
package struct UnitGridRow {
    package var label: String
    package var detail: String
    package var units: Int?
    /// One count per shown step; nil where nothing was measured.
    package var counts: [Int?]
    package var highlight: Severity?
}

/// Dead units per layer over steps: one row per layer, one cell per step,
/// red in proportion to the share of the layer's units that are dead.
package struct UnitGrid {
    package var kind = "dead-units"
    package var label: String
    package var steps: [Int]
    package var rows: [UnitGridRow]
    package var width: Double = 1240

    package func render() -> String {
        let left = 250.0, top = 8.0, rowHeight = 24.0, bottom = 30.0
        let cellWidth = min(44, (width - left - 10) / Double(max(steps.count, 1)))
        let height = top + rowHeight * Double(rows.count) + bottom
        var canvas = SVGCanvas(width: width, height: height)
        for (index, row) in rows.enumerated() {
            let y = top + Double(index) * rowHeight
            if let severity = row.highlight {
                canvas.rect(0, y + 2, 4, rowHeight - 4, fill: Palette.severity(severity))
            }
            canvas.text(
                truncated(row.label, 26), 10, y + 12, size: 11.5, fill: row.highlight.map { Palette.severity($0) } ?? Palette.ink,
                bold: row.highlight != nil, title: row.label)
            canvas.text(row.detail, 10, y + 22, size: 10, fill: ChartText.captionColor)
            let peak = max(1, row.counts.compactMap { $0 }.max() ?? 1)
            let showNumbers = cellWidth >= 17
            // Runs of zero cells are one rectangle; only cells with dead units carry their own.
            var column = 0
            while !showNumbers && column < row.counts.count {
                guard row.counts[column] == 0 else {
                    column += 1
                    continue
                }
                var end = column + 1
                while end < row.counts.count, row.counts[end] == 0 { end += 1 }
                canvas.rect(left + Double(column) * cellWidth + 0.5, y + 1, Double(end - column) * cellWidth - 1, rowHeight - 2, fill: "#eef3ee")
                column = end
            }
            for (column, count) in row.counts.enumerated() {
                let x = left + Double(column) * cellWidth
                guard let count, count > 0 || showNumbers else { continue }
                let fraction = Double(count) / Double(row.units ?? peak)
                let fill = count == 0 ? "#eef3ee" : Palette.level(fraction, in: Palette.reds)
                let step = column < steps.count ? steps[column] : 0
                canvas.rect(
                    x + 0.5, y + 1, cellWidth - 1, rowHeight - 2, fill: fill,
                    title: "step \(step): \(count)" + (row.units.map { " of " + unitCount($0) } ?? (count == 1 ? " unit" : " units")) + " dead")
                if showNumbers {
                    canvas.text(
                        String(count), x + cellWidth / 2, y + rowHeight / 2 + 4, anchor: "middle", size: cellWidth >= 24 ? 10.5 : 8.5,
                        fill: count == 0 ? "#9ab39a" : (fraction >= 0.14 ? "#fff" : "#611"))
                }
            }
        }
        let bottomY = top + rowHeight * Double(rows.count)
        let every = max(1, Int((52 / cellWidth).rounded(.up)))
        let shown = steps.indices.filter { $0 % every == 0 }
        for (column, label) in zip(shown, stepLabels(shown.map { Double(steps[$0]) })) {
            canvas.text(
                label, left + (Double(column) + 0.5) * cellWidth, bottomY + 15, anchor: "middle", size: ChartText.tickSize,
                fill: ChartText.tickColor)
        }
        canvas.text("step", left - 8, bottomY + 15, anchor: "end", size: ChartText.captionSize, fill: ChartText.captionColor)
        return canvas.svg(kind: kind, label: label)
    }
}

/// "1 unit", "24 units".
package func unitCount(_ count: Int) -> String { count == 1 ? "1 unit" : "\(count) units" }

/// `text` cut to `limit` characters with an ellipsis.
package func truncated(_ text: String, _ limit: Int) -> String {
    text.count <= limit ? text : String(text.prefix(max(limit - 1, 1))) + "…"
}
