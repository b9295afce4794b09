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
        gradientNames = Self.gradientNames(run.checkpoints)
        self.load = load
        self.options = options
        self.perUnitEverywhere = perUnitEverywhere
        self.full = full
        self.reader = reader
        // What inspect and diff keep (every statistic, per-unit parts everywhere) is never cached.
        self.cache = full || perUnitEverywhere ? nil : cache
    }

    /// The names of the tensors that have a gradient in any of `checkpoints`, sorted. Saves of one
    /// model share their tensor list (``DescriptionInterner``): each list is looked at once.
    package static func gradientNames(_ checkpoints: [Checkpoint]) -> [String] {
        var names = Set<String>()
        var last: [TensorRef]?
        for checkpoint in checkpoints {
            if let last, DescriptionInterner.same(last, checkpoint.tensors) { continue }
            for tensor in checkpoint.tensors where tensor.role == .gradient { names.insert(tensor.name) }
            last = checkpoint.tensors
        }
        return names.sorted()
    }

    /// Whether a range's files are read and measured on other threads while the range before it is
    /// combined and emitted on this one (only with more than one thread; tests turn it off to compare).
    package var overlap = true

    /// Measures the saves at `indices`, calling `emit` with each save's index and outcome in order.
    /// A save's storage is let go once it and the save after it are measured.
    ///
    /// With more than one thread the ranges go through two stages, at most one range in each: while
    /// one range's saves are combined, cached and emitted here, the next range's worker requests and
    /// direct reads run on other threads (the kernels' threads as well), so the combining no longer
    /// leaves a core idle; then, still here, the range after it is prepared (its cache look-ups and
    /// its windows), so that its reading starts on every core at once. What waits in memory is two
    /// ranges' outcomes, not one.
    /// `emit` and `progress` are called on this thread, in the order of the one-stage loop; the
    /// numbers do not depend on the overlap. (One thing may: a cache made unwritable while a range is
    /// stored still answers the next range's look-ups, which were made before; its entries are the
    /// same measurements.)
    package mutating func measure(
        _ indices: Range<Int>, progress: ((Int, Int) -> Void)? = nil, emit: (Int, SaveOutcome) -> Void
    ) {
        let length = ScanEngine.rangeLength
        var ranges: [Range<Int>] = []
        var lower = indices.lowerBound
        while lower < indices.upperBound {
            let range = lower..<min(indices.upperBound, (lower / length + 1) * length)
            ranges.append(range)
            lower = range.upperBound
        }
        let reading = RangeReading(
            gradientNames: gradientNames, load: load, options: options, perUnitEverywhere: perUnitEverywhere, full: full,
            reader: reader, cache: cache)
        guard overlap, options.threads > 1, ranges.count > 1 else {
            for range in ranges {
                let read = reading.read(range, checkpoints: checkpoints, steps: steps)
                finish(read, progress: progress, emit: emit)
                release(range)
            }
            return
        }
        var previous: RangeReading.Read?
        // Each range is prepared (its windows worked out) here while the one before is read, so
        // that its reading starts on every core at once.
        var prepared: RangeReading.Prepared? = reading.prepare(ranges[0], checkpoints: checkpoints, steps: steps)
        for position in ranges.indices {
            let current = prepared.take()!
            // The arrays are handed over as they are now; nothing here changes them until the reading
            // is done (letting go of storage would copy them), so they are not copied.
            let ahead = Ahead { [checkpoints, steps] in reading.read(current, checkpoints: checkpoints, steps: steps) }
            // Moved out, so that the range's outcomes have one holder and are moved on, not copied.
            let finished = previous?.range
            if let done = previous.take() { finish(done, progress: progress, emit: emit) }
            if position + 1 < ranges.count {
                prepared = reading.prepare(ranges[position + 1], checkpoints: checkpoints, steps: steps)
            }
            let read = ahead.wait()
            if let finished { release(finished) }
            previous = read
        }
        if let done = previous.take() {
            let finished = done.range
            finish(done, progress: progress, emit: emit)
            release(finished)
        }
    }

    /// Combines a range's readings into its saves' summaries, stores them in the cache and emits them in order.
    ///
    /// The reading is taken, not borrowed: each save's outcomes are moved out of it to be combined,
    /// and a reading still held elsewhere would make that move a copy of every outcome (a save's
    /// outcomes are its tensors' full measurements, some 800 bytes each).
    private mutating func finish(_ read: consuming RangeReading.Read, progress: ((Int, Int) -> Void)?, emit: (Int, SaveOutcome) -> Void) {
        var read = read
        let range = read.range
        for index in range {
            var checkpoint = checkpoints[index]
            if !full { checkpoint.storage = [] }
            let step = checkpoint.metadata.step ?? index
            if let (cachedRecord, units) = read.hits[index] {
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
            switch read.stepwise[index] {
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
            if let reason = read.series.stepErrors[index] {
                emit(index, .skipped(SkippedItem(item: checkpoint.source, kind: .unreadable, reason: reason)))
                continue
            }
            // The save's outcomes are moved out (they are not needed again), not copied.
            let direct = exchange(&read.series.outcomes[index - range.lowerBound], with: [])
            // A save travels with its histograms; the run it joins decides whether it keeps them.
            let (record, units) = RunMeasurer.combine(
                tensors: checkpoint.tensors, source: checkpoint.source, step: step, metadata: checkpoint.metadata,
                direct: direct, rest: rest, layout: layout, detail: full ? .full : .histogram)
            layout = record.tensors.layout
            if let cache, let key = read.keys[index], !read.alone.contains(index), record.failures.isEmpty {
                cache.store(key, record: record, units: units)
            }
            emit(index, .measured(SaveSummary(checkpoint: checkpoint, record: record, units: units)))
        }
        progress?(range.upperBound, checkpoints.count)
    }

    /// Lets go of the storage of a range's saves once they are measured, but for the last: the next
    /// range's first drift reads it.
    private mutating func release(_ range: Range<Int>) {
        guard !full else { return }
        for index in max(0, range.lowerBound - 1)..<(range.upperBound - 1) {
            steps[index].storage = []
            checkpoints[index].storage = []
        }
    }
}

/// The first stage of measuring a range of saves: what can be done before its saves are combined
/// (cache look-ups, the steps the workers measure, the direct reads), from the run's description
/// alone, so that it may run on another thread while the range before is combined.
struct RangeReading: Sendable {
    let gradientNames: [String]
    /// The same names, as every range's planning looks them up.
    let gradientNameSet: Set<String>
    let load: LoadOptions
    let options: MeasureOptions
    let perUnitEverywhere: Bool
    /// Whether the saves keep their full statistics; else their quantiles and linear histograms,
    /// which only those keep, are not worked out (``MeasurementDetail``).
    let full: Bool
    let reader: any FileReader
    let cache: SummaryCache?
    let context: String?

    init(
        gradientNames: [String], load: LoadOptions, options: MeasureOptions, perUnitEverywhere: Bool, full: Bool,
        reader: any FileReader, cache: SummaryCache?
    ) {
        self.gradientNames = gradientNames
        gradientNameSet = Set(gradientNames)
        self.load = load
        self.options = options
        self.perUnitEverywhere = perUnitEverywhere
        self.full = full
        self.reader = reader
        self.cache = cache
        context = cache.map { _ in SummaryCache.context(load: load, options: options, gradientNames: gradientNames) }
    }

    /// A range read: what the saves' summaries are combined from.
    struct Read: Sendable {
        var range: Range<Int>
        /// Saves taken from the cache, and the keys of those that may be stored in it.
        var hits: [Int: (StepRecord, [UnitSnapshot])] = [:]
        var keys: [Int: SummaryCache.Key] = [:]
        /// What the workers answered for the tensors that are not read directly, by save.
        var stepwise: [Int: WorkerPool.Outcome] = [:]
        /// Saves whose step was measured without the save before (a crash reading it): kept out of the cache.
        var alone = Set<Int>()
        var series: SeriesMeasurer.Result
    }

    func read(_ range: Range<Int>, checkpoints: [Checkpoint], steps: [SeriesMeasurer.Step]) -> Read {
        read(prepare(range, checkpoints: checkpoints, steps: steps), checkpoints: checkpoints, steps: steps)
    }

    /// What is worked out of a range before its files are read, on one thread: the cache's
    /// answers, which tensors are read directly and which by the workers, and the direct ones' windows.
    struct Prepared: Sendable {
        var range: Range<Int>
        var hits: [Int: (StepRecord, [UnitSnapshot])]
        var keys: [Int: SummaryCache.Key]
        var direct: [Set<Int>]
        var stepwise: [Int]
        var planned: SeriesMeasurer.Planned
    }

    func prepare(_ range: Range<Int>, checkpoints: [Checkpoint], steps: [SeriesMeasurer.Step]) -> Prepared {
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
            // `direct[index]` holds indices of the save's tensors: fewer than all of them leaves some to the workers.
            hits[index] == nil && direct[index].count < checkpoints[index].tensors.count
        }
        let planned = SeriesMeasurer.Planned(
            steps, range: range, selected: direct, options: options, gradientNames: gradientNameSet,
            perUnitEverywhere: perUnitEverywhere, distributions: full)
        return Prepared(range: range, hits: hits, keys: keys, direct: direct, stepwise: stepwise, planned: planned)
    }

    /// Reads a prepared range (`checkpoints` and `steps` those it was prepared with).
    func read(_ prepared: consuming Prepared, checkpoints: [Checkpoint], steps: [SeriesMeasurer.Step]) -> Read {
        let range = prepared.range, hits = prepared.hits, keys = prepared.keys, direct = prepared.direct
        let stepwise = prepared.stepwise
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
        let series = SeriesMeasurer.measure(steps, prepared.planned, unitWindowStart: 0)
        var read = Read(range: range, hits: hits, keys: keys, alone: alone, series: series)
        for (position, index) in stepwise.enumerated() { read.stepwise[index] = outcomes[position] }
        return read
    }
}

/// Work started on another thread, waited for once.
final class Ahead<Value: Sendable>: @unchecked Sendable {
    private let done = DispatchSemaphore(value: 0)
    /// The work until it has run (let go of before the wait ends, with what it holds), then its value.
    private var work: (@Sendable () -> Value)?
    private var value: Value?

    init(_ work: @escaping @Sendable () -> Value) {
        self.work = work
        // A thread of its own, started at once: given to Dispatch's pool, the work waited about
        // 2 ms for a thread at each range while this one combined the range before (the pool's
        // threads had just gone idle, and it wakes one when it sees a core free), a core idle a
        // range's first milliseconds.
        Thread.detachNewThread { [self] in
            let result = self.work!()
            self.work = nil
            value = result
            done.signal()
        }
    }

    /// The value, moved out, so that this object no longer holds it: called once.
    func wait() -> Value {
        done.wait()
        return value.take()!
    }
}
