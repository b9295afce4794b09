import ElementTypes
import Foundation
import GradScopeDiagnosis
import GradScopeMeasurement
import GradScopeModel
import GradScopeSources
import GradScopeStatistics

/// Colours and glyphs for terminal output. Colour only when asked (a TTY
/// without NO_COLOR); everything else is plain text.
public struct Style: Sendable {
    public var color: Bool

    public init(color: Bool) { self.color = color }

    /// Colour when stdout is a terminal and NO_COLOR is unset (https://no-color.org).
    public static func forStandardOutput() -> Style {
        let noColor = ProcessInfo.processInfo.environment["NO_COLOR"].map { !$0.isEmpty } ?? false
        return Style(color: isatty(STDOUT_FILENO) == 1 && !noColor && ProcessInfo.processInfo.environment["TERM"] != "dumb")
    }

    package func wrap(_ text: String, _ code: String) -> String { color ? "\u{1B}[\(code)m\(text)\u{1B}[0m" : text }
    public func bold(_ text: String) -> String { wrap(text, "1") }
    public func dim(_ text: String) -> String { wrap(text, "2") }
    public func severity(_ severity: Severity, _ text: String) -> String {
        switch severity {
        case .error: return wrap(text, "1;31")
        case .warning: return wrap(text, "33")
        case .info: return wrap(text, "36")
        }
    }
    public func good(_ text: String) -> String { wrap(text, "32") }
}

/// A sparkline of values on a log scale (norms and ratios span orders of
/// magnitude): ▁ lowest, █ highest; `·` for missing values, `!` for non-finite.
public func sparkline(_ values: [Double?], logScale: Bool = true, width: Int = 24) -> String {
    let bars: [Character] = ["▁", "▂", "▃", "▄", "▅", "▆", "▇", "█"]
    var sampled = values
    if values.count > width {
        sampled = (0..<width).map { values[$0 * (values.count - 1) / max(width - 1, 1)] }
    }
    let transformed: [Double?] = sampled.map { value in
        guard let value, value.isFinite else { return nil }
        if logScale { return value > 0 ? log10(value) : nil }
        return value
    }
    let finite = transformed.compactMap { $0 }
    guard let low = finite.min(), let high = finite.max() else {
        return String(sampled.map { $0 == nil ? "·" : "!" })
    }
    let span = high - low
    return String(
        zip(sampled, transformed).map { raw, value -> Character in
            guard let value else {
                if let raw, !raw.isFinite { return "!" }
                if let raw, raw == 0, logScale { return "_" }
                return "·"
            }
            if span < 1e-12 { return bars[3] }
            let index = Int(((value - low) / span * Double(bars.count - 1)).rounded())
            return bars[min(max(index, 0), bars.count - 1)]
        })
}

/// Formats a number for a table cell: 3 significant digits, scientific when tiny or huge.
public func formatNumber(_ value: Double?) -> String { DetectorSupport.format(value) }

/// Lays out rows in aligned columns (the first row is the header).
public func renderTable(_ rows: [[String]], style: Style, rightAligned: Set<Int> = []) -> String {
    guard let header = rows.first else { return "" }
    var widths = [Int](repeating: 0, count: header.count)
    for row in rows {
        for (index, cell) in row.enumerated() where index < widths.count {
            widths[index] = max(widths[index], visibleLength(cell))
        }
    }
    var lines: [String] = []
    for (rowIndex, row) in rows.enumerated() {
        var cells: [String] = []
        for (index, cell) in row.enumerated() where index < widths.count {
            let padding = String(repeating: " ", count: max(0, widths[index] - visibleLength(cell)))
            let text = rightAligned.contains(index) ? padding + cell : cell + padding
            cells.append(text)
        }
        let line = cells.joined(separator: "  ").trailingSpacesRemoved
        lines.append(rowIndex == 0 ? style.bold(line) : line)
    }
    return lines.joined(separator: "\n")
}

/// Length of a string as displayed: escape sequences take no room.
package func visibleLength(_ text: String) -> Int {
    var count = 0
    var inEscape = false
    for scalar in text.unicodeScalars {
        if inEscape {
            if scalar == "m" { inEscape = false }
            continue
        }
        if scalar == "\u{1B}" {
            inEscape = true
            continue
        }
        count += 1
    }
    return count
}
