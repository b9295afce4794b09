import ElementTypes
import GradScopeModel
import GradScopeSources
import GradScopeStatistics
import HDF5

/// What was measured of one tensor at one saved step.
public struct TensorMeasurement: Sendable, Codable {
    public var key: TensorKey
    public var name: String
    public var layer: String
    public var role: TensorRole
    public var slot: OptimizerSlot?
    public var slotName: String?
    public var shape: [Int]
    public var unitAxis: Int?
    public var dtype: String
    public var path: String
    public var trainable: Bool?
    public var stats: TensorStats
    /// The change since the previous save of the same tensor (weights only).
    public var drift: DriftStats?
    /// Units (along the unit axis) whose values are all exactly zero.
    public var zeroUnits: Int?
    /// Units counted for `zeroUnits`.
    public var unitCount: Int?
    /// Activations: units whose output is zero for at least the dead-activation fraction of the batch.
    public var inactiveUnits: Int?

    package enum CodingKeys: String, CodingKey {
        case key, name, layer, role, slot
        case slotName = "slot_name"
        case shape
        case unitAxis = "unit_axis"
        case dtype, path, trainable, stats, drift
        case zeroUnits = "zero_units"
        case unitCount = "unit_count"
        case inactiveUnits = "inactive_units"
    }
}

/// Everything measured at one saved step.
public struct StepRecord: Sendable, Codable {
    public var step: Int
    public var source: String
    public var loss: Double?
    public var learningRate: Double?
    /// Measurements by tensor key.
    public var tensors: MeasurementTable
    /// Tensor keys in the checkpoint's order.
    public var order: [TensorKey]
    /// Tensors that could not be read, with the reason.
    public var failures: [SkippedItem]

    /// The measurements in the checkpoint's order (sums over them come out the
    /// same in every run, which a dictionary's order would not give).
    public var ordered: [TensorMeasurement] { order.compactMap { tensors[$0] } }

    public func weight(_ name: String) -> TensorMeasurement? { tensors[.weight(name)] }
    public func gradient(_ name: String) -> TensorMeasurement? { tensors[.gradient(name)] }
}

/// One step's measurements by tensor key: a dictionary's lookups in an array's memory. A
/// measurement is over 600 bytes, and a dictionary of them keeps up to twice as many slots
/// as entries; a run of hundreds of saves of a hundred tensors holds tens of thousands.
/// Encoded as a keyed object, as a dictionary would be.
public struct MeasurementTable: Sendable, Codable {
    private var items: [TensorMeasurement] = []
    private var index: [TensorKey: Int] = [:]

    public init() {}

    public init(_ measurements: [TensorMeasurement]) {
        items.reserveCapacity(measurements.count)
        for measurement in measurements { self[measurement.key] = measurement }
    }

    public subscript(key: TensorKey) -> TensorMeasurement? {
        get { index[key].map { items[$0] } }
        set {
            if let position = index[key] {
                if let newValue {
                    items[position] = newValue
                } else {
                    items.remove(at: position)
                    index = Dictionary(uniqueKeysWithValues: items.enumerated().map { ($0.element.key, $0.offset) })
                }
            } else if let newValue {
                index[key] = items.count
                items.append(newValue)
            }
        }
    }

    /// The measurements, in the order they were added.
    public var values: [TensorMeasurement] { items }
    public var keys: [TensorKey] { items.map(\.key) }
    public var count: Int { items.count }
    public var isEmpty: Bool { items.isEmpty }

    private struct Key: CodingKey {
        package var stringValue: String
        package var intValue: Int? { nil }
        package init(stringValue: String) { self.stringValue = stringValue }
        package init?(intValue: Int) { nil }
    }

    public init(from decoder: Decoder) throws {
        let container = try decoder.container(keyedBy: Key.self)
        for key in container.allKeys {
            guard let tensorKey = TensorKey(key.stringValue) else {
                throw DecodingError.dataCorruptedError(forKey: key, in: container, debugDescription: "not a tensor key: \(key.stringValue)")
            }
            var measurement = try container.decode(TensorMeasurement.self, forKey: key)
            measurement.key = tensorKey
            self[tensorKey] = measurement
        }
    }

    public func encode(to encoder: Encoder) throws {
        var container = encoder.container(keyedBy: Key.self)
        for item in items { try container.encode(item, forKey: Key(stringValue: item.key.description)) }
    }
}

/// Per-unit evidence gathered over the later half of a run (the window in
/// which dead units are judged): which units ever had a nonzero gradient,
/// ever moved, or were ever active.
public struct UnitWindow: Sendable {
    public var key: TensorKey
    public var name: String
    public var layer: String
    public var source: UnitEvidence
    public var units: Int
    /// For each unit, the index (within the window) of the last save at which it was alive, or −1.
    public var lastAlive: [Int]
    /// The steps of the window's saves, in order.
    public var steps: [Int]

    /// Units that were alive at least once in the window.
    public var everAlive: [Bool] { lastAlive.map { $0 >= 0 } }
    /// Saves in the window that contributed.
    public var saves: Int { steps.count }
    public var firstStep: Int { steps.first ?? 0 }
    public var lastStep: Int { steps.last ?? 0 }
    /// Units dead at every save of the window.
    public var deadCount: Int { lastAlive.lazy.filter { $0 < 0 }.count }

    /// The window from its save `from` on.
    public func trailing(from: Int) -> UnitWindow {
        var part = self
        part.lastAlive = lastAlive.map { $0 - from }
        part.steps = Array(steps.dropFirst(from))
        return part
    }
}

/// What a unit window was built from.
public enum UnitEvidence: String, Sendable, Codable {
    case gradient, activation, movement
}

/// The measurements of a whole run, the input of every detector.
public struct RunMeasurements: Sendable {
    public var source: String
    public var layout: LayoutKind?
    public var framework: String?
    public var optimizer: String?
    /// Layers in depth order, input first.
    public var layers: [String]
    public var records: [StepRecord]
    public var unitWindows: [UnitWindow]
    /// Whether the step numbers count optimizer steps (a step attribute or the
    /// optimizer's counter). Numbers from file names such as `epoch_3.h5` or from
    /// the files' order do not, so per-step rates cannot be derived from them.
    public var stepsCountUpdates: Bool = true
    /// Whether the first save is known to be the initialisation (step 0 read from
    /// the file or its name, not an epoch or a position).
    public var startsAtInitialisation: Bool = true
    /// False when the one checkpoint read holds no step anywhere (`inspect` of a
    /// file without a step attribute, optimizer counter or number in its name).
    public var stepsKnown: Bool = true

    /// "at step N", or "in this file" when the step is not known.
    public func atStep(_ step: Int) -> String { stepsKnown ? "at step \(step)" : "in this file" }

    public var steps: [Int] { records.map(\.step) }
    public var hasGradients: Bool { records.contains { $0.tensors.values.contains { $0.role == .gradient } } }
    public var hasLoss: Bool { records.contains { $0.loss != nil } }

    /// The series of one tensor across steps (steps where it is absent are skipped).
    public func series(_ key: TensorKey) -> [(step: Int, measurement: TensorMeasurement)] {
        records.compactMap { record in record.tensors[key].map { (record.step, $0) } }
    }

    /// Keys of all weight tensors, in depth order.
    public var weightKeys: [TensorKey] { keys(role: .weight) }

    /// Keys of all tensors with `role`, in depth order (layer order, then file order).
    public func keys(role: TensorRole) -> [TensorKey] {
        var keys: [TensorKey] = []
        var seen = Set<TensorKey>()
        let layerIndex = Dictionary(layers.enumerated().map { ($0.element, $0.offset) }, uniquingKeysWith: { a, _ in a })
        for record in records {
            for key in record.order where !seen.contains(key) {
                guard let measurement = record.tensors[key], measurement.role == role else { continue }
                seen.insert(key)
                keys.append(key)
            }
        }
        let firstRecordOrder = Dictionary(keys.enumerated().map { ($0.element, $0.offset) }, uniquingKeysWith: { a, _ in a })
        return keys.sorted { a, b in
            let layerA = records.lazy.compactMap { $0.tensors[a]?.layer }.first.flatMap { layerIndex[$0] } ?? Int.max
            let layerB = records.lazy.compactMap { $0.tensors[b]?.layer }.first.flatMap { layerIndex[$0] } ?? Int.max
            if layerA != layerB { return layerA < layerB }
            // Within a layer, the kernel before its bias.
            let rankA = records.lazy.compactMap { $0.tensors[a]?.shape.count }.first ?? 0
            let rankB = records.lazy.compactMap { $0.tensors[b]?.shape.count }.first ?? 0
            if rankA != rankB { return rankA > rankB }
            return (firstRecordOrder[a] ?? 0) < (firstRecordOrder[b] ?? 0)
        }
    }
}
