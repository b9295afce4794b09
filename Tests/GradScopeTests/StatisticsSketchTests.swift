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

@Suite("Quantile sketch and log2 histogram")
struct StatisticsSketchTests {
    func quantiles(_ stats: TensorStats) -> [Double?] {
        [stats.p1, stats.p5, stats.p50, stats.p95, stats.p99]
    }

    @Test func quantilesWithinOnePercentOfNearestRank() throws {
        var random = SplitMix64(seed: 1234)
        let generators: [(String, (inout SplitMix64) -> Double)] = [
            ("gaussian", { 3 + $0.gaussian() }),
            ("lognormal", { Foundation.exp(2 * $0.gaussian()) }),
            ("two-sided", { ($0.uniform() < 0.3 ? -1 : 1) * $0.uniform(in: 1...10) }),
            ("wide", { Foundation.exp($0.uniform(in: -40...40)) * ($0.uniform() < 0.5 ? -1 : 1) }),
            ("standard gaussian", { $0.gaussian() }),
        ]
        for (name, generate) in generators {
            for count in [1, 2, 3, 99, 100, 101, 2048, 5000, 100_000] {
                let values = (0..<count).map { _ in Float(generate(&random)) }
                var accumulator = StatsAccumulator()
                statsAddInBlocks(values, to: &accumulator, blockSizes: [4093])
                let stats = accumulator.finish()
                let reference = StatsReference(values)
                for (index, percent) in [1, 5, 50, 95, 99].enumerated() {
                    let exact = try #require(reference.quantile(percent: percent))
                    let reported = try #require(quantiles(stats)[index])
                    // Bucket midpoints are within 0.4%; 1% is the documented bound.
                    #expect(
                        (reported - exact).magnitude <= 0.004 * exact.magnitude,
                        "\(name) n=\(count) p\(percent): \(reported) vs \(exact)")
                    #expect(reported >= reference.min ?? 0 && reported <= reference.max ?? 0)
                }
            }
        }
    }

    @Test func nearestRankDefinition() {
        #expect(StatsAccumulator.nearestRank(count: 100, percent: 1) == 1)
        #expect(StatsAccumulator.nearestRank(count: 101, percent: 1) == 2)
        #expect(StatsAccumulator.nearestRank(count: 1, percent: 50) == 1)
        #expect(StatsAccumulator.nearestRank(count: 10, percent: 50) == 5)
        #expect(StatsAccumulator.nearestRank(count: 11, percent: 50) == 6)
        #expect(StatsAccumulator.nearestRank(count: 100, percent: 99) == 99)
        #expect(StatsAccumulator.nearestRank(count: 1000, percent: 99) == 990)
        #expect(StatsAccumulator.nearestRank(count: 0, percent: 5) == 1)
        #expect(StatsAccumulator.nearestRank(count: Int.max / 2, percent: 99) > 0)
    }

    @Test func quantilesNearZeroHaveAbsoluteErrorBelowNormalRange() throws {
        // Subnormal magnitudes are bucketed coarsely: the error bound is absolute there.
        var random = SplitMix64(seed: 9)
        let values = (0..<3000).map { _ in
            Float(bitPattern: UInt32(random.index(below: 0x0080_0000))) * (random.uniform() < 0.5 ? -1 : 1)
        }
        var accumulator = StatsAccumulator()
        accumulator.add(values, at: 0)
        let stats = accumulator.finish()
        let reference = StatsReference(values)
        for (index, percent) in [1, 5, 50, 95, 99].enumerated() {
            let exact = try #require(reference.quantile(percent: percent))
            let reported = try #require(quantiles(stats)[index])
            #expect((reported - exact).magnitude < Double(Float.leastNormalMagnitude))
        }
        statsExpectMatchesReference(stats, values.map(Double.init))
    }

    @Test func representativeIsWithinBucketBound() {
        var random = SplitMix64(seed: 31)
        for _ in 0..<20_000 {
            // Normal floats of every exponent.
            let bits = UInt32(0x0080_0000) + UInt32(random.index(below: 0x7F00_0000))
            let x = Float(bitPattern: bits)
            let key = UInt16(bits >> 16)
            let representative = LogBucketSketch.representative(magnitudeKey: key)
            #expect((representative - Double(x)).magnitude <= 0.004 * Double(x))
        }
        #expect(LogBucketSketch.tinyRepresentative(exponent: -149) == 0x1p-149)
    }

    @Test func log2HistogramIsExactForEveryFloatExponent() {
        var values: [Float] = []
        for exponent in -149...127 {
            let base = Float(sign: .plus, exponent: exponent, significand: 1)
            values.append(base)
            values.append(-base)
            if exponent < 127 { values.append(base.nextDown.nextUp.nextUp) }
            if exponent > -149 { values.append(base.nextDown) }  // largest value of the exponent below
        }
        values.append(.greatestFiniteMagnitude)
        values.append(0)
        var random = SplitMix64(seed: 2)
        for _ in 0..<5000 { values.append(Float(bitPattern: UInt32(random.next() & 0xFFFF_FFFF))) }
        for blockSizes in [[values.count], [1, 17, 300]] {
            var accumulator = StatsAccumulator()
            statsAddInBlocks(values, to: &accumulator, blockSizes: blockSizes)
            let log2 = accumulator.finish().log2Histogram
            var expected: [Int: Int] = [:]
            var zeros = 0
            for x in values where x.isFinite {
                if x == 0 { zeros += 1 } else { expected[Int(x.exponent), default: 0] += 1 }
            }
            #expect(log2.zeros == zeros)
            #expect(log2.minExponent == -149)
            #expect(log2.maxExponent == 127)
            for exponent in -149...127 {
                #expect(log2.count(forExponent: exponent) == expected[exponent, default: 0], "exponent \(exponent)")
            }
            #expect(log2.count(forExponent: -150) == 0 && log2.count(forExponent: 128) == 0)
        }
    }

    @Test func log2HistogramIsExactForDoubles() {
        let values: [Double] = [
            .leastNonzeroMagnitude, -.leastNonzeroMagnitude * 3, 0x1p-1063, 0x1p-1022, 0x1p-1022.nextDown,
            1, 1.nextDown, -1e300, .greatestFiniteMagnitude, 0, -0.0, 0.75,
        ]
        var accumulator = StatsAccumulator()
        accumulator.add(values, at: 0)
        let log2 = accumulator.finish().log2Histogram
        var expected: [Int: Int] = [:]
        for x in values where x != 0 { expected[Int(x.exponent), default: 0] += 1 }
        #expect(log2.minExponent == -1074)
        #expect(log2.maxExponent == 1023)
        #expect(log2.zeros == 2)
        for (exponent, count) in expected {
            #expect(log2.count(forExponent: exponent) == count, "exponent \(exponent)")
        }
        #expect(log2.counts.reduce(0, +) == values.count - 2)
        #expect(log2.count(forExponent: -1) == 2)  // 1.nextDown and 0.75
    }

    @Test func radixSortMatchesStandardSort() {
        var random = SplitMix64(seed: 6)
        for count in [0, 1, 5, 127, 128, 2048] {
            let keys = (0..<count).map { _ in UInt16(truncatingIfNeeded: random.next()) }
            #expect(LogBucketSketch.radixSorted(keys) == keys.sorted())
        }
    }

    @Test func pendingAndDenseSketchesAgree() {
        let values = statsMixedFloatData(count: 2000, seed: 13)
        var pending = LogBucketSketch()
        var dense = LogBucketSketch()
        values.withUnsafeBufferPointer { buffer in
            guard let base = buffer.baseAddress else { return }
            _ = pending.addFloats(base, count: buffer.count)
            // Three passes force the dense table; compare counts divided by three.
            for _ in 0..<3 { _ = dense.addFloats(base, count: buffer.count) }
        }
        let a = pending.keyCounts()
        let b = dense.keyCounts()
        #expect(a.keys == b.keys)
        #expect(a.counts.map { $0 * 3 } == b.counts)
        #expect(pending.total == 2000 && dense.total == 6000)
    }
}
