import GradScopeStatistics
import TestSupport
import Testing

/// `finish()` reads a dense sketch table directly (quantiles, linear and log2 histogram); the
/// numbers must be those of listing the table's keys as value-ordered cells, bit for bit.
@Suite("Finish read from the dense table")
struct StatisticsDenseFinishTests {
    func check(_ name: String, _ values: [Float], bins: [Int] = [1, 2, 3, 32, 100], blockSizes: [Int] = [2048]) {
        for binCount in bins {
            var accumulator = StatsAccumulator(histogramBins: binCount)
            statsAddInBlocks(values, to: &accumulator, blockSizes: blockSizes)
            let fast = accumulator.finish()
            let listed = accumulator.finish(readingDenseTable: false)
            #expect(fast == listed, "\(name), \(binCount) bins")
            #expect(fast.histogram?.counts.reduce(0, +) == (fast.finiteCount > 0 ? fast.finiteCount : nil), "\(name)")
        }
    }

    @Test func readingTheTableGivesTheListedCellsNumbers() {
        var random = SplitMix64(seed: 91)
        let n = 6000
        check("gaussian-like", statsMixedFloatData(count: 3 * n, seed: 1))
        check("large mean", statsMixedFloatData(count: n, seed: 2, mean: 1e4, scale: 1e-3))
        check("positive only", statsMixedFloatData(count: n, seed: 3).map { abs($0) + 1e-3 })
        check("negative only", statsMixedFloatData(count: n, seed: 4).map { -abs($0) - 1e-30 })
        check("all zeros", [Float](repeating: 0, count: n))
        check("negative zeros", [Float](repeating: -0.0, count: n))
        check("zeros of both signs and one value", (0..<n).map { i in i % 3 == 0 ? -0.0 : (i % 3 == 1 ? 0 : 2.5) })
        check("constant", [Float](repeating: -0.125, count: n))
        check("two values", (0..<n).map { $0 % 2 == 0 ? 1 : 1.0078125 })
        check("mostly zeros", (0..<n).map { i in i % 97 == 0 ? Float(i) * 1e-3 - 3 : 0 })
        check("largest magnitudes", (0..<n).map { $0 % 2 == 0 ? Float.greatestFiniteMagnitude : -Float.greatestFiniteMagnitude })
        check(
            "subnormals, tiny and zeros",
            (0..<n).map { i in
                switch i % 5 {
                case 0: return 0
                case 1: return Float(bitPattern: UInt32(1 + i % 0xFFFF))
                case 2: return -Float(bitPattern: UInt32(1 + (i * 7) % 0xFFFF))
                case 3: return Float(bitPattern: UInt32(truncatingIfNeeded: random.next()) & 0x807F_FFFF)
                default: return Float.leastNormalMagnitude * Float(i % 9)
                }
            })
        check(
            "NaN and infinities among normals",
            (0..<n).map { i in
                switch i % 11 {
                case 0: return .nan
                case 1: return .infinity
                case 2: return -.infinity
                default: return Float(Double(i) * 1e-3 - 2)
                }
            })
        check("only non-finite", (0..<n).map { i in i % 2 == 0 ? Float.nan : -Float.infinity })
        check("every bit pattern", (0..<(4 * n)).map { _ in Float(bitPattern: UInt32(truncatingIfNeeded: random.next())) })
        check(
            "outliers",
            (0..<n).map { i in i == 17 ? 1e30 : (i == 4000 ? -3e-20 : Float(i % 101) * 1e-4 - 5e-3) },
            blockSizes: [1, 2047, 3000])
        check("a wide range", (0..<n).map { i in Float(sign: i % 2 == 0 ? .plus : .minus, exponent: i % 250 - 125, significand: 1.3) })
        for seed in 0..<20 {
            let scale = Double(Float(1 << (seed % 12))) * (seed % 4 == 0 ? 1e-35 : 1e-3)
            check("seed \(seed)", statsMixedFloatData(count: 2049 + 331 * seed, seed: UInt64(100 + seed), scale: scale), bins: [32])
        }
    }

    @Test func shortListsAreCountedIntoATableAndReadTheSameWay() {
        var random = SplitMix64(seed: 5)
        for n in [1, 2, 5, 31, 128, 384, 512, 2047, 2048] {
            check("gaussian-like \(n)", statsMixedFloatData(count: n, seed: UInt64(n)), blockSizes: [n])
            let tiny: [Float] = (0..<n).map { i in
                let bits = UInt32(1 + (i * 31) % 0xFFFF)
                return i % 3 == 0 ? 0 : Float(bitPattern: bits)
            }
            check("zeros and tiny \(n)", tiny, blockSizes: [n])
            check("random bits \(n)", (0..<n).map { _ in Float(bitPattern: UInt32(truncatingIfNeeded: random.next())) }, blockSizes: [7, n])
            let withNaN: [Float] = (0..<n).map { i in i == n / 2 ? Float.nan : Float(i) * 0.25 - 3 }
            check("a NaN among \(n)", withNaN, blockSizes: [n])
        }
        // A list holding non-finite keys is read from its list.
        var accumulator = StatsAccumulator()
        let values: [Float] = [1, Float.infinity, 2]
        accumulator.add(values, at: 0)
        #expect(accumulator.floatSketch.readableDenseTable() == nil)
        #expect(accumulator.finish().p50 == accumulator.finish(readingDenseTable: false).p50)
    }

    @Test func mergedTablesAreReadTheSameWay() {
        let a = statsMixedFloatData(count: 5000, seed: 8)
        let b = (0..<4000).map { i in Float(i % 13) * 1e-20 - 1e-19 }
        var first = StatsAccumulator()
        first.add(a, at: 0)
        var second = StatsAccumulator()
        second.add(b, at: a.count)
        first.merge(second)
        #expect(first.finish() == first.finish(readingDenseTable: false))
        #expect(first.finish().p50 != nil)
    }

    @Test func withoutDistributionsOnlyTheQuantilesAndLinearHistogramAreLeftOut() {
        let cases: [(String, [Float])] = [
            ("gaussian-like", statsMixedFloatData(count: 5000, seed: 21)),
            ("zeros and values", (0..<3000).map { i in i % 4 == 0 ? 0 : Float(i) * 1e-3 - 1 }),
            ("NaN among values", (0..<100).map { i in i == 50 ? Float.nan : Float(i) }),
            ("empty", []),
        ]
        for (name, values) in cases {
            var accumulator = StatsAccumulator()
            if !values.isEmpty { accumulator.add(values, at: 0) }
            let full = accumulator.finish()
            let lean = accumulator.finish(distributions: false)
            #expect(lean.p1 == nil && lean.p5 == nil && lean.p50 == nil && lean.p95 == nil && lean.p99 == nil, "\(name)")
            #expect(lean.histogram == nil, "\(name)")
            var expected = full
            (expected.p1, expected.p5, expected.p50, expected.p95, expected.p99) = (nil, nil, nil, nil, nil)
            expected.histogram = nil
            #expect(lean == expected, "\(name)")
            #expect(full.finiteCount == 0 || full.p50 != nil, "\(name)")
        }
        // A float64 sketch is not held in a dense table: the same holds on the listed path.
        var doubles = StatsAccumulator()
        doubles.add((0..<2000).map { Double($0) * 1e-3 - 0.7 }, at: 0)
        var expected = doubles.finish()
        (expected.p1, expected.p5, expected.p50, expected.p95, expected.p99) = (nil, nil, nil, nil, nil)
        expected.histogram = nil
        #expect(doubles.finish(distributions: false) == expected)
        #expect(doubles.finish().p50 != nil)
    }

    @Test func listedKeysGiveTheDenseTablesLog2Histogram() {
        // Small tensors keep their keys in a list; without distributions their log2 histogram is
        // counted from it. It must be the table's, bin for bin, tiny subnormals and both zeros included.
        var random = SplitMix64(seed: 77)
        var cases: [(String, [Float])] = [
            ("one value", [0.5]),
            ("zeros only", [0, -0.0, 0]),
            ("tiny only", [Float.leastNonzeroMagnitude, -Float.leastNonzeroMagnitude * 9, Float(bitPattern: 0x0000_0400)]),
            ("tiny and normal", [Float.leastNonzeroMagnitude, 3, -1e-30, 0, Float(bitPattern: 0x0000_FFFF), 1e30]),
            ("subnormal keys", [Float(bitPattern: 0x0001_0000), Float(bitPattern: 0x0040_0000), -Float.leastNormalMagnitude]),
            ("a bias", (0..<512).map { _ in Float(0.02 * random.gaussian()) }),
            ("the list's capacity", (0..<LogBucketSketch.pendingCapacity).map { i in Float(i) * 1e-3 - 1 }),
        ]
        let mixed = statsMixedFloatData(count: 300, seed: 5).filter(\.isFinite)
        cases.append(("mixed", mixed))
        for (name, values) in cases {
            var accumulator = StatsAccumulator()
            accumulator.add(values, at: 0)
            let lean = accumulator.finish(distributions: false).log2Histogram
            #expect(lean == accumulator.finish().log2Histogram, "\(name)")
            #expect(lean == accumulator.finish(readingDenseTable: false).log2Histogram, "\(name)")
            let nonzero = values.filter { $0 != 0 }.count
            #expect(lean.counts.reduce(0, +) == nonzero, "\(name)")
        }
        // More keys than the list holds: the dense table answers as before.
        var large = StatsAccumulator()
        large.add((0..<(LogBucketSketch.pendingCapacity + 1)).map { Float($0) + 0.5 }, at: 0)
        #expect(large.finish(distributions: false).log2Histogram == large.finish().log2Histogram)
    }
}
