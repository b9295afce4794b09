import GradScopeKernels

/// How one tensor changed between two checkpoints, produced by
/// ``DriftAccumulator/finish()`` from an earlier version `a` and a later
/// version `b` of the same tensor.
///
/// An element pair is *finite* when both `a_i` and `b_i` are finite; every sum
/// runs over the finite pairs only (the others are counted in ``nonFinite``).
/// Accumulation is in `Float64`, with `Δ_i = b_i - a_i` computed in `Float64`
/// (so it never overflows for `Float32` inputs):
///
/// - ``deltaNorm`` = `‖b − a‖₂ = sqrt(Σ Δ_i^2)`
/// - ``normA`` = `‖a‖₂`, ``normB`` = `‖b‖₂`
/// - ``relativeChange`` = `‖b − a‖₂ / ‖a‖₂` (`nil` when `‖a‖₂ == 0`)
/// - ``cosineSimilarity`` = `(a · b) / (‖a‖₂ ‖b‖₂)`, clamped to `[-1, 1]`
///   (`nil` when either norm is 0)
/// - ``maxAbsDelta`` = `max |Δ_i|`
///
/// The norms are `nil` when there is no finite pair. Counting fields cover all
/// pairs:
///
/// - ``changed``: pairs whose bit patterns differ, except that two NaNs (of any
///   payload) count as unchanged. `+0` versus `-0` counts as changed.
/// - ``signFlips``: finite pairs with both values nonzero and of opposite sign.
/// - ``nonFinite``: pairs where `a_i` or `b_i` is NaN or infinite.
///
/// Tolerances: norms and the dot product are accurate to a few `Double` ulps
/// times `log2(n)`; counts are exact. For identical inputs `relativeChange`
/// and ``deltaNorm`` are exactly 0 and ``cosineSimilarity`` is 1 within
/// `1e-15`. For `Float64` inputs whose norms exceed the `Double` range, the
/// norms and ``maxAbsDelta`` saturate at `Double.greatestFiniteMagnitude`, so
/// every value stays finite and JSON-encodable.
public struct DriftStats: Sendable, Codable, Equatable {
    /// Number of element pairs.
    public var count: Int
    /// Number of pairs where both values are finite.
    public var finiteCount: Int
    /// `‖b − a‖₂` over the finite pairs.
    public var deltaNorm: Double?
    /// `‖a‖₂` over the finite pairs.
    public var normA: Double?
    /// `‖b‖₂` over the finite pairs.
    public var normB: Double?
    /// `‖b − a‖₂ / ‖a‖₂`; `nil` when `‖a‖₂` is 0 or there is no finite pair.
    public var relativeChange: Double?
    /// `max |b_i − a_i|` over the finite pairs.
    public var maxAbsDelta: Double?
    /// `(a · b) / (‖a‖₂ ‖b‖₂)`; `nil` when either norm is 0.
    public var cosineSimilarity: Double?
    /// Number of pairs whose bit patterns differ (two NaNs count as equal).
    public var changed: Int
    /// `changed / count`; `nil` for an empty tensor.
    public var changedFraction: Double?
    /// Number of finite, both-nonzero pairs whose signs differ.
    public var signFlips: Int
    /// Number of pairs with a NaN or infinite value on either side.
    public var nonFinite: Int
    /// Per unit `‖Δ_u‖₂ / ‖a_u‖₂` (an entry is `nil` when `‖a_u‖₂ == 0`);
    /// `nil` without a unit layout.
    public var unitRelativeChange: [Double?]?
    /// Per unit number of changed pairs; `nil` without a unit layout.
    public var unitChanged: [Int]?

    public init(
        count: Int, finiteCount: Int,
        deltaNorm: Double?, normA: Double?, normB: Double?, relativeChange: Double?,
        maxAbsDelta: Double?, cosineSimilarity: Double?,
        changed: Int, changedFraction: Double?, signFlips: Int, nonFinite: Int,
        unitRelativeChange: [Double?]?, unitChanged: [Int]?
    ) {
        self.count = count
        self.finiteCount = finiteCount
        self.deltaNorm = deltaNorm
        self.normA = normA
        self.normB = normB
        self.relativeChange = relativeChange
        self.maxAbsDelta = maxAbsDelta
        self.cosineSimilarity = cosineSimilarity
        self.changed = changed
        self.changedFraction = changedFraction
        self.signFlips = signFlips
        self.nonFinite = nonFinite
        self.unitRelativeChange = unitRelativeChange
        self.unitChanged = unitChanged
    }

    /// The per-step update ratio `‖ΔW‖/‖W‖` implied by this drift when the two
    /// checkpoints are `steps` optimizer steps apart; see
    /// ``relativeChangePerStep(relativeChange:steps:)``.
    public func relativeChangePerStep(steps: Int) -> Double? {
        guard let relativeChange else { return nil }
        return Self.relativeChangePerStep(relativeChange: relativeChange, steps: steps)
    }

    /// The per-step update ratio from the relative change over `steps` steps:
    /// `relativeChange / steps`.
    ///
    /// This is the first-order estimate for updates that keep a consistent
    /// direction, where `k` steps of relative size `r` add up to `k * r`. If the
    /// updates were independent random-walk steps, the net change would grow like
    /// `sqrt(k) * r` and the estimate would be `relativeChange / sqrt(steps)`.
    /// Dividing by `steps` is the choice made here: by the triangle inequality
    /// it is a lower bound on the average per-step ratio (as long as `‖W‖`
    /// changes little over the interval), so a ratio reported as too large is
    /// too large for certain, while for noisy updates the true per-step ratio
    /// can be up to `sqrt(steps)` times the reported one.
    ///
    /// Returns `nil` when `steps <= 0` or `relativeChange` is not finite.
    public static func relativeChangePerStep(relativeChange: Double, steps: Int) -> Double? {
        guard steps > 0, relativeChange.isFinite else { return nil }
        return relativeChange / Double(steps)
    }

    package enum CodingKeys: String, CodingKey {
        case count
        case finiteCount = "finite_count"
        case deltaNorm = "delta_norm"
        case normA = "norm_a"
        case normB = "norm_b"
        case relativeChange = "relative_change"
        case maxAbsDelta = "max_abs_delta"
        case cosineSimilarity = "cosine_similarity"
        case changed
        case changedFraction = "changed_fraction"
        case signFlips = "sign_flips"
        case nonFinite = "non_finite"
        case unitRelativeChange = "unit_relative_change"
        case unitChanged = "unit_changed"
    }
}
