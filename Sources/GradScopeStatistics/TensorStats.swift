import GradScopeKernels

/// Summary statistics of one tensor, produced by ``StatsAccumulator/finish()``.
///
/// Counting fields cover every element. All other fields are computed over the
/// *finite* elements only (NaN and ±infinity are counted in ``nan``,
/// ``posInf`` and ``negInf`` and otherwise ignored); they are `nil` when the
/// tensor has no finite element (including the empty tensor).
///
/// Accumulation is in `Float64`. With `n` finite elements `x_i`:
///
/// - ``mean`` = `(1/n) Σ x_i`
/// - ``std`` = `sqrt((1/n) Σ (x_i - mean)^2)` — the *population* standard
///   deviation (0 for a single element and for a constant tensor).
/// - ``l2Norm`` = `sqrt(Σ x_i^2)` over the flattened tensor.
/// - ``maxAbs`` = `max |x_i|`.
///
/// Tolerances: `mean`, `std` and `l2Norm` are accurate to a few `Double` ulps
/// times `log2(n)`; the variance is computed from per-chunk centred moments
/// merged with Chan's update, so a large mean with a tiny spread (say
/// `1e6 + N(0, 1e-3)`) keeps about 9 correct digits of `std` or better.
/// `min`, `max`, `maxAbs` and all counts are exact.
///
/// Quantiles ``p1`` … ``p99`` use the nearest-rank definition: `pq` is the value
/// of rank `ceil(q * n / 100)` (at least 1) in the sorted finite values. They are
/// answered from a log-bucketed sketch and are within 0.4% relative error of the
/// exact value for `|value| >= 2^-126` (normal `Float32` range), clamped to
/// `[min, max]`; zeros are exact. Subnormal magnitudes are bucketed more
/// coarsely (within a factor `sqrt(2)` below `2^-133`), so near zero the error
/// is absolute, below `1.2e-38`. `Float64` inputs are bucketed by their value
/// rounded to `Float32`: magnitudes above `Float.greatestFiniteMagnitude` read as
/// about `3.4e38` and nonzero magnitudes below `2^-149` as `2^-149` in the
/// quantiles and the linear histogram (all other fields use the `Float64` value).
///
/// Every `Double` in the structure is finite, so it encodes with a default
/// `JSONEncoder`. (For `Float64` inputs whose norm exceeds the `Double` range,
/// ``l2Norm`` and ``unitNorms`` saturate at `Double.greatestFiniteMagnitude`.)
public struct TensorStats: Sendable, Codable, Equatable {
    /// Number of elements, including non-finite ones.
    public var count: Int
    /// Number of finite elements.
    public var finiteCount: Int
    /// Mean of the finite elements.
    public var mean: Double?
    /// Population standard deviation of the finite elements.
    public var std: Double?
    /// Smallest finite element.
    public var min: Double?
    /// Largest finite element.
    public var max: Double?
    /// Largest magnitude among the finite elements.
    public var maxAbs: Double?
    /// Euclidean norm of the finite elements.
    public var l2Norm: Double?
    /// Number of elements equal to zero (`+0` and `-0`).
    public var zeros: Int
    /// Number of NaN elements.
    public var nan: Int
    /// Number of `+infinity` elements.
    public var posInf: Int
    /// Number of `-infinity` elements.
    public var negInf: Int
    /// Nearest-rank 1st percentile of the finite elements.
    public var p1: Double?
    /// Nearest-rank 5th percentile of the finite elements.
    public var p5: Double?
    /// Nearest-rank median of the finite elements.
    public var p50: Double?
    /// Nearest-rank 95th percentile of the finite elements.
    public var p95: Double?
    /// Nearest-rank 99th percentile of the finite elements.
    public var p99: Double?
    /// Linear histogram of the finite elements over `[min, max]`.
    public var histogram: LinearHistogram?
    /// Counts of `floor(log2 |x|)` for the finite nonzero elements.
    public var log2Histogram: Log2Histogram
    /// Euclidean norm of each unit's finite elements; `nil` without a unit layout.
    public var unitNorms: [Double]?
    /// Number of zero elements in each unit; `nil` without a unit layout.
    public var unitZeroCount: [Int]?
    /// Number of zero elements in each *input* unit of a kernel (a column of a PyTorch [out, in]
    /// matrix, an input channel of a convolution, a row of a Keras [in, out] kernel); `nil` unless
    /// asked for (``InputUnitMap``).
    public var inputZeroCount: [Int]? = nil

    public init(
        count: Int, finiteCount: Int,
        mean: Double?, std: Double?, min: Double?, max: Double?, maxAbs: Double?, l2Norm: Double?,
        zeros: Int, nan: Int, posInf: Int, negInf: Int,
        p1: Double?, p5: Double?, p50: Double?, p95: Double?, p99: Double?,
        histogram: LinearHistogram?, log2Histogram: Log2Histogram,
        unitNorms: [Double]?, unitZeroCount: [Int]?
    ) {
        self.count = count
        self.finiteCount = finiteCount
        self.mean = mean
        self.std = std
        self.min = min
        self.max = max
        self.maxAbs = maxAbs
        self.l2Norm = l2Norm
        self.zeros = zeros
        self.nan = nan
        self.posInf = posInf
        self.negInf = negInf
        self.p1 = p1
        self.p5 = p5
        self.p50 = p50
        self.p95 = p95
        self.p99 = p99
        self.histogram = histogram
        self.log2Histogram = log2Histogram
        self.unitNorms = unitNorms
        self.unitZeroCount = unitZeroCount
    }

    /// Number of NaN and infinite elements.
    public var nonFiniteCount: Int { nan + posInf + negInf }

    /// `zeros / count`, or `nil` for an empty tensor.
    public var zeroFraction: Double? {
        count > 0 ? Double(zeros) / Double(count) : nil
    }

    package enum CodingKeys: String, CodingKey {
        case count
        case finiteCount = "finite_count"
        case mean
        case std
        case min
        case max
        case maxAbs = "max_abs"
        case l2Norm = "l2_norm"
        case zeros
        case nan
        case posInf = "pos_inf"
        case negInf = "neg_inf"
        case p1
        case p5
        case p50
        case p95
        case p99
        case histogram
        case log2Histogram = "log2_histogram"
        case unitNorms = "unit_norms"
        case unitZeroCount = "unit_zero_count"
        case inputZeroCount = "input_zero_count"
    }
}

/// A histogram with equal-width bins over `[lower, upper]`.
///
/// Bin `i` covers `[edge(i), edge(i + 1))`, the last bin also includes `upper`,
/// with `edge(i) = lower + (upper - lower) * i / binCount`. When
/// `lower == upper` (a constant tensor) there is a single bin.
///
/// In ``TensorStats`` the edges are exact (`lower` and `upper` are the exact
/// finite min and max) and the counts are exact up to values lying within one
/// sketch bucket (0.8% relative, see ``TensorStats``) of an inner bin edge,
/// which may be counted in the neighbouring bin. The counts always sum to the
/// number of finite elements.
public struct LinearHistogram: Sendable, Codable, Equatable {
    /// Lower edge of the first bin (the finite minimum).
    public var lower: Double
    /// Upper edge of the last bin (the finite maximum).
    public var upper: Double
    /// Count per bin.
    public var counts: [Int]

    public init(lower: Double, upper: Double, counts: [Int]) {
        self.lower = lower
        self.upper = upper
        self.counts = counts
    }

    /// Number of bins.
    public var binCount: Int { counts.count }

    /// The lower edge of bin `i` (`i == binCount` gives `upper`).
    public func edge(_ i: Int) -> Double {
        guard !counts.isEmpty else { return lower }
        if i <= 0 { return lower }
        if i >= counts.count { return upper }
        let t = Double(i) / Double(counts.count)
        return lower * (1 - t) + upper * t
    }

    /// The bin that holds `value` (values outside `[lower, upper]` are clamped).
    public func binIndex(for value: Double) -> Int {
        Self.binIndex(for: value, lower: lower, upper: upper, binCount: counts.count)
    }

    package static func binIndex(for value: Double, lower: Double, upper: Double, binCount: Int) -> Int {
        guard binCount > 1, upper > lower, !value.isNaN else { return 0 }
        // Halved operands keep `upper - lower` finite for any finite edges.
        let t = (value / 2 - lower / 2) / (upper / 2 - lower / 2)
        if !(t > 0) { return 0 }
        if t >= 1 { return binCount - 1 }
        return Swift.min(binCount - 1, Int(t * Double(binCount)))
    }
}

/// Counts of `floor(log2 |x|)` — the binary order of magnitude — of the finite
/// nonzero values, plus the number of zeros.
///
/// `counts[i]` is the number of values with `floor(log2 |x|) == minExponent + i`;
/// the range covers the smallest through the largest exponent present (empty
/// when there is no finite nonzero value). The exponents are exact: they are
/// read from the floating-point exponent field, and subnormals count with their
/// true `floor(log2 |x|)` (down to -149 for `Float32`, -1074 for `Float64`).
public struct Log2Histogram: Sendable, Codable, Equatable {
    /// The exponent counted by `counts[0]`.
    public var minExponent: Int
    /// Count per exponent, from `minExponent` upwards.
    public var counts: [Int]
    /// Number of zeros (`+0` and `-0`), which have no exponent.
    public var zeros: Int

    public init(minExponent: Int, counts: [Int], zeros: Int) {
        self.minExponent = minExponent
        self.counts = counts
        self.zeros = zeros
    }

    /// The largest exponent present, or `nil` when there is none.
    public var maxExponent: Int? { counts.isEmpty ? nil : minExponent + counts.count - 1 }

    /// The number of values with `floor(log2 |x|) == exponent`.
    public func count(forExponent exponent: Int) -> Int {
        let i = exponent - minExponent
        return (i >= 0 && i < counts.count) ? counts[i] : 0
    }

    package enum CodingKeys: String, CodingKey {
        case minExponent = "min_exponent"
        case counts
        case zeros
    }
}
