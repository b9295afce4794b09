import ArgumentParser
import Foundation
import GradScope
import HDF5

struct ReportCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "report",
        abstract: "The scan of a run as one HTML page of charts: open it in any browser.",
        discussion: """
            Reads the run as `gradscope scan` does and writes a single self-contained HTML file (inline SVG and CSS, \
            no script, nothing fetched from the network): the verdict and the findings, each linked to the chart \
            that shows its evidence; the loss with ln K and any plateau marked; gradient norms across depth; every \
            tensor's weight norm, gradient norm and update ratio over steps; histogram evolution of weights and \
            gradients; dead units per layer; the spread of saved activations. Large runs are sampled to at most \
            60 steps per chart and the tensors named in findings come first.

            Given the summary files of a sharded scan (`gradscope scan RUN --shard I/N --summary OUT`) instead of a \
            run, merges them first, as `gradscope merge` does.

            Exit codes: 0 nothing at or above --fail-on; 1 findings at or above it; 2 no checkpoint could be read, \
            the report could not be written, or a usage error.
            """
    )

    @Argument(help: "A run directory, a multi-step file, or one checkpoint; or the summary files of every shard of a scan.")
    var paths: [String]

    /// The run (or the first summary).
    var path: String { paths.first ?? "" }

    @Option(name: [.short, .long], help: "Where to write the HTML report ('-' for standard output).")
    var output = "gradscope-report.html"

    @OptionGroup var reading: ReadingOptions
    @OptionGroup var isolation: IsolationFlags
    @OptionGroup var caching: CacheFlags

    @OptionGroup var diagnosis: DiagnosisOptions

    func validate() throws {
        if output.isEmpty { throw ValidationError("--output: give a file name, or '-' for standard output") }
        if paths.isEmpty { throw ValidationError("give a run, or the summary files of a sharded scan") }
    }

    func run() throws {
        let summaries = paths.count > 1 || ScanSummaryFile.isSummary(path)
        let report =
            summaries
            ? mergeSummaries(paths, diagnosis: diagnosis, before: refuseToOverwriteInput)
            : scanRun(path, reading: reading, diagnosis: diagnosis, isolation: isolation, cache: caching.summaryCache, before: refuseToOverwriteInput)
        let html = HTMLReportRenderer().render(report)
        if output == "-" {
            emit(html)
        } else {
            do {
                try Data(html.utf8).write(to: URL(fileURLWithPath: output), options: .atomic)
            } catch {
                exitWithInputError(CheckpointError(file: output, reason: "cannot write the report: \(writeFailure(error))"))
            }
            if !diagnosis.quiet {
                let size = Double(html.utf8.count) / 1024
                FileHandle.standardError.write(Data("gradscope: wrote \(output) (\(String(format: "%.0f", size)) KiB): \(report.verdict)\n".utf8))
            }
        }
        throw ExitCode(diagnosis.exitCode(report.findings))
    }

    /// Why the report could not be written to `output`, in plain words: a directory, a
    /// directory that does not exist, or the system's reason.
    func writeFailure(_ error: Error) -> String {
        var isDirectory: ObjCBool = false
        if FileManager.default.fileExists(atPath: output, isDirectory: &isDirectory), isDirectory.boolValue {
            return "it is a directory: give the report a file name, e.g. \((output as NSString).appendingPathComponent("report.html"))"
        }
        let parent = (output as NSString).deletingLastPathComponent
        if !parent.isEmpty && !FileManager.default.fileExists(atPath: parent, isDirectory: &isDirectory) {
            return "the directory \(parent) does not exist"
        }
        if !parent.isEmpty && !isDirectory.boolValue { return "\(parent) is not a directory" }
        return Failures.plain(error)
    }

    /// Input files are never written: refuse an output path that is the input itself or any existing HDF5 file.
    func refuseToOverwriteInput() throws {
        guard output != "-" else { return }
        let target = URL(fileURLWithPath: output).standardizedFileURL.resolvingSymlinksInPath()
        for path in paths where target.path == URL(fileURLWithPath: path).standardizedFileURL.resolvingSymlinksInPath().path {
            throw CheckpointError(file: output, reason: "refusing to overwrite the input with the report")
        }
        if ScanSummaryFile.isSummary(target.path) {
            throw CheckpointError(file: output, reason: "refusing to overwrite a scan summary with the report")
        }
        if let kind = FileProbe.irregularKind(target.path) {
            throw CheckpointError(file: output, reason: "cannot write the report there: \(kind), not a regular file")
        }
        let signature: [UInt8] = [0x89, 0x48, 0x44, 0x46, 0x0D, 0x0A, 0x1A, 0x0A]
        if FileIdentity.head(target.path) == signature {
            throw CheckpointError(file: output, reason: "refusing to overwrite an HDF5 file with the report")
        }
    }

}
