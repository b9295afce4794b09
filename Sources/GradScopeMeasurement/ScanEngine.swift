import Dispatch
import ElementTypes
import Foundation
import GradScopeModel
import GradScopeSources
import GradScopeStatistics

/// Where a run's files are opened and read through their library: in this process
/// (``InProcessReader``) or in worker processes (``IsolatedReader``). The scan engine is
/// the same either way: a reader decides where files are opened, never what is computed.
/// Both answer the same requests with the same code (``Worker/handle(_:marker:)``).
package protocol FileReader: Sendable {
    /// Answers each request (describing a file, or measuring a step's tensors), calling
    /// `done` with a request's index as it finishes, on the calling thread.
    func run(_ requests: [WorkerRequest], done: (Int) -> Void) -> [WorkerPool.Outcome]
    /// Ends whatever the reader started (worker processes).
    func finish()
}

/// Reads files in this process (`--no-isolation`, `inspect` and `diff`, which a supervisor isolates as a whole).
package struct InProcessReader: FileReader {
    package init() {}

    package func run(_ requests: [WorkerRequest], done: (Int) -> Void) -> [WorkerPool.Outcome] {
        requests.enumerated().map { index, request in
            defer { done(index) }
            return .response(Worker.handle(request) { _ in })
        }
    }

    package func finish() {}
}

/// Reads files in worker processes, so that a file that crashes or hangs libhdf5 costs only that file.
package struct IsolatedReader: FileReader {
    let pool: WorkerPool

    package init(_ options: IsolationOptions) { pool = WorkerPool(options: options) }

    package func run(_ requests: [WorkerRequest], done: (Int) -> Void) -> [WorkerPool.Outcome] { pool.run(requests, done: done) }

    package func finish() { pool.shutdown() }
}

/// The one scan path: describes a run's files, then measures every tensor of every save.
/// Tensors stored contiguously are read here, directly, one tensor across all steps at a time
/// (``SeriesMeasurer``: no library call, so nothing to isolate); the rest step by step through
/// the reader. A step whose file could not be read again, or changed since it was described,
/// is left out of the run and listed as skipped with the reason.
public enum ScanEngine {
    /// Describes and measures the run at `path` (a directory, a multi-step file or one
    /// checkpoint), in worker processes when `isolation` is given, else in this process.
    public static func scan(
        _ path: String, isolation: IsolationOptions? = nil, load: LoadOptions = LoadOptions(),
        measure: MeasureOptions = MeasureOptions(), select: NSRegularExpression? = nil,
        loadProgress: (@Sendable (Int, Int, Int, Int) -> Void)? = nil,
        measureProgress: (@Sendable (Int, Int) -> Void)? = nil
    ) throws -> (Run, RunMeasurements) {
        let models = try scanModels(
            path, isolation: isolation, load: load, measure: measure, select: select, loadProgress: loadProgress,
            measureProgress: measureProgress, others: false)
        return models.runs[0]
    }

    /// The runs of a folder as ``scanModels`` found them.
    public struct Models: Sendable {
        /// The run of the newest files first, then the others, each measured on its own.
        public var runs: [(Run, RunMeasurements)]
        /// Why the folder was split, in words (nil for one run).
        public var reason: String?
        /// Whether the runs share one architecture (split by a jump of their weights, not their names).
        public var sameArchitecture = false
        /// Saves of one model where every matrix jumps to unrelated values, when they cannot be told
        /// apart into runs of two saves or more (several jumps, or a lone save): the steps where the
        /// jumps land.
        public var mixedAt: [Int] = []
    }

    /// The same, for a folder that holds several models (``Run/otherModels``): the run of the newest
    /// files first, then each other model measured as a run of its own (`others`: false measures the
    /// first only).
    public static func scanModels(
        _ path: String, isolation: IsolationOptions? = nil, load: LoadOptions = LoadOptions(),
        measure: MeasureOptions = MeasureOptions(), select: NSRegularExpression? = nil,
        loadProgress: (@Sendable (Int, Int, Int, Int) -> Void)? = nil,
        measureProgress: (@Sendable (Int, Int) -> Void)? = nil, others: Bool = true
    ) throws -> Models {
        let reader: any FileReader = isolation.map { IsolatedReader($0) } ?? InProcessReader()
        defer { reader.finish() }
        let describe: ([String], (Int, Int) -> Void) -> [Result<[Checkpoint], CheckpointError>] = { files, done in
            let counter = Counter()
            var interner = DescriptionInterner()
            var results: [Result<[Checkpoint], CheckpointError>] = []
            results.reserveCapacity(files.count)
            // In batches, so that what waits decoded for its batch to end is a batch's
            // descriptions, each shared with the equal ones before it, never the run's.
            for lower in stride(from: 0, to: files.count, by: describeBatch) {
                let batch = Array(files[lower..<min(files.count, lower + describeBatch)])
                let outcomes = reader.run(batch.map { request(.load, path: $0, load: load, measure: measure) }) { index in
                    done(lower + index, counter.increment())
                }
                for (file, outcome) in zip(batch, outcomes) {
                    switch outcome {
                    case .failed(let reason): results.append(.failure(CheckpointError(file: file, reason: reason)))
                    case .response(let response):
                        guard var checkpoints = response.checkpoints else {
                            results.append(.failure(CheckpointError(file: file, reason: response.error ?? "no result")))
                            continue
                        }
                        for index in checkpoints.indices { interner.intern(&checkpoints[index]) }
                        results.append(.success(checkpoints))
                    }
                }
            }
            return results
        }
        var loaded = selecting(try RunLoader.load(path, progress: loadProgress, loadFiles: describe), select)
        let otherModels = others ? loaded.otherModels.map { selecting($0, select) } : []
        loaded.otherModels = []
        // Handed on as a temporary, so that measuring owns the run and lets each save's storage go.
        let split = otherModels.isEmpty ? nil : "most tensor names or shapes differ"
        var results = [self.measure(taking(&loaded), load: load, options: measure, reader: reader, progress: measureProgress)]
        for model in otherModels {
            results.append(self.measure(model, load: load, options: measure, reader: reader, progress: nil))
        }
        guard others, results.count == 1 else { return Models(runs: results, reason: split) }
        // One architecture, two runs: every matrix jumps to unrelated values once (a restart from a
        // fresh initialisation, an older run's files beside a newer one's). Each part is measured anew.
        let jumps = RunJumps.unrelatedSaves(results[0].1)
        // Each part must be a run of at least two saves; a lone save unrelated to its neighbours is
        // reported as a mix, not made a run of its own.
        if jumps.count == 1, let at = jumps.first, at >= 2, results[0].1.records.count - at >= 2 {
            let (run, measurements) = results[0]
            let step = measurements.records[at].step, before = measurements.records[at - 1].step
            // Measuring let each save's direct storage go: these are read again through the reader.
            let checkpoints = run.checkpoints.map { checkpoint -> Checkpoint in
                var copy = checkpoint
                copy.storage = Array(repeating: nil, count: checkpoint.tensors.count)
                return copy
            }
            var first = run, second = run
            first.checkpoints = Array(checkpoints[..<at])
            second.checkpoints = Array(checkpoints[at...])
            first.skipped = []
            first.notes = []
            first.trainingLog = run.trainingLog?.filter { $0.step <= before }
            second.trainingLog = run.trainingLog?.filter { $0.step > before }
            let note =
                "every weight matrix jumps to unrelated values between step \(before) and step \(step) (cosine near 0 at a like norm): a new run of the same architecture begins there; each run is judged on its own"
            second.notes.insert(note, at: 0)
            first.notes.insert(note, at: 0)
            // The later run is the one shown (its files are the newer ones, or it came last).
            let later = self.measure(second, load: load, options: measure, reader: reader, progress: nil)
            let earlier = self.measure(first, load: load, options: measure, reader: reader, progress: nil)
            return Models(runs: [later, earlier], reason: "every weight matrix jumps to unrelated values at step \(step)", sameArchitecture: true)
        }
        var models = Models(runs: results, reason: nil)
        if !jumps.isEmpty { models.mixedAt = jumps.map { results[0].1.records[$0].step } }
        return models
    }

    /// Measures a described run with `reader`: the run as it was kept and its measurements.
    /// `perUnitEverywhere` keeps per-unit statistics for every tensor (inspect shows them);
    /// `full` keeps every save's full statistics (inspect and diff show them), where a scan keeps
    /// the compact numbers of every save and the log2 histograms of ``StepSampling``'s saves.
    public static func measure(
        _ run: Run, load: LoadOptions = LoadOptions(), options: MeasureOptions = MeasureOptions(),
        perUnitEverywhere: Bool = false, full: Bool = false, progress: ((Int, Int) -> Void)? = nil
    ) -> (Run, RunMeasurements) {
        measure(
            run, load: load, options: options, perUnitEverywhere: perUnitEverywhere, full: full, reader: InProcessReader(),
            progress: progress)
    }

    /// `run`, leaving its checkpoints behind it empty: the one returned is their only holder, so
    /// that measuring it can let each save's storage go as it is measured.
    package static func taking(_ run: inout Run) -> Run {
        let taken = run
        run.checkpoints = []
        return taken
    }

    static func selecting(_ run: consuming Run, _ select: NSRegularExpression?) -> Run {
        guard select != nil else { return run }
        run.checkpoints = run.checkpoints.map { $0.selecting(select) }
        return run
    }

    /// Files described together (their decoded descriptions wait for the batch to end).
    package static let describeBatch = 64

    /// Saves measured together: the direct reads of a range take every core, and what waits in
    /// memory for the range to finish is its outcomes, never the run's.
    package static let rangeLength = SeriesMeasurer.maxWindow

    package static func measure(
        _ run: consuming Run, load: LoadOptions, options: MeasureOptions, perUnitEverywhere: Bool = false, full: Bool = false,
        reader: any FileReader, progress: ((Int, Int) -> Void)?
    ) -> (Run, RunMeasurements) {
        // The run's checkpoints are taken, not copied: where each tensor lies in its file (a dozen
        // bytes per tensor per save) is let go once its save is measured, so a long run does not
        // hold every save's storage to the end.
        var checkpoints = run.checkpoints
        run.checkpoints = []
        // Per-unit liveness is kept from every save (one number per unit, whatever the saves): the
        // dead-unit window is judged over the later half (``RunMeasurer/windowStart(count:)``), and each
        // death is dated at the save after which its unit was never alive again, however early.
        let start = 0
        let gradientNames = Array(Set(checkpoints.flatMap { $0.tensors(.gradient).map(\.name) })).sorted()
        var steps = checkpoints.map(SeriesMeasurer.Step.init)
        let sampled = Set(StepSampling.indices(count: checkpoints.count))
        var records: [StepRecord] = []
        var kept: [Checkpoint] = []
        var skipped = run.skipped
        var windows = UnitWindowBuilder()
        var layout: TableLayout?
        for lower in stride(from: 0, to: checkpoints.count, by: rangeLength) {
            let range = lower..<min(checkpoints.count, lower + rangeLength)
            let direct = SeriesMeasurer.eligible(steps, in: range)
            let stepwise = range.filter { index in checkpoints[index].tensors.indices.contains { !direct[index].contains($0) } }
            let requests = stepwise.map { index -> WorkerRequest in
                var r = request(.measure, path: checkpoints[index].file, load: load, measure: options)
                r.current = checkpoints[index]
                r.previous = index > 0 ? checkpoints[index - 1] : nil
                r.index = index
                r.wantUnits = index >= start
                r.gradientNames = gradientNames
                r.only = checkpoints[index].tensors.indices.filter { !direct[index].contains($0) }.map { checkpoints[index].tensors[$0].key }
                r.perUnitEverywhere = perUnitEverywhere
                return r
            }
            var outcomes = reader.run(requests) { _ in }
            // A crash while reading the previous file as well: measure the step on its own.
            for index in outcomes.indices {
                if case .failed = outcomes[index], requests[index].previous != nil {
                    var alone = requests[index]
                    alone.previous = nil
                    if case .response(let response) = reader.run([alone], done: { _ in }).first, response.record != nil {
                        outcomes[index] = .response(response)
                    }
                }
            }
            var measured = SeriesMeasurer.measure(
                steps, range: range, selected: direct, options: options, gradientNames: Set(gradientNames),
                perUnitEverywhere: perUnitEverywhere, unitWindowStart: start)
            var stepwiseOutcome: [Int: WorkerPool.Outcome] = [:]
            for (position, index) in stepwise.enumerated() { stepwiseOutcome[index] = outcomes[position] }
            for index in range {
                let checkpoint = checkpoints[index]
                var rest: (StepRecord, [UnitSnapshot])?
                switch stepwiseOutcome[index] {
                case nil:
                    break
                case .failed(let reason)?:
                    skipped.append(SkippedItem(item: checkpoint.source, kind: .unreadable, reason: reason))
                    continue
                case .response(let response)?:
                    guard let record = response.record else {
                        skipped.append(SkippedItem(item: checkpoint.source, kind: .unreadable, reason: response.error ?? "no result"))
                        continue
                    }
                    rest = (record, response.units ?? [])
                }
                if let reason = measured.stepErrors[index] {
                    skipped.append(SkippedItem(item: checkpoint.source, kind: .unreadable, reason: reason))
                    continue
                }
                var (record, units) = RunMeasurer.combine(
                    tensors: checkpoint.tensors, source: checkpoint.source,
                    step: checkpoint.metadata.step ?? index, metadata: checkpoint.metadata,
                    direct: measured.outcomes[index - range.lowerBound], rest: rest)
                measured.outcomes[index - range.lowerBound] = []
                let detail: MeasurementDetail = full ? .full : sampled.contains(index) ? .histogram : .compact
                record.tensors = record.tensors.keeping(detail, sharing: layout)
                layout = record.tensors.layout
                windows.add(units, step: record.step)
                records.append(record)
                kept.append(checkpoint)
                if !full { kept[kept.count - 1].storage = [] }
            }
            // The range's last save stays readable: the next range's first drift reads it.
            if !full {
                for index in max(0, range.lowerBound - 1)..<(range.upperBound - 1) {
                    steps[index].storage = []
                    checkpoints[index].storage = []
                }
            }
            progress?(range.upperBound, checkpoints.count)
        }
        var keptRun = Run(source: run.source, checkpoints: kept, skipped: skipped, notes: run.notes)
        keptRun.trainingLog = run.trainingLog
        return (keptRun, RunMeasurer.assemble(run: keptRun, records: records, unitWindows: windows.windows))
    }

    /// A request with the reading and measuring options; the rest is filled in by the caller.
    static func request(_ task: WorkerRequest.Task, path: String, load: LoadOptions, measure: MeasureOptions) -> WorkerRequest {
        // Each worker may use every core for a large tensor: when the other workers are
        // done (the last files of a run, a run of two huge saves) their cores would idle.
        WorkerRequest(
            task: task, path: path, layout: load.layout, followLinks: load.open.followLinks, allowPlugins: load.open.allowPlugins,
            current: nil, previous: nil, index: 0, wantUnits: false, gradientNames: [], only: nil,
            blockElements: measure.blockElements, threads: measure.threads,
            histogramBins: measure.histogramBins, deadActivationFraction: measure.deadActivationFraction)
    }
}
