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

@Suite("StatsAccumulator merging")
struct StatisticsMergeTests {
    /// Exact fields must agree exactly; moments up to rounding.
    func expectEquivalent(_ a: TensorStats, _ b: TensorStats, sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(a.count == b.count, sourceLocation: sourceLocation)
        #expect(a.finiteCount == b.finiteCount, sourceLocation: sourceLocation)
        #expect(a.zeros == b.zeros && a.nan == b.nan, sourceLocation: sourceLocation)
        #expect(a.posInf == b.posInf && a.negInf == b.negInf, sourceLocation: sourceLocation)
        #expect(a.min == b.min && a.max == b.max && a.maxAbs == b.maxAbs, sourceLocation: sourceLocation)
        #expect(a.p1 == b.p1 && a.p5 == b.p5 && a.p50 == b.p50, sourceLocation: sourceLocation)
        #expect(a.p95 == b.p95 && a.p99 == b.p99, sourceLocation: sourceLocation)
        #expect(a.histogram == b.histogram, sourceLocation: sourceLocation)
        #expect(a.log2Histogram == b.log2Histogram, sourceLocation: sourceLocation)
        #expect(a.unitZeroCount == b.unitZeroCount, sourceLocation: sourceLocation)
        #expect(statsClose(a.mean, b.mean, relative: 1e-12, absolute: 1e-300), sourceLocation: sourceLocation)
        #expect(statsClose(a.std, b.std, relative: 1e-12, absolute: 1e-300), sourceLocation: sourceLocation)
        #expect(statsClose(a.l2Norm, b.l2Norm, relative: 1e-12), sourceLocation: sourceLocation)
        if let x = a.unitNorms, let y = b.unitNorms {
            #expect(x.count == y.count, sourceLocation: sourceLocation)
            for (u, v) in zip(x, y) {
                #expect(statsClose(u, v, relative: 1e-12), sourceLocation: sourceLocation)
            }
        } else {
            #expect(a.unitNorms == nil && b.unitNorms == nil, sourceLocation: sourceLocation)
        }
    }

    @Test func mergeOfSplitAccumulatorsEqualsSinglePass() {
        // Sizes cover pending + pending, pending + dense and dense + dense sketches.
        for (count, cuts) in [(3000, [10, 1500]), (9000, [4000, 4500]), (500, [0, 250]), (20_000, [7, 19_990])] {
            let values = statsMixedFloatData(count: count, seed: UInt64(count) + 100)
            let layout = UnitLayout.trailing(units: 7)
            var single = StatsAccumulator(layout: layout)
            statsAddInBlocks(values, to: &single, blockSizes: [4096])
            let bounds = [0] + cuts + [count]
            var parts: [StatsAccumulator] = []
            for k in 0..<bounds.count - 1 {
                var part = StatsAccumulator(layout: layout)
                let slice = Array(values[bounds[k]..<bounds[k + 1]])
                statsAddInBlocks(slice, to: &part, blockSizes: [13, 511], startOffset: bounds[k])
                parts.append(part)
            }
            var merged = parts[0]
            for part in parts.dropFirst() { merged.merge(part) }
            expectEquivalent(merged.finish(), single.finish())
            // Merging in the other order gives the same result.
            var reversed = parts[parts.count - 1]
            for part in parts.dropLast().reversed() { reversed.merge(part) }
            expectEquivalent(reversed.finish(), single.finish())
        }
    }

    @Test func mergeWithEmptyAccumulator() {
        let values = statsMixedFloatData(count: 2500, seed: 77)
        var full = StatsAccumulator()
        full.add(values, at: 0)
        var empty = StatsAccumulator()
        empty.merge(full)
        expectEquivalent(empty.finish(), full.finish())
        var again = full
        again.merge(StatsAccumulator())
        expectEquivalent(again.finish(), full.finish())
    }

    @Test func mergeOfFloatAndDoubleParts() {
        let values = statsMixedFloatData(count: 5000, seed: 78)
        var single = StatsAccumulator()
        single.add(values, at: 0)
        var first = StatsAccumulator()
        first.add(Array(values[..<2600]), at: 0)
        var second = StatsAccumulator()
        second.add(values[2600...].map(Double.init), at: 2600)
        first.merge(second)
        expectEquivalent(first.finish(), single.finish())
    }

    @Test func mergeWithDifferentLayoutsDropsUnitResults() {
        var a = StatsAccumulator(layout: .trailing(units: 2))
        a.add([Float(1), 2], at: 0)
        let b = StatsAccumulator(layout: .trailing(units: 3))
        a.merge(b)
        #expect(a.finish().unitNorms == nil)
        #expect(a.finish().unitZeroCount == nil)
        #expect(a.finish().count == 2)
    }

    @Test func sketchSpillKeepsCountsExact() {
        let values = statsMixedFloatData(count: 12_000, seed: 90)
        var spilled = StatsAccumulator()
        spilled.floatSketch.spillThreshold = 3000
        statsAddInBlocks(values, to: &spilled, blockSizes: [1111])
        var other = StatsAccumulator()
        other.floatSketch.spillThreshold = 2500
        statsAddInBlocks(values, to: &other, blockSizes: [999])
        var plain = StatsAccumulator()
        plain.add(values, at: 0)
        var doubled = plain
        doubled.merge(plain)
        expectEquivalent(spilled.finish(), plain.finish())
        spilled.merge(other)
        expectEquivalent(spilled.finish(), doubled.finish())
    }
}

@Suite("Per-unit statistics")
struct StatisticsUnitTests {
    @Test func layoutForShape() {
        #expect(UnitLayout.forShape([64, 3, 3, 3], unitAxis: 0) == .leading(units: 64, innerSize: 27))
        #expect(UnitLayout.forShape([3, 3, 16, 32], unitAxis: 3) == .trailing(units: 32))
        #expect(UnitLayout.forShape([10, 20], unitAxis: 1) == .trailing(units: 20))
        #expect(UnitLayout.forShape([10, 20], unitAxis: 0) == .leading(units: 10, innerSize: 20))
        #expect(UnitLayout.forShape([10], unitAxis: 0) == UnitLayout.none)
        #expect(UnitLayout.forShape([10, 20], unitAxis: nil) == UnitLayout.none)
        #expect(UnitLayout.forShape([4, 5, 6], unitAxis: 1) == UnitLayout.none)
        #expect(UnitLayout.forShape([], unitAxis: 0) == UnitLayout.none)
        #expect(UnitLayout.forShape([2, Int.max, 4], unitAxis: 0) == UnitLayout.none)
        #expect(UnitLayout.leading(units: 4, innerSize: 2).unitCount == 4)
        #expect(UnitLayout.none.unitCount == nil)
    }

    @Test func leadingLayoutKnownAnswer() throws {
        // 3 units of 4 elements: [3, 4, 0, 0], [1, 1, 1, 1], [NaN, 0, 6, 8].
        let values: [Float] = [3, 4, 0, 0, 1, 1, 1, 1, .nan, 0, 6, 8]
        var accumulator = StatsAccumulator(layout: .leading(units: 3, innerSize: 4))
        statsAddInBlocks(values, to: &accumulator, blockSizes: [1, 2, 5, 4])
        let stats = accumulator.finish()
        #expect(stats.unitNorms == [5, 2, 10])
        #expect(stats.unitZeroCount == [2, 0, 1])
    }

    @Test func trailingLayoutKnownAnswer() throws {
        // 3 rows of 4 units; unit j collects column j.
        let values: [Float] = [
            3, 1, 0, 2,
            4, 1, 0, 2,
            0, 1, .infinity, 2,
        ]
        var accumulator = StatsAccumulator(layout: .trailing(units: 4))
        statsAddInBlocks(values, to: &accumulator, blockSizes: [3, 3, 5, 1])
        let stats = accumulator.finish()
        #expect(stats.unitNorms == [5, Double(3).squareRoot(), 0, Double(12).squareRoot()])
        #expect(stats.unitZeroCount == [1, 0, 2, 0])
    }

    @Test func noLayoutGivesNil() {
        var accumulator = StatsAccumulator()
        accumulator.add([Float(1)], at: 0)
        #expect(accumulator.finish().unitNorms == nil)
        #expect(accumulator.finish().unitZeroCount == nil)
    }

    @Test func randomDataBothLayoutsAgainstDirect() throws {
        let layouts: [UnitLayout] = [
            .leading(units: 37, innerSize: 131), .trailing(units: 37), .trailing(units: 3000), .leading(units: 5000, innerSize: 1),
        ]
        for layout in layouts {
            let count = 37 * 131
            let values = statsMixedFloatData(count: count, seed: 400)
            var floats = StatsAccumulator(layout: layout)
            statsAddInBlocks(values, to: &floats, blockSizes: [100, 7, 2100])
            var doubles = StatsAccumulator(layout: layout)
            statsAddInBlocks(values.map(Double.init), to: &doubles, blockSizes: [999])
            let expected = try #require(statsReferenceUnitNorms(values.map(Double.init), layout: layout))
            for stats in [floats.finish(), doubles.finish()] {
                let norms = try #require(stats.unitNorms)
                #expect(norms.count == expected.norms.count)
                for (a, b) in zip(norms, expected.norms) {
                    #expect(statsClose(a, b, relative: 1e-12, absolute: 1e-300))
                }
                #expect(stats.unitZeroCount == expected.zeros)
            }
        }
    }

    @Test func elementsBeyondLeadingUnitsAreNotAttributed() {
        var accumulator = StatsAccumulator(layout: .leading(units: 2, innerSize: 2))
        accumulator.add([Float(3), 4, 1, 0, 100, 100], at: 0)
        let stats = accumulator.finish()
        #expect(stats.unitNorms == [5, 1])
        #expect(stats.unitZeroCount == [0, 1])
        #expect(stats.count == 6)
    }

    @Test func degenerateLayoutsAndOffsetsDoNotTrap() {
        let values: [Float] = [1, 2, 3, 4]
        var zeroInner = StatsAccumulator(layout: .leading(units: 2, innerSize: 0))
        zeroInner.add(values, at: 0)
        #expect(zeroInner.finish().unitNorms == [0, 0])
        var noUnits = StatsAccumulator(layout: .trailing(units: 0))
        noUnits.add(values, at: 0)
        #expect(noUnits.finish().unitNorms == [])
        var negativeUnits = StatsAccumulator(layout: .trailing(units: -3))
        negativeUnits.add(values, at: 0)
        #expect(negativeUnits.finish().unitNorms == [])
        // Elements at negative flat offsets are skipped; the rest map normally.
        var leading = StatsAccumulator(layout: .leading(units: 2, innerSize: 1))
        leading.add(values, at: -2)
        #expect(leading.finish().unitNorms == [3, 4])
        var trailing = StatsAccumulator(layout: .trailing(units: 2))
        trailing.add(values, at: -1)
        #expect(trailing.finish().unitNorms == [Double(4 + 16).squareRoot(), 3])
        var farAway = StatsAccumulator(layout: .leading(units: 2, innerSize: 2))
        farAway.add(values, at: Int.max - 1)
        farAway.add(values, at: Int.min)
        #expect(farAway.finish().unitNorms == [0, 0])
        #expect(farAway.finish().count == 8)
        var drift = DriftAccumulator(layout: .trailing(units: 2))
        drift.add(values, values.map { $0 + 1 }, at: Int.max - 1)
        #expect(drift.finish().unitChanged?.reduce(0, +) == 4)
    }

    @Test func blockOffsetsDriveUnitMapping() {
        // Blocks added out of order with their true offsets.
        var accumulator = StatsAccumulator(layout: .trailing(units: 2))
        accumulator.add([Float(5), 7], at: 2)
        accumulator.add([Float(1)], at: 0)
        accumulator.add([Float(2)], at: 1)
        #expect(accumulator.finish().unitNorms == [Double(26).squareRoot(), Double(53).squareRoot()])
    }

    @Test("zeros per input unit: exact whether chunks hold zeros or not, and counted once when float32 data follows huge float64 data")
    func inputUnitZeros() throws {
        // A PyTorch [out, in] gradient of 64 x 100: input column 7 is zero everywhere, column 3 in half the rows.
        let rows = 64, columns = 100
        var values = [Float](repeating: 0, count: rows * columns)
        for r in 0..<rows {
            for c in 0..<columns { values[r * columns + c] = Float(r * columns + c + 1) * 1e-3 }
            values[r * columns + 7] = 0
            if r % 2 == 0 { values[r * columns + 3] = 0 }
        }
        // The last rows have no zero at all: their chunks are skipped by the zero count.
        let map = try #require(InputUnitMap.forKernel(shape: [rows, columns], unitAxis: 0))
        var expected = [Int](repeating: 0, count: columns)
        expected[7] = rows
        expected[3] = rows / 2
        var plain = StatsAccumulator()
        plain.countInputZeros(map)
        plain.add(values, at: 0)
        #expect(plain.finish().inputZeroCount == expected)
        // A huge float64 block first puts the accumulator in its scaled state; the float32 chunk
        // after it goes through the float64 path and must not be counted twice.
        var scaled = StatsAccumulator()
        scaled.countInputZeros(map)
        let head = (0..<columns).map { $0 == 7 || $0 == 3 ? 0 : 1e300 }
        scaled.add(head, at: 0)
        scaled.add(Array(values[columns...]), at: columns)
        #expect(scaled.finish().inputZeroCount == expected)
    }

}
