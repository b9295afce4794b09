import Foundation
import GradScopeModel
import GradScopeSources

extension ScanEngine {
    /// The options every shard of one scan must share, as text (``ScanSummaryHeader/settings``).
    static func settings(load: LoadOptions, measure: MeasureOptions) -> String {
        [
            "layout \(load.layout?.rawValue ?? "auto")", "links \(load.open.followLinks)", "plugins \(load.open.allowPlugins)",
            "block \(measure.blockElements)", "bins \(measure.histogramBins)", "dead \(measure.deadActivationFraction)",
        ].joined(separator: ", ")
    }

    /// Scans shard `shard` of the run at `path` (``ShardSpec``) into the summary file `output`,
    /// written atomically: describes the whole run, then measures the shard's saves only (and
    /// reads the save before its first, for drift). Returns the saves measured and skipped.
    @discardableResult
    public static func scanShard(
        _ path: String, shard: ShardSpec, output: String, isolation: IsolationOptions? = nil, load: LoadOptions = LoadOptions(),
        measure: MeasureOptions = MeasureOptions(), cache: SummaryCache? = nil,
        loadProgress: (@Sendable (Int, Int, Int, Int) -> Void)? = nil,
        measureProgress: (@Sendable (Int, Int) -> Void)? = nil
    ) throws -> (measured: Int, skipped: Int) {
        let reader: any FileReader = isolation.map { IsolatedReader($0) } ?? InProcessReader()
        defer { reader.finish() }
        var models = try describe(path, reader: reader, load: load, measure: measure, select: nil, progress: loadProgress, others: true)
        cache?.begin(path)
        let header = ScanSummaryHeader(
            gradscopeVersion: GradScopeVersion.string, run: path, runDigest: ScanSummaryFile.digest(of: models, root: path),
            shard: shard.index, shards: shard.count, settings: settings(load: load, measure: measure),
            deadActivationFraction: measure.deadActivationFraction,
            models: models.map {
                ScanSummaryHeader.Model(
                    source: $0.source, count: $0.checkpoints.count, skipped: $0.skipped, notes: $0.notes, trainingLog: $0.trainingLog)
            })
        let writer = try ScanSummaryFile.Writer(path: output, header: header)
        let total = models.reduce(0) { $0 + $1.checkpoints.count }
        let range = shard.range(of: total)
        var first = 0
        var measured = 0, skipped = 0
        for m in models.indices {
            var model = models[m]
            models[m] = Run(source: model.source, checkpoints: [])
            let count = model.checkpoints.count
            let own = min(max(range.lowerBound - first, 0), count)..<min(max(range.upperBound - first, 0), count)
            first += count
            guard !own.isEmpty else { continue }
            var measuring = SaveMeasuring(model, load: load, options: measure, reader: reader, cache: cache)
            model.checkpoints = []
            var failure: Error?
            var progress: ((Int, Int) -> Void)?
            if let measureProgress { progress = { done, _ in measureProgress(done - own.lowerBound, own.count) } }
            measuring.measure(own, progress: progress) { index, outcome in
                guard failure == nil else { return }
                if case .skipped = outcome { skipped += 1 } else { measured += 1 }
                do { try writer.append(ScanSummaryFile.Entry(model: m, index: index, outcome: outcome)) } catch { failure = error }
            }
            if let failure { throw failure }
        }
        cache?.trim()
        try writer.finish()
        return (measured, skipped)
    }

    /// The runs of the summary files at `paths` (every shard of one scan, in any order), as
    /// ``scanModels(_:isolation:load:measure:select:loadProgress:measureProgress:others:cache:)``
    /// gives them for the whole run: the same saves assembled by the same steps. Refuses, naming
    /// the file, what is not a summary, a summary cut or corrupt or of another format version,
    /// shards of different runs or options, a shard given twice, and missing shards.
    /// `deadActivationFraction`, when given, must be the one the shards were measured with.
    public static func merge(_ paths: [String], deadActivationFraction: Double? = nil) throws -> Models {
        guard !paths.isEmpty else { throw ScanSummaryError(file: "merge", reason: "no summary file given") }
        let readers = try paths.map { try ScanSummaryFile.Reader(path: $0) }
        let reference = readers[0]
        var byShard: [Int: ScanSummaryFile.Reader] = [:]
        for reader in readers {
            let header = reader.header, expected = reference.header
            if header.gradscopeVersion != expected.gradscopeVersion {
                throw ScanSummaryError(
                    file: reader.path,
                    reason:
                        "written by gradscope \(header.gradscopeVersion), \(reference.path) by \(expected.gradscopeVersion): scan every shard with one version"
                )
            }
            if header.runDigest != expected.runDigest {
                throw ScanSummaryError(
                    file: reader.path,
                    reason: "a shard of another run than \(reference.path) (\(header.run) as it was when scanned, not \(expected.run))")
            }
            if header.shards != expected.shards {
                throw ScanSummaryError(
                    file: reader.path, reason: "shard \(header.shard)/\(header.shards), but \(reference.path) is one of \(expected.shards) shards")
            }
            if header.settings != expected.settings {
                throw ScanSummaryError(
                    file: reader.path, reason: "scanned with other options (\(header.settings)) than \(reference.path) (\(expected.settings))")
            }
            if let other = byShard[header.shard] {
                throw ScanSummaryError(file: reader.path, reason: "shard \(header.shard)/\(header.shards) again (also \(other.path))")
            }
            byShard[header.shard] = reader
        }
        let shards = reference.header.shards
        let missing = (0..<shards).filter { byShard[$0] == nil }
        if !missing.isEmpty {
            let list = missing.prefix(10).map { "\($0)/\(shards)" }.joined(separator: ", ") + (missing.count > 10 ? ", …" : "")
            throw ScanSummaryError(
                file: reference.header.run, reason: "missing shard\(missing.count == 1 ? "" : "s") \(list) (\(readers.count) of \(shards) given)")
        }
        if let fraction = deadActivationFraction, fraction != reference.header.deadActivationFraction {
            throw ScanSummaryError(
                file: reference.path,
                reason:
                    "measured with dead_activation_fraction \(reference.header.deadActivationFraction), not \(fraction): merge with the thresholds the shards were scanned with"
            )
        }
        let header = reference.header
        var assemblies = header.models.map { model -> RunAssembly in
            var run = Run(source: model.source, checkpoints: [], skipped: model.skipped, notes: model.notes)
            run.trainingLog = model.trainingLog
            return RunAssembly(run: run, count: model.count)
        }
        let starts = header.models.reduce(into: [0]) { $0.append($0.last! + $1.count) }
        let total = starts.last ?? 0
        for shard in 0..<shards {
            guard let reader = byShard[shard] else { continue }
            let range = ShardSpec(index: shard, count: shards).range(of: total)
            var expected = range.lowerBound
            while let entry = try reader.next() {
                guard header.models.indices.contains(entry.model), starts[entry.model] + entry.index == expected else {
                    throw ScanSummaryError(file: reader.path, reason: "a corrupt scan summary (its saves are not the shard's)")
                }
                assemblies[entry.model].add(entry.outcome, index: entry.index)
                expected += 1
            }
            guard expected == range.upperBound else {
                throw ScanSummaryError(
                    file: reader.path, reason: "a corrupt scan summary (it holds \(expected - range.lowerBound) of the shard's \(range.count) saves)")
            }
        }
        return assembled(assemblies, others: true)
    }
}
