import GradScopeKernels
import GradScopeStatistics
import TestSupport
import Testing

/// The dense sketch reads and clears only the magnitudes it counted, and reuses its tables: its
/// quantiles and histograms must be those of counting every value into a table read whole.
@Suite("Sketch read over its counted range")
struct StatisticsSketchRangeTests {
    /// Quantiles, linear histogram and log2 histogram as the sketch defines them, from a full
    /// 65536-key table of `values` read from end to end, and each cell binned on its own.
    func reference(_ values: [Float], bins: Int = 32) -> (quantiles: [Double?], histogram: LinearHistogram?, log2: Log2Histogram) {
        var table = [Int](repeating: 0, count: 1 << 16)
        var tiny = [Int](repeating: 0, count: 2 * LogBucketSketch.tinyExponentCount)
        var finite = 0, zeros = 0
        var minimum = Double.infinity, maximum = -Double.infinity
        var log2 = [Int: Int]()
        for x in values {
            let bits = x.bitPattern
            table[Int(bits >> 16)] += 1
            guard x.isFinite else { continue }
            finite += 1
            minimum = min(minimum, Double(x))
            maximum = max(maximum, Double(x))
            if x == 0 {
                zeros += 1
                continue
            }
            log2[Int(x.exponent), default: 0] += 1
            let magnitude = bits & 0x7FFF_FFFF
            if magnitude <= 0xFFFF {
                tiny[(x < 0 ? LogBucketSketch.tinyExponentCount : 0) + 31 - magnitude.leadingZeroBitCount] += 1
            }
        }
        var keys: [UInt16] = []
        var counts: [Int] = []
        for key in 0..<(1 << 16) where table[key] != 0 && UInt16(key) & 0x7FFF < LogBucketSketch.nonFiniteMagnitudeKey {
            keys.append(UInt16(key))
            counts.append(table[key])
        }
        let cells = StatsAccumulator.valueOrderedCells(keys: keys, counts: counts, tiny: tiny)
        var quantiles = [Double?](repeating: nil, count: 5)
        var histogram: LinearHistogram?
        if finite > 0 {
            let ranks = StatsAccumulator.reportedPercents.map { StatsAccumulator.nearestRank(count: finite, percent: $0) }
            var next = 0, cumulative = 0
            for cell in cells where next < ranks.count {
                cumulative += cell.count
                while next < ranks.count && ranks[next] <= cumulative {
                    quantiles[next] = min(maximum, max(minimum, cell.value))
                    next += 1
                }
            }
            while next < ranks.count {
                quantiles[next] = maximum
                next += 1
            }
            if maximum > minimum {
                var counts = [Int](repeating: 0, count: bins)
                for cell in cells where cell.count > 0 {
                    let value = min(maximum, max(minimum, cell.value))
                    counts[LinearHistogram.binIndex(for: value, lower: minimum, upper: maximum, binCount: bins)] += cell.count
                }
                histogram = LinearHistogram(lower: minimum, upper: maximum, counts: counts)
            } else {
                histogram = LinearHistogram(lower: minimum, upper: maximum, counts: [finite])
            }
        }
        let low = log2.keys.min() ?? 0, high = log2.keys.max() ?? -1
        let log2Histogram = Log2Histogram(minExponent: low, counts: low <= high ? (low...high).map { log2[$0, default: 0] } : [], zeros: zeros)
        return (quantiles, histogram, log2Histogram)
    }

    func check(_ name: String, _ values: [Float], blockSizes: [[Int]] = [[], [1, 17, 300], [4096]]) {
        let expected = reference(values)
        for sizes in blockSizes {
            var accumulator = StatsAccumulator()
            statsAddInBlocks(values, to: &accumulator, blockSizes: sizes.isEmpty ? [max(values.count, 1)] : sizes)
            let stats = accumulator.finish()
            #expect([stats.p1, stats.p5, stats.p50, stats.p95, stats.p99] == expected.quantiles, "\(name) \(sizes)")
            #expect(stats.histogram == expected.histogram, "\(name) \(sizes)")
            #expect(stats.log2Histogram == expected.log2, "\(name) \(sizes)")
        }
    }

    @Test func adversarialInputsGiveTheFullTablesAnswers() {
        var random = SplitMix64(seed: 77)
        let n = 5000
        check("all zeros", [Float](repeating: 0, count: n))
        check("negative zeros", [Float](repeating: -0.0, count: n))
        check("mixed zeros", (0..<n).map { $0 % 3 == 0 ? -0.0 : 0 })
        check("one value", [Float](repeating: 0.3, count: n))
        check("one negative value", [Float](repeating: -7.5e-12, count: n))
        check("single element", [1.5])
        check("largest magnitudes", (0..<n).map { $0 % 2 == 0 ? Float.greatestFiniteMagnitude : -Float.greatestFiniteMagnitude.nextDown })
        check(
            "subnormals",
            (0..<n).map { i in
                let bits = UInt32(truncatingIfNeeded: random.next()) & 0x007F_FFFF
                return Float(bitPattern: bits | (i % 2 == 0 ? 0x8000_0000 : 0))
            })
        check("tiny subnormals and zeros", (0..<n).map { i in i % 4 == 0 ? 0 : Float(bitPattern: UInt32(1 + i % 0xFFFF)) })
        check(
            "NaN and infinities among normals",
            (0..<n).map { i in
                switch i % 11 {
                case 0: return .nan
                case 1: return .infinity
                case 2: return -.infinity
                case 3: return Float(bitPattern: 0xFFC0_0001)  // a negative NaN with payload
                default: return Float(Double(i) * 1e-3 - 2)
                }
            })
        check("only non-finite", (0..<n).map { i in i % 2 == 0 ? Float.nan : -Float.infinity })
        check("every bit pattern", (0..<n).map { _ in Float(bitPattern: UInt32(truncatingIfNeeded: random.next())) })
        check("normal numbers", statsMixedFloatData(count: 3 * n, seed: 5))
        check(
            "non-finite chunk after finite ones",
            (0..<(3 * n)).map { i in i == 2 * n + 5 ? Float.nan : (i == 2 * n + 9 ? 1e-40 : Float(i % 97) * 1e-5 - 3e-4) })
    }

    @Test func mergedAndCopiedSketchesKeepTheirOwnCounts() {
        let a = statsMixedFloatData(count: 6000, seed: 8)
        let b = (0..<5000).map { i in Float(i % 13) * 1e20 - 1e21 }
        var first = StatsAccumulator()
        first.add(a, at: 0)
        // A copy shares the table until one of them counts more.
        let copy = first
        var second = StatsAccumulator()
        second.add(b, at: a.count)
        first.merge(second)
        let expectedMerged = reference(a + b)
        let merged = first.finish()
        #expect([merged.p1, merged.p5, merged.p50, merged.p95, merged.p99] == expectedMerged.quantiles)
        #expect(merged.histogram == expectedMerged.histogram && merged.log2Histogram == expectedMerged.log2)
        let expectedCopy = reference(a)
        let unchanged = copy.finish()
        #expect([unchanged.p1, unchanged.p5, unchanged.p50, unchanged.p95, unchanged.p99] == expectedCopy.quantiles)
        #expect(unchanged.histogram == expectedCopy.histogram && unchanged.log2Histogram == expectedCopy.log2)
    }

    @Test func reusedTablesComeBackZeroed() {
        // Many tensors one after another, each of a different range: every one sees a clean table.
        for round in 0..<40 {
            let scale = Float(1 << (round % 20)) * (round % 3 == 0 ? 1e-30 : 1)
            let values = statsMixedFloatData(count: 2500 + 97 * round, seed: UInt64(round)).map { $0 * scale }
            let expected = reference(values)
            var accumulator = StatsAccumulator()
            accumulator.add(values, at: 0)
            let stats = accumulator.finish()
            #expect([stats.p1, stats.p5, stats.p50, stats.p95, stats.p99] == expected.quantiles, "round \(round)")
            #expect(stats.histogram == expected.histogram && stats.log2Histogram == expected.log2, "round \(round)")
        }
        #expect(DenseCountsPool.held <= DenseCountsPool.capacity)
        let table = DenseCountsPool.take()
        var nonzero = 0
        for key in 0..<LogBucketSketch.keySpace where table[key] != 0 { nonzero += 1 }
        #expect(nonzero == 0)
        DenseCountsPool.give(table, low: 0, high: 0x7FFF)
    }

    @Test func spilledCountsAreReadOverTheirRange() {
        let values = statsMixedFloatData(count: 9000, seed: 21)
        var accumulator = StatsAccumulator()
        accumulator.floatSketch.spillThreshold = 2500
        statsAddInBlocks(values, to: &accumulator, blockSizes: [2048])
        let stats = accumulator.finish()
        let expected = reference(values)
        #expect([stats.p1, stats.p5, stats.p50, stats.p95, stats.p99] == expected.quantiles)
        #expect(stats.histogram == expected.histogram && stats.log2Histogram == expected.log2)
    }

    @Test func everyKernelCopyFindsTheSmallestNonzeroMagnitude() throws {
        var random = SplitMix64(seed: 3)
        for isa in ["baseline", "avx2+fma", "avx512"] {
            guard let kernels = gs_kernels_for_isa(isa)?.pointee else { continue }
            for n in [1, 7, 31, 32, 33, 64, 100, 2048] {
                for zeroEvery in [1, 2, 5, 1000] {
                    let values: [Float] = (0..<n).map { i in
                        i % zeroEvery == 0 ? (i % 2 == 0 ? 0 : -0.0) : Float(bitPattern: UInt32(truncatingIfNeeded: random.next()) & 0xBF7F_FFFF)
                    }
                    var expected = UInt32.max
                    for x in values where x != 0 { expected = min(expected, x.bitPattern & 0x7FFF_FFFF) }
                    var summary = gs_float_summary()
                    let finite = values.withUnsafeBufferPointer { kernels.summarize($0.baseAddress, Int64(n), .nan, nil, &summary) }
                    #expect(finite)
                    #expect(summary.minMagnitudeBits == expected, "\(isa) n \(n) zeros every \(zeroEvery)")
                }
            }
        }
    }
}
