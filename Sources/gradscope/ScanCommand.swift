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

            With --shard I/N (0 ≤ I < N), scans part I of N of the run's saves and writes a summary file (--summary, \
            default RUN-NAME.shard-I-of-N.gssum in the current directory) instead of a report; `gradscope merge` \
            and `gradscope report` read the summaries of all N parts and give what a scan of the whole run gives. \
            --summary alone writes the whole run's summary (one shard of one).

            Measured saves are kept in a cache (--cache, --no-cache): a re-scan reads only new or changed files.

            Exit codes: 0 nothing at or above --fail-on; 1 findings at or above it; 2 no checkpoint could be read or a usage error.
            """
    )

    @Argument(help: "A run directory, a multi-step file, or one checkpoint.")
    var path: String

    @OptionGroup var reading: ReadingOptions
    @OptionGroup var analysis: AnalysisOptions
    @OptionGroup var isolation: IsolationFlags
    @OptionGroup var caching: CacheFlags

    @Option(name: .long, help: ArgumentHelp("Scan part I of N of the run's saves (0 ≤ I < N) into a summary file.", valueName: "I/N"))
    var shard: String?

    @Option(
        name: .long,
        help: ArgumentHelp(
            "Write the scan's summary file here instead of a report (with --shard: default RUN-NAME.shard-I-of-N.gssum, never inside the run).",
            valueName: "file"))
    var summary: String?

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
        if let shard, ShardSpec(parsing: shard) == nil {
            throw ValidationError("--shard \(shard): expected I/N with 0 ≤ I < N, e.g. --shard 0/4")
        }
        if let summary, summary.isEmpty { throw ValidationError("--summary: give a file name") }
    }

    func run() throws {
        if shard != nil || summary != nil {
            try writeSummary()
            return
        }
        let report = scanRun(path, reading: reading, diagnosis: analysis.diagnosis, isolation: isolation, cache: caching.summaryCache)
        try printReport(report, analysis: analysis, csvTable: csvTable)
    }

    /// `--shard` / `--summary`: the shard's summary file, written atomically; a line on stderr says what it holds.
    func writeSummary() throws {
        let spec = shard.flatMap(ShardSpec.init(parsing:)) ?? ShardSpec(index: 0, count: 1)
        let output: String
        if let summary {
            output = summary
        } else {
            let absolute = path.hasPrefix("/") ? path : FileManager.default.currentDirectoryPath + "/" + path
            let name = (((absolute as NSString).standardizingPath as NSString).lastPathComponent as NSString).deletingPathExtension
            output = "\(name.isEmpty ? "run" : name).shard-\(spec.index)-of-\(spec.count)\(ScanSummaryFile.suffix)"
        }
        let progress = Progress(enabled: !analysis.quiet)
        let cache = caching.summaryCache
        let result: (measured: Int, skipped: Int)
        do {
            try refuseSummaryTarget(output, explicit: summary != nil)
            var measure = MeasureOptions()
            measure.deadActivationFraction = try analysis.thresholds().deadActivationFraction
            result = try ScanEngine.scanShard(
                path, shard: spec, output: output, isolation: isolation.noIsolation ? nil : isolation.options, load: reading.loadOptions,
                measure: measure, cache: cache,
                loadProgress: { done, total, bytes, totalBytes in progress.update("reading", done, total, bytes, totalBytes) },
                measureProgress: { done, total in progress.update("measuring", done, total, nil, nil) })
        } catch {
            progress.finish()
            exitWithInputError(error)
        }
        progress.finish()
        guard !analysis.quiet else { return }
        if let note = cache?.note { FileHandle.standardError.write(Data("gradscope: \(note)\n".utf8)) }
        let size = Double(FileIdentity.of(output).0) / 1024
        FileHandle.standardError.write(
            Data(
                "gradscope: wrote \(output) (shard \(spec), \(result.measured) save(s) measured, \(result.skipped) skipped, \(String(format: "%.0f", size)) KiB)\n"
                    .utf8))
    }

    /// A summary is written only where it may be: never over the run or a file that is not a
    /// summary, and never inside the run's directory under a name it was not given.
    func refuseSummaryTarget(_ output: String, explicit: Bool) throws {
        let target = URL(fileURLWithPath: output).standardizedFileURL.resolvingSymlinksInPath()
        let input = URL(fileURLWithPath: path).standardizedFileURL.resolvingSymlinksInPath()
        if target.path == input.path { throw CheckpointError(file: output, reason: "refusing to overwrite the input with the summary") }
        if FileManager.default.fileExists(atPath: target.path), !ScanSummaryFile.isSummary(target.path) {
            throw CheckpointError(file: output, reason: "refusing to overwrite a file that is not a gradscope scan summary")
        }
        let directory = target.deletingLastPathComponent().path
        if !explicit && (directory == input.path || directory.hasPrefix(input.path + "/")) {
            throw CheckpointError(
                file: output, reason: "the summary would be written inside the run's directory: give --summary a path (or run from another directory)"
            )
        }
    }
}
