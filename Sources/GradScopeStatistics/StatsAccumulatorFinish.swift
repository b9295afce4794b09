import GradScopeKernels

extension StatsAccumulator {
    /// The percentiles reported in ``TensorStats`` (`p1`, `p5`, `p50`, `p95`, `p99`).
    package static let reportedPercents = [1, 5, 50, 95, 99]

    /// The nearest rank `ceil(n * percent / 100)` (at least 1), without overflow.
    package static func nearestRank(count n: Int, percent: Int) -> Int {
        let rank = (n / 100) * percent + ((n % 100) * percent + 99) / 100
        return Swift.max(1, rank)
    }

    /// The statistics of everything added so far. The accumulator is unchanged
    /// and can keep accepting data.
    public func finish() -> TensorStats { finish(readingDenseTable: true) }

    /// ``finish()``; with `distributions` false, without the quantiles and the linear histogram
    /// (nil), for a caller that keeps neither: every other number is the same. They cost most of
    /// a small tensor's finish (a search and a sum over the sketch table per bin and per quantile).
    package func finish(distributions: Bool) -> TensorStats {
        finish(readingDenseTable: true, distributions: distributions)
    }

    /// ``finish()``; with `readingDenseTable` false, the quantiles and histograms of a
    /// sketch held in a dense table are taken from its listed keys, as for any other sketch
    /// (the same numbers, more slowly: for tests comparing the two).
    package func finish(readingDenseTable: Bool, distributions: Bool = true) -> TensorStats {
        let finite = moments.count
        let scale = scaleExponent
        var mean: Double?
        var std: Double?
        var l2Norm: Double?
        var minValue: Double?
        var maxValue: Double?
        var maxAbs: Double?
        if finite > 0 {
            let unscaledMean = StatsScaling.multiply(moments.mean, byPowerOfTwo: scale)
            mean = Swift.min(maximum, Swift.max(minimum, unscaledMean))
            let deviation = (moments.m2 / Double(finite)).squareRoot()
            std = StatsScaling.unscaleSaturating(deviation, byPowerOfTwo: scale)
            l2Norm = StatsScaling.unscaleSaturating(moments.sumSquares.squareRoot(), byPowerOfTwo: scale)
            minValue = minimum
            maxValue = maximum
            maxAbs = Swift.max(-minimum, maximum)
        }

        // Without distributions, none (an empty array is no allocation, for each tensor and save).
        var quantiles = [Double?](repeating: nil, count: distributions ? Self.reportedPercents.count : 0)
        var histogram: LinearHistogram?
        let log2Histogram: Log2Histogram
        if !distributions, doubleSketch.isEmpty, let listed = floatSketch.listedLog2Histogram(zeros: zeros) {
            // Only the log2 histogram is read: a short list of keys gives it without a table.
            log2Histogram = listed
        } else if readingDenseTable, doubleSketch.isEmpty, let table = floatSketch.readableDenseTable() {
            // Float32 tensors: read straight from a table (``DenseSketchCells``).
            let cells = DenseSketchCells(table: table, tiny: floatSketch.tiny)
            if finite > 0 && distributions {
                cells.quantiles(
                    ranks: Self.reportedPercents.map { Self.nearestRank(count: finite, percent: $0) },
                    minimum: minimum, maximum: maximum, into: &quantiles)
                histogram = linearHistogram(cells, finite: finite)
            }
            log2Histogram = cells.log2Histogram(zeros: zeros)
        } else {
            let combined: LogBucketSketch
            if doubleSketch.isEmpty {
                combined = floatSketch
            } else if floatSketch.isEmpty {
                combined = doubleSketch
            } else {
                var merged = floatSketch
                merged.merge(doubleSketch)
                combined = merged
            }
            let combinedKeys = combined.keyCounts()
            if finite > 0 && distributions {
                let cells = Self.valueOrderedCells(keys: combinedKeys.keys, counts: combinedKeys.counts, tiny: combined.tiny)
                let ranks = Self.reportedPercents.map { Self.nearestRank(count: finite, percent: $0) }
                var next = 0
                var cumulative = 0
                for cell in cells.indices where next < ranks.count {
                    cumulative &+= cells[cell].count
                    while next < ranks.count && ranks[next] <= cumulative {
                        quantiles[next] = Swift.min(maximum, Swift.max(minimum, cells[cell].value))
                        next &+= 1
                    }
                }
                while next < ranks.count {
                    quantiles[next] = maximum
                    next &+= 1
                }
                histogram = linearHistogram(cells: cells, finite: finite)
            }
            log2Histogram = makeLog2Histogram(
                floatKeys: doubleSketch.isEmpty ? combinedKeys : floatSketch.keyCounts())
        }

        var unitNorms: [Double]?
        var unitZeroCount: [Int]?
        if unitMap.isActive && unitsConsistent {
            unitNorms = unitSquares.map {
                StatsScaling.unscaleSaturating($0.squareRoot(), byPowerOfTwo: scale)
            }
            unitZeroCount = unitZeros
        }

        func quantile(_ index: Int) -> Double? { quantiles.indices.contains(index) ? quantiles[index] : nil }
        var stats = TensorStats(
            count: count, finiteCount: finite,
            mean: mean, std: std, min: minValue, max: maxValue, maxAbs: maxAbs, l2Norm: l2Norm,
            zeros: zeros, nan: nan, posInf: posInf, negInf: negInf,
            p1: quantile(0), p5: quantile(1), p50: quantile(2), p95: quantile(3), p99: quantile(4),
            histogram: histogram, log2Histogram: log2Histogram,
            unitNorms: unitNorms, unitZeroCount: unitZeroCount)
        if inputMap != nil { stats.inputZeroCount = inputZeros }
        return stats
    }

    package struct Cell {
        package var value: Double
        package var count: Int
    }

    /// The sketch buckets as (representative value, count) in ascending value
    /// order: negative keys, negative tiny values, zeros, positive tiny values,
    /// positive keys.
    package static func valueOrderedCells(keys: [UInt16], counts: [Int], tiny: [Int]) -> [Cell] {
        // Counted first, then written in place: the negative keys backwards from the end of their part
        // (the reverse of their order), the positive ones in order.
        var zeroKeyCount = 0
        var positiveCount = 0, negativeCount = 0
        for i in keys.indices {
            if keys[i] & 0x7FFF == 0 {
                zeroKeyCount &+= counts[i]
            } else if keys[i] & LogBucketSketch.negativeFlag == 0 {
                positiveCount &+= 1
            } else {
                negativeCount &+= 1
            }
        }
        let tinySlots = LogBucketSketch.tinyExponentCount
        var negativeTiny = 0, positiveTiny = 0
        if !tiny.isEmpty {
            for index in 0..<tinySlots {
                if tiny[index] > 0 { positiveTiny &+= 1 }
                if tiny[tinySlots + index] > 0 { negativeTiny &+= 1 }
            }
        }
        let total = negativeCount + negativeTiny + 1 + positiveTiny + positiveCount
        return [Cell](unsafeUninitializedCapacity: total) { cells, initialized in
            LogBucketSketch.representatives.withUnsafeBufferPointer { table in
                keys.withUnsafeBufferPointer { keys in
                    counts.withUnsafeBufferPointer { counts in
                        func representative(_ magnitude: UInt16) -> Double {
                            Int(magnitude) < table.count ? table[Int(magnitude)] : LogBucketSketch.representative(magnitudeKey: magnitude)
                        }
                        // Negative keys, in the reverse of their order.
                        var out = negativeCount
                        for i in 0..<keys.count where keys[i] & LogBucketSketch.negativeFlag != 0 {
                            let magnitude = keys[i] & 0x7FFF
                            guard magnitude != 0 else { continue }
                            out &-= 1
                            cells.initializeElement(
                                at: out, to: Cell(value: -representative(magnitude), count: counts[i]))
                        }
                        out = negativeCount
                        var tinyTotal = 0
                        if !tiny.isEmpty {
                            for index in stride(from: tinySlots - 1, through: 0, by: -1) where tiny[tinySlots + index] > 0 {
                                let e = LogBucketSketch.tinyExponentBase + index
                                cells.initializeElement(
                                    at: out, to: Cell(value: -LogBucketSketch.tinyRepresentative(exponent: e), count: tiny[tinySlots + index]))
                                out &+= 1
                                tinyTotal &+= tiny[tinySlots + index]
                            }
                        }
                        let zeroSlot = out
                        out &+= 1
                        if !tiny.isEmpty {
                            for index in 0..<tinySlots where tiny[index] > 0 {
                                let e = LogBucketSketch.tinyExponentBase + index
                                cells.initializeElement(
                                    at: out, to: Cell(value: LogBucketSketch.tinyRepresentative(exponent: e), count: tiny[index]))
                                out &+= 1
                                tinyTotal &+= tiny[index]
                            }
                        }
                        cells.initializeElement(at: zeroSlot, to: Cell(value: 0, count: Swift.max(0, zeroKeyCount &- tinyTotal)))
                        for i in 0..<keys.count where keys[i] & LogBucketSketch.negativeFlag == 0 {
                            let magnitude = keys[i] & 0x7FFF
                            guard magnitude != 0 else { continue }
                            cells.initializeElement(
                                at: out, to: Cell(value: representative(magnitude), count: counts[i]))
                            out &+= 1
                        }
                    }
                }
            }
            initialized = total
        }
    }

    /// The linear histogram over `[minimum, maximum]` from the sketch cells.
    package func linearHistogram(cells: [Cell], finite: Int) -> LinearHistogram {
        guard maximum > minimum else {
            return LinearHistogram(lower: minimum, upper: maximum, counts: [finite])
        }
        var bins = [Int](repeating: 0, count: histogramBins)
        // The cells ascend in value and a cell's bin never decreases with its value (every step
        // of `binIndex` is monotonic), so each bin takes a run of cells: its end is found by a
        // binary search, and only the runs' first and searched cells are binned, not every cell.
        let (low, high, binCount) = (minimum, maximum, histogramBins)
        cells.withUnsafeBufferPointer { cells in
            func bin(_ i: Int) -> Int {
                LinearHistogram.binIndex(for: Swift.min(high, Swift.max(low, cells[i].value)), lower: low, upper: high, binCount: binCount)
            }
            var start = 0
            while start < cells.count {
                let index = bin(start)
                // The first cell past the run of `index`: beyond `end`, and no further than `start + step`.
                var end = cells.count
                if index < binCount - 1 {
                    var inside = start, step = 1
                    while inside &+ step < cells.count && bin(inside &+ step) == index {
                        inside &+= step
                        step &*= 2
                    }
                    var outside = Swift.min(inside &+ step, cells.count)
                    while outside &- inside > 1 {
                        let middle = inside &+ (outside &- inside) / 2
                        if bin(middle) == index { inside = middle } else { outside = middle }
                    }
                    end = outside
                }
                var total = 0
                for i in start..<end { total &+= cells[i].count }
                bins[index] &+= total
                start = end
            }
        }
        return LinearHistogram(lower: minimum, upper: maximum, counts: bins)
    }

    /// The exact `floor(log2 |x|)` histogram: `Float32` inputs from their sketch
    /// keys (plus the tiny-subnormal table), `Float64` inputs from their exponents.
    package func makeLog2Histogram(floatKeys: (keys: [UInt16], counts: [Int])) -> Log2Histogram {
        // Float32 exponents span -149 ... 127; Float64 ones -1074 ... 1023.
        let hasDoubles = !doubleExponents.isEmpty
        let lowest = hasDoubles ? -Self.doubleExponentBias : LogBucketSketch.tinyExponentBase
        let slots = hasDoubles ? Self.doubleExponentSlots : 128 - LogBucketSketch.tinyExponentBase
        var table = [Int](repeating: 0, count: slots)
        for i in floatKeys.keys.indices {
            let magnitude = floatKeys.keys[i] & 0x7FFF
            guard magnitude != 0 else { continue }
            table[LogBucketSketch.exponent(magnitudeKey: magnitude) - lowest] &+= floatKeys.counts[i]
        }
        let tiny = floatSketch.tiny
        if !tiny.isEmpty {
            let tinySlots = LogBucketSketch.tinyExponentCount
            for index in 0..<tinySlots {
                table[LogBucketSketch.tinyExponentBase + index - lowest] &+= tiny[index] &+ tiny[tinySlots + index]
            }
        }
        if hasDoubles {
            for i in table.indices { table[i] &+= doubleExponents[i] }
        }
        guard let first = table.firstIndex(where: { $0 != 0 }),
            let last = table.lastIndex(where: { $0 != 0 })
        else {
            return Log2Histogram(minExponent: 0, counts: [], zeros: zeros)
        }
        return Log2Histogram(minExponent: first + lowest, counts: Array(table[first...last]), zeros: zeros)
    }
}
