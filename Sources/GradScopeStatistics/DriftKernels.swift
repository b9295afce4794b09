import GradScopeKernels

/// Chunk kernels behind ``DriftAccumulator``.
package enum DriftKernels {
    /// Sums over one chunk of element pairs (finite pairs only, except the counts).
    package struct ChunkSums {
        package var finite = 0
        package var changed = 0
        package var signFlips = 0
        package var nonFinite = 0
        package var squaresA = 0.0
        package var squaresB = 0.0
        package var squaresDelta = 0.0
        package var dot = 0.0
        package var maxAbsDelta = 0.0

        package init() {}

        /// The sums of `n` finite pairs the kernel gave as `out`.
        @inline(__always)
        init(_ n: Int, _ out: gs_drift_sums) {
            finite = n
            changed = Int(out.changed)
            signFlips = Int(out.signFlips)
            squaresA = out.squaresA
            squaresB = out.squaresB
            squaresDelta = out.squaresDelta
            dot = out.dot
            maxAbsDelta = out.maxAbsDelta
        }
    }

    /// Whether a pair counts as changed: bit patterns (sign, exponent and
    /// significand fields) differ and not both NaN.
    @inline(__always)
    package static func isChanged<T: BinaryFloatingPoint>(_ a: T, _ b: T) -> Bool {
        (a.sign != b.sign || a.exponentBitPattern != b.exponentBitPattern || a.significandBitPattern != b.significandBitPattern)
            && !(a.isNaN && b.isNaN)
    }

    /// Fast path for a chunk where every `a_i` and `b_i` is finite; `nil` if the
    /// chunk holds a NaN or an infinity. All arithmetic after loading is in
    /// `Float64` SIMD lanes: `Δ = b − a`, `Σ a^2`, `Σ b^2`, `Σ Δ^2`, `Σ a b`,
    /// `max |Δ|`. The counts come from the bit patterns: changed when they
    /// differ, a sign flip when the signs differ and neither value is ±0 (the
    /// same as a negative `Float64` product `a * b`, which is exact for `Float32`
    /// values and so never underflows to zero). The kernel is `gs_drift_finite_f32`.
    /// With `normsOnly`, the dot product, the largest |Δ| and the sign flips are left zero
    /// (`gs_drift_norms_finite_f32`); the other sums are the same to the bit.
    @inline(__always)
    package static func sumFiniteFloats(
        _ pa: UnsafePointer<Float>, _ pb: UnsafePointer<Float>, count n: Int, normsOnly: Bool = false
    ) -> ChunkSums? {
        var out = gs_drift_sums()
        let finite =
            normsOnly ? gs_drift_norms_finite_f32(pa, pb, Int64(n), &out) : gs_drift_finite_f32(pa, pb, Int64(n), &out)
        guard finite else { return nil }
        return ChunkSums(n, out)
    }

    /// Scalar path: `Float32` chunks with NaN or infinities, and `Float64`
    /// chunks; finite values are converted to `Float64` and multiplied by
    /// `factor` (a power of two) before any arithmetic. A sign flip is read from
    /// the signs (both nonzero, opposite), which a product could lose to underflow.
    package static func sumChecked<T: BinaryFloatingPoint>(
        _ pa: UnsafePointer<T>, _ pb: UnsafePointer<T>, count n: Int, factor: Double
    ) -> ChunkSums {
        var sums = ChunkSums()
        for i in 0..<n {
            let a = pa[i]
            let b = pb[i]
            if isChanged(a, b) { sums.changed &+= 1 }
            guard a.isFinite && b.isFinite else {
                sums.nonFinite &+= 1
                continue
            }
            sums.finite &+= 1
            if a != 0 && b != 0 && (a < 0) != (b < 0) { sums.signFlips &+= 1 }
            let x = Double(a) * factor
            let y = Double(b) * factor
            let d = y - x
            sums.squaresA += x * x
            sums.squaresB += y * y
            sums.squaresDelta += d * d
            sums.dot += x * y
            if d.magnitude > sums.maxAbsDelta { sums.maxAbsDelta = d.magnitude }
        }
        return sums
    }

    /// The largest magnitude over the finite pairs of a `Float64` chunk.
    package static func maxFiniteMagnitude(_ pa: UnsafePointer<Double>, _ pb: UnsafePointer<Double>, count n: Int) -> Double {
        var largest = 0.0
        for i in 0..<n where pa[i].isFinite && pb[i].isFinite {
            largest = Swift.max(largest, pa[i].magnitude, pb[i].magnitude)
        }
        return largest
    }

    // MARK: Per-unit sums

    /// Per-unit `Σ Δ^2`, `Σ a^2` (finite pairs) and changed counts of a
    /// `Float32` chunk. `allFinite` promises there is no NaN or infinity.
    package static func accumulateUnits(
        _ pa: UnsafePointer<Float>, _ pb: UnsafePointer<Float>, count n: Int, offset: Int,
        map: StatsUnitMap, allFinite: Bool,
        deltaSquares: UnsafeMutablePointer<Double>, squaresA: UnsafeMutablePointer<Double>,
        changed: UnsafeMutablePointer<Int>
    ) {
        switch map.kind {
        case .none:
            return
        case .leading:
            map.forEachRun(offset: offset, count: n) { unit, start, length in
                var d2 = 0.0
                var a2 = 0.0
                var changes = 0
                if allFinite {
                    for j in start..<start &+ length {
                        let x = Double(pa[j])
                        let d = Double(pb[j]) - x
                        d2 += d * d
                        a2 += x * x
                        changes &+= pa[j].bitPattern != pb[j].bitPattern ? 1 : 0
                    }
                } else {
                    for j in start..<start &+ length {
                        if isChanged(pa[j], pb[j]) { changes &+= 1 }
                        guard pa[j].isFinite && pb[j].isFinite else { continue }
                        let x = Double(pa[j])
                        let d = Double(pb[j]) - x
                        d2 += d * d
                        a2 += x * x
                    }
                }
                deltaSquares[unit] += d2
                squaresA[unit] += a2
                changed[unit] &+= changes
            }
        case .trailing:
            map.forEachRun(offset: offset, count: n) { firstUnit, start, length in
                let a = pa + start
                let b = pb + start
                let d2 = deltaSquares + firstUnit
                let a2 = squaresA + firstUnit
                let changes = changed + firstUnit
                if allFinite {
                    for j in 0..<length {
                        let x = Double(a[j])
                        let d = Double(b[j]) - x
                        d2[j] += d * d
                        a2[j] += x * x
                        changes[j] &+= a[j].bitPattern != b[j].bitPattern ? 1 : 0
                    }
                } else {
                    for j in 0..<length {
                        if isChanged(a[j], b[j]) { changes[j] &+= 1 }
                        guard a[j].isFinite && b[j].isFinite else { continue }
                        let x = Double(a[j])
                        let d = Double(b[j]) - x
                        d2[j] += d * d
                        a2[j] += x * x
                    }
                }
            }
        }
    }

    /// Per-unit sums of a `Float64` chunk, values multiplied by `factor`.
    package static func accumulateUnits(
        _ pa: UnsafePointer<Double>, _ pb: UnsafePointer<Double>, count n: Int, offset: Int,
        map: StatsUnitMap, factor: Double,
        deltaSquares: UnsafeMutablePointer<Double>, squaresA: UnsafeMutablePointer<Double>,
        changed: UnsafeMutablePointer<Int>
    ) {
        @inline(__always)
        func add(_ j: Int, to unit: Int) {
            if isChanged(pa[j], pb[j]) { changed[unit] &+= 1 }
            guard pa[j].isFinite && pb[j].isFinite else { return }
            let x = pa[j] * factor
            let d = pb[j] * factor - x
            deltaSquares[unit] += d * d
            squaresA[unit] += x * x
        }
        switch map.kind {
        case .none:
            return
        case .leading:
            map.forEachRun(offset: offset, count: n) { unit, start, length in
                for j in start..<start &+ length { add(j, to: unit) }
            }
        case .trailing:
            map.forEachRun(offset: offset, count: n) { firstUnit, start, length in
                for j in 0..<length { add(start &+ j, to: firstUnit &+ j) }
            }
        }
    }
}
