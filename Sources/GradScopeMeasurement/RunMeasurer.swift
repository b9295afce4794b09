import ElementTypes
import Foundation
import GradScopeModel
import GradScopeSources
import GradScopeStatistics
import HDF5

/// Per-unit liveness of one tensor at one save: the raw material of the dead-unit windows.
public struct UnitSnapshot: Sendable, Codable {
    public var key: TensorKey
    public var name: String
    public var layer: String
    public var source: UnitEvidence
    public var alive: [Bool]
    /// A gradient's input units (``UnitEvidence/inputs``), alive when not all zero; nil when not counted.
    public var inputsAlive: [Bool]?

    private enum CodingKeys: String, CodingKey { case key, name, layer, source, alive, inputs }

    public init(key: TensorKey, name: String, layer: String, source: UnitEvidence, alive: [Bool], inputsAlive: [Bool]? = nil) {
        self.key = key
        self.name = name
        self.layer = layer
        self.source = source
        self.alive = alive
        self.inputsAlive = inputsAlive
    }

    /// `alive` travels as one string: its count, `:`, then the bits packed 8 to a byte, least
    /// significant first, in base64 (six units to a character; a layer has thousands of units, a
    /// model's saves millions: a list of booleans, or a character per unit, costs many times the
    /// bytes in a worker's message, a shard's summary file and the cache). A string of `1` and `0`,
    /// the earlier form, is read as well.
    public init(from decoder: Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        key = try container.decode(TensorKey.self, forKey: .key)
        name = try container.decode(String.self, forKey: .name)
        layer = try container.decode(String.self, forKey: .layer)
        source = try container.decode(UnitEvidence.self, forKey: .source)
        guard let alive = Self.unpacked(try container.decode(String.self, forKey: .alive)) else {
            throw DecodingError.dataCorruptedError(forKey: .alive, in: container, debugDescription: "not a unit liveness string")
        }
        self.alive = alive
        if let inputs = try container.decodeIfPresent(String.self, forKey: .inputs) {
            guard let inputsAlive = Self.unpacked(inputs) else {
                throw DecodingError.dataCorruptedError(forKey: .inputs, in: container, debugDescription: "not a unit liveness string")
            }
            self.inputsAlive = inputsAlive
        } else {
            inputsAlive = nil
        }
    }

    public func encode(to encoder: Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(key, forKey: .key)
        try container.encode(name, forKey: .name)
        try container.encode(layer, forKey: .layer)
        try container.encode(source, forKey: .source)
        try container.encode(Self.packed(alive), forKey: .alive)
        if let inputsAlive { try container.encode(Self.packed(inputsAlive), forKey: .inputs) }
    }

    /// `bits` as `count:base64` of the bits packed 8 to a byte, least significant first.
    package static func packed(_ bits: [Bool]) -> String {
        var bytes = [UInt8](repeating: 0, count: (bits.count + 7) / 8)
        for (index, bit) in bits.enumerated() where bit { bytes[index >> 3] |= 1 << UInt8(index & 7) }
        return "\(bits.count):" + Data(bytes).base64EncodedString()
    }

    /// The bits of ``packed(_:)``'s form, or of a string of `1` and `0`; nil for anything else.
    package static func unpacked(_ text: String) -> [Bool]? {
        guard let colon = text.firstIndex(of: ":") else {
            guard text.utf8.allSatisfy({ $0 == UInt8(ascii: "0") || $0 == UInt8(ascii: "1") }) else { return nil }
            return text.utf8.map { $0 == UInt8(ascii: "1") }
        }
        guard let count = Int(text[..<colon]), count >= 0, let data = Data(base64Encoded: String(text[text.index(after: colon)...])),
            data.count == (count + 7) / 8
        else { return nil }
        let bytes = [UInt8](data)
        return (0..<count).map { bytes[$0 >> 3] & (1 << UInt8($0 & 7)) != 0 }
    }
}

/// Measures every tensor of every step of a run: statistics for all, drift
/// against the previous save for weights, and per-unit evidence over the
/// later half of the run (the dead-unit window). Tensors stored contiguously or
/// in gzip-compressed chunks are read by ``SeriesMeasurer``, one tensor across all
/// steps at a time (each step's bytes once, each chunk inflated once); the others
/// step by step through libhdf5, each weight
/// side by side with the previous checkpoint's.
public enum RunMeasurer {
    /// The index of the first save in the dead-unit window: the later half of the run. The unit
    /// windows hold every save; the dead-unit detector judges them from this save on.
    public static func windowStart(count: Int) -> Int { count >= 2 ? count / 2 : 0 }

    /// Measures a described run in this process (``ScanEngine/measure(_:load:options:perUnitEverywhere:full:progress:)``):
    /// steps whose files cannot be read again are left out.
    public static func measure(
        _ run: Run, options: MeasureOptions = MeasureOptions(), perUnitEverywhere: Bool = false, full: Bool = false,
        progress: ((Int, Int) -> Void)? = nil
    ) -> RunMeasurements {
        ScanEngine.measure(run, options: options, perUnitEverywhere: perUnitEverywhere, full: full, progress: progress).1
    }

    /// One step's record from the tensors measured directly (`direct`, by tensor
    /// index) and those measured through libhdf5 (`rest`), in the checkpoint's order,
    /// as ``measureStep(_:previous:index:wantUnits:gradientNames:options:perUnitEverywhere:only:onTensor:)``
    /// would give it, keeping `detail` of each tensor (what `keeping(detail)` of the full record keeps).
    /// `layout`, when it describes the measurements (the save before's, typically), is shared by the record.
    ///
    /// `direct` is taken, not copied: its measurements move into the record (a copy of each would
    /// retain and release its names, shape and histograms once more per tensor).
    package static func combine(
        tensors: [TensorRef], source: String, step: Int, metadata: StepMetadata, direct: consuming [SeriesMeasurer.Outcome?],
        rest: (StepRecord, [UnitSnapshot])?, layout: TableLayout? = nil, detail: MeasurementDetail = .full
    ) -> (StepRecord, [UnitSnapshot]) {
        var direct = direct
        var failures: [SkippedItem] = []
        var snapshots: [UnitSnapshot] = rest?.1 ?? []
        let tensorsTable: MeasurementTable
        if let rest {
            var measurements = OrderedMeasurements(capacity: tensors.count)
            let restFailureList = rest.0.failures
            var restFailures = Dictionary(restFailureList.map { ($0.item, $0) }, uniquingKeysWith: { a, _ in a })
            for (t, tensor) in tensors.enumerated() {
                if t < direct.count, var outcome = direct[t].take() {
                    guard let measurement = outcome.takeMeasurement() else {
                        failures.append(SkippedItem(item: source + ":" + tensor.path, kind: .unreadable, reason: outcome.error ?? "not measured"))
                        continue
                    }
                    measurements.add(measurement)
                    if let snapshot = outcome.takeSnapshot() { snapshots.append(snapshot) }
                } else if !restFailures.isEmpty, let failure = restFailures.removeValue(forKey: source + ":" + tensor.path) {
                    failures.append(failure)
                } else if let measurement = rest.0.tensors[tensor.key] {
                    measurements.add(measurement)
                }
            }
            failures.append(contentsOf: restFailureList.filter { restFailures[$0.item] != nil })
            tensorsTable = MeasurementTable(measurements.list, detail: detail, sharing: layout)
        } else {
            // Only direct measurements: listed in order, then, unless the shared layout (whose keys are
            // unique) describes them as they are, made unique as ``OrderedMeasurements`` would.
            var list: [TensorMeasurement] = []
            list.reserveCapacity(tensors.count)
            for t in 0..<Swift.min(tensors.count, direct.count) {
                guard var outcome = direct[t].take() else { continue }
                guard let measurement = outcome.takeMeasurement() else {
                    failures.append(SkippedItem(item: source + ":" + tensors[t].path, kind: .unreadable, reason: outcome.error ?? "not measured"))
                    continue
                }
                list.append(measurement)
                if let snapshot = outcome.takeSnapshot() { snapshots.append(snapshot) }
            }
            if let layout, layout.hasUniqueKeys, layout.describes(list) {
                tensorsTable = MeasurementTable(layout: layout, measurements: list, detail: detail)
            } else {
                var measurements = OrderedMeasurements(capacity: list.count)
                for measurement in list { measurements.add(measurement) }
                list = []
                tensorsTable = MeasurementTable(measurements.list, detail: detail, sharing: layout)
            }
        }
        let record = StepRecord(
            step: step, source: source, loss: metadata.loss, learningRate: metadata.learningRate, tensors: tensorsTable, failures: failures)
        return (record, snapshots)
    }

    /// Measurements in the order first added; a key added again replaces its earlier measurement in place.
    package struct OrderedMeasurements {
        package var list: [TensorMeasurement] = []
        private var position: [TensorKey: Int] = [:]

        package init(capacity: Int = 0) {
            list.reserveCapacity(capacity)
            position.reserveCapacity(capacity)
        }

        package mutating func add(_ measurement: TensorMeasurement) {
            if let p = position[measurement.key] {
                list[p] = measurement
            } else {
                position[measurement.key] = list.count
                list.append(measurement)
            }
        }
    }

    /// Puts measured steps together: the run's metadata and the dead-unit windows.
    public static func assemble(run: Run, summaries: [SaveSummary]) -> RunMeasurements {
        var windows = UnitWindowBuilder()
        for summary in summaries { windows.add(summary.units, step: summary.record.step) }
        return assemble(run: run, records: summaries.map(\.record), unitWindows: windows.windows)
    }

    /// Puts measured steps together with the dead-unit windows built from their snapshots.
    package static func assemble(run: Run, records: [StepRecord], unitWindows: [UnitWindow]) -> RunMeasurements {
        let last = run.checkpoints.last?.metadata
        var measurements = RunMeasurements(
            source: run.source, layout: run.checkpoints.last?.layout, framework: last?.framework,
            optimizer: last?.optimizer, layers: run.layers, records: records, unitWindows: unitWindows)
        // PyTorch creates its optimizer state at the first step(): a first save at step 0 without it, in a
        // run whose later saves carry the optimizer's counter, is the initial state, at update 0.
        let initialWithoutCounter =
            run.checkpoints.count >= 2 && run.checkpoints[0].metadata.step == 0
            && run.checkpoints[0].metadata.stepSource != .optimizerIterations
            && run.checkpoints.dropFirst().allSatisfy { $0.metadata.stepSource == .optimizerIterations }
        measurements.stepsCountUpdates = run.checkpoints.enumerated().allSatisfy { index, checkpoint in
            StepCounting.countsUpdates(checkpoint) || (index == 0 && initialWithoutCounter)
        }
        measurements.startsAtInitialisation = initialWithoutCounter || (run.checkpoints.first.map(StepCounting.startsAtInitialisation) ?? false)
        measurements.stepsKnown = !(run.checkpoints.count == 1 && run.checkpoints[0].metadata.step == nil)
        let sources = run.checkpoints.compactMap(\.metadata.stepSource)
        let counts = Dictionary(grouping: sources, by: { $0 }).mapValues(\.count)
        // The most common; among equals, the last save's.
        measurements.stepSource = sources.reversed().max { (counts[$0] ?? 0) < (counts[$1] ?? 0) }
        measurements.trainingLog = run.trainingLog
        return measurements
    }

    /// Measures one checkpoint (and its weights' drift from `previous`).
    /// `wantUnits` asks for per-unit liveness snapshots; `gradientNames` are the
    /// parameters with gradients anywhere in the run (their movement is not used as evidence).
    public static func measureStep(
        _ open: OpenCheckpoint, previous: OpenCheckpoint?, index: Int, wantUnits: Bool,
        gradientNames: Set<String>, options: MeasureOptions, perUnitEverywhere: Bool = false,
        only: Set<TensorKey>? = nil, onTensor: ((TensorRef) -> Void)? = nil
    ) -> (StepRecord, [UnitSnapshot]) {
        let checkpoint = open.checkpoint
        let step = checkpoint.metadata.step ?? index
        let previousTensors = previous.map { Dictionary($0.checkpoint.tensors.map { ($0.key, $0) }, uniquingKeysWith: { a, _ in a }) } ?? [:]
        var measurements = OrderedMeasurements()
        var failures: [SkippedItem] = []
        var snapshots: [UnitSnapshot] = []
        for tensor in checkpoint.tensors where only?.contains(tensor.key) ?? true {
            onTensor?(tensor)
            do {
                var stats: TensorStats
                var drift: DriftStats?
                let (unitsForStats, unitsForDrift) = unitParts(of: tensor, gradientNames: gradientNames, perUnitEverywhere: perUnitEverywhere)
                if tensor.role == .weight, let previous, let earlier = previousTensors[tensor.key], earlier.shape == tensor.shape {
                    (stats, drift) = try TensorMeasurer.statsAndDrift(
                        of: tensor, in: open, previous: earlier, in: previous, options: options,
                        perUnitStats: unitsForStats, perUnitDrift: unitsForDrift)
                } else {
                    stats = try TensorMeasurer.stats(of: tensor, in: open, options: options, perUnit: unitsForStats)
                }
                let (measurement, snapshot) = self.measurement(
                    of: tensor, stats: stats, drift: drift, wantUnits: wantUnits,
                    gradientNames: gradientNames, options: options)
                measurements.add(measurement)
                if let snapshot { snapshots.append(snapshot) }
            } catch {
                failures.append(SkippedItem(item: checkpoint.source + ":" + tensor.path, kind: .unreadable, reason: Failures.reason(for: error)))
            }
        }
        let record = StepRecord(
            step: step, source: checkpoint.source, loss: checkpoint.metadata.loss,
            learningRate: checkpoint.metadata.learningRate, tensors: MeasurementTable(measurements.list), failures: failures)
        return (record, snapshots)
    }

    /// Whether a tensor's statistics and its drift get per-unit parts. They cost a second pass
    /// over the data, so they are computed only where they are used: gradients and activations
    /// (dead units), and weights' movement when the run saved no gradient for them.
    /// `perUnitEverywhere` keeps them for every tensor (inspect shows them).
    package static func unitParts(of tensor: TensorRef, gradientNames: Set<String>, perUnitEverywhere: Bool) -> (stats: Bool, drift: Bool) {
        (
            perUnitEverywhere || tensor.role == .gradient || tensor.role == .activation,
            perUnitEverywhere || !gradientNames.contains(tensor.name)
        )
    }

    /// The measurement of one tensor from its statistics and drift, and its per-unit
    /// liveness snapshot when `wantUnits` asks for one and the tensor gives one.
    package static func measurement(
        of tensor: TensorRef, stats: TensorStats, drift: DriftStats?, wantUnits: Bool, gradientNames: Set<String>,
        options: MeasureOptions
    ) -> (TensorMeasurement, UnitSnapshot?) {
        var measurement = TensorMeasurement(
            key: tensor.key, name: tensor.name, layer: tensor.layer, role: tensor.role, slot: tensor.slot,
            slotName: tensor.slotName, shape: tensor.shape, unitAxis: tensor.unitAxis, dtype: tensor.dtype.description,
            path: tensor.path, trainable: tensor.trainable, stats: stats, drift: drift)
        measurement.gates = tensor.gates
        let unitSize = (stats.unitNorms?.count).map { units in units > 0 ? tensor.count / units : 0 } ?? 0
        // A unit is zero when every one of its values is exactly 0. Its norm sums the finite values
        // only, so a norm of 0 alone also fits a unit of NaN or ±Inf: its zero count tells them apart.
        let zeroUnit: [Bool]? = stats.unitNorms.map { norms in
            norms.indices.map { unit in
                guard norms[unit] == 0 else { return false }
                guard let zeros = stats.unitZeroCount, zeros.count == norms.count else { return true }
                return zeros[unit] >= unitSize
            }
        }
        if let zeroUnit {
            measurement.unitCount = zeroUnit.count
            measurement.zeroUnits = zeroUnit.reduce(0) { $1 ? $0 + 1 : $0 }
        }
        // An input unit is zero when every one of its values is exactly 0.
        var inputsAlive: [Bool]?
        if let zeros = stats.inputZeroCount, !zeros.isEmpty, tensor.count % zeros.count == 0 {
            let size = tensor.count / zeros.count
            inputsAlive = zeros.map { size == 0 || $0 < size }
            measurement.inputCount = zeros.count
            measurement.zeroInputs = inputsAlive?.reduce(0) { $1 ? $0 : $0 + 1 }
        }
        if tensor.role == .activation, let zeros = stats.unitZeroCount, unitSize > 0 {
            measurement.inactiveUnits = zeros.reduce(0) { Double($1) >= options.deadActivationFraction * Double(unitSize) ? $0 + 1 : $0 }
        }
        var snapshot: UnitSnapshot?
        if wantUnits {
            var alive: [Bool]?
            var evidence: UnitEvidence?
            switch tensor.role {
            case .gradient:
                alive = zeroUnit?.map { !$0 }
                evidence = .gradient
            case .activation:
                alive = stats.unitZeroCount?.map { Double($0) < options.deadActivationFraction * Double(max(unitSize, 1)) }
                evidence = .activation
            case .weight where !gradientNames.contains(tensor.name):
                // Movement: the weights' statistics carry no per-unit part, their drift does.
                if let changed = drift?.unitChanged {
                    alive = changed.map { $0 > 0 }
                    evidence = .movement
                }
            default:
                break
            }
            if let alive, let evidence, !alive.isEmpty {
                snapshot = UnitSnapshot(
                    key: tensor.key, name: tensor.name, layer: tensor.layer, source: evidence, alive: alive, inputsAlive: inputsAlive)
            } else if let inputsAlive, !inputsAlive.isEmpty {
                // A second moment: only its input units are evidence.
                snapshot = UnitSnapshot(key: tensor.key, name: tensor.name, layer: tensor.layer, source: .inputs, alive: inputsAlive)
            }
        }
        // Per-unit arrays are summarised above; dropping them keeps a long run's memory small.
        measurement.stats.unitNorms = nil
        measurement.stats.unitZeroCount = nil
        measurement.stats.inputZeroCount = nil
        measurement.drift?.unitRelativeChange = nil
        measurement.drift?.unitChanged = nil
        return (measurement, snapshot)
    }
}

/// Folds saves' per-unit liveness snapshots, in save order, into the dead-unit windows: for each
/// unit, the last save at which it was alive. Memory stays at one number per unit whatever the
/// number of saves, and the steps of a window present at every save since its first are one
/// shared list, not a list per window.
package struct UnitWindowBuilder {
    private struct WindowKey: Hashable {
        var key: TensorKey
        var inputs: Bool
    }

    /// The saves a window holds: `count` consecutive saves of `steps` from `start`, or, once it
    /// missed a save, its own list.
    private struct Span {
        var start: Int
        var count: Int
        var own: [Int]?
    }

    /// The windows, their steps left empty until ``windows`` puts them in.
    private var byKey: [WindowKey: UnitWindow] = [:]
    private var spans: [WindowKey: Span] = [:]
    /// Every save's step, in the order added.
    private var steps: [Int] = []

    package init() {}

    package mutating func add(_ snapshots: [UnitSnapshot], step: Int) {
        steps.append(step)
        for snapshot in snapshots {
            add(snapshot.alive, of: snapshot, source: snapshot.source)
            // A gradient's input units are a window of their own.
            if let inputs = snapshot.inputsAlive, !inputs.isEmpty { add(inputs, of: snapshot, source: .inputs) }
        }
    }

    private mutating func add(_ alive: [Bool], of snapshot: UnitSnapshot, source: UnitEvidence) {
        let id = WindowKey(key: snapshot.key, inputs: source == .inputs)
        let position = steps.count - 1
        if let index = byKey.index(forKey: id), let span = spans[id] {
            // Changed in place: a copy of the window would copy its arrays at every save.
            guard byKey.values[index].units == alive.count else { return }
            let save = span.count
            // Through one buffer: an element written through the dictionary checks its storage is unique every time.
            byKey.values[index].lastAlive.withUnsafeMutableBufferPointer { lastAlive in
                alive.withUnsafeBufferPointer { alive in
                    for unit in 0..<Swift.min(alive.count, lastAlive.count) where alive[unit] { lastAlive[unit] = save }
                }
            }
            if span.own == nil && position == span.start + span.count {
                spans[id]!.count += 1
            } else {
                if span.own == nil { spans[id]!.own = Array(steps[span.start..<(span.start + span.count)]) }
                spans[id]!.own!.append(steps[position])
                spans[id]!.count += 1
            }
        } else {
            byKey[id] = UnitWindow(
                key: snapshot.key, name: snapshot.name, layer: snapshot.layer, source: source,
                units: alive.count, lastAlive: alive.map { $0 ? 0 : -1 }, steps: [])
            spans[id] = Span(start: position, count: 1, own: nil)
        }
    }

    package var windows: [UnitWindow] {
        byKey.map { id, window in
            var window = window
            if let span = spans[id] {
                if let own = span.own {
                    window.steps = own
                } else if span.start == 0 && span.count == steps.count {
                    window.steps = steps
                } else {
                    window.steps = Array(steps[span.start..<(span.start + span.count)])
                }
            }
            return window
        }
        .sorted { $0.key != $1.key ? $0.key < $1.key : ($0.source != .inputs && $1.source == .inputs) }
    }
}
