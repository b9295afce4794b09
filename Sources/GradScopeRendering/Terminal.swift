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

/// The glyphs of a sparkline besides its bars: each means one thing only.
package enum SparklineGlyph {
    /// Nothing to show at this save: not saved, or not defined there (no update ratio at the first save).
    package static let missing: Character = "·"
    /// Exactly zero (on a log scale, where zero has no place).
    package static let zero: Character = "0"
    /// NaN or ±Inf.
    package static let nonFinite: Character = "!"
}

/// The one-line legend printed under a table of sparklines.
package let sparklineLegend = "sparklines: ▁ low … █ high, log scale per row; · missing, 0 zero, ! NaN or Inf"

/// A sparkline of values on a log scale (norms and ratios span orders of
/// magnitude): ▁ lowest, █ highest; `·` for missing values, `0` for exact
/// zeros on a log scale, `!` for NaN and ±Inf (see ``SparklineGlyph``).
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
    let low = finite.min() ?? 0, high = finite.max() ?? 0
    let span = high - low
    return String(
        zip(sampled, transformed).map { raw, value -> Character in
            guard let value else {
                guard let raw else { return SparklineGlyph.missing }
                if !raw.isFinite { return SparklineGlyph.nonFinite }
                if raw == 0 { return SparklineGlyph.zero }
                return SparklineGlyph.missing
            }
            if span < 1e-12 { return bars[3] }
            let index = Int(((value - low) / span * Double(bars.count - 1)).rounded())
            return bars[min(max(index, 0), bars.count - 1)]
        })
}

/// Formats a number for a table cell: 3 significant digits, scientific when tiny or huge.
public func formatNumber(_ value: Double?) -> String { formatSignificant(value) }

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

/// The width text output should fit, from what is known about standard output:
/// a terminal's own width (`terminalColumns`, from TIOCGWINSZ), else the
/// `COLUMNS` variable, else 80 when writing to a terminal. Written elsewhere (a
/// pipe or a file, where one line per record matters) only `COLUMNS` sets a
/// width: without it lines are not limited (nil).
package func outputWidth(isTerminal: Bool, terminalColumns: Int?, columnsVariable: String?) -> Int? {
    let columns = columnsVariable.flatMap { Int($0.trimmingCharacters(in: .whitespaces)) }.flatMap { $0 > 0 ? $0 : nil }
    guard isTerminal else { return columns }
    if let terminalColumns, terminalColumns > 0 { return terminalColumns }
    return columns ?? 80
}

/// The width of standard output for ``outputWidth(isTerminal:terminalColumns:columnsVariable:)``:
/// asks the terminal (TIOCGWINSZ) when standard output is one.
package func standardOutputWidth() -> Int? {
    let isTerminal = isatty(STDOUT_FILENO) == 1
    var size = winsize()
    let asked = isTerminal && ioctl(STDOUT_FILENO, UInt(TIOCGWINSZ), &size) == 0
    return outputWidth(
        isTerminal: isTerminal, terminalColumns: asked ? Int(size.ws_col) : nil,
        columnsVariable: ProcessInfo.processInfo.environment["COLUMNS"])
}

/// Breaks `text` into lines of at most `width` characters at spaces, the lines
/// after the first indented by `indent` spaces (a hanging indent). Words are
/// never split: a word longer than a line stays whole on a line of its own.
/// Spaces inside a line are kept as they are; those at a break are dropped.
/// Without a width, the text is one line, unchanged.
package func wrapHanging(_ text: String, width: Int?, indent: Int) -> [String] {
    guard let width, text.count > width else { return [text] }
    let margin = String(repeating: " ", count: indent)
    var lines: [String] = []
    var rest = Array(text)
    var prefix = ""
    while true {
        let room = max(width - prefix.count, 1)
        if rest.count <= room {
            lines.append(prefix + String(rest))
            break
        }
        // Never break inside the leading spaces of the first line.
        let leading = rest.prefix { $0 == " " }.count
        var cut: Int?
        if room >= leading + 1 {
            cut = stride(from: room, through: leading + 1, by: -1).first { rest[$0] == " " }
        }
        if cut == nil { cut = rest.indices.dropFirst(room + 1).first { rest[$0] == " " } }
        guard let cut else {
            lines.append(prefix + String(rest))
            break
        }
        lines.append((prefix + String(rest[..<cut])).trailingSpacesRemoved)
        rest = Array(rest[cut...].drop { $0 == " " })
        if rest.isEmpty { break }
        prefix = margin
    }
    return lines
}

/// A column of a table that may have to fit a width: its header, its cells
/// (one per row, in order), and when it gives way.
package struct TableColumn {
    /// The header.
    package var title: String
    /// One cell per row.
    package var cells: [String]
    /// Columns are dropped, rank 1 first, while the table is wider than the
    /// terminal; a column without a rank is always kept.
    package var dropRank: Int?

    /// A column of `title` and `cells`, dropped in the order of `dropRank` (nil: never).
    package init(_ title: String, _ cells: [String], dropRank: Int? = nil) {
        self.title = title
        self.cells = cells
        self.dropRank = dropRank
    }

    /// The widest of its header and cells, as displayed.
    package var width: Int { ([title] + cells).map(visibleLength).max() ?? 0 }
}

/// The width of the columns laid out by ``renderTable(_:style:rightAligned:)``: two spaces between them.
package func tableWidth(_ columns: [TableColumn]) -> Int {
    columns.map(\.width).reduce(0, +) + 2 * max(columns.count - 1, 0)
}

/// The columns that fit in `width`: while the table is wider, the ranked
/// column with the lowest rank is dropped; when only unranked columns are left
/// and it is still too wide, the first column's cells (the names) are
/// shortened in the middle with `…`, to no fewer than 12 characters. With
/// `upToRank`, only columns of that rank or lower are dropped and nothing is
/// shortened. Without a width every column is kept as it is.
package func fitColumns(_ columns: [TableColumn], width: Int?, upToRank: Int? = nil) -> [TableColumn] {
    guard let width else { return columns }
    var kept = columns
    let droppable = { (column: TableColumn) -> Int? in
        guard let rank = column.dropRank, rank <= upToRank ?? Int.max else { return nil }
        return rank
    }
    while tableWidth(kept) > width,
        let drop = kept.indices.filter({ droppable(kept[$0]) != nil }).min(by: { (droppable(kept[$0]) ?? 0) < (droppable(kept[$1]) ?? 0) })
    {
        kept.remove(at: drop)
    }
    if upToRank == nil, tableWidth(kept) > width, let first = kept.first {
        let room = max(width - (tableWidth(kept) - first.width), 12, visibleLength(first.title))
        kept[0].cells = first.cells.map { shortenedInTheMiddle($0, to: room) }
    }
    return kept
}

/// `text` of at most `length` characters: the beginning and the end of a longer one around `…`.
package func shortenedInTheMiddle(_ text: String, to length: Int) -> String {
    guard text.count > length, length >= 3 else { return text }
    let tail = (length - 1) / 2, head = length - 1 - tail
    return String(text.prefix(head)) + "…" + String(text.suffix(tail))
}

/// The rows of `columns` (header first) for ``renderTable(_:style:rightAligned:)``.
package func tableRows(_ columns: [TableColumn]) -> [[String]] {
    let count = columns.map(\.cells.count).max() ?? 0
    return [columns.map(\.title)] + (0..<count).map { row in columns.map { row < $0.cells.count ? $0.cells[row] : "" } }
}
