import GradScopeKernels

/// A dense sketch table read as the value-ordered cells of
/// ``StatsAccumulator/valueOrderedCells(keys:counts:tiny:)``, without listing them: the
/// quantiles, the linear histogram and the log2 histogram are read from the table itself, so
/// a tensor's `finish()` costs a few sums over the table's occupied range and a few dozen
/// histogram bin lookups, not a list of every key, sorted cells and a walk over each.
///
/// Positions, in ascending value order: the negative keys (magnitudes from the highest down),
/// the 16 negative tiny buckets (largest first), the zero cell, the 16 positive tiny buckets,
/// the positive keys (magnitudes from the lowest up). Empty keys and buckets are positions
/// too: a cell with no count changes neither a cumulative count nor a bin's count, so the
/// numbers are those of the listed cells, bit for bit.
struct DenseSketchCells {
    let counts: UnsafeMutablePointer<UInt32>
    /// Lowest and highest magnitude key of the range read (`first > top`: none).
    let first: Int
    let top: Int
    /// Number of magnitudes in `first ... top`.
    let keyCount: Int
    let tiny: [Int]
    /// The zero cell's count: the values on magnitude key 0 that are not tiny.
    let zeroCount: Int

    static let tinySlots = LogBucketSketch.tinyExponentCount

    init(table: DenseCounts, tiny: [Int]) {
        counts = table.counts
        first = Swift.max(1, table.low)
        top = Swift.min(table.high, Int(LogBucketSketch.nonFiniteMagnitudeKey) - 1)
        keyCount = Swift.max(0, top - first + 1)
        self.tiny = tiny
        var tinyTotal = 0
        for count in tiny { tinyTotal &+= count }
        zeroCount = Swift.max(0, Int(counts[0]) &+ Int(counts[0x8000]) &- tinyTotal)
    }

    /// Positions of the negative tiny buckets, the zero cell and the positive keys.
    var negativeTinyStart: Int { keyCount }
    var zeroPosition: Int { keyCount &+ Self.tinySlots }
    var positiveKeysStart: Int { keyCount &+ 2 &* Self.tinySlots &+ 1 }
    var positions: Int { 2 &* keyCount &+ 2 &* Self.tinySlots &+ 1 }

    /// The representative value of the cell at `p`.
    @inline(__always)
    func value(_ p: Int, _ representatives: UnsafeBufferPointer<Double>) -> Double {
        if p < keyCount { return -representatives[top &- p] }
        if p >= positiveKeysStart { return representatives[first &+ (p &- positiveKeysStart)] }
        if p == zeroPosition { return 0 }
        if p < zeroPosition {
            let index = Self.tinySlots &- 1 &- (p &- negativeTinyStart)
            return -LogBucketSketch.tinyRepresentative(exponent: LogBucketSketch.tinyExponentBase &+ index)
        }
        let index = p &- zeroPosition &- 1
        return LogBucketSketch.tinyRepresentative(exponent: LogBucketSketch.tinyExponentBase &+ index)
    }

    /// The count of the cell at `p`.
    @inline(__always)
    func count(_ p: Int) -> Int {
        if p < keyCount { return Int(counts[0x8000 | (top &- p)]) }
        if p >= positiveKeysStart { return Int(counts[first &+ (p &- positiveKeysStart)]) }
        if p == zeroPosition { return zeroCount }
        if tiny.isEmpty { return 0 }
        if p < zeroPosition { return tiny[Self.tinySlots &+ Self.tinySlots &- 1 &- (p &- negativeTinyStart)] }
        return tiny[p &- zeroPosition &- 1]
    }

    /// The sum of `n` counts from `p` on (contiguous keys).
    @inline(__always)
    static func sum(_ p: UnsafePointer<UInt32>, _ n: Int) -> Int {
        Int(truncatingIfNeeded: gs_sum_counts(p, Int64(n)))
    }

    /// The total count of the positions `start ..< end`.
    func sum(_ start: Int, _ end: Int) -> Int {
        guard start < end else { return 0 }
        var total = 0
        // Negative keys: positions start ..< min(end, keyCount) are magnitudes top - p.
        let negativeEnd = Swift.min(end, keyCount)
        if start < negativeEnd {
            let low = top &- (negativeEnd &- 1)
            total &+= Self.sum(counts + (0x8000 | low), negativeEnd &- start)
        }
        let middleStart = Swift.max(start, keyCount), middleEnd = Swift.min(end, positiveKeysStart)
        if middleStart < middleEnd {
            for p in middleStart..<middleEnd { total &+= count(p) }
        }
        let positiveStart = Swift.max(start, positiveKeysStart)
        if positiveStart < end {
            total &+= Self.sum(counts + (first &+ (positiveStart &- positiveKeysStart)), end &- positiveStart)
        }
        return total
    }

    /// A position near the cell holding `x` (a starting point for searches; any position is correct).
    func position(near x: Double) -> Int {
        guard x.isFinite else { return x > 0 ? positions &- 1 : 0 }
        if x == 0 { return zeroPosition }
        let magnitude = Int(LogBucketSketch.floatMagnitudeBits(forFinite: x) &>> 16)
        if magnitude < first { return zeroPosition }
        let offset = Swift.min(magnitude, top) &- first
        return x < 0 ? keyCount &- 1 &- offset : positiveKeysStart &+ offset
    }

    /// The nearest-rank quantiles of ascending `ranks` (each at least 1), clamped to
    /// `[minimum, maximum]`; `maximum` for a rank past the last cell.
    func quantiles(ranks: [Int], minimum: Double, maximum: Double, into quantiles: inout [Double?]) {
        LogBucketSketch.representatives.withUnsafeBufferPointer { table in
            var next = 0
            var cumulative = 0
            // Blocks of 256 positions are summed first, then the 16-position parts of a block a rank
            // falls in, and only the positions of a part a rank falls in are looked at one by one.
            var start = 0
            let end = positions
            while start < end && next < ranks.count {
                let stop = Swift.min(end, start &+ 256)
                let total = sum(start, stop)
                if cumulative &+ total < ranks[next] {
                    cumulative &+= total
                    start = stop
                    continue
                }
                var part = start
                while part < stop && next < ranks.count {
                    let partStop = Swift.min(stop, part &+ 16)
                    let partTotal = sum(part, partStop)
                    if cumulative &+ partTotal < ranks[next] {
                        cumulative &+= partTotal
                        part = partStop
                        continue
                    }
                    for p in part..<partStop where next < ranks.count {
                        cumulative &+= count(p)
                        while next < ranks.count && ranks[next] <= cumulative {
                            quantiles[next] = Swift.min(maximum, Swift.max(minimum, value(p, table)))
                            next &+= 1
                        }
                    }
                    part = partStop
                }
                start = stop
            }
            while next < ranks.count {
                quantiles[next] = maximum
                next &+= 1
            }
        }
    }

    /// The exact `floor(log2 |x|)` histogram of the `Float32` values counted in the table.
    func log2Histogram(zeros: Int) -> Log2Histogram {
        // Float32 exponents span -149 ... 127; slot = exponent - lowest.
        let lowest = LogBucketSketch.tinyExponentBase
        // The slots the keys and tiny buckets can reach (a key's exponent grows with its magnitude),
        // counted straight into the result: a table of all 277 exponents, over 1 KiB, would come
        // from the shared heap, under its lock, for every tensor and save.
        var lo = Int.max, hi = Int.min
        if keyCount > 0 {
            lo = LogBucketSketch.exponent(magnitudeKey: UInt16(first)) &- lowest
            hi = LogBucketSketch.exponent(magnitudeKey: UInt16(top)) &- lowest
        }
        if !tiny.isEmpty {
            lo = Swift.min(lo, 0)
            hi = Swift.max(hi, Self.tinySlots &- 1)
        }
        guard lo <= hi else { return Log2Histogram(minExponent: 0, counts: [], zeros: zeros) }
        var result = [Int](repeating: 0, count: hi &- lo &+ 1)
        result.withUnsafeMutableBufferPointer { buffer in
            guard let table = buffer.baseAddress else { return }
            if keyCount > 0 {
                var magnitude = first
                // Subnormal keys: the exponent from the leading bit.
                while magnitude <= top && magnitude < 128 {
                    let key = UInt16(magnitude)
                    let slot = LogBucketSketch.exponent(magnitudeKey: key) &- lowest
                    table[slot &- lo] &+= Int(counts[magnitude]) &+ Int(counts[0x8000 | magnitude])
                    magnitude &+= 1
                }
                // Normal keys: 128 magnitudes to an exponent.
                while magnitude <= top {
                    let blockEnd = Swift.min(top, magnitude | 127)
                    let n = blockEnd &- magnitude &+ 1
                    let slot = (magnitude &>> 7) &- 127 &- lowest
                    table[slot &- lo] &+= Self.sum(counts + magnitude, n) &+ Self.sum(counts + (0x8000 | magnitude), n)
                    magnitude = blockEnd &+ 1
                }
            }
            if !tiny.isEmpty {
                for index in 0..<Self.tinySlots {
                    table[index &- lo] &+= tiny[index] &+ tiny[Self.tinySlots &+ index]
                }
            }
        }
        // Empty slots at either end are dropped: the histogram runs from the lowest to the highest exponent counted.
        var low = 0
        while low < result.count && result[low] == 0 { low &+= 1 }
        guard low < result.count else { return Log2Histogram(minExponent: 0, counts: [], zeros: zeros) }
        var high = result.count &- 1
        while result[high] == 0 { high &-= 1 }
        if high < result.count &- 1 { result.removeLast(result.count &- 1 &- high) }
        if low > 0 { result.removeFirst(low) }
        return Log2Histogram(minExponent: lo &+ low &+ lowest, counts: result, zeros: zeros)
    }
}

extension StatsAccumulator {
    /// ``linearHistogram(cells:finite:)`` of the cells of a dense table: each bin's first cell is
    /// found by a search started at the cell of the bin's lower edge (one or two bin lookups
    /// when the start is right), and each bin's count is a sum over the table.
    func linearHistogram(_ cells: DenseSketchCells, finite: Int) -> LinearHistogram {
        guard maximum > minimum else {
            return LinearHistogram(lower: minimum, upper: maximum, counts: [finite])
        }
        let (low, high, binCount) = (minimum, maximum, histogramBins)
        let end = cells.positions
        var bins = [Int](repeating: 0, count: binCount)
        // `LinearHistogram.binIndex` divides by the bins' span; here the quotient is first estimated
        // with its reciprocal, and taken only when no integer (no bin edge) lies within 1e-7 of the
        // estimate: the two differ by a few ulps, so they then fall in the same bin. Near an edge,
        // and for spans too small or bins too many for that bound, the division decides as before.
        let halfLow = low / 2, span = high / 2 - low / 2
        let inverse = 1 / span
        let scale = Double(binCount)
        let estimating = span.isNormal && inverse.isNormal && binCount <= 1 << 20
        LogBucketSketch.representatives.withUnsafeBufferPointer { table in
            @inline(__always)
            func bin(_ p: Int) -> Int {
                let value = Swift.min(high, Swift.max(low, cells.value(p, table)))
                if estimating {
                    // In 0 ... about `scale` (the value is clamped to the edges); the distance to the
                    // nearest integer from the truncation (`rounded()` is a library call here).
                    let estimate = (value / 2 - halfLow) * inverse * scale
                    if estimate >= 0 && estimate < scale + 1 {
                        let whole = Int(estimate)
                        let fraction = estimate - Double(whole)
                        if Swift.min(fraction, 1 - fraction) > 1e-7 {
                            return Swift.min(binCount &- 1, whole)
                        }
                    }
                }
                return LinearHistogram.binIndex(for: value, lower: low, upper: high, binCount: binCount)
            }
            // The first position of each bin from 1 on: the first whose bin is at least j.
            var start = 0
            for j in 1..<binCount {
                var lower = start, upper = end  // the answer lies in lower ... upper
                let edge = (low / 2 + (high / 2 - low / 2) * (Double(j) / Double(binCount))) * 2
                let guess = Swift.min(Swift.max(cells.position(near: edge), lower), upper)
                if guess < upper {
                    if bin(guess) >= j {
                        upper = guess
                        var step = 1
                        while upper &- step >= lower {
                            let q = upper &- step
                            if bin(q) >= j {
                                upper = q
                                step &*= 2
                            } else {
                                lower = q &+ 1
                                break
                            }
                        }
                    } else {
                        lower = guess &+ 1
                        var step = 1
                        while lower &+ step &- 1 < upper {
                            let q = lower &+ step &- 1
                            if bin(q) >= j {
                                upper = q
                                break
                            }
                            lower = q &+ 1
                            step &*= 2
                        }
                    }
                }
                while lower < upper {
                    let middle = lower &+ (upper &- lower) / 2
                    if bin(middle) >= j { upper = middle } else { lower = middle &+ 1 }
                }
                bins[j &- 1] &+= cells.sum(start, lower)
                start = lower
            }
            bins[binCount &- 1] &+= cells.sum(start, end)
        }
        return LinearHistogram(lower: minimum, upper: maximum, counts: bins)
    }
}
