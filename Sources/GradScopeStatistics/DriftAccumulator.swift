import GradScopeKernels

/// Streaming, mergeable comparison of two versions of one tensor: `a` from an
/// earlier checkpoint and `b` from a later one.
///
/// Feed both versions side by side in blocks of equal length with
/// ``add(_:_:at:)`` (or the `Double`
/// overload), passing each block's flat element offset, then call
/// ``finish()``. If the two blocks differ in length, only the common prefix is
/// used. Accumulators over disjoint parts of the tensor combine with
/// ``merge(_:)``. Definitions, edge cases and tolerances are on ``DriftStats``.
///
/// ```swift
/// var drift = DriftAccumulator(layout: .forShape(shape, unitAxis: 0))
/// old.withUnsafeBufferPointer { a in new.withUnsafeBufferPointer { b in drift.add(a, b, at: 0) } }
/// let stats = drift.finish()
/// ```
public struct DriftAccumulator: Sendable {
    /// The unit layout used for the per-unit results.
    public let layout: UnitLayout

    /// ``StatsAccumulator/chunkSize``: a block added to both at once is cut into the same chunks
    /// (``StatsAccumulator/add(_:at:before:drift:)``).
    package static let chunkSize = StatsAccumulator.chunkSize

    package let unitMap: StatsUnitMap
    package var count = 0
    package var finite = 0
    package var changed = 0
    package var signFlips = 0
    package var nonFinite = 0
    /// Sums of squares and the dot product, stored scaled by `2^(-2 * scaleExponent)`.
    package var squaresA = 0.0
    package var squaresB = 0.0
    package var squaresDelta = 0.0
    package var dot = 0.0
    /// Stored scaled by `2^-scaleExponent`.
    package var maxAbsDelta = 0.0
    package var scaleExponent = 0
    package var unitDeltaSquares: [Double]
    package var unitSquaresA: [Double]
    package var unitChangedCounts: [Int]
    package var unitsConsistent = true
    /// Whether only the norms, the relative change and the counts are measured: ``finish()`` then
    /// gives no cosine and no largest |Δ|, and no sign flips (0), and float32 chunks cost about a
    /// third less. Every other number is the same to the bit.
    package let normsOnly: Bool

    /// Creates an empty accumulator.
    public init(layout: UnitLayout = .none) { self.init(layout: layout, normsOnly: false) }

    /// Creates an empty accumulator measuring the norms and counts only when `normsOnly`.
    package init(layout: UnitLayout, normsOnly: Bool) {
        self.normsOnly = normsOnly
        self.layout = layout
        unitMap = StatsUnitMap(layout)
        unitDeltaSquares = [Double](repeating: 0, count: unitMap.units)
        unitSquaresA = [Double](repeating: 0, count: unitMap.units)
        unitChangedCounts = [Int](repeating: 0, count: unitMap.units)
    }

    /// Whether any nonzero finite value has been added (squares of nonzero
    /// values never underflow at the chosen scale).
    package var holdsNonzero: Bool { squaresA > 0 || squaresB > 0 }

    // MARK: Adding

    /// Adds blocks of the earlier (`a`) and later (`b`) `Float32` versions whose
    /// first elements have flat index `elementOffset`.
    public mutating func add(_ a: UnsafeBufferPointer<Float>, _ b: UnsafeBufferPointer<Float>, at elementOffset: Int) {
        guard let baseA = a.baseAddress, let baseB = b.baseAddress else { return }
        let total = Swift.min(a.count, b.count)
        var i = 0
        while i < total {
            let n = Swift.min(Self.chunkSize, total &- i)
            addFloatChunk(baseA + i, baseB + i, count: n, offset: elementOffset &+ i)
            i &+= n
        }
    }

    /// Adds blocks of the earlier (`a`) and later (`b`) `Float64` versions whose
    /// first elements have flat index `elementOffset`.
    public mutating func add(_ a: UnsafeBufferPointer<Double>, _ b: UnsafeBufferPointer<Double>, at elementOffset: Int) {
        guard let baseA = a.baseAddress, let baseB = b.baseAddress else { return }
        let total = Swift.min(a.count, b.count)
        var i = 0
        while i < total {
            let n = Swift.min(Self.chunkSize, total &- i)
            addDoubleChunk(baseA + i, baseB + i, count: n, offset: elementOffset &+ i)
            i &+= n
        }
    }

    /// Adds arrays of the earlier and later `Float32` versions starting at `elementOffset`.
    public mutating func add(_ a: [Float], _ b: [Float], at elementOffset: Int) {
        a.withUnsafeBufferPointer { pa in b.withUnsafeBufferPointer { pb in add(pa, pb, at: elementOffset) } }
    }

    /// Adds arrays of the earlier and later `Float64` versions starting at `elementOffset`.
    public mutating func add(_ a: [Double], _ b: [Double], at elementOffset: Int) {
        a.withUnsafeBufferPointer { pa in b.withUnsafeBufferPointer { pb in add(pa, pb, at: elementOffset) } }
    }

    /// Whether a chunk's sums may be given to ``addFloatChunk(_:_:count:offset:given:)``: they
    /// are the norms only, and the chunk takes the `Float32` path (not the scaled one).
    package var takesGivenSums: Bool { normsOnly && (scaleExponent == 0 || !holdsNonzero) }

    /// Adds a chunk of pairs. `given`, when not nil, is the chunk's sums as
    /// `DriftKernels.sumFiniteFloats(pa, pb, count: n, normsOnly: true)` gives them, taken by
    /// another pass over the chunk; only while ``takesGivenSums``.
    package mutating func addFloatChunk(
        _ pa: UnsafePointer<Float>, _ pb: UnsafePointer<Float>, count n: Int, offset: Int, given: DriftKernels.ChunkSums? = nil
    ) {
        if scaleExponent != 0 {
            if holdsNonzero {
                withUnsafeTemporaryAllocation(of: Double.self, capacity: 2 * n) { buffer in
                    guard let converted = buffer.baseAddress else { return }
                    for i in 0..<n {
                        converted[i] = Double(pa[i])
                        converted[n + i] = Double(pb[i])
                    }
                    addDoubleChunk(converted, converted + n, count: n, offset: offset)
                }
                return
            }
            scaleExponent = 0
        }
        count &+= n
        let allFinite: Bool
        if let sums = given ?? DriftKernels.sumFiniteFloats(pa, pb, count: n, normsOnly: normsOnly) {
            absorb(sums)
            allFinite = true
        } else {
            absorb(DriftKernels.sumChecked(pa, pb, count: n, factor: 1))
            allFinite = false
        }
        guard unitMap.isActive else { return }
        let map = unitMap
        withUnitBuffers { d2, a2, changes in
            DriftKernels.accumulateUnits(
                pa, pb, count: n, offset: offset, map: map, allFinite: allFinite,
                deltaSquares: d2, squaresA: a2, changed: changes)
        }
    }

    package mutating func addDoubleChunk(_ pa: UnsafePointer<Double>, _ pb: UnsafePointer<Double>, count n: Int, offset: Int) {
        count &+= n
        let largest = DriftKernels.maxFiniteMagnitude(pa, pb, count: n)
        if largest > 0 {
            let desired = StatsScaling.exponent(forMaxMagnitude: largest)
            if !holdsNonzero || desired > scaleExponent { rescale(to: desired) }
        }
        let factor = StatsScaling.multiply(1, byPowerOfTwo: -scaleExponent)
        absorb(DriftKernels.sumChecked(pa, pb, count: n, factor: factor))
        guard unitMap.isActive else { return }
        let map = unitMap
        withUnitBuffers { d2, a2, changes in
            DriftKernels.accumulateUnits(
                pa, pb, count: n, offset: offset, map: map, factor: factor,
                deltaSquares: d2, squaresA: a2, changed: changes)
        }
    }

    package mutating func absorb(_ sums: DriftKernels.ChunkSums) {
        finite &+= sums.finite
        changed &+= sums.changed
        signFlips &+= sums.signFlips
        nonFinite &+= sums.nonFinite
        squaresA += sums.squaresA
        squaresB += sums.squaresB
        squaresDelta += sums.squaresDelta
        dot += sums.dot
        maxAbsDelta = Swift.max(maxAbsDelta, sums.maxAbsDelta)
    }

    package mutating func withUnitBuffers(
        _ body: (UnsafeMutablePointer<Double>, UnsafeMutablePointer<Double>, UnsafeMutablePointer<Int>) -> Void
    ) {
        var d2 = unitDeltaSquares
        unitDeltaSquares = []
        var a2 = unitSquaresA
        unitSquaresA = []
        var changes = unitChangedCounts
        unitChangedCounts = []
        d2.withUnsafeMutableBufferPointer { pd in
            a2.withUnsafeMutableBufferPointer { pa in
                changes.withUnsafeMutableBufferPointer { pc in
                    guard let bd = pd.baseAddress, let ba = pa.baseAddress, let bc = pc.baseAddress else { return }
                    body(bd, ba, bc)
                }
            }
        }
        unitDeltaSquares = d2
        unitSquaresA = a2
        unitChangedCounts = changes
    }

    /// Changes the storage scale exponent to `target` (see ``StatsScaling``).
    package mutating func rescale(to target: Int) {
        let k = scaleExponent - target
        guard k != 0 else { return }
        squaresA = StatsScaling.multiply(squaresA, byPowerOfTwo: 2 * k)
        squaresB = StatsScaling.multiply(squaresB, byPowerOfTwo: 2 * k)
        squaresDelta = StatsScaling.multiply(squaresDelta, byPowerOfTwo: 2 * k)
        dot = StatsScaling.multiply(dot, byPowerOfTwo: 2 * k)
        maxAbsDelta = StatsScaling.multiply(maxAbsDelta, byPowerOfTwo: k)
        for i in unitDeltaSquares.indices {
            unitDeltaSquares[i] = StatsScaling.multiply(unitDeltaSquares[i], byPowerOfTwo: 2 * k)
            unitSquaresA[i] = StatsScaling.multiply(unitSquaresA[i], byPowerOfTwo: 2 * k)
        }
        scaleExponent = target
    }

    // MARK: Merging

    /// Adds the results of `other`, accumulated over a disjoint part of the same
    /// tensor pair. If the unit layouts differ, the per-unit results become `nil`.
    public mutating func merge(_ other: DriftAccumulator) {
        var other = other
        if let target = StatsScaling.common(
            scaleExponent, holdsNonzero: holdsNonzero,
            other.scaleExponent, holdsNonzero: other.holdsNonzero)
        {
            rescale(to: target)
            other.rescale(to: target)
        }
        count &+= other.count
        finite &+= other.finite
        changed &+= other.changed
        signFlips &+= other.signFlips
        nonFinite &+= other.nonFinite
        squaresA += other.squaresA
        squaresB += other.squaresB
        squaresDelta += other.squaresDelta
        dot += other.dot
        maxAbsDelta = Swift.max(maxAbsDelta, other.maxAbsDelta)
        if unitMap == other.unitMap && unitsConsistent && other.unitsConsistent {
            for i in unitDeltaSquares.indices {
                unitDeltaSquares[i] += other.unitDeltaSquares[i]
                unitSquaresA[i] += other.unitSquaresA[i]
                unitChangedCounts[i] &+= other.unitChangedCounts[i]
            }
        } else {
            unitsConsistent = false
        }
    }

    // MARK: Finishing

    /// The drift statistics of everything added so far. The accumulator is
    /// unchanged and can keep accepting data.
    public func finish() -> DriftStats {
        let scale = scaleExponent
        var deltaNorm: Double?
        var normA: Double?
        var normB: Double?
        var relativeChange: Double?
        var maxDelta: Double?
        var cosine: Double?
        if finite > 0 {
            let rootA = squaresA.squareRoot()
            let rootB = squaresB.squareRoot()
            let rootDelta = squaresDelta.squareRoot()
            deltaNorm = StatsScaling.unscaleSaturating(rootDelta, byPowerOfTwo: scale)
            normA = StatsScaling.unscaleSaturating(rootA, byPowerOfTwo: scale)
            normB = StatsScaling.unscaleSaturating(rootB, byPowerOfTwo: scale)
            if !normsOnly { maxDelta = StatsScaling.unscaleSaturating(maxAbsDelta, byPowerOfTwo: scale) }
            if rootA > 0 {
                relativeChange = Swift.min(Double.greatestFiniteMagnitude, rootDelta / rootA)
            }
            if rootA > 0 && rootB > 0 && !normsOnly {
                cosine = Swift.min(1, Swift.max(-1, (dot / rootA) / rootB))
            }
        }
        var unitRelative: [Double?]?
        var unitChanges: [Int]?
        if unitMap.isActive && unitsConsistent {
            unitRelative = unitDeltaSquares.indices.map { i -> Double? in
                let base = unitSquaresA[i].squareRoot()
                guard base > 0 else { return nil }
                return Swift.min(Double.greatestFiniteMagnitude, unitDeltaSquares[i].squareRoot() / base)
            }
            unitChanges = unitChangedCounts
        }
        return DriftStats(
            count: count, finiteCount: finite,
            deltaNorm: deltaNorm, normA: normA, normB: normB, relativeChange: relativeChange,
            maxAbsDelta: maxDelta, cosineSimilarity: cosine,
            changed: changed, changedFraction: count > 0 ? Double(changed) / Double(count) : nil,
            signFlips: normsOnly ? 0 : signFlips, nonFinite: nonFinite,
            unitRelativeChange: unitRelative, unitChanged: unitChanges)
    }
}
