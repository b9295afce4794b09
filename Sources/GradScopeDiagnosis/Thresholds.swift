import ElementTypes
import Foundation
import GradScopeMeasurement
import GradScopeModel
import GradScopeSources
import GradScopeStatistics

/// Every threshold the detectors use, with the reason for its value.
/// docs/DETECTORS.md explains each at length; any of them can be overridden
/// from a JSON config file (`--config`) or a flag (`--threshold name=value`),
/// by the name its row in ``table`` gives it.
public struct Thresholds: Sendable, Codable, Equatable {
    /// loss-plateau: the loss is "at ln K" when |loss − ln K| ≤ this fraction of ln K.
    /// For K = 2 that is ±0.021: a binary model whose logits all sit at a common
    /// offset b has loss ln 2 + b²/8 + O(b⁴), so ±0.021 means |b| ≲ 0.4, i.e. every
    /// prediction within 0.1 of p = 0.5 — no better than a coin.
    public var plateauRelativeTolerance: Double = 0.03
    /// loss-plateau: at least this many consecutive saved steps at ln K ...
    public var plateauMinSaves: Int = 3
    /// ... spanning at least this fraction of the run's steps. A healthy run starts
    /// at ln K and leaves it within the first few percent of training; a plateau
    /// that holds for a tenth of the run is the seed-000 story.
    public var plateauMinRunFraction: Double = 0.1
    /// ... and is a warning when it spans at least this fraction (a quarter of the run's
    /// compute spent predicting the uniform distribution); shorter plateaus that end are a
    /// slow start, often during learning-rate warm-up, and reported as info.
    public var plateauWarningRunFraction: Double = 0.25

    /// collapsing: a kernel whose norm falls by at least this factor from its peak
    /// (its largest at any earlier save) to its last save (one order of magnitude).
    /// Healthy training, weight decay included, changes a layer's norm by well under 10x.
    public var collapseFactor: Double = 10
    /// collapsing (outputs): an activation whose standard deviation falls by this factor
    /// from its peak to its last save.
    public var activationCollapseFactor: Double = 10

    /// dead-units: a unit is dead when its gradient is exactly zero at every save in
    /// the later half of the run (or its ReLU output is zero for ≥ `deadActivationFraction`
    /// of the probe batch). A layer is reported when at least this fraction of its
    /// units are dead: CS231n notes that "as much as 40%" of a ReLU network can die
    /// with a too-high learning rate, while a healthy network loses a few percent.
    public var deadUnitsWarningFraction: Double = 0.25
    /// dead-units: below the warning fraction but at or above this, an info finding.
    public var deadUnitsInfoFraction: Double = 0.05
    /// dead-units (activations): a unit whose output is zero for at least this fraction
    /// of the probe batch is dead (the issue's 99%).
    public var deadActivationFraction: Double = 0.99

    /// vanishing-gradient: the ratio ‖g‖/‖W‖ of the earliest layers is at most this
    /// fraction of the latest layers' (three orders of magnitude). Each saturated
    /// sigmoid multiplies the backward signal by at most 0.25 (Glorot & Bengio 2010),
    /// so five of them already give 1e-3; healthy networks with sound initialisation
    /// keep layer gradients within one or two orders of magnitude.
    public var vanishingDepthRatio: Double = 1e-3
    /// vanishing-gradient: the depth ratio must hold at this fraction of the saves with gradients.
    public var vanishingPersistence: Double = 0.5

    /// exploding-gradient: the total gradient norm reaches at least this multiple of
    /// its median over the last ten saves before (an order of magnitude) ...
    public var explodingGrowth: Double = 10
    /// ... while some kernel's gradient is at least this large relative to its weights
    /// (‖g‖/‖W‖ ≥ 1: one SGD step at learning rate 1 would move the weights by their own size).
    public var explodingRatio: Double = 1
    /// exploding-gradient: a gradient this many times larger than its weights is
    /// reported on its own, growth or not.
    public var explodingAbsoluteRatio: Double = 100

    /// update-ratio: the per-step ‖ΔW‖/‖W‖ is healthy around 1e-3 (CS231n, "Babysitting
    /// the learning process"). Above this per-step value (a lower bound: the change
    /// between saves divided by the steps between them) updates are unstable: 100x the
    /// healthy rate.
    public var updateRatioHigh: Double = 0.1
    /// update-ratio: below this per-step value (an upper bound: the change between saves
    /// divided by the square root of the steps between them) a tensor is stuck, ...
    public var updateRatioLow: Double = 1e-6
    /// ... when the rest of the model moves at least this many times faster.
    public var updateRatioLowContrast: Double = 100

    /// poor-init: a kernel's standard deviation below this fraction of the smallest
    /// common initialisation for its fan-in (PyTorch's default, 1/√(3·fan_in)) ...
    /// (Below it a kernel also counts as still near zero, where exploding-gradient,
    /// vanishing-gradient and update-ratio do not take ratios to its norm.)
    public var initTooSmallFactor: Double = 0.1
    /// ... or above this multiple of the largest (He: √(2/fan_in)) is reported.
    /// An order of magnitude either way shrinks or grows the signal by 10x per layer.
    public var initTooLargeFactor: Double = 10

    public init() {}

    /// Every threshold, one row each: the name the config file and `--threshold` use, where it is
    /// stored, the values it accepts and one line on what it sets. Decoding, `--threshold name=value`,
    /// validation and the list of names all come from this table: a new threshold is its property above
    /// and its row here (docs/DETECTORS.md, "Adding a threshold").
    package static let table: [ThresholdDescriptor] = [
        .real("plateau_relative_tolerance", \.plateauRelativeTolerance, "loss-plateau: the loss is at ln K within this fraction of ln K"),
        .count("plateau_min_saves", \.plateauMinSaves, atLeast: 1, "loss-plateau: consecutive saves at ln K needed (rounded down, at least 1)"),
        .fraction(
            "plateau_min_run_fraction", \.plateauMinRunFraction,
            "loss-plateau: fraction of the run's steps a plateau must span, unless it lasts to the end"),
        .fraction(
            "plateau_warning_run_fraction", \.plateauWarningRunFraction,
            "loss-plateau: a plateau that ends is a warning from this fraction of the run, else info"),
        .factor("collapse_factor", \.collapseFactor, "collapsing: a kernel's norm falls by this factor from its peak to the last save"),
        .factor(
            "activation_collapse_factor", \.activationCollapseFactor,
            "collapsing: an activation's std falls by this factor from its peak to the last save"),
        .fraction("dead_units_warning_fraction", \.deadUnitsWarningFraction, "dead-units: a warning from this fraction of a layer's units dead"),
        .fraction("dead_units_info_fraction", \.deadUnitsInfoFraction, "dead-units: an info finding from this fraction of a layer's units dead"),
        .fraction(
            "dead_activation_fraction", \.deadActivationFraction, "dead-units: a unit outputting zero for this fraction of the probe batch is dead"),
        .real(
            "vanishing_depth_ratio", \.vanishingDepthRatio, "vanishing-gradient: the early layers' ‖g‖/‖W‖ at most this fraction of the late layers'"),
        .fraction("vanishing_persistence", \.vanishingPersistence, "vanishing-gradient: ... at this fraction of the saves with gradients"),
        .factor(
            "exploding_growth", \.explodingGrowth,
            "exploding-gradient: the total gradient norm reaches this multiple of its median over the ten saves before ..."),
        .real("exploding_ratio", \.explodingRatio, "exploding-gradient: ... while some kernel's ‖g‖/‖W‖ is at least this"),
        .real(
            "exploding_absolute_ratio", \.explodingAbsoluteRatio, "exploding-gradient: a kernel's ‖g‖/‖W‖ at least this is reported, growth or not"),
        .real("update_ratio_high", \.updateRatioHigh, "update-ratio: a per-step ‖ΔW‖/‖W‖ (lower bound) above this is unstable"),
        .real("update_ratio_low", \.updateRatioLow, "update-ratio: a per-step ‖ΔW‖/‖W‖ (upper bound) below this at every save is stuck ..."),
        .factor(
            "update_ratio_low_contrast", \.updateRatioLowContrast, "update-ratio: ... when the model's median is at least this many times higher"),
        .real(
            "init_too_small_factor", \.initTooSmallFactor,
            "poor-init: a kernel's std below this fraction of 1/√(3·fan_in) is too small (and a kernel below it counts as near zero)"),
        .real("init_too_large_factor", \.initTooLargeFactor, "poor-init: a kernel's std above this multiple of √(2/fan_in) is too large"),
    ]

    /// Every threshold's name, as used by `--threshold name=value` and the config file.
    public static let names: [String] = table.map(\.name)

    /// The row of the threshold called `name`.
    package static func descriptor(_ name: String) -> ThresholdDescriptor? { table.first { $0.name == name } }

    /// Reads thresholds from a JSON object; keys not given keep their defaults.
    public static func load(json data: Data) throws -> Thresholds {
        let object = try JSONSerialization.jsonObject(with: data)
        guard let dictionary = object as? [String: Any] else {
            throw ThresholdError.invalid("the config file must hold a JSON object")
        }
        var thresholds = Thresholds()
        let source = (dictionary["thresholds"] as? [String: Any]) ?? dictionary
        for (key, value) in source {
            guard let number = value as? Double ?? (value as? Int).map(Double.init) else {
                throw ThresholdError.invalid("\(key): expected a number")
            }
            try thresholds.set(key, number)
        }
        return thresholds
    }

    /// Sets one threshold by its snake_case name.
    public mutating func set(_ name: String, _ value: Double) throws {
        guard let descriptor = Self.descriptor(name) else {
            throw ThresholdError.invalid("unknown threshold \(name); known: \(Thresholds.names.joined(separator: ", "))")
        }
        try descriptor.set(value, in: &self)
    }

    /// Sets one threshold from `name=value`, as `--threshold` gives it.
    public mutating func set(assignment: String) throws {
        let parts = assignment.split(separator: "=", maxSplits: 1).map(String.init)
        guard parts.count == 2, let value = Double(parts[1]) else {
            throw ThresholdError.invalid("expected name=number, got \(assignment)")
        }
        try set(parts[0], value)
    }

    /// The value of the threshold called `name`, as a number.
    package func value(_ name: String) -> Double? { Self.descriptor(name)?.value(in: self) }

    /// Every threshold, keyed by its name; a count is written as an integer.
    public func encode(to encoder: Encoder) throws {
        var container = encoder.container(keyedBy: ThresholdKey.self)
        for descriptor in Self.table {
            switch descriptor.storage {
            case .real(let path): try container.encode(self[keyPath: path], forKey: ThresholdKey(descriptor.name))
            case .count(let path, _): try container.encode(self[keyPath: path], forKey: ThresholdKey(descriptor.name))
            }
        }
    }

    /// Every threshold by its name, each checked as ``set(_:_:)`` checks it.
    public init(from decoder: Decoder) throws {
        let container = try decoder.container(keyedBy: ThresholdKey.self)
        self.init()
        for descriptor in Self.table {
            let key = ThresholdKey(descriptor.name)
            switch descriptor.storage {
            case .real: try descriptor.set(container.decode(Double.self, forKey: key), in: &self)
            case .count: try descriptor.set(count: container.decode(Int.self, forKey: key), in: &self)
            }
        }
    }
}

/// A threshold's name as a JSON key.
package struct ThresholdKey: CodingKey {
    package let stringValue: String
    package var intValue: Int? { nil }

    package init(_ name: String) { stringValue = name }
    package init?(stringValue: String) { self.stringValue = stringValue }
    package init?(intValue: Int) { nil }
}

/// One threshold: its name, where it is stored, the values it accepts and what it sets.
package struct ThresholdDescriptor: Sendable {
    /// Where the value lives: a real number, or a count (stored rounded down, and at least its floor).
    package enum Storage: Sendable {
        case real(WritableKeyPath<Thresholds, Double> & Sendable)
        case count(WritableKeyPath<Thresholds, Int> & Sendable, atLeast: Int)
    }

    /// The name in the config file and in `--threshold name=value`.
    package let name: String
    package let storage: Storage
    /// The values accepted; anything else, and anything not finite, is a ``ThresholdError``.
    package let range: ClosedRange<Double>
    /// One line on what it sets.
    package let summary: String

    /// A real-valued threshold: any finite, non-negative number.
    package static func real(_ name: String, _ path: WritableKeyPath<Thresholds, Double> & Sendable, _ summary: String) -> ThresholdDescriptor {
        ThresholdDescriptor(name: name, storage: .real(path), range: 0...Double.greatestFiniteMagnitude, summary: summary)
    }

    /// A fraction: any number from 0 to 1.
    package static func fraction(_ name: String, _ path: WritableKeyPath<Thresholds, Double> & Sendable, _ summary: String) -> ThresholdDescriptor {
        ThresholdDescriptor(name: name, storage: .real(path), range: 0...1, summary: summary)
    }

    /// A factor of growth or fall: any finite number from 1 (below it, a fall would be a rise).
    package static func factor(_ name: String, _ path: WritableKeyPath<Thresholds, Double> & Sendable, _ summary: String) -> ThresholdDescriptor {
        ThresholdDescriptor(name: name, storage: .real(path), range: 1...Double.greatestFiniteMagnitude, summary: summary)
    }

    /// A count: any non-negative number an `Int` holds, rounded down, then raised to `atLeast`.
    package static func count(
        _ name: String, _ path: WritableKeyPath<Thresholds, Int> & Sendable, atLeast floor: Int,
        _ summary: String
    ) -> ThresholdDescriptor {
        // The largest Double below 2^63: every value up to it converts to an Int.
        ThresholdDescriptor(name: name, storage: .count(path, atLeast: floor), range: 0...Double(Int.max).nextDown, summary: summary)
    }

    /// Whether it is stored as a whole number.
    package var isCount: Bool {
        if case .count = storage { return true }
        return false
    }

    /// Its value in `thresholds`.
    package func value(in thresholds: Thresholds) -> Double {
        switch storage {
        case .real(let path): return thresholds[keyPath: path]
        case .count(let path, _): return Double(thresholds[keyPath: path])
        }
    }

    /// Checks `value` against the range and stores it in `thresholds`.
    package func set(_ value: Double, in thresholds: inout Thresholds) throws {
        guard value.isFinite, range.contains(value) else {
            throw ThresholdError.invalid("\(name): must be \(rangeText), not \(Self.plain(value))")
        }
        switch storage {
        case .real(let path): thresholds[keyPath: path] = value
        case .count(let path, let floor): thresholds[keyPath: path] = max(floor, Int(value))
        }
    }

    /// Checks a count read as an integer and stores it in `thresholds`.
    package func set(count value: Int, in thresholds: inout Thresholds) throws {
        guard case .count(let path, let floor) = storage else { return try set(Double(value), in: &thresholds) }
        guard Double(value) >= range.lowerBound else { throw ThresholdError.invalid("\(name): must be \(rangeText), not \(value)") }
        thresholds[keyPath: path] = max(floor, value)
    }

    /// A value as given: 5 rather than 5.0, 1e+19 as Swift writes it.
    static func plain(_ value: Double) -> String {
        value.isFinite && value == value.rounded() && abs(value) < 1e15 ? String(Int(value)) : "\(value)"
    }

    /// The accepted values in words.
    package var rangeText: String {
        if isCount && range == 0...Double(Int.max).nextDown { return "a finite, non-negative number below 2^63" }
        if range.lowerBound == 0 && range.upperBound == .greatestFiniteMagnitude { return "a finite, non-negative number" }
        if range.upperBound == .greatestFiniteMagnitude { return "a finite number of at least \(formatSignificant(range.lowerBound))" }
        return "a finite number from \(formatSignificant(range.lowerBound)) to \(formatSignificant(range.upperBound))"
    }
}

/// A threshold that does not exist or a value it does not accept.
public enum ThresholdError: Error, CustomStringConvertible {
    case invalid(String)
    public var description: String {
        switch self {
        case .invalid(let what): return "invalid threshold: \(what)"
        }
    }
}
