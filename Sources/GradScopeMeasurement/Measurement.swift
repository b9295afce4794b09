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
    /// A recurrent layer's gate blocks along the unit axis (``TensorRef/gates``).
    public var gates: Int? = nil
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
    /// Gradients of matrices and kernels, and their optimizer's second moments: input units (columns of
    /// a PyTorch [out, in] matrix, input channels, rows of a Keras [in, out] kernel) whose values are all
    /// exactly zero (``TensorMeasurer/inputMap(for:)``).
    public var zeroInputs: Int? = nil
    /// Input units counted for `zeroInputs`.
    public var inputCount: Int? = nil

    public init(
        key: TensorKey, name: String, layer: String, role: TensorRole, slot: OptimizerSlot? = nil, slotName: String? = nil,
        shape: [Int], unitAxis: Int? = nil, dtype: String, path: String, trainable: Bool? = nil, stats: TensorStats,
        drift: DriftStats? = nil, zeroUnits: Int? = nil, unitCount: Int? = nil, inactiveUnits: Int? = nil
    ) {
        self.key = key
        self.name = name
        self.layer = layer
        self.role = role
        self.slot = slot
        self.slotName = slotName
        self.shape = shape
        self.unitAxis = unitAxis
        self.dtype = dtype
        self.path = path
        self.trainable = trainable
        self.stats = stats
        self.drift = drift
        self.zeroUnits = zeroUnits
        self.unitCount = unitCount
        self.inactiveUnits = inactiveUnits
    }

    package enum CodingKeys: String, CodingKey {
        case key, name, layer, role, slot
        case slotName = "slot_name"
        case shape
        case unitAxis = "unit_axis"
        case gates
        case dtype, path, trainable, stats, drift
        case zeroUnits = "zero_units"
        case unitCount = "unit_count"
        case inactiveUnits = "inactive_units"
        case zeroInputs = "zero_inputs"
        case inputCount = "input_count"
    }
}

/// Everything measured at one saved step.
public struct StepRecord: Sendable, Codable {
    public var step: Int
    public var source: String
    public var loss: Double?
    public var learningRate: Double?
    /// Measurements by tensor key, in the checkpoint's order.
    public var tensors: MeasurementTable
    /// Tensors that could not be read, with the reason.
    public var failures: [SkippedItem]

    /// The measurements in the checkpoint's order (sums over them come out the
    /// same in every run, which a dictionary's order would not give).
    public var ordered: [TensorMeasurement] { tensors.values }
    /// Tensor keys in the checkpoint's order.
    public var order: [TensorKey] { tensors.keys }
    /// ``ordered`` with every log2 histogram left empty (``MeasurementTable/measurement(at:log2:)``): what the
    /// detectors read, without an allocation per tensor.
    package var compactOrdered: [TensorMeasurement] { tensors.compactValues }

    public func weight(_ name: String) -> TensorMeasurement? { tensors[.weight(name)] }
    public func gradient(_ name: String) -> TensorMeasurement? { tensors[.gradient(name)] }
}

/// How much of each tensor's measurements a save keeps.
public enum MeasurementDetail: Int, Sendable, Codable, Comparable {
    /// The compact numbers the detectors read: moments, extremes, norm, counts, the relative
    /// change and changed count of the drift, and the unit counts.
    case compact
    /// The compact numbers and the log2 histogram (what the report's timeline draws).
    case histogram
    /// Everything measured: quantiles, both histograms and the full drift.
    case full

    public static func < (a: Self, b: Self) -> Bool { a.rawValue < b.rawValue }
}

/// What names and describes one tensor of a save: everything of a ``TensorMeasurement`` but its numbers.
public struct TensorDescriptor: Sendable, Equatable, Codable {
    public var key: TensorKey
    public var name: String
    public var layer: String
    public var role: TensorRole
    public var slot: OptimizerSlot?
    public var slotName: String?
    public var shape: [Int]
    public var unitAxis: Int?
    public var gates: Int? = nil
    public var dtype: String
    public var path: String
    public var trainable: Bool?

    package enum CodingKeys: String, CodingKey {
        case key, name, layer, role, slot
        case slotName = "slot_name"
        case shape
        case unitAxis = "unit_axis"
        case gates
        case dtype, path, trainable
    }

    public init(_ m: TensorMeasurement) {
        key = m.key
        name = m.name
        layer = m.layer
        role = m.role
        slot = m.slot
        slotName = m.slotName
        shape = m.shape
        unitAxis = m.unitAxis
        gates = m.gates
        dtype = m.dtype
        path = m.path
        trainable = m.trainable
    }
}

/// The tensors of a save, in the checkpoint's order, and their index by key. Saves of one model
/// share one (``MeasurementTable/Builder`` hands the previous save's out again when it is equal),
/// so a run of thousands of saves holds its names once.
public final class TableLayout: Sendable {
    public let descriptors: [TensorDescriptor]
    public let index: [TensorKey: Int]

    public init(_ descriptors: [TensorDescriptor]) {
        self.descriptors = descriptors
        var index: [TensorKey: Int] = [:]
        for (position, descriptor) in descriptors.enumerated() where index[descriptor.key] == nil { index[descriptor.key] = position }
        self.index = index
    }

    /// Whether no two descriptors have the same key.
    package var hasUniqueKeys: Bool { index.count == descriptors.count }

    /// Whether `measurements` are, in order, the tensors these descriptors describe
    /// (what `TableLayout(measurements.map(TensorDescriptor.init))` would hold), compared in place
    /// (neither side is copied: a copy retains and releases every name, shape and histogram).
    package func describes(_ measurements: [TensorMeasurement]) -> Bool {
        guard descriptors.count == measurements.count else { return false }
        return descriptors.withUnsafeBufferPointer { d in
            measurements.withUnsafeBufferPointer { m in
                for t in 0..<d.count {
                    guard d[t].key == m[t].key, d[t].name == m[t].name, d[t].layer == m[t].layer, d[t].role == m[t].role,
                        d[t].slot == m[t].slot, d[t].slotName == m[t].slotName, d[t].shape == m[t].shape,
                        d[t].unitAxis == m[t].unitAxis, d[t].gates == m[t].gates, d[t].dtype == m[t].dtype,
                        d[t].path == m[t].path, d[t].trainable == m[t].trainable
                    else { return false }
                }
                return true
            }
        }
    }
}

/// One step's measurements by tensor key, stored in columns: per tensor, six numbers (mean, std,
/// min, max, ‖x‖, the drift's relative change) and eleven counts (elements, zeros, NaN, +Inf, −Inf,
/// changed elements, zero units, units, inactive units, zero input units, input units; a count field
/// that is zero for every tensor of the save is not stored), at most 93 bytes, whatever the histograms'
/// size. The log2 histograms (``MeasurementDetail/histogram``) and the full statistics
/// (``MeasurementDetail/full``) are kept only where asked. Reading a tensor gives back a
/// ``TensorMeasurement``: its compact numbers are exactly those measured (`maxAbs` is
/// `max(|min|, |max|)`, the finite count the elements less the non-finite ones); at the
/// detail `compact` its quantiles and linear histogram are nil, its log2 histogram is empty, and
/// its drift holds the count, the changed count, the changed fraction and the relative change only.
public struct MeasurementTable: Sendable {
    public private(set) var layout: TableLayout
    /// Six per tensor; NaN where the value is absent (every present value is finite).
    private var numbers: [Double]
    /// Per tensor, the count fields that are nonzero somewhere in this save (bit `field` of
    /// `present`), in field order; the others are zero everywhere and not stored. `UInt32.max`
    /// sends the reader to `wide`. A healthy save has four to six such fields of the eleven.
    private var counts: [UInt32]
    private var present: UInt16
    /// Per tensor: which optional parts are present (``Flag``).
    private var flags: [UInt8]
    /// Counts of 2^32 - 1 or more, by `tensor * 9 + field`.
    private var wide: [Int: Int]
    /// Per tensor, when kept.
    private var log2: PackedLog2Histograms
    private var full: [FullParts?]

    private struct FullParts: Sendable {
        var stats: TensorStats
        var drift: DriftStats?
    }

    private enum Flag {
        static let drift: UInt8 = 1
        static let zeroUnits: UInt8 = 2
        static let unitCount: UInt8 = 4
        static let inactiveUnits: UInt8 = 8
        static let zeroInputs: UInt8 = 16
        static let inputCount: UInt8 = 32
    }

    private static let numberFields = 6
    private static let countFields = 11

    public init() { self.init(layout: TableLayout([]), measurements: [], detail: .full) }

    /// A table of `measurements` (in the checkpoint's order) keeping `detail` of each.
    public init(_ measurements: [TensorMeasurement], detail: MeasurementDetail = .full) {
        self.init(layout: TableLayout(measurements.map(TensorDescriptor.init)), measurements: measurements, detail: detail)
    }

    /// The same, with `layout` (the save before's, typically) when it describes `measurements`
    /// as well: a run's saves then share one without building each its own first.
    package init(_ measurements: [TensorMeasurement], detail: MeasurementDetail = .full, sharing layout: TableLayout?) {
        if let layout, layout.describes(measurements) {
            self.init(layout: layout, measurements: measurements, detail: detail)
        } else {
            self.init(measurements, detail: detail)
        }
    }

    /// `layout` must describe `measurements`, in order.
    package init(layout: TableLayout, measurements: [TensorMeasurement], detail: MeasurementDetail) {
        self.layout = layout
        let n = measurements.count
        var numbers: [Double] = []
        numbers.reserveCapacity(n * Self.numberFields)
        var flags: [UInt8] = []
        flags.reserveCapacity(n)
        // Every tensor's count fields one after another (one list, not one per tensor). The
        // measurements are read in place: a copy of one retains and releases all it holds.
        var rows: [Int] = []
        rows.reserveCapacity(n * Self.countFields)
        var present: UInt16 = 0
        measurements.withUnsafeBufferPointer { measurements in
            for t in 0..<n {
                let start = rows.count
                // The drift's two numbers, read once (each optional chain through it copies it whole).
                let (hasDrift, changed, relativeChange) = measurements[t].drift.map { (true, $0.changed, $0.relativeChange) } ?? (false, 0, nil)
                rows.append(measurements[t].stats.count)
                rows.append(measurements[t].stats.zeros)
                rows.append(measurements[t].stats.nan)
                rows.append(measurements[t].stats.posInf)
                rows.append(measurements[t].stats.negInf)
                rows.append(changed)
                rows.append(measurements[t].zeroUnits ?? 0)
                rows.append(measurements[t].unitCount ?? 0)
                rows.append(measurements[t].inactiveUnits ?? 0)
                rows.append(measurements[t].zeroInputs ?? 0)
                rows.append(measurements[t].inputCount ?? 0)
                for field in 0..<Self.countFields where rows[start + field] != 0 { present |= 1 << field }
                numbers.append(measurements[t].stats.mean ?? .nan)
                numbers.append(measurements[t].stats.std ?? .nan)
                numbers.append(measurements[t].stats.min ?? .nan)
                numbers.append(measurements[t].stats.max ?? .nan)
                numbers.append(measurements[t].stats.l2Norm ?? .nan)
                numbers.append(relativeChange ?? .nan)
                var flag: UInt8 = 0
                if hasDrift { flag |= Flag.drift }
                if measurements[t].zeroUnits != nil { flag |= Flag.zeroUnits }
                if measurements[t].unitCount != nil { flag |= Flag.unitCount }
                if measurements[t].inactiveUnits != nil { flag |= Flag.inactiveUnits }
                if measurements[t].zeroInputs != nil { flag |= Flag.zeroInputs }
                if measurements[t].inputCount != nil { flag |= Flag.inputCount }
                flags.append(flag)
            }
        }
        self.numbers = numbers
        self.flags = flags
        self.present = present
        var counts: [UInt32] = []
        counts.reserveCapacity(n * present.nonzeroBitCount)
        var wide: [Int: Int] = [:]
        for t in 0..<n {
            for field in 0..<Self.countFields where present & (1 << field) != 0 {
                let value = rows[t * Self.countFields + field]
                if value >= 0 && value < Int(UInt32.max) {
                    counts.append(UInt32(value))
                } else {
                    counts.append(UInt32.max)
                    wide[t * Self.countFields + field] = value
                }
            }
        }
        self.counts = counts
        self.wide = wide
        log2 = detail >= .histogram ? PackedLog2Histograms(of: measurements) : PackedLog2Histograms([])
        full = detail == .full ? measurements.map { FullParts(stats: $0.stats, drift: $0.drift) } : []
    }

    private func integer(_ t: Int, _ field: Int) -> Int {
        guard present & (1 << field) != 0 else { return 0 }
        let width = present.nonzeroBitCount, rank = (present & ((1 << field) - 1)).nonzeroBitCount
        let value = counts[t * width + rank]
        return value == UInt32.max ? wide[t * Self.countFields + field] ?? Int(value) : Int(value)
    }

    private func number(_ t: Int, _ field: Int) -> Double? {
        let value = numbers[t * Self.numberFields + field]
        return value.isNaN ? nil : value
    }

    /// The measurement at position `t` (the checkpoint's order).
    public func measurement(at t: Int) -> TensorMeasurement { measurement(at: t, log2: true) }

    /// The measurement at position `t`; without `log2`, its log2 histogram is the empty one of the detail
    /// `compact` even where one is kept (what the detectors read does not include it; building it is
    /// an allocation per point). The descriptor's fields are read in place, not copied twice.
    package func measurement(at t: Int, log2 withLog2: Bool) -> TensorMeasurement {
        let flag = flags[t]
        var stats: TensorStats
        var drift: DriftStats?
        if !full.isEmpty, let parts = full[t] {
            stats = parts.stats
            drift = parts.drift
        } else {
            let count = integer(t, 0), nan = integer(t, 2), posInf = integer(t, 3), negInf = integer(t, 4)
            let min = number(t, 2), max = number(t, 3)
            let maxAbs = min.flatMap { low in max.map { high in Swift.max(Swift.abs(low), Swift.abs(high)) } }
            let zeros = integer(t, 1)
            stats = TensorStats(
                count: count, finiteCount: count - nan - posInf - negInf, mean: number(t, 0), std: number(t, 1), min: min,
                max: max, maxAbs: maxAbs, l2Norm: number(t, 4), zeros: zeros, nan: nan, posInf: posInf, negInf: negInf,
                p1: nil, p5: nil, p50: nil, p95: nil, p99: nil, histogram: nil,
                log2Histogram: (withLog2 && !log2.isEmpty ? log2.histogram(at: t) : nil)
                    ?? Log2Histogram(minExponent: 0, counts: [], zeros: zeros),
                unitNorms: nil, unitZeroCount: nil)
            drift = compactDrift(at: t, count: count)
        }
        return layout.descriptors.withUnsafeBufferPointer { descriptors in
            var measurement = TensorMeasurement(
                key: descriptors[t].key, name: descriptors[t].name, layer: descriptors[t].layer, role: descriptors[t].role,
                slot: descriptors[t].slot, slotName: descriptors[t].slotName, shape: descriptors[t].shape,
                unitAxis: descriptors[t].unitAxis, dtype: descriptors[t].dtype, path: descriptors[t].path,
                trainable: descriptors[t].trainable, stats: stats, drift: drift,
                zeroUnits: flag & Flag.zeroUnits != 0 ? integer(t, 6) : nil,
                unitCount: flag & Flag.unitCount != 0 ? integer(t, 7) : nil,
                inactiveUnits: flag & Flag.inactiveUnits != 0 ? integer(t, 8) : nil)
            measurement.zeroInputs = flag & Flag.zeroInputs != 0 ? integer(t, 9) : nil
            measurement.inputCount = flag & Flag.inputCount != 0 ? integer(t, 10) : nil
            measurement.gates = descriptors[t].gates
            return measurement
        }
    }

    /// The drift of the measurement at position `t` as the compact numbers give it back (nil when none was kept).
    private func compactDrift(at t: Int, count: Int) -> DriftStats? {
        guard flags[t] & Flag.drift != 0 else { return nil }
        let changed = integer(t, 5)
        return DriftStats(
            count: count, finiteCount: count, deltaNorm: nil, normA: nil, normB: nil, relativeChange: number(t, 5),
            maxAbsDelta: nil, cosineSimilarity: nil, changed: changed,
            changedFraction: count > 0 ? Double(changed) / Double(count) : nil, signFlips: 0, nonFinite: 0,
            unitRelativeChange: nil, unitChanged: nil)
    }

    /// The element count, norm and drift's relative change of the tensor at `t`, as
    /// ``measurement(at:log2:)`` gives them, without building the measurement.
    package func normsAndChange(at t: Int) -> (count: Int, l2Norm: Double?, relativeChange: Double?) {
        if !full.isEmpty, let parts = full[t] { return (parts.stats.count, parts.stats.l2Norm, parts.drift?.relativeChange) }
        return (integer(t, 0), number(t, 4), flags[t] & Flag.drift != 0 ? number(t, 5) : nil)
    }

    /// What a timeline point and the NaN/Inf checks read of one tensor's measurement, as
    /// ``measurement(at:log2:)`` gives it (``MeasurementTable/point(at:)``).
    package struct PointFields: Sendable, Equatable {
        /// `stats.count`, `stats.zeros` and `stats.nan + stats.posInf + stats.negInf`.
        package var count: Int
        package var zeros: Int
        package var nonFinite: Int
        /// `stats.l2Norm`, `stats.std` and `drift?.relativeChange`.
        package var l2Norm: Double?
        package var std: Double?
        package var relativeChange: Double?
        package var zeroUnits: Int?
        package var unitCount: Int?
        package var inactiveUnits: Int?
    }

    /// The ``PointFields`` of the tensor at `t`, read in place: no descriptor field is copied and no
    /// statistics are built.
    package func point(at t: Int) -> PointFields {
        let flag = flags[t]
        var fields = PointFields(
            count: 0, zeros: 0, nonFinite: 0, l2Norm: nil, std: nil, relativeChange: nil,
            zeroUnits: flag & Flag.zeroUnits != 0 ? integer(t, 6) : nil,
            unitCount: flag & Flag.unitCount != 0 ? integer(t, 7) : nil,
            inactiveUnits: flag & Flag.inactiveUnits != 0 ? integer(t, 8) : nil)
        if !full.isEmpty, let parts = full[t] {
            fields.count = parts.stats.count
            fields.zeros = parts.stats.zeros
            fields.nonFinite = parts.stats.nan + parts.stats.posInf + parts.stats.negInf
            fields.l2Norm = parts.stats.l2Norm
            fields.std = parts.stats.std
            fields.relativeChange = parts.drift?.relativeChange
        } else {
            fields.count = integer(t, 0)
            fields.zeros = integer(t, 1)
            fields.nonFinite = integer(t, 2) + integer(t, 3) + integer(t, 4)
            fields.l2Norm = number(t, 4)
            fields.std = number(t, 1)
            fields.relativeChange = flag & Flag.drift != 0 ? number(t, 5) : nil
        }
        return fields
    }

    /// `stats.nan + stats.posInf + stats.negInf` of the tensor at `t`, read in place.
    package func nonFinite(at t: Int) -> Int {
        if !full.isEmpty, let parts = full[t] { return parts.stats.nan + parts.stats.posInf + parts.stats.negInf }
        return integer(t, 2) + integer(t, 3) + integer(t, 4)
    }

    /// `measurement(at: t).stats.log2Histogram` (with the log2 histogram), without building the rest
    /// of the measurement.
    package func log2Histogram(at t: Int) -> Log2Histogram {
        if !full.isEmpty, let parts = full[t] { return parts.stats.log2Histogram }
        return (!log2.isEmpty ? log2.histogram(at: t) : nil) ?? Log2Histogram(minExponent: 0, counts: [], zeros: integer(t, 1))
    }

    /// `measurement(at: t).drift`, without building the measurement.
    package func drift(at t: Int) -> DriftStats? {
        if !full.isEmpty, let parts = full[t] { return parts.drift }
        return compactDrift(at: t, count: integer(t, 0))
    }

    public subscript(key: TensorKey) -> TensorMeasurement? {
        layout.index[key].map { measurement(at: $0) }
    }

    /// The measurements, in the checkpoint's order.
    public var values: [TensorMeasurement] { (0..<count).map(measurement(at:)) }
    /// ``values`` with every log2 histogram left empty (``measurement(at:log2:)``).
    package var compactValues: [TensorMeasurement] { (0..<count).map { measurement(at: $0, log2: false) } }
    /// ``subscript(_:)`` with the log2 histogram left empty (``measurement(at:log2:)``).
    package func compact(_ key: TensorKey) -> TensorMeasurement? { layout.index[key].map { measurement(at: $0, log2: false) } }
    public var keys: [TensorKey] { layout.descriptors.map(\.key) }
    public var count: Int { flags.count }
    public var isEmpty: Bool { flags.isEmpty }
    /// The detail kept of every tensor.
    public var detail: MeasurementDetail { !full.isEmpty ? .full : !log2.isEmpty ? .histogram : .compact }

    /// The same measurements, keeping the same detail, without their drift (a save measured as the
    /// first of its run: no save before it).
    package func withoutDrift() -> MeasurementTable {
        MeasurementTable(
            layout: layout,
            measurements: values.map { measurement in
                var copy = measurement
                copy.drift = nil
                return copy
            }, detail: detail)
    }

    /// The same measurements keeping at most `detail`, sharing `layout` when it describes them as well.
    public func keeping(_ detail: MeasurementDetail, sharing other: TableLayout? = nil) -> MeasurementTable {
        var copy = self
        if let other, other !== layout, other.descriptors == layout.descriptors { copy.layout = other }
        if detail < .full { copy.full = [] }
        if detail < .histogram {
            copy.log2 = PackedLog2Histograms([])
        } else if copy.log2.isEmpty, !full.isEmpty {
            copy.log2 = PackedLog2Histograms(full.map { $0?.stats.log2Histogram })
        }
        return copy
    }
}

/// The log2 histograms of a save's tensors in three flat arrays: per tensor its smallest exponent
/// and where its counts begin, and every tensor's zeros and counts one after another as 32-bit
/// numbers (a count of 2^32 − 1 or more is kept aside, by position). A run keeps them at up to 400
/// saves; as arrays of their own, with 64-bit counts, they were the largest part of a long scan's
/// memory after the compact numbers.
struct PackedLog2Histograms: Sendable {
    /// Per tensor, `floor(log2 |x|)` of `counts`' first exponent; `Int16.min` where there is no histogram.
    private var minExponents: [Int16] = []
    /// Per tensor and one more: where its values begin in `values` (its zeros, then its counts).
    private var starts: [UInt32] = []
    private var values: [UInt32] = []
    private var wide: [Int: Int] = [:]

    init(_ histograms: [Log2Histogram?]) {
        guard !histograms.isEmpty else { return }
        histograms.withUnsafeBufferPointer { histograms in fill(count: histograms.count) { histograms[$0] } }
    }

    /// The histograms of `measurements`' statistics, read in place.
    init(of measurements: [TensorMeasurement]) {
        guard !measurements.isEmpty else { return }
        measurements.withUnsafeBufferPointer { measurements in fill(count: measurements.count) { measurements[$0].stats.log2Histogram } }
    }

    private mutating func fill(count n: Int, _ histogram: (Int) -> Log2Histogram?) {
        minExponents.reserveCapacity(n)
        starts.reserveCapacity(n + 1)
        var total = 0
        for t in 0..<n { total += 1 + (histogram(t)?.counts.count ?? 0) }
        values.reserveCapacity(total)
        for t in 0..<n {
            starts.append(UInt32(values.count))
            guard let histogram = histogram(t), let exponent = Int16(exactly: histogram.minExponent), exponent != Int16.min else {
                minExponents.append(Int16.min)
                if let histogram = histogram(t) { wideHistograms[t] = histogram }
                continue
            }
            minExponents.append(exponent)
            append(histogram.zeros)
            histogram.counts.withUnsafeBufferPointer { counts in
                for count in counts { append(count) }
            }
        }
        starts.append(UInt32(values.count))
    }

    /// Histograms whose exponents do not fit 16 bits (none from IEEE floats), kept whole.
    private var wideHistograms: [Int: Log2Histogram] = [:]

    private mutating func append(_ count: Int) {
        if count >= 0 && count < Int(UInt32.max) {
            values.append(UInt32(count))
        } else {
            wide[values.count] = count
            values.append(UInt32.max)
        }
    }

    private func value(at index: Int) -> Int {
        let value = values[index]
        return value == UInt32.max ? wide[index] ?? Int(value) : Int(value)
    }

    var isEmpty: Bool { minExponents.isEmpty }

    func histogram(at t: Int) -> Log2Histogram? {
        guard minExponents[t] != Int16.min else { return wideHistograms[t] }
        let lower = Int(starts[t]), upper = Int(starts[t + 1])
        return Log2Histogram(
            minExponent: Int(minExponents[t]), counts: ((lower + 1)..<upper).map(value(at:)), zeros: value(at: lower))
    }
}

/// Encoded as a keyed object of the measurements, as a dictionary would be, with the detail kept.
extension MeasurementTable: Codable {
    private struct Key: CodingKey {
        var stringValue: String
        var intValue: Int? { nil }
        init(stringValue: String) { self.stringValue = stringValue }
        init?(intValue: Int) { nil }
    }

    public init(from decoder: Decoder) throws {
        let container = try decoder.container(keyedBy: Key.self)
        var measurements: [TensorMeasurement] = []
        var detail = MeasurementDetail.full
        for key in container.allKeys {
            if key.stringValue == "#detail" {
                detail = try container.decode(MeasurementDetail.self, forKey: key)
                continue
            }
            guard let tensorKey = TensorKey(key.stringValue) else {
                throw DecodingError.dataCorruptedError(forKey: key, in: container, debugDescription: "not a tensor key: \(key.stringValue)")
            }
            var measurement = try container.decode(TensorMeasurement.self, forKey: key)
            measurement.key = tensorKey
            measurements.append(measurement)
        }
        self.init(measurements, detail: detail)
    }

    public func encode(to encoder: Encoder) throws {
        var container = encoder.container(keyedBy: Key.self)
        if detail != .full { try container.encode(detail, forKey: Key(stringValue: "#detail")) }
        for item in values { try container.encode(item, forKey: Key(stringValue: item.key.description)) }
    }
}

/// Per-unit evidence gathered over every save of a run: for each unit, the last
/// save at which it had a nonzero gradient, moved, or was active. Dead units are
/// judged over the later half (``RunMeasurer/windowStart(count:)``); the saves
/// before it date their deaths.
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

    /// The index of the first save of the window at or after `step` (`saves` when there is none).
    public func index(atOrAfter step: Int) -> Int { steps.firstIndex { $0 >= step } ?? steps.count }

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
    /// The input units of a kernel's gradient or second moment: an input unit alive when not all zero.
    case inputs
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
    /// Where most saves' step numbers came from (their attribute, the optimizer's counter, the file
    /// names, epochs, the files' order); nil when no save had one.
    public var stepSource: StepSource? = nil
    /// The run's training log (every logging step's loss, gradient norm and learning rate), when its saves carry one.
    public var trainingLog: [TrainingLogEntry]? = nil

    /// "at step N", or "in this file" when the step is not known.
    public func atStep(_ step: Int) -> String { stepsKnown ? "at step \(step)" : "in this file" }

    public var steps: [Int] { records.map(\.step) }
    public var hasGradients: Bool { records.contains { $0.tensors.layout.descriptors.contains { $0.role == .gradient } } }
    public var hasLoss: Bool { records.contains { $0.loss != nil } }

    /// The series of one tensor across steps (steps where it is absent are skipped).
    public func series(_ key: TensorKey) -> [(step: Int, measurement: TensorMeasurement)] { series(key, log2: true) }

    /// ``series(_:)``; without `log2`, each point's log2 histogram is left empty (``MeasurementTable/measurement(at:log2:)``).
    package func series(_ key: TensorKey, log2: Bool) -> [(step: Int, measurement: TensorMeasurement)] {
        points(of: key) { step, table, position in (step, table.measurement(at: position, log2: log2)) }
    }

    /// The drift of each point of ``series(_:)``, without building the measurements.
    package func driftSeries(_ key: TensorKey) -> [(step: Int, drift: DriftStats?)] {
        points(of: key) { step, table, position in (step, table.drift(at: position)) }
    }

    /// A point made by `point` (from the save's step, its table and the tensor's place in it) at each
    /// save that holds the tensor `key`. Saves of one model share their table's layout, so the key is
    /// looked up once per layout, not once per save. The table is lent to `point` in place: passed
    /// as a value it would be copied for each save (a retain and release of each of its arrays).
    @inline(__always)
    private func points<Point>(of key: TensorKey, _ point: (Int, borrowing MeasurementTable, Int) -> Point) -> [Point] {
        var points: [Point] = []
        points.reserveCapacity(records.count)
        var lastLayout: ObjectIdentifier?
        var position: Int?
        records.withUnsafeBufferPointer { records in
            for i in records.indices {
                let layout = records[i].tensors.layout
                let id = ObjectIdentifier(layout)
                if id != lastLayout {
                    lastLayout = id
                    position = layout.index[key]
                }
                guard let position else { continue }
                points.append(point(records[i].step, records[i].tensors, position))
            }
        }
        return points
    }

    /// The last point of ``series(_:)``, found from the last save on; without `log2`, its log2 histogram is left empty.
    package func lastMeasurement(_ key: TensorKey, log2: Bool = true) -> TensorMeasurement? {
        for record in records.reversed() {
            if let position = record.tensors.layout.index[key] { return record.tensors.measurement(at: position, log2: log2) }
        }
        return nil
    }

    /// The first point of ``series(_:)``; without `log2`, its log2 histogram is left empty.
    package func firstMeasurement(_ key: TensorKey, log2: Bool = true) -> TensorMeasurement? {
        for record in records {
            if let position = record.tensors.layout.index[key] { return record.tensors.measurement(at: position, log2: log2) }
        }
        return nil
    }

    /// Keys of all weight tensors, in depth order.
    public var weightKeys: [TensorKey] { keys(role: .weight) }

    /// Keys of all tensors with `role`, in depth order (layer order, then file order).
    public func keys(role: TensorRole) -> [TensorKey] {
        var keys: [TensorKey] = []
        var first: [TensorKey: TensorDescriptor] = [:]
        var seenLayouts = Set<ObjectIdentifier>()
        let layerIndex = Dictionary(layers.enumerated().map { ($0.element, $0.offset) }, uniquingKeysWith: { a, _ in a })
        for record in records where seenLayouts.insert(ObjectIdentifier(record.tensors.layout)).inserted {
            for descriptor in record.tensors.layout.descriptors where first[descriptor.key] == nil {
                first[descriptor.key] = descriptor
                if descriptor.role == role { keys.append(descriptor.key) }
            }
        }
        let firstRecordOrder = Dictionary(keys.enumerated().map { ($0.element, $0.offset) }, uniquingKeysWith: { a, _ in a })
        return keys.sorted { a, b in
            let layerA = first[a].flatMap { layerIndex[$0.layer] } ?? Int.max
            let layerB = first[b].flatMap { layerIndex[$0.layer] } ?? Int.max
            if layerA != layerB { return layerA < layerB }
            // Within a layer, the kernel before its bias.
            let rankA = first[a]?.shape.count ?? 0
            let rankB = first[b]?.shape.count ?? 0
            if rankA != rankB { return rankA > rankB }
            return (firstRecordOrder[a] ?? 0) < (firstRecordOrder[b] ?? 0)
        }
    }
}
