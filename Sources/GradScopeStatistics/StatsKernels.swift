import GradScopeKernels

/// Chunk kernels behind ``StatsAccumulator``. A chunk holds at most
/// ``StatsAccumulator/chunkSize`` elements, small enough to stay in the L1
/// cache between the passes made over it.
package enum StatsKernels {
    /// Moments and extremes of a chunk (finite elements only).
    package struct ChunkSummary {
        package var finite = 0
        package var zeros = 0
        package var nan = 0
        package var posInf = 0
        package var negInf = 0
        package var min = Double.infinity
        package var max = -Double.infinity
        package var mean = 0.0
        package var m2 = 0.0
        package var sumSquares = 0.0
        /// The bits of the smallest nonzero finite `|x|` as `Float32` (`UInt32.max` when there is none).
        package var minMagnitudeBits = UInt32.max

        package init() {}

        /// The summary of `n` finite values the kernel gave as `out`.
        @inline(__always)
        init(_ n: Int, _ out: gs_float_summary) {
            finite = n
            zeros = Int(out.zeros)
            min = out.min
            max = out.max
            mean = out.mean
            m2 = out.m2
            sumSquares = out.sumSquares
            minMagnitudeBits = out.minMagnitudeBits
        }
    }

    /// Fast path for a chunk of `Float32` values that are all finite; returns
    /// `nil` when the chunk holds a NaN or an infinity, in which case
    /// ``summarizeFloatsChecked(_:count:)`` must be used instead.
    ///
    /// One SIMD pass: min, max and zero count in `Float32`; in `Float64`, with
    /// the shift `c = center` (the running mean of the earlier chunks; when
    /// `nil`, the median of the chunk's first, middle and last values), `S1 = Σ (x - c)` and `S2 = Σ (x - c)^2`,
    /// giving `mean = c + S1 / n`, `M2 = S2 - S1^2 / n` and
    /// `Q = Σ x^2 = S2 + 2 c S1 + n c^2`. The shift removes any large common
    /// offset; the cancellation left is about `ε (c - mean)^2 / variance`
    /// relative, far below a `Float32` ulp unless `c` lies millions of standard
    /// deviations from the chunk's mean.
    /// With `counts` (the sketch's dense table), each value's sketch key is
    /// counted in the same pass, finite or not.
    /// The kernel is `gs_summarize_finite_f32` (C, with versions for AVX2 and
    /// AVX-512 CPUs).
    @inline(__always)
    package static func summarizeFiniteFloats(
        _ p: UnsafePointer<Float>, count n: Int, center: Double? = nil,
        counts: UnsafeMutablePointer<UInt32>? = nil
    ) -> ChunkSummary? {
        var out = gs_float_summary()
        guard gs_summarize_finite_f32(p, Int64(n), center ?? .nan, counts, &out) else { return nil }
        return ChunkSummary(n, out)
    }

    /// ``summarizeFiniteFloats(_:count:center:counts:)`` of `p` and, with `before`, in the same
    /// pass, the drift's norms-only sums of the pairs (`before[i]`, `p[i]`), as
    /// ``DriftKernels/sumFiniteFloats(_:_:count:normsOnly:)`` gives them (`nil` when a pair is not
    /// finite, or without `before`): each result is the one its own call returns, to the bit. The
    /// pass loads and widens `p` once for both, and the drift's vector steps run while the sketch's
    /// key counts hold the store unit (`gs_summarize_drift_finite_f32`).
    @inline(__always)
    package static func summarizeFiniteFloats(
        _ p: UnsafePointer<Float>, count n: Int, center: Double?, counts: UnsafeMutablePointer<UInt32>?,
        before: UnsafePointer<Float>?
    ) -> (summary: ChunkSummary?, drift: DriftKernels.ChunkSums?) {
        guard let before else { return (summarizeFiniteFloats(p, count: n, center: center, counts: counts), nil) }
        var out = gs_float_summary()
        var sums = gs_drift_sums()
        var driftFinite = false
        let finite = gs_summarize_drift_finite_f32(p, before, Int64(n), center ?? .nan, counts, &out, &sums, &driftFinite)
        return (finite ? ChunkSummary(n, out) : nil, driftFinite ? DriftKernels.ChunkSums(n, sums) : nil)
    }

    /// Scalar path for a chunk of `Float32` values that may hold NaN or infinities.
    package static func summarizeFloatsChecked(_ p: UnsafePointer<Float>, count n: Int) -> ChunkSummary {
        var summary = ChunkSummary()
        for i in 0..<n {
            let x = p[i]
            if x.isFinite {
                summary.finite &+= 1
                let value = Double(x)
                if value < summary.min { summary.min = value }
                if value > summary.max { summary.max = value }
                if x == 0 { summary.zeros &+= 1 }
            } else if x.isNaN {
                summary.nan &+= 1
            } else if x > 0 {
                summary.posInf &+= 1
            } else {
                summary.negInf &+= 1
            }
        }
        scaledMoments(p, count: n, factor: 1, into: &summary)
        return summary
    }

    /// Moments of the finite values of a chunk, each converted to `Float64` and
    /// multiplied by `factor` (a power of two), by the two-pass centred sums.
    /// `summary.finite` must already count the finite values; counts, min and
    /// max are the caller's.
    package static func scaledMoments<T: BinaryFloatingPoint>(
        _ p: UnsafePointer<T>, count n: Int, factor: Double,
        into summary: inout ChunkSummary
    ) {
        guard summary.finite > 0 else { return }
        var sum = 0.0
        for i in 0..<n where p[i].isFinite { sum += Double(p[i]) * factor }
        let count = Double(summary.finite)
        let shift = sum / count
        var sum1 = 0.0
        var sum2 = 0.0
        var squares = 0.0
        for i in 0..<n where p[i].isFinite {
            let value = Double(p[i]) * factor
            let d = value - shift
            sum1 += d
            sum2 += d * d
            squares += value * value
        }
        summary.mean = shift + sum1 / count
        summary.m2 = Swift.max(0, sum2 - sum1 * sum1 / count)
        summary.sumSquares = squares
    }

    // MARK: Per-unit sums

    /// `Σ x^2` (in `Float64`) and the zero count of `n` finite `Float32` values
    /// (the kernel `gs_squares_zeros_f32`).
    @inline(__always)
    package static func squaresAndZeros(_ p: UnsafePointer<Float>, count n: Int) -> (Double, Int) {
        var squares = 0.0
        var zeros: Int64 = 0
        gs_squares_zeros_f32(p, Int64(n), &squares, &zeros)
        return (squares, Int(zeros))
    }

    /// Adds the per-unit `Σ x^2` and zero counts of a `Float32` chunk. Non-finite
    /// values are skipped unless `allFinite` promises there are none.
    package static func accumulateUnits(
        _ p: UnsafePointer<Float>, count n: Int, offset: Int, map: StatsUnitMap, allFinite: Bool,
        squares: UnsafeMutablePointer<Double>, zeros: UnsafeMutablePointer<Int>
    ) {
        switch map.kind {
        case .none:
            return
        case .leading:
            map.forEachRun(offset: offset, count: n) { unit, start, length in
                if allFinite {
                    let (q, z) = squaresAndZeros(p + start, count: length)
                    squares[unit] += q
                    zeros[unit] &+= z
                } else {
                    var q = 0.0
                    var z = 0
                    for j in start..<start &+ length where p[j].isFinite {
                        let x = Double(p[j])
                        q += x * x
                        if x == 0 { z &+= 1 }
                    }
                    squares[unit] += q
                    zeros[unit] &+= z
                }
            }
        case .trailing:
            map.forEachRun(offset: offset, count: n) { firstUnit, start, length in
                let source = p + start
                let q = squares + firstUnit
                let z = zeros + firstUnit
                if allFinite {
                    for j in 0..<length {
                        let x = Double(source[j])
                        q[j] += x * x
                        z[j] &+= x == 0 ? 1 : 0
                    }
                } else {
                    for j in 0..<length where source[j].isFinite {
                        let x = Double(source[j])
                        q[j] += x * x
                        z[j] &+= x == 0 ? 1 : 0
                    }
                }
            }
        }
    }

    /// Adds the per-unit `Σ (x * factor)^2` and zero counts of a `Float64` chunk
    /// (finite values only).
    package static func accumulateUnits(
        _ p: UnsafePointer<Double>, count n: Int, offset: Int, map: StatsUnitMap, factor: Double,
        squares: UnsafeMutablePointer<Double>, zeros: UnsafeMutablePointer<Int>
    ) {
        switch map.kind {
        case .none:
            return
        case .leading:
            map.forEachRun(offset: offset, count: n) { unit, start, length in
                var q = 0.0
                var z = 0
                for j in start..<start &+ length where p[j].isFinite {
                    let x = p[j] * factor
                    q += x * x
                    if p[j] == 0 { z &+= 1 }
                }
                squares[unit] += q
                zeros[unit] &+= z
            }
        case .trailing:
            map.forEachRun(offset: offset, count: n) { firstUnit, start, length in
                for j in 0..<length where p[start &+ j].isFinite {
                    let x = p[start &+ j] * factor
                    squares[firstUnit &+ j] += x * x
                    zeros[firstUnit &+ j] &+= p[start &+ j] == 0 ? 1 : 0
                }
            }
        }
    }
}
