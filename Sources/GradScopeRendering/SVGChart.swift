import ElementTypes
import Foundation
import GradScopeDiagnosis
import GradScopeMeasurement
import GradScopeModel
import GradScopeSources
import GradScopeStatistics

// Building blocks of the HTML report's charts: escaping, number formatting,
// an SVG canvas and the axis scales. Nothing here knows what a finding is.

/// Escapes text for HTML and inline SVG, for element content and quoted
/// attribute values alike: `& < > " '` become entities, and C0 control
/// characters other than tab, newline and carriage return (which HTML and
/// XML reject) become U+FFFD. Every string that comes from a file goes
/// through here: tensor names, paths, messages, evidence.
package func htmlEscape(_ text: String) -> String {
    var out = ""
    out.reserveCapacity(text.utf8.count + 8)
    for scalar in text.unicodeScalars {
        switch scalar {
        case "&": out += "&amp;"
        case "<": out += "&lt;"
        case ">": out += "&gt;"
        case "\"": out += "&quot;"
        case "'": out += "&#39;"
        case "\t", "\n", "\r": out.unicodeScalars.append(scalar)
        default:
            if scalar.value < 0x20 || scalar.value == 0x7F || (scalar.value >= 0x80 && scalar.value < 0xA0) {
                out += "\u{FFFD}"
            } else {
                out.unicodeScalars.append(scalar)
            }
        }
    }
    return out
}

/// Text whose names are set in backticks (`layer \`0\``, as the verdict writes them), as HTML:
/// escaped, each backticked span in `<code>`. A backtick without its pair is written as an
/// entity, so no raw backtick reaches the page.
package func inlineCodeHTML(_ text: String) -> String {
    let parts = text.split(separator: "`", omittingEmptySubsequences: false).map(String.init)
    var html = ""
    for (index, part) in parts.enumerated() {
        let inside = index % 2 == 1
        if inside && index == parts.count - 1 {
            html += "&#96;" + htmlEscape(part)
        } else {
            html += inside ? "<code>\(htmlEscape(part))</code>" : htmlEscape(part)
        }
    }
    return html
}

/// A coordinate for SVG markup: rounded to one decimal, no trailing ".0".
package func svgNumber(_ value: Double) -> String {
    guard value.isFinite else { return "0" }
    let tenths = (value * 10).rounded()
    if tenths.magnitude >= 1e15 { return String(format: "%.0f", value) }
    let whole = Int(tenths) / 10, fraction = abs(Int(tenths) % 10)
    if fraction == 0 { return String(whole) }
    return (tenths < 0 && whole == 0 ? "-" : "") + "\(whole).\(fraction)"
}

/// 10 to an integer power, written with superscript digits: 10⁻³.
package func powerLabel(base: Int, exponent: Int) -> String {
    let digits: [Character: Character] = [
        "0": "⁰", "1": "¹", "2": "²", "3": "³", "4": "⁴", "5": "⁵", "6": "⁶", "7": "⁷", "8": "⁸", "9": "⁹", "-": "⁻",
    ]
    return "\(base)" + String(String(exponent).map { digits[$0] ?? $0 })
}

/// A step number for axis labels: 9600, 12k, 1.5M (as ``stepLabels(_:)`` writes a single one).
package func stepLabel(_ step: Double) -> String { stepLabels([step])[0] }

/// The labels of one axis of steps, all in one form so that they read as one scale: in millions
/// (`1.5M`) when every nonzero step is a multiple of 100,000 and the largest is at least a million,
/// in thousands (`5k`, `110k`) when every nonzero step is a multiple of 1000 and the largest at least
/// 10,000, and as plain numbers (`103020`) otherwise, never a mix.
package func stepLabels(_ steps: [Double]) -> [String] {
    let values = steps.map { $0.rounded() }
    let largest = values.map(\.magnitude).max() ?? 0
    func all(multipleOf unit: Double) -> Bool { values.allSatisfy { ($0 / unit).rounded() == $0 / unit } }
    if largest >= 1_000_000 && all(multipleOf: 100_000) {
        return values.map { $0 == 0 ? "0" : formatNumber($0 / 1_000_000) + "M" }
    }
    if largest >= 10_000 && all(multipleOf: 1000) {
        return values.map { $0 == 0 ? "0" : String(Int($0 / 1000)) + "k" }
    }
    return values.map { String(Int($0)) }
}

/// Sizes and colours of the charts' text: tick labels dark and large enough to read at a glance.
package enum ChartText {
    /// Tick labels of every axis.
    package static let tickSize = 12.0
    package static let tickColor = "#3c3c3c"
    /// Axis captions ("step", "input →").
    package static let captionSize = 11.5
    package static let captionColor = "#555"
}

/// Accumulates SVG markup for one chart.
package struct SVGCanvas {
    package let width: Double
    package let height: Double
    package private(set) var body = ""

    package init(width: Double, height: Double) {
        self.width = width
        self.height = height
        body.reserveCapacity(4096)
    }

    package mutating func raw(_ markup: String) { body += markup }

    package mutating func rect(
        _ x: Double, _ y: Double, _ w: Double, _ h: Double, fill: String, opacity: Double? = nil,
        title: String? = nil, extra: String = ""
    ) {
        let attributes =
            "x=\"\(svgNumber(x))\" y=\"\(svgNumber(y))\" width=\"\(svgNumber(max(w, 0)))\" height=\"\(svgNumber(max(h, 0)))\" fill=\"\(fill)\""
            + (opacity.map { " fill-opacity=\"\(String(format: "%.2f", $0))\"" } ?? "") + extra
        if let title {
            body += "<rect \(attributes)><title>\(htmlEscape(title))</title></rect>"
        } else {
            body += "<rect \(attributes)/>"
        }
    }

    package mutating func line(_ x1: Double, _ y1: Double, _ x2: Double, _ y2: Double, stroke: String, width: Double = 1, dash: String? = nil) {
        body +=
            "<line x1=\"\(svgNumber(x1))\" y1=\"\(svgNumber(y1))\" x2=\"\(svgNumber(x2))\" y2=\"\(svgNumber(y2))\" stroke=\"\(stroke)\" stroke-width=\"\(svgNumber(width))\""
            + (dash.map { " stroke-dasharray=\"\($0)\"" } ?? "") + "/>"
    }

    package mutating func polyline(_ points: [(Double, Double)], stroke: String, width: Double, opacity: Double = 1, title: String? = nil) {
        guard points.count >= 2 else { return }
        let coordinates = points.map { "\(svgNumber($0.0)),\(svgNumber($0.1))" }.joined(separator: " ")
        let open =
            "<polyline points=\"\(coordinates)\" fill=\"none\" stroke=\"\(stroke)\" stroke-width=\"\(svgNumber(width))\" stroke-linejoin=\"round\""
            + (opacity < 1 ? " stroke-opacity=\"\(String(format: "%.2f", opacity))\"" : "")
        body += title.map { open + "><title>\(htmlEscape($0))</title></polyline>" } ?? open + "/>"
    }

    package mutating func circle(_ cx: Double, _ cy: Double, _ r: Double, fill: String, title: String? = nil) {
        let open = "<circle cx=\"\(svgNumber(cx))\" cy=\"\(svgNumber(cy))\" r=\"\(svgNumber(r))\" fill=\"\(fill)\""
        body += title.map { open + "><title>\(htmlEscape($0))</title></circle>" } ?? open + "/>"
    }

    /// A cross, the mark of a non-finite value.
    package mutating func cross(_ cx: Double, _ cy: Double, _ r: Double, stroke: String, title: String? = nil) {
        let d =
            "M\(svgNumber(cx - r)) \(svgNumber(cy - r))L\(svgNumber(cx + r)) \(svgNumber(cy + r))M\(svgNumber(cx - r)) \(svgNumber(cy + r))L\(svgNumber(cx + r)) \(svgNumber(cy - r))"
        let open = "<path d=\"\(d)\" stroke=\"\(stroke)\" stroke-width=\"2\""
        body += title.map { open + "><title>\(htmlEscape($0))</title></path>" } ?? open + "/>"
    }

    /// Text, escaped. `anchor` is start, middle or end; `rotate` turns it about its anchor point.
    package mutating func text(
        _ content: String, _ x: Double, _ y: Double, anchor: String = "start", size: Double = 11,
        fill: String = "#555", bold: Bool = false, rotate: Double? = nil, title: String? = nil, halo: Bool = false
    ) {
        var attributes = "x=\"\(svgNumber(x))\" y=\"\(svgNumber(y))\" font-size=\"\(svgNumber(size))\" fill=\"\(fill)\""
        if halo { attributes += " stroke=\"#fff\" stroke-width=\"3.5\" paint-order=\"stroke\" stroke-linejoin=\"round\"" }
        if anchor != "start" { attributes += " text-anchor=\"\(anchor)\"" }
        if bold { attributes += " font-weight=\"600\"" }
        if let rotate { attributes += " transform=\"rotate(\(svgNumber(rotate)) \(svgNumber(x)) \(svgNumber(y)))\"" }
        let inner = htmlEscape(content) + (title.map { "<title>\(htmlEscape($0))</title>" } ?? "")
        body += "<text \(attributes)>\(inner)</text>"
    }

    /// The finished `<svg>` element. `kind` names the chart type (a CSS class `chart-<kind>`);
    /// `label` is its accessible description.
    package func svg(kind: String, label: String) -> String {
        "<svg class=\"chart chart-\(kind)\" viewBox=\"0 0 \(svgNumber(width)) \(svgNumber(height))\" width=\"\(svgNumber(width))\" "
            + "height=\"\(svgNumber(height))\" role=\"img\" aria-label=\"\(htmlEscape(label))\">"
            + body + "</svg>"
    }
}

/// Maps data values to pixels along one axis, linearly or by log10.
package struct AxisScale {
    package enum Kind { case linear, log }
    package let kind: Kind
    /// The domain: values for linear, log10 of values for log.
    package let lower: Double
    package let upper: Double
    /// Pixel positions of `lower` and `upper` (upper may be smaller, as on a y axis).
    package let start: Double
    package let end: Double

    /// The pixel position of `value`; nil when it cannot be drawn (not finite, or ≤ 0 on a log axis).
    package func position(_ value: Double) -> Double? {
        guard value.isFinite else { return nil }
        let domainValue: Double
        switch kind {
        case .linear: domainValue = value
        case .log:
            guard value > 0 else { return nil }
            domainValue = Foundation.log10(value)
        }
        let span = upper - lower
        let t = span == 0 ? 0.5 : (domainValue - lower) / span
        return start + (end - start) * min(max(t, -0.05), 1.05)
    }

    /// Tick values and their labels: decades on a log axis (thinned to at most `maxTicks`),
    /// multiples of 1, 2 or 5 × 10ⁿ on a linear one.
    package func ticks(maxTicks: Int = 7, label: (Double) -> String = { formatNumber($0) }) -> [(value: Double, label: String)] {
        switch kind {
        case .log:
            let first = Int(lower.rounded(.up)), last = Int(upper.rounded(.down))
            guard first <= last else { return [] }
            let stride = max(1, Int((Double(last - first + 1) / Double(max(maxTicks, 1))).rounded(.up)))
            return Swift.stride(from: first, through: last, by: stride).map { (Foundation.pow(10, Double($0)), powerLabel(base: 10, exponent: $0)) }
        case .linear:
            let span = upper - lower
            guard span > 0, span.isFinite else { return [(lower, label(lower))] }
            let rough = span / Double(max(maxTicks - 1, 1))
            let magnitude = Foundation.pow(10, Foundation.floor(Foundation.log10(rough)))
            let step = [1.0, 2, 5, 10].map { $0 * magnitude }.first { $0 >= rough } ?? 10 * magnitude
            var ticks: [(Double, String)] = []
            var value = Foundation.ceil(lower / step - 1e-9) * step
            while value <= upper + step * 1e-9 && ticks.count < 50 {
                ticks.append((value == 0 ? 0 : value, label(value)))
                value += step
            }
            return ticks
        }
    }

    /// A log axis covering the positive finite `values` in whole decades (at least `minDecades`),
    /// reaching at least `margin` decades below the smallest value; 10⁻⁸..1 when there are none.
    package static func log(_ values: [Double], start: Double, end: Double, minDecades: Double = 1, margin: Double = 0) -> AxisScale {
        let positive = values.filter { $0 > 0 && $0.isFinite }
        guard let smallest = positive.min(), let largest = positive.max() else {
            return AxisScale(kind: .log, lower: -8, upper: 0, start: start, end: end)
        }
        var lower = Foundation.floor(Foundation.log10(smallest) - margin), upper = Foundation.ceil(Foundation.log10(largest))
        if upper - lower < minDecades {
            let missing = minDecades - (upper - lower)
            lower -= Foundation.ceil(missing / 2)
            upper += Foundation.ceil(missing / 2)
        }
        return AxisScale(kind: .log, lower: lower, upper: upper, start: start, end: end)
    }

    /// A linear axis covering the finite `values` with 5% headroom (and 0 when `includeZero`).
    package static func linear(_ values: [Double], start: Double, end: Double, includeZero: Bool = false) -> AxisScale {
        let finite = values.filter(\.isFinite)
        var lower = finite.min() ?? 0, upper = finite.max() ?? 1
        if includeZero {
            lower = min(lower, 0)
            upper = max(upper, 0)
        }
        if lower == upper {
            let pad = lower == 0 ? 1 : abs(lower) * 0.1
            lower -= pad
            upper += pad
        } else {
            let pad = (upper - lower) * 0.05
            if !(includeZero && lower == 0) { lower -= pad }
            upper += pad
        }
        return AxisScale(kind: .linear, lower: lower, upper: upper, start: start, end: end)
    }

    /// The step axis shared by every chart over time: the run's first to last saved step.
    package static func steps(_ steps: [Int], start: Double, end: Double) -> AxisScale {
        let first = Double(steps.min() ?? 0), last = Double(steps.max() ?? 1)
        return AxisScale(kind: .linear, lower: first, upper: last > first ? last : first + 1, start: start, end: end)
    }
}

/// Colours of the report.
package enum Palette {
    package static func severity(_ severity: Severity?) -> String {
        switch severity {
        case .error?: return "#c62828"
        case .warning?: return "#e07b00"
        case .info?: return "#1f6fb5"
        case nil: return "#2e7d32"
        }
    }

    /// Light fills behind a severity's span or card.
    package static func severityTint(_ severity: Severity?) -> String {
        switch severity {
        case .error?: return "#fdecea"
        case .warning?: return "#fff3e0"
        case .info?: return "#e8f1fb"
        case nil: return "#e8f5e9"
        }
    }

    package static let ink = "#222"
    package static let axis = "#888"
    package static let grid = "#e6e6e6"
    package static let muted = "#b9b9b9"
    package static let nonFinite = "#d50000"
    package static let healthyBand = "#dcefdc"

    /// Distinct colours for the tensors named in findings.
    package static let series = ["#d62728", "#1f77b4", "#ff7f0e", "#9467bd", "#2ca02c", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f"]

    /// Colours for lines not named in any finding (no reds or oranges).
    package static let calm = ["#1f77b4", "#2ca02c", "#17becf", "#9467bd", "#7f7f7f", "#8c564b", "#4a6fa5", "#6b8e23"]

    /// Sequential scales, lightest first: weights in blues, gradients in purples, dead units in reds.
    package static let blues = ["#e3eef9", "#c6dbef", "#9ecae1", "#6baed6", "#4292c6", "#2171b5", "#08519c", "#08306b"]
    package static let purples = ["#efedf5", "#dadaeb", "#bcbddc", "#9e9ac8", "#807dba", "#6a51a3", "#54278f", "#3f007d"]
    package static let reds = ["#fee0d2", "#fcbba1", "#fc9272", "#fb6a4a", "#ef3b2c", "#cb181d", "#a50f15", "#67000d"]
    /// Light to dark greys for the steps compared in the gradient-flow bars, earliest lightest.
    package static let stepShades = ["#9ecae1", "#4292c6", "#08306b"]

    /// The colour of `fraction` (0...1) in a sequential scale; square-root spaced so that small shares still show.
    package static func level(_ fraction: Double, in scale: [String]) -> String {
        guard let last = scale.last else { return "#000" }
        guard fraction.isFinite, fraction > 0 else { return scale.first ?? last }
        let index = Int((min(fraction, 1).squareRoot() * Double(scale.count)).rounded(.down))
        return scale[min(max(index, 0), scale.count - 1)]
    }
}
