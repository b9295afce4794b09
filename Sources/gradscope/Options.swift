import ArgumentParser
import Foundation
import GradScope
import HDF5

/// `--layout` forces one of the HDF5 layouts; safetensors files are recognised by their header, never forced.
extension LayoutKind: ExpressibleByArgument {
    public init?(argument: String) {
        guard let kind = LayoutKind(rawValue: argument), kind != .safetensors, kind != .torch else { return nil }
        self = kind
    }

    public static var allValueStrings: [String] { allCases.filter { $0 != .safetensors && $0 != .torch }.map(\.rawValue) }
}
extension Severity: ExpressibleByArgument {}

extension OutputFormat: ExpressibleByArgument {}

/// Options every reading command shares.
struct ReadingOptions: ParsableArguments {
    @Option(name: .long, help: "Read files as this layout instead of detecting it: native, keras3, keras-legacy or generic.")
    var layout: LayoutKind?

    @Flag(name: .long, help: "Follow soft and external links and read external-storage and virtual datasets (only for files you trust).")
    var followLinks = false

    @Flag(name: .long, help: "Load HDF5 filter plugins from HDF5_PLUGIN_PATH (only for files you trust).")
    var allowPlugins = false

    var loadOptions: LoadOptions {
        LoadOptions(layout: layout, open: OpenOptions(followLinks: followLinks, allowPlugins: allowPlugins))
    }
}

/// Options of every analysing command: selection, thresholds, exit codes.
struct DiagnosisOptions: ParsableArguments {
    @Option(
        name: .long, help: "Show only tensors whose name matches this regular expression, and the findings about them (the whole run is diagnosed).")
    var select: String?

    @Option(name: .long, help: "Exit with code 1 when a finding is at or above this severity: info, warning or error.")
    var failOn: Severity = .error

    @Option(name: .long, help: "A JSON file of threshold overrides, e.g. {\"collapse_factor\": 100}.")
    var config: String?

    @Option(name: .long, parsing: .singleValue, help: "Override one threshold: --threshold collapse_factor=100 (repeatable).")
    var threshold: [String] = []

    @Flag(name: [.short, .long], help: "No progress on stderr.")
    var quiet = false

    func validate() throws {
        if let select {
            do { _ = try NSRegularExpression(pattern: select) } catch {
                throw ValidationError("--select: not a valid regular expression: \(select)")
            }
        }
        for item in threshold {
            let parts = item.split(separator: "=", maxSplits: 1).map(String.init)
            guard parts.count == 2, let value = Double(parts[1].trimmingCharacters(in: .whitespaces)) else {
                throw ValidationError("--threshold \(item): expected name=number, e.g. --threshold collapse_factor=100")
            }
            var probe = Thresholds()
            do { try probe.set(parts[0], value) } catch ThresholdError.invalid(let why) {
                // The item shows the name and the value already: keep the rule.
                var rule = Substring(why)
                if rule.hasPrefix(parts[0] + ": ") { rule = rule.dropFirst(parts[0].count + 2) }
                if let value = rule.range(of: ", not ") { rule = rule[..<value.lowerBound] }
                throw ValidationError("--threshold \(item): \(rule)")
            }
        }
    }

    func thresholds() throws -> Thresholds {
        var thresholds = Thresholds()
        if let config {
            if let why = Failures.unreadablePath(config) {
                throw CheckpointError(file: config, reason: "cannot read the config file: \(why)")
            }
            let data: Data
            do { data = try Data(contentsOf: URL(fileURLWithPath: config)) } catch {
                throw CheckpointError(file: config, reason: "cannot read the config file: \(Failures.plain(error))")
            }
            do { thresholds = try Thresholds.load(json: data) } catch let error as ThresholdError {
                throw CheckpointError(file: config, reason: "\(error)")
            } catch {
                throw CheckpointError(file: config, reason: "the config file is \(Failures.plain(error))")
            }
        }
        for item in threshold {
            let parts = item.split(separator: "=", maxSplits: 1).map(String.init)
            if parts.count == 2, let value = Double(parts[1].trimmingCharacters(in: .whitespaces)) { try thresholds.set(parts[0], value) }
        }
        return thresholds
    }

    var selection: NSRegularExpression? { select.flatMap { try? NSRegularExpression(pattern: $0) } }

    /// Exit code for findings: 1 when any is at or above --fail-on.
    func exitCode(_ findings: [Finding]) -> Int32 {
        findings.contains { $0.severity >= failOn } ? 1 : 0
    }
}

/// Options of the commands that print a report: format and explanations, plus the diagnosis options.
struct AnalysisOptions: ParsableArguments {
    @Option(name: .long, help: "Output format: table (for people), json (the contract in docs/JSON.md) or csv.")
    var format: OutputFormat = .table

    @Flag(name: .long, help: "Explain each finding: what the numbers mean, likely causes, what to try.")
    var explain = false

    @OptionGroup var diagnosis: DiagnosisOptions

    var quiet: Bool { diagnosis.quiet }
    var selection: NSRegularExpression? { diagnosis.selection }
    func thresholds() throws -> Thresholds { try diagnosis.thresholds() }
    func exitCode(_ findings: [Finding]) -> Int32 { diagnosis.exitCode(findings) }

    /// The renderer of --format: a table coloured when stdout is a terminal (and NO_COLOR unset), with --explain.
    var renderer: any ReportRenderer { renderer(csvTable: nil) }

    /// The renderer of --format, the table fitting the terminal's width (see `standardOutputWidth`),
    /// the CSV holding `csvTable` (nil: the command's own rows).
    func renderer(csvTable: CSVTable?) -> any ReportRenderer {
        GradScopeRendering.renderer(
            for: format, style: .forStandardOutput(), explain: explain, width: standardOutputWidth(), csvTable: csvTable)
    }
}

/// Writes to stdout, flushed.
func emit(_ text: String) {
    var text = text
    text.withUTF8 { writeStandardOutput(UnsafeRawBufferPointer($0)) }
}

/// Writes `bytes` to stdout whole (a short write is continued; a closed pipe ends the program
/// as it does any command-line tool).
func writeStandardOutput(_ bytes: UnsafeRawBufferPointer) {
    var done = 0
    while done < bytes.count {
        let n = write(STDOUT_FILENO, bytes.baseAddress! + done, bytes.count - done)
        if n < 0 {
            if errno == EINTR { continue }
            return
        }
        done += n
    }
}

/// How scan isolates files.
struct IsolationFlags: ParsableArguments {
    @Option(name: .long, help: "Seconds one file may take before it is given up as hanging.")
    var timeout: Double = 120

    @Option(name: .long, help: "Files read at once, each in its own worker process (default: the number of cores).")
    var jobs: Int?

    @Flag(
        name: .long,
        help:
            "Read every file in this process instead of isolated worker processes (faster to start; a file that crashes the HDF5 library then ends the scan)."
    )
    var noIsolation = false

    func validate() throws {
        guard timeout > 0 else { throw ValidationError("--timeout must be positive") }
        if let jobs, jobs < 1 { throw ValidationError("--jobs must be at least 1") }
    }

    var options: IsolationOptions { IsolationOptions(executable: currentExecutable(), timeout: timeout, jobs: jobs) }
}

/// The cache of measured saves (``SummaryCache``): on by default.
struct CacheFlags: ParsableArguments {
    @Option(
        name: .long,
        help: ArgumentHelp(
            "Keep measured saves in this directory, so a re-scan reads only new or changed files (default: $XDG_CACHE_HOME/gradscope, else ~/.cache/gradscope).",
            valueName: "dir"))
    var cache: String?

    @Flag(name: .long, help: "Neither read nor write the cache of measured saves.")
    var noCache = false

    @Option(name: .long, help: ArgumentHelp("The cache's size cap in MiB; the entries used longest ago go first.", valueName: "mib"))
    var cacheLimit: Int = SummaryCache.defaultLimit >> 20

    func validate() throws {
        guard cacheLimit >= 1 else { throw ValidationError("--cache-limit must be at least 1 (MiB)") }
        if noCache && cache != nil { throw ValidationError("--cache and --no-cache: give one of them") }
        if let cache, cache.isEmpty { throw ValidationError("--cache: give a directory") }
    }

    /// The cache the flags ask for: nil with --no-cache.
    var summaryCache: SummaryCache? {
        if noCache { return nil }
        return SummaryCache.at(cache, limit: cacheLimit << 20)
    }
}

extension SummaryCache {
    /// The cache in `directory`, else in the default one (``defaultDirectory(environment:)``); nil
    /// when no directory can be told.
    static func at(_ directory: String? = nil, limit: Int = SummaryCache.defaultLimit) -> SummaryCache? {
        guard let directory = directory ?? SummaryCache.defaultDirectory() else { return nil }
        return SummaryCache(directory: directory, limit: limit)
    }
}

/// Scans a run as the flags ask (isolated workers unless --no-isolation), with a
/// progress line on stderr; an unreadable run ends the program with code 2. Measured saves are
/// kept in and taken from `cache` (the default cache unless told otherwise); a cache that cannot
/// be used is said in one line on stderr, and the scan goes on without it.
func scanRun(
    _ path: String, reading: ReadingOptions, diagnosis: DiagnosisOptions, isolation: IsolationFlags,
    cache: SummaryCache? = SummaryCache.at(), before: () throws -> Void = {}
) -> ScanReport {
    let progress = Progress(enabled: !diagnosis.quiet)
    defer { progress.finish() }
    let report: ScanReport
    do {
        try before()
        let thresholds = try diagnosis.thresholds()
        report = try Analysis.scan(
            path, isolation: isolation.noIsolation ? nil : isolation.options, load: reading.loadOptions,
            thresholds: thresholds, select: diagnosis.selection,
            loadProgress: { done, total, bytes, totalBytes in progress.update("reading", done, total, bytes, totalBytes) },
            measureProgress: { done, total in progress.update("measuring", done, total, nil, nil) }, cache: cache
        ).0
    } catch {
        progress.finish()
        exitWithInputError(error)
    }
    if let note = cache?.note, !diagnosis.quiet {
        progress.finish()
        FileHandle.standardError.write(Data("gradscope: \(note)\n".utf8))
    }
    return checkedReport(report, path: path, progress: progress)
}

/// The report of summary files merged (``Analysis/merge(_:thresholds:select:)``); files that
/// cannot be merged end the program with code 2, naming the file.
func mergeSummaries(_ paths: [String], diagnosis: DiagnosisOptions, before: () throws -> Void = {}) -> ScanReport {
    let progress = Progress(enabled: false)
    let report: ScanReport
    do {
        try before()
        report = try Analysis.merge(paths, thresholds: try diagnosis.thresholds(), select: diagnosis.selection).0
    } catch {
        exitWithInputError(error)
    }
    return checkedReport(report, path: report.source, progress: progress)
}

/// `report`, unless it holds no step: then one line, and nothing written (no page of "No findings").
func checkedReport(_ report: ScanReport, path: String, progress: Progress) -> ScanReport {
    if report.steps.isEmpty {
        progress.finish()
        exitWithInputError(CheckpointError(file: path, reason: nothingReadable(path, skipped: report.skipped)))
    }
    return report
}

/// Prints a scan's report in the format `analysis` asks for (JSON streamed as it is encoded), then
/// ends the process with the exit code `--fail-on` gives its findings. The process ends here, the
/// report still held: taking apart a long run's report (hundreds of thousands of timeline points,
/// each list its own allocation) only to end the process after it took milliseconds of the scan's tail.
func printReport(_ report: ScanReport, analysis: AnalysisOptions, csvTable: CSVTable?) throws -> Never {
    let renderer = analysis.renderer(csvTable: csvTable)
    if let json = renderer as? JSONRenderer {
        try json.write(report) { writeStandardOutput($0) }
    } else {
        emit(try renderer.render(report))
    }
    let code = analysis.exitCode(report.allFindings)
    withExtendedLifetime(report) { Foundation.exit(code) }
}

/// Why a run gave no checkpoint, for the one line of an unusable run: an empty directory,
/// the one file skipped and why, or how many were skipped and the first reason.
func nothingReadable(_ path: String, skipped: [SkippedItem]) -> String {
    var isDirectory: ObjCBool = false
    let directory = FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) && isDirectory.boolValue
    guard let first = skipped.first else {
        return directory ? "no checkpoint could be read: the directory holds no files" : "no checkpoint could be read: it holds no saved step"
    }
    if skipped.count == 1 { return "no checkpoint could be read: \(first.item): \(first.reason)" }
    return "no checkpoint could be read: \(skipped.count) files skipped (\(first.item): \(first.reason); …)"
}
