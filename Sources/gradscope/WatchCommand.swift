import ArgumentParser
import Dispatch
import Foundation
import GradScope
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

struct WatchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "watch",
        abstract: "Follow a run while it trains: each new finding, once, as it appears.",
        discussion: """
            Looks at RUN every --interval seconds. When a new save is complete, scans the run again as `gradscope scan` \
            does and prints each finding not printed before, one line each: its first step, severity, kind, tensor and \
            message. A finding whose numbers change or whose first step moves as the run grows is not printed again; \
            one that becomes more severe is.

            A file still being written waits for a later look, and is neither an error nor listed as skipped: one \
            that changed since the last look or less than 2 s ago, an HDF5 file its writer has not closed (a write \
            lock on it, or its superblock), or one that cannot be read yet while it changed less than 10 s ago. \
            Hidden and temporary names (.x.tmp, x.part) are saves in progress; the rename that ends them is seen.

            Runs until Ctrl-C or SIGTERM (then prints one line of summary and exits 0), or until a finding at or above \
            --fail-on (exits 1: a training script or a scheduler can stop a doomed run). --once looks once and exits.

            Exit codes: 0 stopped, or --once without findings at or above --fail-on; 1 a finding at or above --fail-on; \
            2 a usage error.
            """
    )

    @Argument(help: "A run directory being written (or one file).")
    var path: String

    @Option(name: .long, help: "Seconds between looks at the run.")
    var interval: Double = 10

    @Option(name: .long, help: "Exit with code 1 at the first finding at or above this severity: info, warning or error (default: never).")
    var failOn: Severity?

    @Flag(name: .long, help: "Look once, print the findings, and exit.")
    var once = false

    @Option(
        name: .long, help: "Show only tensors whose name matches this regular expression, and the findings about them (the whole run is diagnosed).")
    var select: String?

    @Option(name: .long, help: "A JSON file of threshold overrides, e.g. {\"collapse_factor\": 100}.")
    var config: String?

    @Option(name: .long, parsing: .singleValue, help: "Override one threshold: --threshold collapse_factor=100 (repeatable).")
    var threshold: [String] = []

    @Flag(name: [.short, .long], help: "Only the findings, skipped files and the last line: no status lines on stderr.")
    var quiet = false

    @OptionGroup var reading: ReadingOptions
    @OptionGroup var isolation: IsolationFlags
    @OptionGroup var caching: CacheFlags

    func validate() throws {
        guard interval > 0, interval.isFinite else { throw ValidationError("--interval must be a positive number of seconds") }
        try diagnosis.validate()
    }

    /// The diagnosis options scan takes, from watch's own (whose --fail-on has no default).
    var diagnosis: DiagnosisOptions {
        var options = DiagnosisOptions()
        options.select = select
        options.failOn = failOn ?? .error
        options.config = config
        options.threshold = threshold
        options.quiet = true
        return options
    }

    func run() throws {
        let thresholds: Thresholds
        do { thresholds = try diagnosis.thresholds() } catch { exitWithInputError(error) }
        let stop = StopRequest()
        let sources = stop.install()
        defer { withExtendedLifetime(sources) {} }

        var session = WatchSession(path: path, failOn: failOn, quiet: quiet)
        session.start(interval: interval)
        let watcher = RunWatcher(path: path)
        defer { watcher.removeLinks() }
        // Each look scans the run again: the cache makes that read only the saves new since the last.
        let cache = caching.summaryCache
        var reached = false
        while !stop.requested {
            let now = Date().timeIntervalSince1970
            let look = watcher.look(now: now)
            session.note(look)
            if look.changed {
                let report: ScanReport?
                do {
                    let target = try watcher.scanPath(for: look)
                    report = try Analysis.scan(
                        target, isolation: isolation.noIsolation ? nil : isolation.options, load: reading.loadOptions,
                        thresholds: thresholds, select: diagnosis.selection, cache: cache
                    ).0
                } catch {
                    session.status("cannot scan yet: \(Failures.describe(error)); trying again")
                    report = nil
                }
                // A scan ended by Ctrl-C (its readers were stopped with it) says nothing.
                if stop.requested { break }
                if let report {
                    let skipped = watcher.scanned(look, skipped: report.skipped, now: Date().timeIntervalSince1970)
                    reached = session.show(report, skipped: skipped)
                    if reached { break }
                }
            }
            if once { break }
            // Something pending is looked at again soon: it may be done in a moment.
            stop.wait(seconds: look.pending.isEmpty ? interval : min(interval, RunWatcher.settle))
        }
        session.finish(signal: stop.signal, reached: reached)
        throw ExitCode(reached ? 1 : 0)
    }
}

/// What watch has printed so far, and how it prints: findings and skipped files on stdout, once;
/// status (what is pending, each scan) on stderr unless quiet.
struct WatchSession {
    let path: String
    let failOn: Severity?
    let quiet: Bool
    private var tracker = FindingTracker()
    private var skippedShown = Set<String>()
    private var pendingShown: [String: String] = [:]
    private var scans = 0
    private var lastStep: Int?
    private var saves = 0
    private var pendingNow: [String] = []
    private let started = Date()

    init(path: String, failOn: Severity?, quiet: Bool) {
        self.path = path
        self.failOn = failOn
        self.quiet = quiet
    }

    func start(interval: Double) {
        let every = interval == interval.rounded() ? "\(Int(interval)) s" : "\(interval) s"
        let until = failOn.map { "until a finding at \($0.rawValue) or above, or Ctrl-C" } ?? "until Ctrl-C"
        emit("watching \(terminalSafe(path)) every \(every), \(until)\n")
    }

    func status(_ line: String) {
        guard !quiet else { return }
        FileHandle.standardError.write(Data("gradscope watch: \(line)\n".utf8))
    }

    /// Says once which entries wait, and why.
    mutating func note(_ look: RunWatcher.Look) {
        if !look.exists, pendingShown["\u{0}missing"] == nil {
            status("\(path) does not exist yet; waiting for it")
            pendingShown["\u{0}missing"] = ""
        }
        var still: [String: String] = [:]
        for item in look.pending {
            if pendingShown[item.name] != item.reason { status("waiting for \(terminalSafe(item.name)): \(terminalSafe(item.reason))") }
            still[item.name] = item.reason
        }
        if look.exists { pendingShown = still }
        pendingNow = look.pending.map(\.name)
    }

    /// Prints what is new in `report`; returns whether a finding reached --fail-on.
    mutating func show(_ report: ScanReport, skipped: [SkippedItem]) -> Bool {
        scans += 1
        saves = report.steps.count
        lastStep = report.steps.last
        for item in skipped {
            let key = item.item + "\u{1F}" + item.reason
            guard skippedShown.insert(key).inserted else { continue }
            emit("skipped \(terminalSafe(item.item)): \(terminalSafe(item.reason))\n")
        }
        var reached = false
        for (finding, escalated) in tracker.take(report.allFindings) {
            emit(Self.line(finding.terminalSafe, escalated: escalated) + "\n")
            if let failOn, finding.severity >= failOn { reached = true }
        }
        let range = report.steps.isEmpty ? "no saved step yet" : "steps \(report.steps.first ?? 0)..\(report.steps.last ?? 0)"
        status("scanned \(report.steps.count) save(s), \(range)\(pendingNow.isEmpty ? "" : "; \(pendingNow.count) still being written")")
        return reached
    }

    /// One finding as one line: `step 250 error nan-inf net.4.weight: message`.
    static func line(_ finding: Finding, escalated: Bool) -> String {
        let step = finding.firstStep.map { "step \($0)" } ?? "no step"
        let severity = escalated ? "now \(finding.severity.rawValue)" : finding.severity.rawValue
        let subject = finding.tensor ?? finding.layer
        let message = finding.message.replacingOccurrences(of: "\n", with: " ")
        return "\(step) \(severity) \(finding.kind.rawValue)\(subject.map { " \($0)" } ?? ""): \(message)"
    }

    /// The last line: why watch ends, and what it saw.
    func finish(signal: Int32?, reached: Bool) {
        let seconds = Int(Date().timeIntervalSince(started).rounded())
        var counts: [String] = []
        for severity in Severity.allCases.reversed() {
            let n = tracker.count(at: severity)
            if n > 0 { counts.append("\(n) \(severity.rawValue)\(n == 1 ? "" : "s")") }
        }
        let found = tracker.count == 0 ? "no finding" : "\(tracker.count) finding\(tracker.count == 1 ? "" : "s") (\(counts.joined(separator: ", ")))"
        let seen = saves == 0 ? "no save read" : "\(saves) save\(saves == 1 ? "" : "s") up to step \(lastStep ?? 0)"
        let waiting = pendingNow.isEmpty ? "" : "; \(pendingNow.count) file\(pendingNow.count == 1 ? "" : "s") still being written"
        let why: String
        if reached, let failOn {
            why = "stopped at a finding at \(failOn.rawValue) or above (--fail-on \(failOn.rawValue))"
        } else if let signal {
            why = "stopped by \(signal == SIGINT ? "Ctrl-C" : "SIGTERM")"
        } else {
            why = "looked once"
        }
        emit("\(why) after \(seconds) s: \(scans) scan\(scans == 1 ? "" : "s"), \(seen), \(found)\(waiting)\n")
    }
}

/// SIGINT and SIGTERM as a request to stop at the next safe point (never in the middle of a line
/// or of a scan), delivered through Dispatch signal sources.
final class StopRequest: Sendable {
    private let state = Mutex<Int32?>(nil)
    private let wake = DispatchSemaphore(value: 0)

    var requested: Bool { state.withLock { $0 != nil } }
    var signal: Int32? { state.withLock { $0 } }

    /// Replaces the default action of SIGINT and SIGTERM (ending the process at once) with a request.
    func install() -> [any DispatchSourceSignal] {
        [SIGINT, SIGTERM].map { number in
            Glibc.signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
            source.setEventHandler { [self] in
                state.withLock { if $0 == nil { $0 = number } }
                wake.signal()
            }
            source.resume()
            return source
        }
    }

    /// Sleeps `seconds`, or less when a stop is requested.
    func wait(seconds: Double) {
        if requested { return }
        _ = wake.wait(timeout: .now() + seconds)
    }
}
