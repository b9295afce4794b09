import Foundation
import GradScopeModel
import GradScopeSources
import GradScopeStatistics

/// Measures saves of one described run, each into its ``SaveSummary`` (or the reason it was left
/// out), in the run's order: the one measuring step of the local scan and of a shard.
///
/// What a save's measurement depends on is the save itself, the save just before it (its weights'
/// drift), and two things of the whole described run: the names of the tensors that have gradients
/// anywhere in it (their weights' movement is not evidence of dead units) and nothing else. So any
/// range of saves measured here gives, save for save, what measuring the whole run gives; the save
/// before a range's first is read for the drift only. Ranges are cut at multiples of
/// ``ScanEngine/rangeLength`` counted from the run's first save, whatever range is asked, so that
/// saves are grouped alike in a shard and in the whole run (the numbers do not depend on the
/// grouping; the grouping is kept alike all the same).
package struct SaveMeasuring {
    private var checkpoints: [Checkpoint]
    private var steps: [SeriesMeasurer.Step]
    private let gradientNames: [String]
    private let load: LoadOptions
    private let options: MeasureOptions
    private let perUnitEverywhere: Bool
    private let full: Bool
    private let reader: any FileReader
    private let cache: SummaryCache?
    /// Saves measured from their files, and saves taken from the cache.
    package private(set) var measured = 0
    package private(set) var cached = 0
    /// The last measured save's table layout, shared by the saves after it that have the same tensors.
    private var layout: TableLayout?

    package var count: Int { checkpoints.count }

    package init(
        _ run: Run, load: LoadOptions, options: MeasureOptions, perUnitEverywhere: Bool = false, full: Bool = false,
        reader: any FileReader, cache: SummaryCache? = nil
    ) {
        checkpoints = run.checkpoints
        steps = run.checkpoints.map(SeriesMeasurer.Step.init)
        gradientNames = Array(Set(run.checkpoints.flatMap { $0.tensors(.gradient).map(\.name) })).sorted()
        self.load = load
        self.options = options
        self.perUnitEverywhere = perUnitEverywhere
        self.full = full
        self.reader = reader
        // What inspect and diff keep (every statistic, per-unit parts everywhere) is never cached.
        self.cache = full || perUnitEverywhere ? nil : cache
    }

    /// Measures the saves at `indices`, calling `emit` with each save's index and outcome in order.
    /// A save's storage is let go once it and the save after it are measured.
    package mutating func measure(
        _ indices: Range<Int>, progress: ((Int, Int) -> Void)? = nil, emit: (Int, SaveOutcome) -> Void
    ) {
        let length = ScanEngine.rangeLength
        var lower = indices.lowerBound
        let gradientSet = Set(gradientNames)
        let context = cache.map { _ in SummaryCache.context(load: load, options: options, gradientNames: gradientNames) }
        while lower < indices.upperBound {
            let range = lower..<min(indices.upperBound, (lower / length + 1) * length)
            lower = range.upperBound
            // Saves measured before, unchanged, with the same save before them: taken from the cache.
            var hits: [Int: (StepRecord, [UnitSnapshot])] = [:]
            var keys: [Int: SummaryCache.Key] = [:]
            if let cache, let context {
                for index in range {
                    guard let key = cache.key(for: checkpoints[index], previous: index > 0 ? checkpoints[index - 1] : nil, context: context)
                    else { continue }
                    keys[index] = key
                    if let hit = cache.lookup(key) { hits[index] = hit }
                }
            }
            var direct = SeriesMeasurer.eligible(steps, in: range)
            for index in hits.keys { direct[index] = [] }
            let stepwise = range.filter { index in
                hits[index] == nil && checkpoints[index].tensors.indices.contains { !direct[index].contains($0) }
            }
            let requests = stepwise.map { index -> WorkerRequest in
                var r = ScanEngine.request(.measure, path: checkpoints[index].file, load: load, measure: options)
                r.current = checkpoints[index]
                r.previous = index > 0 ? checkpoints[index - 1] : nil
                r.index = index
                // Per-unit liveness is kept from every save (one number per unit, whatever the saves):
                // the dead-unit window is judged over the later half (``RunMeasurer/windowStart(count:)``),
                // and each death is dated at the save after which its unit was never alive again.
                r.wantUnits = true
                r.gradientNames = gradientNames
                r.only = checkpoints[index].tensors.indices.filter { !direct[index].contains($0) }.map { checkpoints[index].tensors[$0].key }
                r.perUnitEverywhere = perUnitEverywhere
                return r
            }
            var outcomes = reader.run(requests) { _ in }
            // A crash while reading the previous file as well: measure the step on its own (and
            // keep it out of the cache: its drift is missing).
            var alone = Set<Int>()
            for position in outcomes.indices {
                if case .failed = outcomes[position], requests[position].previous != nil {
                    var request = requests[position]
                    request.previous = nil
                    if case .response(let response) = reader.run([request], done: { _ in }).first, response.record != nil {
                        outcomes[position] = .response(response)
                        alone.insert(request.index)
                    }
                }
            }
            var series = SeriesMeasurer.measure(
                steps, range: range, selected: direct, options: options, gradientNames: gradientSet,
                perUnitEverywhere: perUnitEverywhere, unitWindowStart: 0)
            var stepwiseOutcome: [Int: WorkerPool.Outcome] = [:]
            for (position, index) in stepwise.enumerated() { stepwiseOutcome[index] = outcomes[position] }
            for index in range {
                var checkpoint = checkpoints[index]
                if !full { checkpoint.storage = [] }
                let step = checkpoint.metadata.step ?? index
                if let (cachedRecord, units) = hits[index] {
                    // What the cache holds of a save is its measurements; its step, loss and learning
                    // rate are the run's as described now (a step may be renumbered as a run grows).
                    var record = cachedRecord
                    record.step = step
                    record.loss = checkpoint.metadata.loss
                    record.learningRate = checkpoint.metadata.learningRate
                    cached += 1
                    emit(index, .measured(SaveSummary(checkpoint: checkpoint, record: record, units: units)))
                    continue
                }
                measured += 1
                var rest: (StepRecord, [UnitSnapshot])?
                switch stepwiseOutcome[index] {
                case nil:
                    break
                case .failed(let reason)?:
                    emit(index, .skipped(SkippedItem(item: checkpoint.source, kind: .unreadable, reason: reason)))
                    continue
                case .response(let response)?:
                    guard let record = response.record else {
                        emit(index, .skipped(SkippedItem(item: checkpoint.source, kind: .unreadable, reason: response.error ?? "no result")))
                        continue
                    }
                    rest = (record, response.units ?? [])
                }
                if let reason = series.stepErrors[index] {
                    emit(index, .skipped(SkippedItem(item: checkpoint.source, kind: .unreadable, reason: reason)))
                    continue
                }
                var (record, units) = RunMeasurer.combine(
                    tensors: checkpoint.tensors, source: checkpoint.source, step: step, metadata: checkpoint.metadata,
                    direct: series.outcomes[index - range.lowerBound], rest: rest, layout: layout)
                layout = record.tensors.layout
                series.outcomes[index - range.lowerBound] = []
                // A save travels with its histograms; the run it joins decides whether it keeps them.
                record.tensors = record.tensors.keeping(full ? .full : .histogram)
                if let cache, let key = keys[index], !alone.contains(index), record.failures.isEmpty {
                    cache.store(key, record: record, units: units)
                }
                emit(index, .measured(SaveSummary(checkpoint: checkpoint, record: record, units: units)))
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
    }
}
