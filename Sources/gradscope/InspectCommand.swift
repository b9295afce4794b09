import ArgumentParser
import Foundation
import GradScope

struct InspectCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "inspect",
        abstract: "Every tensor of one checkpoint: role, shape, statistics, a log-magnitude histogram, and what looks wrong.",
        discussion: """
            Shows each tensor's layer and role (weight, gradient, optimizer slot, activation), mean, std, min, max, \
            fraction of exact zeros, and the spread of its magnitudes in powers of two, and reports what one file \
            can show: NaN/Inf, poor initialisation, all-zero gradients, dead units. Findings that need several steps \
            (frozen, collapsing, loss at ln 2) come from `gradscope scan`.
            """
    )

    @Argument(help: "A checkpoint file (.h5, .weights.h5, .keras, native or hand-written).")
    var file: String

    @OptionGroup var reading: ReadingOptions
    @OptionGroup var analysis: AnalysisOptions

    @Option(
        name: .long,
        help: """
            With --format csv, the table to print: tensors (a row per tensor with its statistics; the default), \
            findings (kind, severity, tensor, layer, first_step, last_step, message) or loss (step, loss, lr of the \
            file's save; no row without a step).
            """)
    var csvTable: CSVTable?

    func validate() throws {
        try validateCSVTable(csvTable, format: analysis.format, allowed: [.tensors, .findings, .loss], command: "inspect")
    }

    func run() throws {
        let report: InspectReport
        do {
            report = try Analysis.inspect(file, load: reading.loadOptions, thresholds: try analysis.thresholds(), select: analysis.selection)
        } catch {
            exitWithInputError(error)
        }
        emit(try analysis.renderer(csvTable: csvTable).render(report))
        throw ExitCode(analysis.exitCode(report.findings))
    }
}
