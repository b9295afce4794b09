import ElementTypes
import Foundation
import GradScopeDiagnosis
import GradScopeMeasurement
import GradScopeModel
import GradScopeRendering
import GradScopeSources
import GradScopeStatistics
import TestSupport
import Testing

/// Checks every field of `stats` against a direct computation over `values`.
func statsExpectMatchesReference(
    _ stats: TensorStats, _ values: [Double], quantileTolerance: Double = 0.01, checkQuantiles: Bool = true,
    sourceLocation: SourceLocation = #_sourceLocation
) {
    let reference = StatsReference(values)
    #expect(stats.count == reference.count, sourceLocation: sourceLocation)
    #expect(stats.finiteCount == reference.finiteCount, sourceLocation: sourceLocation)
    #expect(stats.zeros == reference.zeros, sourceLocation: sourceLocation)
    #expect(stats.nan == reference.nan, sourceLocation: sourceLocation)
    #expect(stats.posInf == reference.posInf, sourceLocation: sourceLocation)
    #expect(stats.negInf == reference.negInf, sourceLocation: sourceLocation)
    #expect(stats.min == reference.min, sourceLocation: sourceLocation)
    #expect(stats.max == reference.max, sourceLocation: sourceLocation)
    #expect(stats.maxAbs == reference.maxAbs, sourceLocation: sourceLocation)
    #expect(statsClose(stats.mean, reference.mean, relative: 1e-12, absolute: 1e-300), sourceLocation: sourceLocation)
    #expect(statsClose(stats.std, reference.std, relative: 1e-10, absolute: 1e-300), sourceLocation: sourceLocation)
    #expect(statsClose(stats.l2Norm, reference.l2Norm, relative: 1e-12, absolute: 1e-300), sourceLocation: sourceLocation)
    let reported = [stats.p1, stats.p5, stats.p50, stats.p95, stats.p99]
    for (index, percent) in [1, 5, 50, 95, 99].enumerated() where checkQuantiles {
        let exact = reference.quantile(percent: percent)
        #expect(
            statsClose(reported[index], exact, relative: quantileTolerance, absolute: 1.2e-38),
            "p\(percent): \(String(describing: reported[index])) vs exact \(String(describing: exact))",
            sourceLocation: sourceLocation)
    }
    if reference.finiteCount > 0 {
        #expect(stats.histogram?.counts.reduce(0, +) == reference.finiteCount, sourceLocation: sourceLocation)
        #expect(stats.histogram?.lower == reference.min, sourceLocation: sourceLocation)
        #expect(stats.histogram?.upper == reference.max, sourceLocation: sourceLocation)
    } else {
        #expect(stats.histogram == nil, sourceLocation: sourceLocation)
    }
    let log2 = stats.log2Histogram
    #expect(log2.zeros == reference.zeros, sourceLocation: sourceLocation)
    #expect(log2.counts.reduce(0, +) == reference.finiteCount - reference.zeros, sourceLocation: sourceLocation)
    for (exponent, expected) in reference.log2Counts {
        #expect(log2.count(forExponent: exponent) == expected, "exponent \(exponent)", sourceLocation: sourceLocation)
    }
    if let low = reference.log2Counts.keys.min() {
        #expect(log2.minExponent == low, sourceLocation: sourceLocation)
        #expect(log2.maxExponent == reference.log2Counts.keys.max(), sourceLocation: sourceLocation)
    }
}

@Suite("TensorStats against direct computation")
struct TensorStatsTests {
    @Test func randomFloatsWithSpecialValuesInOddBlocks() {
        for count in [37, 1500, 2048, 2049, 10_007, 70_001] {
            let values = statsMixedFloatData(count: count, seed: UInt64(count))
            var accumulator = StatsAccumulator()
            statsAddInBlocks(values, to: &accumulator, blockSizes: [1, 7, 13, 1000, 2049, 3])
            statsExpectMatchesReference(accumulator.finish(), values.map(Double.init))
        }
    }

    @Test func singleBlockEqualsOddBlocks() {
        let values = statsMixedFloatData(count: 9_999, seed: 5)
        var whole = StatsAccumulator()
        whole.add(values, at: 0)
        var pieces = StatsAccumulator()
        statsAddInBlocks(values, to: &pieces, blockSizes: [3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8, 9, 7, 9])
        let a = whole.finish()
        let b = pieces.finish()
        #expect(a.count == b.count)
        #expect(a.p1 == b.p1 && a.p50 == b.p50 && a.p99 == b.p99)
        #expect(a.histogram == b.histogram)
        #expect(a.log2Histogram == b.log2Histogram)
        #expect(statsClose(a.std, b.std, relative: 1e-12))
    }

    @Test func specialValuesAreCountedExactly() throws {
        let tinySubnormal = Float.leastNonzeroMagnitude  // 2^-149
        let midSubnormal = Float(bitPattern: 0x0000_0400)  // 2^-139, below 2^-133
        let largeSubnormal = Float(bitPattern: 0x0020_0000)  // 2^-128
        let values: [Float] = [
            .nan, .infinity, -.infinity, -0.0, 0, 1, -2, tinySubnormal, midSubnormal, largeSubnormal,
            Float(bitPattern: 0x7FC0_0001),
        ]
        var accumulator = StatsAccumulator()
        accumulator.add(values, at: 0)
        let stats = accumulator.finish()
        #expect(stats.count == 11)
        #expect(stats.finiteCount == 7)
        #expect(stats.nan == 2)
        #expect(stats.posInf == 1)
        #expect(stats.negInf == 1)
        #expect(stats.zeros == 2)
        #expect(stats.min == -2)
        #expect(stats.max == 1)
        #expect(stats.maxAbs == 2)
        // Sorted finite values: -2, -0, 0, 2^-149, 2^-139, 2^-128, 1.
        #expect(stats.p1 == -2)  // rank 1, clamped to the exact minimum
        #expect(stats.p99 == 1)  // rank 7, clamped to the exact maximum
        // rank 4 is 2^-149, the only value of its tiny bucket: reported exactly.
        #expect(stats.p50 == Double(tinySubnormal))
        let log2 = stats.log2Histogram
        #expect(log2.minExponent == -149)
        #expect(log2.maxExponent == 1)
        #expect(log2.count(forExponent: -149) == 1)
        #expect(log2.count(forExponent: -139) == 1)
        #expect(log2.count(forExponent: -128) == 1)
        #expect(log2.count(forExponent: 0) == 1)
        #expect(log2.count(forExponent: 1) == 1)
        #expect(log2.counts.reduce(0, +) == 5)
        let mean = try #require(stats.mean)
        let expectedMean = (-2.0 + 1 + Double(tinySubnormal) + Double(midSubnormal) + Double(largeSubnormal)) / 7
        #expect((mean - expectedMean).magnitude <= 1e-15)
        #expect(stats.histogram?.counts.reduce(0, +) == 7)
    }

    @Test func emptyTensor() {
        var accumulator = StatsAccumulator(layout: .leading(units: 2, innerSize: 3))
        accumulator.add([Float](), at: 0)
        let stats = accumulator.finish()
        #expect(stats.count == 0)
        #expect(stats.finiteCount == 0)
        #expect(stats.mean == nil && stats.std == nil && stats.min == nil && stats.max == nil)
        #expect(stats.maxAbs == nil && stats.l2Norm == nil)
        #expect(stats.p1 == nil && stats.p50 == nil && stats.p99 == nil)
        #expect(stats.histogram == nil)
        #expect(stats.log2Histogram.counts.isEmpty)
        #expect(stats.zeroFraction == nil)
        #expect(stats.unitNorms == [0, 0])
        #expect(stats.unitZeroCount == [0, 0])
    }

    @Test func onlyNonFiniteElements() {
        var accumulator = StatsAccumulator()
        accumulator.add([Float.nan, .infinity, .nan, -.infinity], at: 0)
        let stats = accumulator.finish()
        #expect(stats.count == 4)
        #expect(stats.finiteCount == 0)
        #expect(stats.nan == 2 && stats.posInf == 1 && stats.negInf == 1)
        #expect(stats.nonFiniteCount == 4)
        #expect(stats.mean == nil && stats.l2Norm == nil && stats.p50 == nil && stats.histogram == nil)
    }

    @Test func constantTensor() throws {
        for count in [5, 5000] {
            let values = [Float](repeating: 0.3, count: count)
            var accumulator = StatsAccumulator()
            statsAddInBlocks(values, to: &accumulator, blockSizes: [17, 1000])
            let stats = accumulator.finish()
            let c = Double(Float(0.3))
            #expect(stats.mean == c)
            #expect(stats.std == 0)
            #expect(stats.min == c && stats.max == c)
            #expect(stats.p1 == c && stats.p5 == c && stats.p50 == c && stats.p95 == c && stats.p99 == c)
            let histogram = try #require(stats.histogram)
            #expect(histogram.counts == [count])
            #expect(histogram.lower == c && histogram.upper == c)
            #expect(statsClose(stats.l2Norm, c * Double(count).squareRoot(), relative: 1e-14))
            #expect(stats.log2Histogram.counts == [count])
            #expect(stats.log2Histogram.minExponent == -2)
        }
    }

    @Test func singleElement() {
        var accumulator = StatsAccumulator()
        accumulator.add([Float(-3.5)], at: 0)
        let stats = accumulator.finish()
        #expect(stats.count == 1 && stats.finiteCount == 1)
        #expect(stats.mean == -3.5 && stats.std == 0)
        #expect(stats.min == -3.5 && stats.max == -3.5 && stats.maxAbs == 3.5)
        #expect(stats.l2Norm == 3.5)
        #expect(stats.p1 == -3.5 && stats.p50 == -3.5 && stats.p99 == -3.5)
        #expect(stats.histogram?.counts == [1])
        #expect(stats.log2Histogram.minExponent == 1 && stats.log2Histogram.counts == [1])
    }

    @Test func largeMeanTinyVarianceDouble() throws {
        var random = SplitMix64(seed: 11)
        let values = (0..<100_000).map { _ in 1e6 + 1e-3 * random.gaussian() }
        var accumulator = StatsAccumulator()
        statsAddInBlocks(values, to: &accumulator, blockSizes: [999, 4097])
        let stats = accumulator.finish()
        let reference = StatsReference(values)
        let std = try #require(stats.std)
        let expected = try #require(reference.std)
        #expect((std - expected).magnitude <= 1e-9 * expected)
        #expect((expected - 1e-3).magnitude < 2e-5)  // sanity: the data really has std ≈ 1e-3
        #expect(statsClose(stats.mean, reference.mean, relative: 1e-15))
        // The textbook E[x^2] - E[x]^2 would have lost every digit here.
        let n = Double(values.count)
        let naive = values.reduce(0) { $0 + $1 * $1 } / n - pow(values.reduce(0, +) / n, 2)
        #expect((naive.magnitude.squareRoot() - expected).magnitude > 1e-2 * expected)
    }

    @Test func largeMeanTinyVarianceFloat() throws {
        var random = SplitMix64(seed: 12)
        let values = (0..<50_000).map { _ in Float(1000 + 0.01 * random.gaussian()) }
        var accumulator = StatsAccumulator()
        statsAddInBlocks(values, to: &accumulator, blockSizes: [777, 2048, 5])
        let stats = accumulator.finish()
        let reference = StatsReference(values)
        #expect(statsClose(stats.std, reference.std, relative: 1e-9))
        #expect(statsClose(stats.mean, reference.mean, relative: 1e-14))
    }

    @Test func outliersAtChunkStartsKeepMomentsAccurate() {
        // Each chunk's first element seeds the Float32 shift; an outlier there
        // makes the shift inexact, which the corrected two-pass sums absorb.
        var random = SplitMix64(seed: 14)
        var values = (0..<20_000).map { _ in Float(1000 + random.gaussian()) }
        for i in stride(from: 0, to: values.count, by: 2048) { values[i] = 3e19 }
        var accumulator = StatsAccumulator()
        accumulator.add(values, at: 0)
        let stats = accumulator.finish()
        let reference = StatsReference(values)
        #expect(statsClose(stats.std, reference.std, relative: 1e-12))
        #expect(statsClose(stats.mean, reference.mean, relative: 1e-12))
        #expect(statsClose(stats.l2Norm, reference.l2Norm, relative: 1e-12))
    }

    @Test func doubleInputMatchesFloatInput() {
        let floats = statsMixedFloatData(count: 6_001, seed: 21)
        let doubles = floats.map(Double.init)
        var f = StatsAccumulator()
        statsAddInBlocks(floats, to: &f, blockSizes: [1000])
        var d = StatsAccumulator()
        statsAddInBlocks(doubles, to: &d, blockSizes: [333])
        let a = f.finish()
        let b = d.finish()
        #expect(a.count == b.count && a.finiteCount == b.finiteCount && a.zeros == b.zeros)
        #expect(a.nan == b.nan && a.posInf == b.posInf && a.negInf == b.negInf)
        #expect(a.min == b.min && a.max == b.max)
        #expect(a.p1 == b.p1 && a.p5 == b.p5 && a.p50 == b.p50 && a.p95 == b.p95 && a.p99 == b.p99)
        #expect(a.histogram == b.histogram)
        #expect(a.log2Histogram == b.log2Histogram)
        #expect(statsClose(a.mean, b.mean, relative: 1e-12))
        #expect(statsClose(a.std, b.std, relative: 1e-12))
        #expect(statsClose(a.l2Norm, b.l2Norm, relative: 1e-12))
        statsExpectMatchesReference(b, doubles)
    }

    @Test func doubleValuesBeyondFloatRange() throws {
        let values: [Double] = [1e300, -2e300, 3e-300, .leastNonzeroMagnitude, 0, 1.5, -0x1p-1030]
        var accumulator = StatsAccumulator()
        accumulator.add(values, at: 0)
        let stats = accumulator.finish()
        statsExpectMatchesReference(stats, values, checkQuantiles: false)
        // The sketch keys on Float32: magnitudes beyond its range read as the
        // largest Float32 bucket, those below 2^-149 as the smallest subnormal.
        let p99 = try #require(stats.p99)
        #expect(p99 > 3.38e38 && p99 < 3.41e38)
        let p50 = try #require(stats.p50)
        #expect((p50 - Double.leastNonzeroMagnitude).magnitude < 1.2e-38)
        let log2 = stats.log2Histogram
        #expect(log2.minExponent == -1074)
        #expect(log2.maxExponent == Int((2e300).exponent))
        #expect(log2.count(forExponent: -1030) == 1)
    }

    @Test func hugeDoublesSaturateNormAndStayEncodable() throws {
        let values: [Double] = [1.7e308, 1.7e308, 1.7e308]
        var accumulator = StatsAccumulator(layout: .trailing(units: 1))
        accumulator.add(values, at: 0)
        let stats = accumulator.finish()
        #expect(stats.mean == 1.7e308)
        #expect(stats.std == 0)
        #expect(stats.l2Norm == .greatestFiniteMagnitude)
        #expect(stats.unitNorms == [.greatestFiniteMagnitude])
        let data = try JSONEncoder().encode(stats)
        #expect(!data.isEmpty)
    }

    @Test func scaledNormsForHugeAndTinyDoubles() {
        let huge: [Double] = [3e200, -4e200]
        var a = StatsAccumulator()
        a.add(huge, at: 0)
        #expect(statsClose(a.finish().l2Norm, 5e200, relative: 1e-15))
        #expect(statsClose(a.finish().std, 3.5e200, relative: 1e-15))
        let tiny: [Double] = [3e-200, -4e-200]
        var b = StatsAccumulator()
        b.add(tiny, at: 0)
        #expect(statsClose(b.finish().l2Norm, 5e-200, relative: 1e-15))
        #expect(statsClose(b.finish().mean, -0.5e-200, relative: 1e-15))
        // Tiny first, then huge: the tiny contribution is negligible but nothing overflows.
        var c = b
        c.add(huge, at: 2)
        #expect(statsClose(c.finish().l2Norm, 5e200, relative: 1e-15))
        // Float data after huge Float64 data goes through the scaled path.
        c.add([Float(1), Float(2)], at: 4)
        #expect(c.finish().count == 6)
        #expect(statsClose(c.finish().l2Norm, 5e200, relative: 1e-15))
        #expect(c.finish().min == -4e200)
    }

    @Test func stateIsRescaledWhenMagnitudeCrossesThreshold() {
        var accumulator = StatsAccumulator(layout: .trailing(units: 2))
        accumulator.add([0x1p399, -0x1p399], at: 0)
        accumulator.add([0x1p400, 0x1p400], at: 2)
        let stats = accumulator.finish()
        #expect(statsClose(stats.mean, 0x1p399, relative: 1e-15))
        #expect(statsClose(stats.l2Norm, 0x1p399 * Double(10).squareRoot(), relative: 1e-15))
        #expect(statsClose(stats.std, 0x1p399 * (1.5).squareRoot(), relative: 1e-14))
        let norms = stats.unitNorms ?? []
        #expect(norms.count == 2)
        #expect(statsClose(norms.first, 0x1p399 * Double(5).squareRoot(), relative: 1e-15))
        #expect(statsClose(norms.last, 0x1p399 * Double(5).squareRoot(), relative: 1e-15))
        // The same data split over two accumulators and merged.
        var first = StatsAccumulator(layout: .trailing(units: 2))
        first.add([0x1p399, -0x1p399], at: 0)
        var second = StatsAccumulator(layout: .trailing(units: 2))
        second.add([0x1p400, 0x1p400], at: 2)
        first.merge(second)
        #expect(statsClose(first.finish().l2Norm, stats.l2Norm, relative: 1e-15))
        #expect(statsClose(first.finish().mean, stats.mean, relative: 1e-15))
        // Merging moderate data into huge data must adopt the larger scale.
        var moderate = StatsAccumulator()
        moderate.add([1.0, 2.0], at: 0)
        var huge = StatsAccumulator()
        huge.add([1e300, 1e300], at: 2)
        moderate.merge(huge)
        #expect(statsClose(moderate.finish().l2Norm, 1e300 * Double(2).squareRoot(), relative: 1e-15))
        #expect(statsClose(moderate.finish().std, 0.5e300, relative: 1e-15))
    }

    @Test func histogramKnownAnswer() throws {
        var accumulator = StatsAccumulator(histogramBins: 4)
        accumulator.add([Float(0), 0, 0, 1, 5, 10], at: 0)
        let histogram = try #require(accumulator.finish().histogram)
        #expect(histogram.counts == [4, 0, 1, 1])
        #expect(histogram.edge(0) == 0 && histogram.edge(2) == 5 && histogram.edge(4) == 10)
        #expect(histogram.binIndex(for: 2.4) == 0 && histogram.binIndex(for: 2.6) == 1)
        #expect(histogram.binIndex(for: 10) == 3 && histogram.binIndex(for: -1) == 0)
    }

    @Test func configurableHistogramBins() throws {
        var random = SplitMix64(seed: 3)
        let values = (0..<4000).map { _ in Float(random.uniform(in: -1...1)) }
        var accumulator = StatsAccumulator(histogramBins: 10)
        accumulator.add(values, at: 0)
        let histogram = try #require(accumulator.finish().histogram)
        #expect(histogram.binCount == 10)
        #expect(histogram.counts.reduce(0, +) == 4000)
        #expect(StatsAccumulator(histogramBins: 0).histogramBins == 1)
    }

    @Test func histogramCountsMatchExactBinningUpToBucketWidth() throws {
        var random = SplitMix64(seed: 8)
        let values = (0..<30_000).map { _ in Float(random.gaussian() * 2 + 0.5) }
        var accumulator = StatsAccumulator(histogramBins: 16)
        accumulator.add(values, at: 0)
        let histogram = try #require(accumulator.finish().histogram)
        var exact = [Int](repeating: 0, count: 16)
        var nearEdge = 0
        let edges = (1..<16).map { histogram.edge($0) }
        let (lower, upper) = (histogram.lower, histogram.upper)
        for v in values.map(Double.init) {
            exact[min(15, Int((v - lower) / (upper - lower) * 16))] += 1
            if edges.contains(where: { ($0 - v).magnitude <= 0.008 * v.magnitude }) { nearEdge += 1 }
        }
        let difference = zip(exact, histogram.counts).map { ($0 - $1).magnitude }.reduce(0, +)
        #expect(difference <= 2 * nearEdge)
        #expect(difference < values.count / 50)
        #expect(histogram.counts.reduce(0, +) == values.count)
    }

    @Test func codableUsesSnakeCaseAndRoundTrips() throws {
        var accumulator = StatsAccumulator(layout: .trailing(units: 3))
        accumulator.add(statsMixedFloatData(count: 300, seed: 4), at: 0)
        let stats = accumulator.finish()
        let data = try JSONEncoder().encode(stats)
        let text = try #require(String(data: data, encoding: .utf8))
        for key in [
            "\"finite_count\"", "\"l2_norm\"", "\"max_abs\"", "\"pos_inf\"", "\"neg_inf\"",
            "\"log2_histogram\"", "\"min_exponent\"", "\"unit_norms\"", "\"unit_zero_count\"", "\"p50\"",
        ] {
            #expect(text.contains(key), "missing \(key)")
        }
        let decoded = try JSONDecoder().decode(TensorStats.self, from: data)
        #expect(decoded == stats)
    }
}
