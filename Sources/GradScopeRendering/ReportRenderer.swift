import GradScopeDiagnosis

/// Renders a scan as one whole output: the bytes `gradscope scan` prints or
/// `gradscope report` writes. A pure function of the report: it reads nothing
/// and writes nothing.
package protocol ScanReportRenderer {
    /// The output for a scan, ending with a newline.
    func render(_ report: ScanReport) throws -> String
}

/// Renders every report of the analysing commands (scan, inspect, diff) in one
/// output format, as the text the command prints on standard output. A command
/// prints `render(report)` and nothing else there, so an output format is one
/// conforming type, one case of ``OutputFormat`` and one line of
/// ``renderer(for:style:explain:)``. Only encoding can fail (JSON's encoder
/// throws by its contract); the other renderers never throw.
package protocol ReportRenderer: ScanReportRenderer {
    /// The output for one checkpoint, ending with a newline.
    func render(_ report: InspectReport) throws -> String
    /// The output for the change between two checkpoints, ending with a newline.
    func render(_ report: DiffReport) throws -> String
}

/// The output formats of `--format`, in the order the help lists them.
package enum OutputFormat: String, CaseIterable, Sendable {
    /// Aligned columns with sparklines, for people (``TextRenderer``).
    case table
    /// The JSON contract of docs/JSON.md (``JSONRenderer``).
    case json
    /// One row per tensor, or per tensor and step for a scan (``CSVRenderer``).
    case csv
}

/// The renderer of `format`. `style` (colour), `explain` (what each finding
/// means) and `width` (the terminal's, nil for unlimited lines) shape the
/// table only: JSON and CSV never colour and always carry every field;
/// `csvTable` chooses the CSV's table (nil: the report's own rows).
package func renderer(
    for format: OutputFormat, style: Style, explain: Bool, width: Int? = nil, csvTable: CSVTable? = nil
) -> any ReportRenderer {
    switch format {
    case .table: return TextRenderer(style: style, explain: explain, width: width)
    case .json: return JSONRenderer()
    case .csv: return CSVRenderer(table: csvTable)
    }
}
