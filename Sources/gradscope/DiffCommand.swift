import ArgumentParser
import Foundation
import GradScope

struct DiffCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "diff",
        abstract: "What changed between two checkpoints, tensor by tensor, largest relative change first.",
        discussion: """
            For each tensor in both files: ‖ΔW‖/‖W‖, the same per step of training between the two saves, max |ΔW|, \
            cosine similarity, the fraction of elements that changed at all, sign flips, and the norms. Frozen tensors \
            (nothing changed) and collapsing ones (norm fell 10x or more) are called out; tensors added, removed or \
            reshaped are listed.
            """
    )

    @Argument(help: "The earlier checkpoint.")
    var a: String
    @Argument(help: "The later checkpoint.")
    var b: String

    @OptionGroup var reading: ReadingOptions
    @OptionGroup var analysis: AnalysisOptions

    @Option(
        name: .long,
        help: """
            With --format csv, the table to print: tensors (a row per tensor in both files with its drift; the \
            default) or findings (kind, severity, tensor, layer, first_step, last_step, message).
            """)
    var csvTable: CSVTable?

    func validate() throws {
        try validateCSVTable(csvTable, format: analysis.format, allowed: [.tensors, .findings], command: "diff")
    }

    func run() throws {
        let report: DiffReport
        do {
            report = try Analysis.diff(a, b, load: reading.loadOptions, thresholds: try analysis.thresholds(), select: analysis.selection)
        } catch {
            exitWithInputError(error)
        }
        emit(try analysis.renderer(csvTable: csvTable).render(report))
        throw ExitCode(analysis.exitCode(report.findings))
    }
}
