import ArgumentParser
import Foundation
import GradScope

struct ScanCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "scan",
        abstract: "Every step of a run: what went wrong, where, and since when.",
        discussion: """
            RUN is a directory of checkpoint files (any names; ordered by the step saved in them, else the optimizer's \
            iteration counter, else the last number in the file name), or one file holding a group per step \
            (/step_100/...). Prints a verdict, a per-tensor timeline (norms, gradient norms and update ratios with \
            sparklines) and the findings with the step each began. Files that cannot be used are listed with the reason.

            With --format csv the output is one table: the timeline (a row per tensor and step) unless --csv-table \
            asks for the findings or the loss.

            Exit codes: 0 nothing at or above --fail-on; 1 findings at or above it; 2 no checkpoint could be read or a usage error.
            """
    )

    @Argument(help: "A run directory, a multi-step file, or one checkpoint.")
    var path: String

    @OptionGroup var reading: ReadingOptions
    @OptionGroup var analysis: AnalysisOptions
    @OptionGroup var isolation: IsolationFlags

    @Option(
        name: .long,
        help: """
            With --format csv, the table to print: timeline (a row per tensor and step: step, tensor, layer, norm, \
            gradient_norm, update_ratio, zero_fraction, non_finite; the default), findings (kind, severity, tensor, \
            layer, first_step, last_step, message) or loss (step, loss, lr).
            """)
    var csvTable: CSVTable?

    func validate() throws {
        try validateCSVTable(csvTable, format: analysis.format, allowed: [.timeline, .findings, .loss], command: "scan")
    }

    func run() throws {
        let report = scanRun(path, reading: reading, diagnosis: analysis.diagnosis, isolation: isolation)
        let renderer = analysis.renderer(csvTable: csvTable)
        if let json = renderer as? JSONRenderer {
            try json.write(report) { writeStandardOutput($0) }
        } else {
            emit(try renderer.render(report))
        }
        throw ExitCode(analysis.exitCode(report.allFindings))
    }
}
