import ArgumentParser
import Foundation
import GradScope

struct MergeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "merge",
        abstract: "The scan of a whole run from the summary files of its shards.",
        discussion: """
            Reads the summary files `gradscope scan RUN --shard I/N --summary OUT` wrote, one per shard (all N of \
            them, in any order), and prints what `gradscope scan RUN` prints for the whole run: the same findings \
            at the same steps, the same numbers (docs/STATISTICS.md, "Shards and merging"). Missing or repeated \
            shards, shards of different runs or options, and files that are not summaries, are cut or corrupt, or \
            of another summary format version are refused with one line naming the file.

            Exit codes: 0 nothing at or above --fail-on; 1 findings at or above it; 2 the summaries cannot be merged, \
            no checkpoint could be read, or a usage error.
            """
    )

    @Argument(help: "The summary files of every shard of one scan.")
    var summaries: [String]

    @OptionGroup var analysis: AnalysisOptions

    @Option(
        name: .long,
        help: "With --format csv, the table to print: timeline (the default), findings or loss (as scan prints them).")
    var csvTable: CSVTable?

    func validate() throws {
        if summaries.isEmpty { throw ValidationError("give the summary files of every shard") }
        try validateCSVTable(csvTable, format: analysis.format, allowed: [.timeline, .findings, .loss], command: "merge")
    }

    func run() throws {
        let report = mergeSummaries(summaries, diagnosis: analysis.diagnosis)
        try printReport(report, analysis: analysis, csvTable: csvTable)
    }
}
