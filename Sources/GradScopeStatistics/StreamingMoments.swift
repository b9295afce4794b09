import GradScopeKernels

/// Count, mean, centred second moment and raw sum of squares of a set of finite
/// values, mergeable across disjoint subsets.
///
/// Values are stored in a power-of-two scaled form chosen by the owner (see
/// ``StatsScaling``): with scale exponent `s`, the true mean is `mean * 2^s` and
/// the true `m2` and `sumSquares` are the stored values times `2^(2s)`.
///
/// Merging uses the pairwise update of Chan, Golub and LeVeque (1979):
///
///     n     = na + nb
///     delta = mean_b - mean_a
///     mean  = mean_a + delta * nb / n
///     M2    = M2_a + M2_b + delta^2 * na * nb / n
///
/// which keeps the variance accurate when the mean is large compared with the
/// spread (no `E[x^2] - E[x]^2` cancellation).
package struct StreamingMoments: Sendable, Equatable {
    package var count = 0
    package var mean = 0.0
    package var m2 = 0.0
    package var sumSquares = 0.0

    @inline(__always)
    package mutating func merge(count nb: Int, mean meanB: Double, m2 m2B: Double, sumSquares squaresB: Double) {
        guard nb > 0 else { return }
        guard count > 0 else {
            count = nb
            mean = meanB
            m2 = m2B
            sumSquares = squaresB
            return
        }
        let n = count &+ nb
        let delta = meanB - mean
        let weightB = Double(nb) / Double(n)
        mean += delta * weightB
        m2 += m2B + delta * delta * Double(count) * weightB
        sumSquares += squaresB
        count = n
    }

    package mutating func merge(_ other: StreamingMoments) {
        merge(count: other.count, mean: other.mean, m2: other.m2, sumSquares: other.sumSquares)
    }

    /// Multiplies the stored linear quantities by `2^k` and the quadratic ones by `2^(2k)`.
    package mutating func rescale(byPowerOfTwo k: Int) {
        guard k != 0 else { return }
        mean = StatsScaling.multiply(mean, byPowerOfTwo: k)
        m2 = StatsScaling.multiply(m2, byPowerOfTwo: 2 * k)
        sumSquares = StatsScaling.multiply(sumSquares, byPowerOfTwo: 2 * k)
    }
}

/// Power-of-two scaling that keeps sums of squares of `Float64` data inside the
/// `Double` range.
///
/// Squares of `Float32` values always fit in a `Double` (`(2^128)^2 = 2^256`,
/// `(2^-149)^2 = 2^-298`), so `Float32` data is accumulated unscaled (exponent 0).
/// `Float64` data can reach `2^1024`, whose square overflows, or `2^-1074`, whose
/// square underflows. The accumulators therefore hold one scale exponent `s` in
/// `{-600, 0, 600}` chosen from the largest finite magnitude `M` seen so far:
/// `s = 600` if `M >= 2^400`, `s = -600` if `0 < M < 2^-400`, else `0`. The
/// exponent only grows while the accumulator holds nonzero data, so only
/// contributions smaller than about `2^-1000 * M^2` can be lost, which is far
/// below `Double` precision relative to the total.
package enum StatsScaling {
    package static let large = 600
    package static let small = -600

    /// The scale exponent suited to a largest magnitude `m > 0`.
    @inline(__always)
    package static func exponent(forMaxMagnitude m: Double) -> Int {
        if m >= 0x1p400 { return large }
        if m < 0x1p-400 { return small }
        return 0
    }

    /// The scale exponent two partial accumulators are brought to before they
    /// merge: the larger of the two, ignoring a side that holds no nonzero
    /// value yet; `nil` when neither does (nothing to rescale).
    package static func common(_ mine: Int, holdsNonzero mineHolds: Bool, _ theirs: Int, holdsNonzero theirsHold: Bool) -> Int? {
        switch (mineHolds, theirsHold) {
        case (false, false): return nil
        case (false, true): return theirs
        case (true, false): return mine
        case (true, true): return Swift.max(mine, theirs)
        }
    }

    /// `x * 2^k`, exact unless the result leaves the `Double` range.
    @inline(__always)
    package static func multiply(_ x: Double, byPowerOfTwo k: Int) -> Double {
        if k == 0 { return x }
        var value = x
        var remaining = k
        while remaining > 900 {
            value *= 0x1p900
            remaining -= 900
        }
        while remaining < -900 {
            value *= 0x1p-900
            remaining += 900
        }
        return value * Double(sign: .plus, exponent: remaining, significand: 1)
    }

    /// `x * 2^k` for a nonnegative result that must stay finite: values that
    /// exceed the `Double` range saturate at `Double.greatestFiniteMagnitude`.
    @inline(__always)
    package static func unscaleSaturating(_ x: Double, byPowerOfTwo k: Int) -> Double {
        let value = multiply(x, byPowerOfTwo: k)
        if value.isFinite { return value }
        return value.isNaN ? value : (value > 0 ? .greatestFiniteMagnitude : -.greatestFiniteMagnitude)
    }
}
