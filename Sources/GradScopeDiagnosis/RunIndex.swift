import GradScopeMeasurement
import GradScopeModel
import Synchronization

/// The look-ups the detectors and the report make over and over, each made once per analysis:
/// a tensor's series across the saves and the keys of a role in depth order. Every detector asks
/// for the weights' keys and for most weights' series; over a run of hundreds of saves of hundreds
/// of tensors, building them again for each detector was a tenth of the scan's time.
///
/// An index is made for one ``RunMeasurements`` and answers only for it (``describes(_:)``: the
/// same source, steps and tensor tables); ``RunMeasurements/indexedSeries(_:)`` and
/// ``RunMeasurements/indexedKeys(role:)`` use the index of the analysis in progress
/// (``with(_:_:)``) and compute the answer afresh for any other run. The answers are those of
/// ``RunMeasurements/series(_:)`` and ``RunMeasurements/keys(role:)``, except that the series' points leave their log2
/// histograms empty (no detector reads them; the report reads the saves themselves).
package final class RunIndex: Sendable {
    @TaskLocal package static var current: RunIndex?

    private let source: String
    private let steps: [Int]
    private let tables: [ObjectIdentifier]
    private let counts: [Int]
    private let state = Mutex(State())
    /// Per save, the positions of its tensors holding a NaN or ±Inf (``nonFinite(of:)``), once asked.
    private let nonFinitePositions = Mutex<[[Int32]]?>(nil)

    private struct State {
        var series: [TensorKey: [(step: Int, measurement: TensorMeasurement)]] = [:]
        var keys: [TensorRole: [TensorKey]] = [:]
        var cachedPoints = 0
    }

    /// The most measurements the index keeps built (about 20 MB at about 1.2 KB each): a run of a few hundred saves of
    /// a few hundred tensors is kept whole; in a longer run the series past the budget are built
    /// afresh when asked, so the index never holds a second, uncompacted copy of a long run.
    package static let maxCachedPoints = 1 << 14

    /// The most measurements this index keeps built (``maxCachedPoints`` unless told).
    package let budget: Int

    /// Measurements kept built, over all series.
    package var cachedPoints: Int { state.withLock { $0.cachedPoints } }

    package init(_ run: RunMeasurements, budget: Int = RunIndex.maxCachedPoints) {
        self.budget = budget
        source = run.source
        steps = run.records.map(\.step)
        tables = run.records.map { ObjectIdentifier($0.tensors.layout) }
        counts = run.records.map(\.tensors.count)
    }

    /// Runs `body` with an index of `run` as the current one (the one already current when it
    /// describes `run`).
    package static func with<T>(_ run: RunMeasurements, budget: Int = maxCachedPoints, _ body: () throws -> T) rethrows -> T {
        if let current, current.describes(run) { return try body() }
        return try $current.withValue(RunIndex(run, budget: budget), operation: body)
    }

    /// Whether this index was made for `run`: the same source, and saves at the same steps with the
    /// same tensor tables. (The measurements of an analysis are never changed once taken.)
    package func describes(_ run: RunMeasurements) -> Bool {
        let records = run.records
        guard records.count == steps.count, run.source == source else { return false }
        for i in records.indices {
            let record = records[i]
            if record.step != steps[i] || ObjectIdentifier(record.tensors.layout) != tables[i] || record.tensors.count != counts[i] {
                return false
            }
        }
        return true
    }

    /// Whether the series of `key` are kept: those of weights and activations, which several detectors
    /// read (collapsing and update-ratio every kernel's; collapsing an activation's twice). A gradient's
    /// or an optimizer slot's is read by one detector, and kept would only fill the budget first (in a
    /// run of hundreds of saves, zero-gradient's gradients filled it before any kernel's was asked for).
    package static func keeps(_ key: TensorKey) -> Bool { key.role == .weight || key.role == .activation }

    package func series(_ key: TensorKey, of run: RunMeasurements) -> [(step: Int, measurement: TensorMeasurement)] {
        guard Self.keeps(key) else { return run.series(key, log2: false) }
        if let known = state.withLock({ $0.series[key] }) { return known }
        let series = run.series(key, log2: false)
        state.withLock { state in
            // Detectors running side by side may build one series twice; it is kept once.
            guard state.series[key] == nil, state.cachedPoints + series.count <= budget else { return }
            state.series[key] = series
            state.cachedPoints += series.count
        }
        return series
    }

    /// The last point of ``series(_:of:)``, from the series when it is kept, else from the last save holding `key`.
    package func last(_ key: TensorKey, of run: RunMeasurements) -> TensorMeasurement? {
        if let known = state.withLock({ $0.series[key] }) { return known.last?.measurement }
        return run.lastMeasurement(key, log2: false)
    }

    /// The first point of ``series(_:of:)``, from the series when it is kept, else from the first save holding `key`.
    package func first(_ key: TensorKey, of run: RunMeasurements) -> TensorMeasurement? {
        if let known = state.withLock({ $0.series[key] }) { return known.first?.measurement }
        return run.firstMeasurement(key, log2: false)
    }

    /// Per save of `run`, in order, the positions in its table of the tensors holding a NaN or ±Inf,
    /// ascending: nan-inf and exploding-gradient both look at every tensor of every save for them, and
    /// reading a measurement out of its table is the cost. Worked out once, by the first detector that
    /// asks, on the run's detector threads (the others wait for it).
    package func nonFinite(of run: RunMeasurements) -> [[Int32]] {
        nonFinitePositions.withLock { known in
            if let known { return known }
            let positions = Self.nonFinitePositions(run, threads: Diagnoser.detectorThreads(run))
            known = positions
            return positions
        }
    }

    /// ``nonFinite(of:)`` worked out afresh, the saves shared among `threads` threads.
    package static func nonFinitePositions(_ run: RunMeasurements, threads: Int) -> [[Int32]] {
        let records = run.records
        return ScanReport.orderedMap(Array(records.indices), threads: threads) { index in
            nonFinitePositions(records[index].tensors)
        }
    }

    /// The positions of a save's table holding a non-finite value (the table lent in place, not copied).
    private static func nonFinitePositions(_ table: borrowing MeasurementTable) -> [Int32] {
        var positions: [Int32] = []
        for position in 0..<table.count where table.nonFinite(at: position) > 0 {
            positions.append(Int32(position))
        }
        return positions
    }

    package func keys(role: TensorRole, of run: RunMeasurements) -> [TensorKey] {
        if let known = state.withLock({ $0.keys[role] }) { return known }
        let keys = run.keys(role: role)
        state.withLock { $0.keys[role] = keys }
        return keys
    }
}

extension RunMeasurements {
    /// ``series(_:)``, from the index of the analysis in progress when there is one for this run.
    package func indexedSeries(_ key: TensorKey) -> [(step: Int, measurement: TensorMeasurement)] {
        if let index = RunIndex.current, index.describes(self) { return index.series(key, of: self) }
        return series(key, log2: false)
    }

    /// The last measurement of ``indexedSeries(_:)``, without building the series.
    package func indexedLast(_ key: TensorKey) -> TensorMeasurement? {
        if let index = RunIndex.current, index.describes(self) { return index.last(key, of: self) }
        return lastMeasurement(key, log2: false)
    }

    /// The first measurement of ``indexedSeries(_:)``, without building the series.
    package func indexedFirst(_ key: TensorKey) -> TensorMeasurement? {
        if let index = RunIndex.current, index.describes(self) { return index.first(key, of: self) }
        return firstMeasurement(key, log2: false)
    }

    /// ``keys(role:)``, from the index of the analysis in progress when there is one for this run.
    package func indexedKeys(role: TensorRole) -> [TensorKey] {
        if let index = RunIndex.current, index.describes(self) { return index.keys(role: role, of: self) }
        return keys(role: role)
    }

    /// Per save, the positions of the tensors holding a NaN or ±Inf (``RunIndex/nonFinite(of:)``), from the
    /// index of the analysis in progress when there is one for this run.
    package func indexedNonFinite() -> [[Int32]] {
        if let index = RunIndex.current, index.describes(self) { return index.nonFinite(of: self) }
        return RunIndex.nonFinitePositions(self, threads: 1)
    }

    /// Where the tensor `key` stands at each save that holds it, in order (the points of ``series(_:)``):
    /// the save's index in `records` and the tensor's position in its table, looked up once per table
    /// layout. A detector that reads a few numbers of each point, or only the last points, reads them
    /// there without building the series.
    package func places(of key: TensorKey) -> [(record: Int, position: Int)] {
        var places: [(record: Int, position: Int)] = []
        places.reserveCapacity(records.count)
        var lastLayout: ObjectIdentifier?
        var position: Int?
        for index in records.indices {
            let layout = records[index].tensors.layout
            if ObjectIdentifier(layout) != lastLayout {
                lastLayout = ObjectIdentifier(layout)
                position = layout.index[key]
            }
            if let position { places.append((index, position)) }
        }
        return places
    }

    /// The measurement at `place` (``places(of:)``), its log2 histogram left empty.
    package func measurement(at place: (record: Int, position: Int)) -> TensorMeasurement {
        records[place.record].tensors.measurement(at: place.position, log2: false)
    }

    /// The index of the first save after step `step` holding a NaN or ±Inf in a tensor, given
    /// ``indexedNonFinite()``.
    package func firstNonFiniteSave(after step: Int, _ nonFinite: [[Int32]]) -> Int? {
        records.indices.first { records[$0].step > step && !nonFinite[$0].isEmpty }
    }

    /// ``weightKeys``, from the index of the analysis in progress when there is one for this run.
    package var indexedWeightKeys: [TensorKey] { indexedKeys(role: .weight) }
}
