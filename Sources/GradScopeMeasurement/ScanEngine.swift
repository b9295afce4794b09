import Dispatch
import ElementTypes
import Foundation
import GradScopeModel
import GradScopeSources
import GradScopeStatistics
import HDF5

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
/// Files are described on up to `threads` threads at once (the isolated scan's workers do the same
/// in processes of their own); steps are measured one request after the other, each on every core.
package struct InProcessReader: FileReader {
    /// Threads describing files at once.
    package let threads: Int

    /// `threads` is 1 when libhdf5 was built without its thread-safety lock.
    package init(threads: Int = max(1, ProcessInfo.processInfo.activeProcessorCount)) {
        self.threads = Library.isThreadSafe ? max(1, threads) : 1
    }

    package func run(_ requests: [WorkerRequest], done: (Int) -> Void) -> [WorkerPool.Outcome] {
        let threadCount = min(threads, requests.count)
        guard threadCount > 1, requests.allSatisfy({ $0.task == .load }) else {
            return requests.enumerated().map { index, request in
                defer { done(index) }
                return .response(Worker.handle(request) { _ in })
            }
        }
        // Each thread takes the next file not yet taken; `done` is called here, in the requests'
        // order, so that progress counts files and bytes exactly as one thread would.
        let results = ResultBox(count: requests.count)
        let completions = CompletionQueue()
        let jobs = JobQueue(count: requests.count)
        let threadsDone = DispatchGroup()
        for _ in 0..<threadCount {
            threadsDone.enter()
            Thread.detachNewThread {
                while let index = jobs.next() {
                    results.set(index, .response(Worker.handle(requests[index]) { _ in }))
                    completions.push(index)
                }
                threadsDone.leave()
            }
        }
        var finished = [Bool](repeating: false, count: requests.count)
        var reported = 0
        for _ in requests.indices {
            finished[completions.pop()] = true
            while reported < requests.count, finished[reported] {
                done(reported)
                reported += 1
            }
        }
        threadsDone.wait()
        return results.values
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
        /// Saves measured from their files, and saves taken from the cache.
        public var measuredSaves = 0
        public var cachedSaves = 0
    }

    /// The same, for a folder that holds several models (``Run/otherModels``): the run of the newest
    /// files first, then each other model measured as a run of its own (`others`: false measures the
    /// first only). `cache`, when given, gives the saves measured before and keeps the ones measured now.
    public static func scanModels(
        _ path: String, isolation: IsolationOptions? = nil, load: LoadOptions = LoadOptions(),
        measure: MeasureOptions = MeasureOptions(), select: NSRegularExpression? = nil,
        loadProgress: (@Sendable (Int, Int, Int, Int) -> Void)? = nil,
        measureProgress: (@Sendable (Int, Int) -> Void)? = nil, others: Bool = true, cache: SummaryCache? = nil
    ) throws -> Models {
        let reader: any FileReader = isolation.map { IsolatedReader($0) } ?? InProcessReader()
        defer { reader.finish() }
        var models = try describe(path, reader: reader, load: load, measure: measure, select: select, progress: loadProgress, others: others)
        cache?.begin(path)
        var assemblies: [RunAssembly] = []
        var measured = 0, cached = 0
        for m in models.indices {
            // Taken, not copied: measuring lets each save's storage go as it is done with it.
            var model = taking(&models[m])
            var assembly = RunAssembly(run: model)
            var measuring = SaveMeasuring(model, load: load, options: measure, reader: reader, cache: cache)
            model.checkpoints = []
            let count = measuring.count
            var progress: ((Int, Int) -> Void)?
            if m == 0, let measureProgress { progress = { measureProgress($0, $1) } }
            measuring.measure(0..<count, progress: progress) { index, outcome in
                assembly.add(outcome, index: index)
            }
            measured += measuring.measured
            cached += measuring.cached
            assemblies.append(assembly)
        }
        cache?.trim()
        var result = assembled(assemblies, others: others)
        result.measuredSaves = measured
        result.cachedSaves = cached
        return result
    }

    /// Describes the run at `path` (metadata only: every file's tensors, steps and layout), the
    /// run of the newest files first, then the other models of its folder when `others` asks for them.
    package static func describe(
        _ path: String, reader: any FileReader, load: LoadOptions, measure: MeasureOptions, select: NSRegularExpression?,
        progress: (@Sendable (Int, Int, Int, Int) -> Void)?, others: Bool
    ) throws -> [Run] {
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
        var loaded = selecting(try RunLoader.load(path, progress: progress, loadFiles: describe), select)
        let otherModels = others ? loaded.otherModels.map { selecting($0, select) } : []
        loaded.otherModels = []
        return [loaded] + otherModels
    }

    /// The runs of a folder from each model's assembled saves: with other models, each on its own;
    /// with one model, split at a jump of every weight matrix to unrelated values (``RunAssembly/finish(splitting:)``).
    package static func assembled(_ assemblies: consuming [RunAssembly], others: Bool) -> Models {
        if assemblies.count > 1 {
            return Models(runs: assemblies.map { $0.finish() }, reason: "most tensor names or shapes differ")
        }
        let parts = assemblies.removeFirst().finish(splitting: others)
        if let step = parts.splitAt {
            return Models(runs: parts.runs, reason: "every weight matrix jumps to unrelated values at step \(step)", sameArchitecture: true)
        }
        var models = Models(runs: parts.runs, reason: nil)
        models.mixedAt = parts.mixedAt
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
        var measuring = SaveMeasuring(
            copy run, load: load, options: options, perUnitEverywhere: perUnitEverywhere, full: full, reader: reader)
        let count = run.checkpoints.count
        run.checkpoints = []
        var assembly = RunAssembly(run: run, count: count, full: full)
        measuring.measure(0..<count, progress: progress) { index, outcome in assembly.add(outcome, index: index) }
        return assembly.finish()
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
