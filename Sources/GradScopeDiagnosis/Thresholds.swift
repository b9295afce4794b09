import Foundation
import ElementTypes
import GradScopeModel
import GradScopeSources
import GradScopeStatistics
import GradScopeMeasurement

/// Every threshold the detectors use, with the reason for its value.
/// docs/DETECTORS.md explains each at length; any of them can be overridden
/// from a JSON config file (`--config`) or a flag (`--threshold name=value`).
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

    /// collapsing: a weight tensor whose norm falls by at least this factor from its
    /// first to its last save (one order of magnitude). Healthy training, weight
    /// decay included, changes a layer's norm by well under 10x.
    public var collapseFactor: Double = 10
    /// collapsing (outputs): an activation whose standard deviation falls by this factor.
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

    /// exploding-gradient: the total gradient norm grows by at least this factor
    /// between consecutive saves (an order of magnitude) ...
    public var explodingGrowth: Double = 10
    /// ... while some tensor's gradient is at least this large relative to its weights
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
    public var initTooSmallFactor: Double = 0.1
    /// ... or above this multiple of the largest (He: √(2/fan_in)) is reported.
    /// An order of magnitude either way shrinks or grows the signal by 10x per layer.
    public var initTooLargeFactor: Double = 10

    public init() {}

    /// Every threshold's name, as used by `--threshold name=value`.
    public static let names: [String] = [
        "plateau_relative_tolerance", "plateau_min_saves", "plateau_min_run_fraction", "plateau_warning_run_fraction", "collapse_factor",
        "activation_collapse_factor", "dead_units_warning_fraction", "dead_units_info_fraction",
        "dead_activation_fraction", "vanishing_depth_ratio", "vanishing_persistence", "exploding_growth",
        "exploding_ratio", "exploding_absolute_ratio", "update_ratio_high", "update_ratio_low",
        "update_ratio_low_contrast", "init_too_small_factor", "init_too_large_factor",
    ]

    package enum CodingKeys: String, CodingKey {
        case plateauRelativeTolerance = "plateau_relative_tolerance"
        case plateauMinSaves = "plateau_min_saves"
        case plateauMinRunFraction = "plateau_min_run_fraction"
        case plateauWarningRunFraction = "plateau_warning_run_fraction"
        case collapseFactor = "collapse_factor"
        case activationCollapseFactor = "activation_collapse_factor"
        case deadUnitsWarningFraction = "dead_units_warning_fraction"
        case deadUnitsInfoFraction = "dead_units_info_fraction"
        case deadActivationFraction = "dead_activation_fraction"
        case vanishingDepthRatio = "vanishing_depth_ratio"
        case vanishingPersistence = "vanishing_persistence"
        case explodingGrowth = "exploding_growth"
        case explodingRatio = "exploding_ratio"
        case explodingAbsoluteRatio = "exploding_absolute_ratio"
        case updateRatioHigh = "update_ratio_high"
        case updateRatioLow = "update_ratio_low"
        case updateRatioLowContrast = "update_ratio_low_contrast"
        case initTooSmallFactor = "init_too_small_factor"
        case initTooLargeFactor = "init_too_large_factor"
    }

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
        guard value.isFinite, value >= 0 else { throw ThresholdError.invalid("\(name): must be a finite, non-negative number") }
        switch name {
        case "plateau_relative_tolerance": plateauRelativeTolerance = value
        case "plateau_min_saves": plateauMinSaves = max(1, Int(value))
        case "plateau_min_run_fraction": plateauMinRunFraction = value
        case "plateau_warning_run_fraction": plateauWarningRunFraction = value
        case "collapse_factor": collapseFactor = value
        case "activation_collapse_factor": activationCollapseFactor = value
        case "dead_units_warning_fraction": deadUnitsWarningFraction = value
        case "dead_units_info_fraction": deadUnitsInfoFraction = value
        case "dead_activation_fraction": deadActivationFraction = value
        case "vanishing_depth_ratio": vanishingDepthRatio = value
        case "vanishing_persistence": vanishingPersistence = value
        case "exploding_growth": explodingGrowth = value
        case "exploding_ratio": explodingRatio = value
        case "exploding_absolute_ratio": explodingAbsoluteRatio = value
        case "update_ratio_high": updateRatioHigh = value
        case "update_ratio_low": updateRatioLow = value
        case "update_ratio_low_contrast": updateRatioLowContrast = value
        case "init_too_small_factor": initTooSmallFactor = value
        case "init_too_large_factor": initTooLargeFactor = value
        default: throw ThresholdError.invalid("unknown threshold \(name); known: \(Thresholds.names.joined(separator: ", "))")
        }
    }
}

public enum ThresholdError: Error, CustomStringConvertible {
    case invalid(String)
    public var description: String {
        switch self {
        case .invalid(let what): return "invalid threshold: \(what)"
        }
    }
}
