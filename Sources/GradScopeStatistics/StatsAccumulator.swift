import GradScopeKernels

/// Streaming, mergeable summary statistics of one tensor in a single pass.
///
/// Feed the tensor in blocks of any size with ``add(_:at:)``
/// (or the `Double` overload), passing each block's flat element offset, then
/// call ``finish()`` for a ``TensorStats``. Blocks may arrive in any order; the
/// offset is only used to attribute elements to units (see ``UnitLayout``).
/// Accumulators over disjoint parts of one tensor (say, one per thread) combine
/// with ``merge(_:)``.
///
/// ```swift
/// var accumulator = StatsAccumulator(layout: .forShape([64, 3, 3, 3], unitAxis: 0))
/// values.withUnsafeBufferPointer { accumulator.add($0, at: 0) }
/// let stats = accumulator.finish()
/// ```
///
/// Definitions, edge cases and tolerances are documented on ``TensorStats``.
///
/// Merging is exact for all counts, min, max, the quantile sketch, the
/// histograms and the per-unit zero counts; means and variances merge with
/// Chan's parallel update (see ``TensorStats``) and sums of squares by
/// addition, so a merged result equals a single pass up to `Double` rounding.
///
/// Cost: one streaming pass; for `Float32` input the hot loop is SIMD with a
/// scalar scatter into the sketch. Memory is small for small tensors (up to
/// 2048 sketch keys are kept in a list) and 256 KiB for the dense sketch table
/// beyond that.
public struct StatsAccumulator: Sendable {
    /// Call once at program start where many tensors are measured: keeps the
    /// per-tensor sketch tables (256 KiB) on the heap instead of mapping and
    /// faulting in fresh memory for each one (glibc's default above 128 KiB), in at most
    /// `heaps` heaps (``ProcessStart/heaps(arguments:cores:commands:)``).
    public static func prepareAllocator(heaps: Int = 1) { gs_tune_allocator(Int32(clamping: heaps)) }

    /// Free heap memory a long-lived process keeps between files (``releaseFreeMemory(above:)``).
    public static let keptFreeMemory = 16 << 20

    /// Hands the heap's free memory back to the system when it holds at least `threshold` free
    /// bytes, and tells whether it did; a long-lived process calls it between files so that its
    /// resident size stays that of one file's work, plus at most `threshold`. Handing back less
    /// costs more than it saves: every free page is let go of, and faulted in again, zeroed, by
    /// the next file.
    @discardableResult
    public static func releaseFreeMemory(above threshold: Int = keptFreeMemory) -> Bool {
        gs_release_free_memory(threshold)
    }

    /// The unit layout used for ``TensorStats/unitNorms``.
    public let layout: UnitLayout
    /// Number of bins of ``TensorStats/histogram`` (at least 1).
    public let histogramBins: Int

    /// Elements per chunk; each chunk is read twice while it sits in L1.
    package static let chunkSize = 2048
    /// Slots of the `Float64` exponent table: `floor(log2 |x|)` in `-1074 ... 1023`.
    package static let doubleExponentSlots = 2098
    package static let doubleExponentBias = 1074

    package let unitMap: StatsUnitMap
    package var count = 0
    package var zeros = 0
    package var nan = 0
    package var posInf = 0
    package var negInf = 0
    package var minimum = Double.infinity
    package var maximum = -Double.infinity
    package var moments = StreamingMoments()
    /// Moments and unit sums are stored scaled by `2^-scaleExponent` (see ``StatsScaling``).
    package var scaleExponent = 0
    /// Keys of values that arrived as `Float32`.
    package var floatSketch = LogBucketSketch()
    /// Keys of values that arrived as `Float64` (their exponents are in `doubleExponents`).
    package var doubleSketch = LogBucketSketch()
    package var doubleExponents: [Int] = []
    package var unitSquares: [Double]
    package var unitZeros: [Int]
    /// False after merging an accumulator with a different unit layout.
    package var unitsConsistent = true
    /// The input units whose zeros are counted (``countInputZeros(_:)``), and their counts.
    package private(set) var inputMap: InputUnitMap?
    package private(set) var inputZeros: [Int] = []

    /// Creates an empty accumulator.
    ///
    /// - Parameters:
    ///   - layout: how elements map to units for the per-unit statistics.
    ///   - histogramBins: bin count of the linear histogram (values below 1 read as 1).
    public init(layout: UnitLayout = .none, histogramBins: Int = 32) {
        self.layout = layout
        self.histogramBins = Swift.max(1, histogramBins)
        unitMap = StatsUnitMap(layout)
        unitSquares = [Double](repeating: 0, count: unitMap.units)
        unitZeros = [Int](repeating: 0, count: unitMap.units)
    }

    /// The largest finite magnitude added so far (0 when there is none).
    package var runningMaxMagnitude: Double {
        moments.count > 0 ? Swift.max(-minimum, maximum) : 0
    }

    /// Counts the exact zeros of each input unit of `map` as well (``TensorStats/inputZeroCount``).
    /// Call before adding anything.
    package mutating func countInputZeros(_ map: InputUnitMap?) {
        inputMap = map
        inputZeros = [Int](repeating: 0, count: map?.units ?? 0)
    }

    @inline(__always)
    private mutating func addInputZeros<T: BinaryFloatingPoint>(_ p: UnsafePointer<T>, count n: Int, offset: Int) {
        guard let map = inputMap else { return }
        inputZeros.withUnsafeMutableBufferPointer { zeros in
            guard let base = zeros.baseAddress else { return }
            map.countZeros(p, count: n, offset: offset, into: base)
        }
    }

    // MARK: Adding

    /// Adds a block of `Float32` elements whose first element has flat index
    /// `elementOffset` in the tensor.
    public mutating func add(_ block: UnsafeBufferPointer<Float>, at elementOffset: Int) {
        guard let base = block.baseAddress else { return }
        // More values than the sketch's short list holds: to the dense table from the first chunk on.
        if block.count > LogBucketSketch.pendingCapacity { floatSketch.useDenseTable() }
        var i = 0
        while i < block.count {
            let n = Swift.min(Self.chunkSize, block.count &- i)
            addFloatChunk(base + i, count: n, offset: elementOffset &+ i)
            i &+= n
        }
    }

    /// Adds a block of `Float64` elements whose first element has flat index
    /// `elementOffset` in the tensor.
    ///
    /// Exponents for ``TensorStats/log2Histogram`` are taken from the `Float64`
    /// value; the quantile sketch uses the value rounded to `Float32` (clamped to
    /// the finite `Float32` range, and to its smallest subnormal for nonzero
    /// values that would round to zero).
    public mutating func add(_ block: UnsafeBufferPointer<Double>, at elementOffset: Int) {
        guard let base = block.baseAddress else { return }
        var i = 0
        while i < block.count {
            let n = Swift.min(Self.chunkSize, block.count &- i)
            addDoubleChunk(base + i, count: n, offset: elementOffset &+ i)
            i &+= n
        }
    }

    /// Adds an array of `Float32` elements starting at flat index `elementOffset`.
    public mutating func add(_ values: [Float], at elementOffset: Int) {
        values.withUnsafeBufferPointer { add($0, at: elementOffset) }
    }

    /// Adds an array of `Float64` elements starting at flat index `elementOffset`.
    public mutating func add(_ values: [Double], at elementOffset: Int) {
        values.withUnsafeBufferPointer { add($0, at: elementOffset) }
    }

    /// Adds a block of `Float32` elements as ``add(_:at:)`` does, and
    /// to `drift` the pairs of `before` (the same elements one save earlier) and the block, as
    /// `drift.add(before, block, at: elementOffset)` does: the same numbers in both. Where both take
    /// their plain paths (finite chunks, the drift's norms only), each chunk's drift sums come from
    /// the pass that summarises it.
    package mutating func add(
        _ block: UnsafeBufferPointer<Float>, at elementOffset: Int, before: UnsafeBufferPointer<Float>,
        drift: inout DriftAccumulator
    ) {
        guard block.count == before.count, let base = block.baseAddress, let earlier = before.baseAddress else {
            add(block, at: elementOffset)
            drift.add(before, block, at: elementOffset)
            return
        }
        if block.count > LogBucketSketch.pendingCapacity { floatSketch.useDenseTable() }
        // The chunks are those both accumulators cut the block into (their chunk sizes are one).
        var i = 0
        while i < block.count {
            let n = Swift.min(Self.chunkSize, block.count &- i)
            let sums = addFloatChunk(base + i, count: n, offset: elementOffset &+ i, before: drift.takesGivenSums ? earlier + i : nil)
            drift.addFloatChunk(earlier + i, base + i, count: n, offset: elementOffset &+ i, given: sums)
            i &+= n
        }
    }

    /// Adds a chunk of `Float32` elements. With `before`, returns the drift's norms-only sums of the
    /// pairs (`before[i]`, `p[i]`) when the pass that summarises the chunk took them and they are
    /// finite (``StatsKernels/summarizeFiniteFloats(_:count:center:counts:before:)``), else nil.
    @discardableResult
    package mutating func addFloatChunk(
        _ p: UnsafePointer<Float>, count n: Int, offset: Int, before: UnsafePointer<Float>? = nil
    ) -> DriftKernels.ChunkSums? {
        if scaleExponent != 0 {
            if runningMaxMagnitude == 0 {
                scaleExponent = 0
            } else {
                // Scaled state (mixed with huge or tiny Float64 data): take the general path.
                withUnsafeTemporaryAllocation(of: Double.self, capacity: n) { buffer in
                    guard let converted = buffer.baseAddress else { return }
                    for i in 0..<n { converted[i] = Double(p[i]) }
                    addDoubleChunk(converted, count: n, offset: offset)
                }
                return nil
            }
        }
        count &+= n
        let center = moments.count > 0 ? moments.mean : nil
        var fast: StatsKernels.ChunkSummary?
        var drift: DriftKernels.ChunkSums?
        // Large tensors: the sketch is counted in the same pass as the moments.
        let keyHits: Int
        if let hits = floatSketch.countDense(
            n,
            { counts in
                (fast, drift) = StatsKernels.summarizeFiniteFloats(p, count: n, center: center, counts: counts, before: before)
                guard let fast else { return Self.magnitudeBounds(p, count: n) }
                let largest = Float(Swift.max(-fast.min, fast.max)).bitPattern & 0x7FFF_FFFF
                return (fast.minMagnitudeBits, largest)
            })
        {
            keyHits = hits
        } else {
            keyHits = floatSketch.addFloats(p, count: n)
            (fast, drift) = StatsKernels.summarizeFiniteFloats(p, count: n, center: center, counts: nil, before: before)
        }
        let summary: StatsKernels.ChunkSummary
        let allFinite: Bool
        if let fast {
            summary = fast
            allFinite = true
        } else {
            summary = StatsKernels.summarizeFloatsChecked(p, count: n)
            allFinite = false
        }
        absorb(summary)
        // Input units are looked at only in chunks holding a zero: a trained gradient has none.
        if summary.zeros > 0 { addInputZeros(p, count: n, offset: offset) }
        if keyHits != summary.zeros {
            // Some nonzero values below 2^-133 share magnitude key 0 with the zeros.
            let raw = UnsafeRawPointer(p)
            for i in 0..<n {
                let bits = raw.load(fromByteOffset: i &* 4, as: UInt32.self)
                let magnitude = bits & 0x7FFF_FFFF
                if magnitude != 0 && magnitude <= 0xFFFF {
                    floatSketch.recordTiny(magnitudeBits: magnitude, negative: bits != magnitude)
                }
            }
        }
        guard unitMap.isActive else { return drift }
        let map = unitMap
        withUnitBuffers { squares, zeros in
            StatsKernels.accumulateUnits(
                p, count: n, offset: offset, map: map, allFinite: allFinite, squares: squares, zeros: zeros)
        }
        return drift
    }

    /// The `Float32` magnitude bits of the smallest nonzero and of the largest of `n` values,
    /// NaN and infinities included (`(UInt32.max, 0)` when all are zero).
    package static func magnitudeBounds(_ p: UnsafePointer<Float>, count n: Int) -> (lowest: UInt32, highest: UInt32) {
        let raw = UnsafeRawPointer(p)
        var lowest = UInt32.max, highest: UInt32 = 0
        for i in 0..<n {
            let magnitude = raw.load(fromByteOffset: i &* 4, as: UInt32.self) & 0x7FFF_FFFF
            if magnitude != 0 && magnitude < lowest { lowest = magnitude }
            if magnitude > highest { highest = magnitude }
        }
        return (lowest, highest)
    }

    package mutating func addDoubleChunk(_ p: UnsafePointer<Double>, count n: Int, offset: Int) {
        count &+= n
        var summary = StatsKernels.ChunkSummary()
        var chunkMaxMagnitude = 0.0
        if doubleExponents.isEmpty {
            doubleExponents = [Int](repeating: 0, count: Self.doubleExponentSlots)
        }
        var exponents = doubleExponents
        doubleExponents = []
        var sketch = doubleSketch
        doubleSketch = LogBucketSketch()
        withUnsafeTemporaryAllocation(of: UInt16.self, capacity: n) { keyBuffer in
            guard let keys = keyBuffer.baseAddress else { return }
            var k = 0
            exponents.withUnsafeMutableBufferPointer { table in
                guard let exponentCounts = table.baseAddress else { return }
                for i in 0..<n {
                    let x = p[i]
                    if x.isFinite {
                        summary.finite &+= 1
                        if x < summary.min { summary.min = x }
                        if x > summary.max { summary.max = x }
                        let magnitude = x.magnitude
                        if magnitude > chunkMaxMagnitude { chunkMaxMagnitude = magnitude }
                        let negative = x.sign == .minus
                        if x == 0 {
                            summary.zeros &+= 1
                            keys[k] = negative ? LogBucketSketch.negativeFlag : 0
                        } else {
                            exponentCounts[Int(x.exponent) &+ Self.doubleExponentBias] &+= 1
                            let bits = LogBucketSketch.floatMagnitudeBits(forFinite: x)
                            keys[k] = UInt16(truncatingIfNeeded: bits &>> 16) | (negative ? LogBucketSketch.negativeFlag : 0)
                            if bits <= 0xFFFF { sketch.recordTiny(magnitudeBits: bits, negative: negative) }
                        }
                        k &+= 1
                    } else if x.isNaN {
                        summary.nan &+= 1
                    } else if x > 0 {
                        summary.posInf &+= 1
                    } else {
                        summary.negInf &+= 1
                    }
                }
            }
            sketch.addKeys(keys, count: k)
        }
        doubleExponents = exponents
        doubleSketch = sketch

        if chunkMaxMagnitude > 0 {
            let desired = StatsScaling.exponent(forMaxMagnitude: chunkMaxMagnitude)
            if runningMaxMagnitude == 0 {
                rescale(to: desired)
            } else if desired > scaleExponent {
                rescale(to: desired)
            }
        }
        let factor = StatsScaling.multiply(1, byPowerOfTwo: -scaleExponent)
        StatsKernels.scaledMoments(p, count: n, factor: factor, into: &summary)
        absorb(summary)
        if summary.zeros > 0 { addInputZeros(p, count: n, offset: offset) }
        guard unitMap.isActive else { return }
        let map = unitMap
        withUnitBuffers { squares, zeros in
            StatsKernels.accumulateUnits(
                p, count: n, offset: offset, map: map, factor: factor, squares: squares, zeros: zeros)
        }
    }

    /// Adds a chunk summary (moments already in the current scale).
    package mutating func absorb(_ summary: StatsKernels.ChunkSummary) {
        zeros &+= summary.zeros
        nan &+= summary.nan
        posInf &+= summary.posInf
        negInf &+= summary.negInf
        guard summary.finite > 0 else { return }
        if summary.min < minimum { minimum = summary.min }
        if summary.max > maximum { maximum = summary.max }
        moments.merge(count: summary.finite, mean: summary.mean, m2: summary.m2, sumSquares: summary.sumSquares)
    }

    /// Runs `body` with mutable pointers to the per-unit sums (nothing happens
    /// when there are no units).
    package mutating func withUnitBuffers(
        _ body: (UnsafeMutablePointer<Double>, UnsafeMutablePointer<Int>) -> Void
    ) {
        var squares = unitSquares
        unitSquares = []
        var zeroCounts = unitZeros
        unitZeros = []
        squares.withUnsafeMutableBufferPointer { q in
            zeroCounts.withUnsafeMutableBufferPointer { z in
                guard let qBase = q.baseAddress, let zBase = z.baseAddress else { return }
                body(qBase, zBase)
            }
        }
        unitSquares = squares
        unitZeros = zeroCounts
    }

    /// Changes the storage scale exponent to `target`.
    package mutating func rescale(to target: Int) {
        let k = scaleExponent - target
        guard k != 0 else { return }
        moments.rescale(byPowerOfTwo: k)
        for i in unitSquares.indices {
            unitSquares[i] = StatsScaling.multiply(unitSquares[i], byPowerOfTwo: 2 * k)
        }
        scaleExponent = target
    }

    // MARK: Merging

    /// Adds the statistics of `other`, which must have been accumulated over a
    /// part of the same tensor disjoint from this one's.
    ///
    /// Per-unit results are combined unit by unit; if the two unit layouts
    /// differ, the merged per-unit results are `nil`. The histogram bin count of
    /// `self` is kept.
    public mutating func merge(_ other: StatsAccumulator) {
        var other = other
        if let target = StatsScaling.common(
            scaleExponent, holdsNonzero: runningMaxMagnitude > 0,
            other.scaleExponent, holdsNonzero: other.runningMaxMagnitude > 0)
        {
            rescale(to: target)
            other.rescale(to: target)
        }
        count &+= other.count
        zeros &+= other.zeros
        nan &+= other.nan
        posInf &+= other.posInf
        negInf &+= other.negInf
        minimum = Swift.min(minimum, other.minimum)
        maximum = Swift.max(maximum, other.maximum)
        moments.merge(other.moments)
        floatSketch.merge(other.floatSketch)
        doubleSketch.merge(other.doubleSketch)
        if !other.doubleExponents.isEmpty {
            if doubleExponents.isEmpty {
                doubleExponents = other.doubleExponents
            } else {
                for i in doubleExponents.indices { doubleExponents[i] &+= other.doubleExponents[i] }
            }
        }
        if unitMap == other.unitMap && unitsConsistent && other.unitsConsistent {
            for i in unitSquares.indices {
                unitSquares[i] += other.unitSquares[i]
                unitZeros[i] &+= other.unitZeros[i]
            }
        } else {
            unitsConsistent = false
        }
        if inputMap != nil && inputMap == other.inputMap && inputZeros.count == other.inputZeros.count {
            for i in inputZeros.indices { inputZeros[i] &+= other.inputZeros[i] }
        } else if inputMap != nil || other.inputMap != nil {
            inputMap = nil
            inputZeros = []
        }
    }
}
