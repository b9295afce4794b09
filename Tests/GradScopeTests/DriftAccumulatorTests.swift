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

/// Direct computation of the drift statistics of two arrays.
struct DriftReference {
    var count = 0
    var finite = 0
    var changed = 0
    var signFlips = 0
    var nonFinite = 0
    var deltaNorm: Double?
    var normA: Double?
    var normB: Double?
    var relativeChange: Double?
    var cosine: Double?
    var maxAbsDelta: Double?

    init(_ a: [Double], _ b: [Double], bitPatternsDiffer: (Int) -> Bool) {
        count = a.count
        var d2: [Double] = []
        var a2: [Double] = []
        var b2: [Double] = []
        var ab: [Double] = []
        var largest = 0.0
        for i in a.indices {
            if bitPatternsDiffer(i) && !(a[i].isNaN && b[i].isNaN) { changed += 1 }
            guard a[i].isFinite && b[i].isFinite else {
                nonFinite += 1
                continue
            }
            finite += 1
            if a[i] != 0 && b[i] != 0 && (a[i] < 0) != (b[i] < 0) { signFlips += 1 }
            let d = b[i] - a[i]
            d2.append(d * d)
            a2.append(a[i] * a[i])
            b2.append(b[i] * b[i])
            ab.append(a[i] * b[i])
            largest = max(largest, d.magnitude)
        }
        guard finite > 0 else { return }
        let na = StatsReference.compensatedSum(a2).squareRoot()
        let nb = StatsReference.compensatedSum(b2).squareRoot()
        let nd = StatsReference.compensatedSum(d2).squareRoot()
        deltaNorm = nd
        normA = na
        normB = nb
        maxAbsDelta = largest
        relativeChange = na > 0 ? nd / na : nil
        cosine = na > 0 && nb > 0 ? StatsReference.compensatedSum(ab) / (na * nb) : nil
    }

    init(_ a: [Float], _ b: [Float]) {
        self.init(a.map(Double.init), b.map(Double.init)) { a[$0].bitPattern != b[$0].bitPattern }
    }
}

func driftAddInBlocks(_ a: [Float], _ b: [Float], to accumulator: inout DriftAccumulator, blockSizes: [Int], startOffset: Int = 0) {
    a.withUnsafeBufferPointer { pa in
        b.withUnsafeBufferPointer { pb in
            var i = 0
            var k = 0
            while i < pa.count {
                let n = min(blockSizes[k % blockSizes.count], pa.count - i)
                accumulator.add(
                    UnsafeBufferPointer(rebasing: pa[i..<i + n]), UnsafeBufferPointer(rebasing: pb[i..<i + n]),
                    at: startOffset + i)
                i += n
                k += 1
            }
        }
    }
}

func driftExpectMatches(_ stats: DriftStats, _ reference: DriftReference, sourceLocation: SourceLocation = #_sourceLocation) {
    #expect(stats.count == reference.count, sourceLocation: sourceLocation)
    #expect(stats.finiteCount == reference.finite, sourceLocation: sourceLocation)
    #expect(stats.changed == reference.changed, sourceLocation: sourceLocation)
    #expect(stats.signFlips == reference.signFlips, sourceLocation: sourceLocation)
    #expect(stats.nonFinite == reference.nonFinite, sourceLocation: sourceLocation)
    #expect(stats.maxAbsDelta == reference.maxAbsDelta, sourceLocation: sourceLocation)
    #expect(statsClose(stats.deltaNorm, reference.deltaNorm, relative: 1e-12), sourceLocation: sourceLocation)
    #expect(statsClose(stats.normA, reference.normA, relative: 1e-12), sourceLocation: sourceLocation)
    #expect(statsClose(stats.normB, reference.normB, relative: 1e-12), sourceLocation: sourceLocation)
    #expect(statsClose(stats.relativeChange, reference.relativeChange, relative: 1e-11), sourceLocation: sourceLocation)
    #expect(statsClose(stats.cosineSimilarity, reference.cosine, relative: 1e-11), sourceLocation: sourceLocation)
    let fraction = reference.count > 0 ? Double(reference.changed) / Double(reference.count) : nil
    #expect(stats.changedFraction == fraction, sourceLocation: sourceLocation)
}

/// Earlier/later pairs: small updates, some untouched elements, some sign flips, some specials.
func driftTestPairs(count: Int, seed: UInt64, withSpecials: Bool = true) -> ([Float], [Float]) {
    var random = SplitMix64(seed: seed)
    let a = (0..<count).map { _ in Float(0.05 * random.gaussian()) }
    var b = a.map { x -> Float in
        let roll = random.uniform()
        if roll < 0.2 { return x }  // unchanged
        if roll < 0.25 { return -x }  // sign flip
        return x + Float(1e-3 * random.gaussian())
    }
    var a2 = a
    if withSpecials && count > 20 {
        a2[3] = .nan
        b[3] = .nan  // both NaN: unchanged, non-finite
        a2[5] = .nan
        b[5] = 1  // changed, non-finite
        a2[7] = .infinity
        b[7] = .infinity  // unchanged, non-finite
        a2[9] = 0
        b[9] = -0.0  // changed, not a sign flip
        a2[11] = 2
        b[11] = -.infinity  // changed, non-finite
        a2[13] = 0
        b[13] = 0  // unchanged
        a2[15] = Float(bitPattern: 0x7FC0_0000)
        b[15] = Float(bitPattern: 0x7FC0_0001)  // NaN payloads: unchanged
    }
    return (a2, b)
}

@Suite("DriftAccumulator against direct computation")
struct DriftAccumulatorTests {
    @Test func randomPairsInOddBlocks() {
        for count in [30, 2048, 2049, 10_001] {
            let (a, b) = driftTestPairs(count: count, seed: UInt64(count))
            var accumulator = DriftAccumulator()
            driftAddInBlocks(a, b, to: &accumulator, blockSizes: [1, 9, 1000, 2500])
            driftExpectMatches(accumulator.finish(), DriftReference(a, b))
        }
    }

    @Test("norms only: the norms, relative change and counts of the full drift to the bit, per unit too; no cosine, largest |Δ| or sign flips")
    func normsOnlyMatchFullDrift() {
        for count in [30, 2048, 2049, 10_001] {
            for specials in [false, true] {
                let (a, b) = driftTestPairs(count: count, seed: UInt64(count) + 7, withSpecials: specials)
                var full = DriftAccumulator(layout: .trailing(units: 10))
                var norms = DriftAccumulator(layout: .trailing(units: 10), normsOnly: true)
                driftAddInBlocks(a, b, to: &full, blockSizes: [1, 9, 1000, 2500])
                driftAddInBlocks(a, b, to: &norms, blockSizes: [1, 9, 1000, 2500])
                let x = full.finish(), y = norms.finish()
                #expect(y.relativeChange?.bitPattern == x.relativeChange?.bitPattern, "n \(count)")
                #expect(y.deltaNorm == x.deltaNorm && y.normA == x.normA && y.normB == x.normB)
                #expect(y.changed == x.changed && y.count == x.count && y.finiteCount == x.finiteCount && y.nonFinite == x.nonFinite)
                #expect(y.unitRelativeChange == x.unitRelativeChange && y.unitChanged == x.unitChanged)
                #expect(y.cosineSimilarity == nil && y.maxAbsDelta == nil && y.signFlips == 0)
                #expect(x.cosineSimilarity != nil && x.maxAbsDelta != nil)
            }
        }
    }

    @Test(
        "a block added to the statistics and the drift at once gives each what it gives apart, small and large, per unit, scaled or not"
    )
    func statisticsAndDriftInOnePass() throws {
        for count in [30, 2048, 2049, 10_000] {
            for specials in [false, true] {
                for normsOnly in [true, false] {
                    for scaled in [false, true] {
                        let (a, b) = driftTestPairs(count: count, seed: UInt64(count) + 11, withSpecials: specials)
                        let layout: UnitLayout = count % 10 == 0 ? .trailing(units: 10) : .none
                        var stats = StatsAccumulator(layout: layout), drift = DriftAccumulator(layout: layout, normsOnly: normsOnly)
                        if scaled {
                            // Huge Float64 values first: both accumulators then hold a scaled state.
                            stats.add([1e300, -2e300], at: 0)
                            drift.add([1e300, -2e300], [2e300, -2e300], at: 0)
                        }
                        var apartStats = stats, apartDrift = drift
                        let offset = scaled ? 2 : 0
                        a.withUnsafeBufferPointer { pa in
                            b.withUnsafeBufferPointer { pb in
                                var i = 0, k = 0
                                // Chunks ending at a block, half a block after one (1010, 2070 = 2048 + 22) and before one.
                                let sizes = [1, 9, 1000, 2500, 4096, 1010, 2070]
                                while i < pb.count {
                                    let n = min(sizes[k % sizes.count], pb.count - i)
                                    let before = UnsafeBufferPointer(rebasing: pa[i..<i + n]), block = UnsafeBufferPointer(rebasing: pb[i..<i + n])
                                    stats.add(block, at: offset + i, before: before, drift: &drift)
                                    apartStats.add(block, at: offset + i)
                                    apartDrift.add(before, block, at: offset + i)
                                    i += n
                                    k += 1
                                }
                            }
                        }
                        let label = "n \(count) specials \(specials) norms only \(normsOnly) scaled \(scaled)"
                        // Encoded too, which tells -0 from 0 (== does not); keys sorted, so the order is one.
                        let encoder = JSONEncoder()
                        encoder.outputFormatting = .sortedKeys
                        #expect(stats.finish() == apartStats.finish(), "\(label)")
                        #expect(try encoder.encode(stats.finish()) == encoder.encode(apartStats.finish()), "\(label)")
                        #expect(drift.finish() == apartDrift.finish(), "\(label)")
                        #expect(try encoder.encode(drift.finish()) == encoder.encode(apartDrift.finish()), "\(label)")
                        #expect(drift.finish().normA != nil && drift.finish().changed > 0, "\(label)")
                        // The sums themselves, to the bit (a square root can round two neighbours alike).
                        #expect(
                            drift.squaresA.bitPattern == apartDrift.squaresA.bitPattern
                                && drift.squaresB.bitPattern == apartDrift.squaresB.bitPattern
                                && drift.squaresDelta.bitPattern == apartDrift.squaresDelta.bitPattern, "\(label)")
                        #expect(stats.moments == apartStats.moments, "\(label)")
                    }
                }
            }
        }
        // Blocks of different lengths: each accumulator takes what it takes apart.
        var stats = StatsAccumulator(), drift = DriftAccumulator(layout: .none, normsOnly: true)
        var apartStats = stats, apartDrift = drift
        let a: [Float] = [1, 2, 3], b: [Float] = [1, 2.5, 3, 4]
        a.withUnsafeBufferPointer { pa in
            b.withUnsafeBufferPointer { pb in
                stats.add(pb, at: 0, before: pa, drift: &drift)
                apartStats.add(pb, at: 0)
                apartDrift.add(pa, pb, at: 0)
            }
        }
        #expect(stats.finish() == apartStats.finish() && drift.finish() == apartDrift.finish())
        #expect(drift.finish().count == 3 && stats.finish().count == 4)
    }

    @Test func nanAndInfinityHandling() throws {
        let a: [Float] = [.nan, .nan, .infinity, 1, 2, -.infinity, 3]
        let b: [Float] = [.nan, 4, .infinity, .nan, 2, 5, 4]
        var accumulator = DriftAccumulator()
        accumulator.add(a, b, at: 0)
        let stats = accumulator.finish()
        #expect(stats.count == 7)
        #expect(stats.nonFinite == 5)
        #expect(stats.finiteCount == 2)
        #expect(stats.changed == 4)  // NaN->4, 1->NaN, -inf->5, 3->4
        #expect(stats.deltaNorm == 1)
        #expect(stats.normA == Double(13).squareRoot())
        #expect(stats.normB == Double(20).squareRoot())
        #expect(stats.maxAbsDelta == 1)
        let cosine = try #require(stats.cosineSimilarity)
        #expect((cosine - 16 / (Double(13).squareRoot() * Double(20).squareRoot())).magnitude < 1e-15)
    }

    @Test func identicalTensors() throws {
        for count in [1, 100, 5000] {
            let (a, _) = driftTestPairs(count: count, seed: 3, withSpecials: false)
            var accumulator = DriftAccumulator(layout: .trailing(units: 10))
            driftAddInBlocks(a, a, to: &accumulator, blockSizes: [77])
            let stats = accumulator.finish()
            #expect(stats.relativeChange == 0)
            #expect(stats.deltaNorm == 0)
            #expect(stats.maxAbsDelta == 0)
            #expect(stats.changed == 0)
            #expect(stats.changedFraction == 0)
            #expect(stats.signFlips == 0)
            let cosine = try #require(stats.cosineSimilarity)
            #expect((cosine - 1).magnitude <= 1e-15)
            #expect(stats.normA == stats.normB)
            #expect(stats.unitChanged == [Int](repeating: 0, count: 10))
            #expect(stats.unitRelativeChange?.allSatisfy { $0 == 0 || $0 == nil } == true)
        }
    }

    @Test func signFlipsAreCountedExactly() {
        let a: [Float] = [1, -1, 2, 0, 3, -0.0, 1e-30, -4, 5, .nan, Float.leastNonzeroMagnitude]
        let b: [Float] = [-1, -2, -2, -5, 0, 6, -1e-30, 4, 5, -1, -Float.leastNonzeroMagnitude]
        // flips: 1→-1, 2→-2, 1e-30→-1e-30, -4→4, 1e-45→-1e-45 (product underflows in Float32)
        var accumulator = DriftAccumulator()
        accumulator.add(a, b, at: 0)
        #expect(accumulator.finish().signFlips == 5)
        // Without the NaN the chunk takes the vectorized path: same count.
        var finite = DriftAccumulator()
        finite.add(
            a.enumerated().filter { $0.offset != 9 }.map(\.element),
            b.enumerated().filter { $0.offset != 9 }.map(\.element), at: 0)
        #expect(finite.finish().signFlips == 5)
        #expect(finite.finish().nonFinite == 0)
        let many = (0..<4000).map { Float($0 % 7 == 0 ? -1 : 1) * Float($0 + 1) }
        let flipped = many.map { -$0 }
        var all = DriftAccumulator()
        driftAddInBlocks(many, flipped, to: &all, blockSizes: [333])
        #expect(all.finish().signFlips == 4000)
        #expect(all.finish().cosineSimilarity == -1)
    }

    @Test func signedZerosCountAsChangedButNotFlipped() {
        var accumulator = DriftAccumulator()
        accumulator.add([Float(0), -0.0, 0], [Float(-0.0), 0, 0], at: 0)
        let stats = accumulator.finish()
        #expect(stats.changed == 2)
        #expect(stats.signFlips == 0)
        #expect(stats.relativeChange == nil)
        #expect(stats.cosineSimilarity == nil)
        #expect(stats.deltaNorm == 0)
    }

    @Test func emptyInput() {
        var accumulator = DriftAccumulator(layout: .leading(units: 2, innerSize: 0))
        accumulator.add([Float](), [Float](), at: 0)
        let stats = accumulator.finish()
        #expect(stats.count == 0 && stats.changed == 0)
        #expect(stats.deltaNorm == nil && stats.normA == nil && stats.relativeChange == nil)
        #expect(stats.changedFraction == nil)
        #expect(stats.unitRelativeChange == [nil, nil])
        #expect(stats.unitChanged == [0, 0])
    }

    @Test func unitResultsKnownAnswer() throws {
        // leading: units [3, 4] -> [3, 4] (unchanged), [1, 0] -> [1, 2], [0, 0] -> [0, 1]
        var leading = DriftAccumulator(layout: .leading(units: 3, innerSize: 2))
        leading.add([Float(3), 4, 1, 0, 0, 0], [Float(3), 4, 1, 2, 0, 1], at: 0)
        let l = leading.finish()
        #expect(l.unitRelativeChange == [0, 2, nil])
        #expect(l.unitChanged == [0, 1, 1])
        // trailing: 2 units, rows [3, 1], [4, NaN] -> [0, 1], [0, 5]
        var trailing = DriftAccumulator(layout: .trailing(units: 2))
        trailing.add([Float(3)], [Float(0)], at: 0)
        trailing.add([Float(1), 4, .nan], [Float(1), 0, 5], at: 1)
        let t = trailing.finish()
        #expect(t.unitRelativeChange == [1, 0])
        #expect(t.unitChanged == [2, 1])
    }

    @Test func unitResultsAgainstDirect() throws {
        let (a, b) = driftTestPairs(count: 40 * 50, seed: 17)
        for layout in [UnitLayout.leading(units: 40, innerSize: 50), .trailing(units: 50)] {
            var floats = DriftAccumulator(layout: layout)
            driftAddInBlocks(a, b, to: &floats, blockSizes: [123, 7])
            var doubles = DriftAccumulator(layout: layout)
            doubles.add(a.map(Double.init), b.map(Double.init), at: 0)
            let units = layout.unitCount ?? 0
            var d2 = [Double](repeating: 0, count: units)
            var a2 = [Double](repeating: 0, count: units)
            var changed = [Int](repeating: 0, count: units)
            for i in a.indices {
                let unit: Int
                if case .leading(_, let inner) = layout { unit = i / inner } else { unit = i % units }
                if a[i].bitPattern != b[i].bitPattern && !(a[i].isNaN && b[i].isNaN) { changed[unit] += 1 }
                guard a[i].isFinite && b[i].isFinite else { continue }
                let d = Double(b[i]) - Double(a[i])
                d2[unit] += d * d
                a2[unit] += Double(a[i]) * Double(a[i])
            }
            for stats in [floats.finish(), doubles.finish()] {
                let relative = try #require(stats.unitRelativeChange)
                #expect(stats.unitChanged == changed)
                for u in 0..<units {
                    let expected = a2[u] > 0 ? d2[u].squareRoot() / a2[u].squareRoot() : nil
                    #expect(statsClose(relative[u], expected, relative: 1e-12))
                }
            }
        }
    }

    @Test func mergeEqualsSinglePass() {
        let (a, b) = driftTestPairs(count: 7000, seed: 44)
        let layout = UnitLayout.leading(units: 70, innerSize: 100)
        var single = DriftAccumulator(layout: layout)
        driftAddInBlocks(a, b, to: &single, blockSizes: [2048])
        var first = DriftAccumulator(layout: layout)
        driftAddInBlocks(Array(a[..<3333]), Array(b[..<3333]), to: &first, blockSizes: [500])
        var second = DriftAccumulator(layout: layout)
        driftAddInBlocks(Array(a[3333...]), Array(b[3333...]), to: &second, blockSizes: [999], startOffset: 3333)
        first.merge(second)
        let merged = first.finish()
        let whole = single.finish()
        driftExpectMatches(merged, DriftReference(a, b))
        #expect(merged.unitChanged == whole.unitChanged)
        #expect(merged.changed == whole.changed && merged.maxAbsDelta == whole.maxAbsDelta)
        for (x, y) in zip(merged.unitRelativeChange ?? [], whole.unitRelativeChange ?? []) {
            #expect(statsClose(x, y, relative: 1e-12))
        }
        var mismatched = DriftAccumulator(layout: .trailing(units: 3))
        mismatched.merge(single)
        #expect(mismatched.finish().unitRelativeChange == nil)
    }

    @Test func doubleInputMatchesDirect() {
        let (a, b) = driftTestPairs(count: 5000, seed: 51)
        let da = a.map(Double.init)
        let db = b.map(Double.init)
        var accumulator = DriftAccumulator()
        accumulator.add(da, db, at: 0)
        let reference = DriftReference(da, db) { da[$0].bitPattern != db[$0].bitPattern }
        driftExpectMatches(accumulator.finish(), reference)
        var floats = DriftAccumulator()
        floats.add(a, b, at: 0)
        #expect(floats.finish().changed == accumulator.finish().changed)
        #expect(floats.finish().signFlips == accumulator.finish().signFlips)
    }

    @Test func hugeDoublesAreScaledAndSaturated() throws {
        var accumulator = DriftAccumulator()
        accumulator.add([3e200, 1e-300], [0, 1e-300], at: 0)
        let stats = accumulator.finish()
        #expect(statsClose(stats.deltaNorm, 3e200, relative: 1e-15))
        #expect(statsClose(stats.normA, 3e200, relative: 1e-15))
        #expect(stats.relativeChange == 1)
        #expect(stats.changed == 1)
        var extreme = DriftAccumulator()
        extreme.add([1.5e308, -1.5e308], [-1.5e308, 1.5e308], at: 0)
        let e = extreme.finish()
        #expect(e.deltaNorm == .greatestFiniteMagnitude)
        #expect(e.maxAbsDelta == .greatestFiniteMagnitude)
        #expect(statsClose(e.relativeChange, 2, relative: 1e-15))
        #expect(e.cosineSimilarity == -1)
        #expect(e.signFlips == 2)
        #expect(!(try JSONEncoder().encode(e)).isEmpty)
    }

    @Test func stateIsRescaledWhenMagnitudeCrossesThreshold() {
        var accumulator = DriftAccumulator(layout: .leading(units: 2, innerSize: 2))
        accumulator.add([0x1p399, 0x1p399], [0, 0x1p399], at: 0)
        accumulator.add([0x1p400, 0], [0x1p400, 0x1p400], at: 2)
        let stats = accumulator.finish()
        #expect(statsClose(stats.deltaNorm, 0x1p399 * Double(5).squareRoot(), relative: 1e-15))
        #expect(statsClose(stats.normA, 0x1p399 * Double(6).squareRoot(), relative: 1e-15))
        #expect(statsClose(stats.relativeChange, (5.0 / 6).squareRoot(), relative: 1e-15))
        let units = stats.unitRelativeChange ?? []
        #expect(units.count == 2)
        #expect(statsClose(units.first ?? nil, (1.0 / 2).squareRoot(), relative: 1e-15))
        #expect(statsClose(units.last ?? nil, 1, relative: 1e-15))
    }

    @Test func relativeChangePerStep() {
        #expect(DriftStats.relativeChangePerStep(relativeChange: 0.1, steps: 10) == 0.01)
        #expect(DriftStats.relativeChangePerStep(relativeChange: 0.1, steps: 0) == nil)
        #expect(DriftStats.relativeChangePerStep(relativeChange: .nan, steps: 3) == nil)
        var accumulator = DriftAccumulator()
        accumulator.add([Float(3), 4], [Float(3), 4.5], at: 0)
        let stats = accumulator.finish()
        #expect(stats.relativeChange == 0.1)
        #expect(stats.relativeChangePerStep(steps: 5) == 0.1 / 5)
        var zero = DriftAccumulator()
        zero.add([Float(0)], [Float(1)], at: 0)
        #expect(zero.finish().relativeChangePerStep(steps: 5) == nil)
    }

    @Test func mismatchedBlockLengthsUseCommonPrefix() {
        var accumulator = DriftAccumulator()
        accumulator.add([Float(1), 2, 3], [Float(1), 5], at: 0)
        let stats = accumulator.finish()
        #expect(stats.count == 2)
        #expect(stats.changed == 1)
    }

    @Test func codableUsesSnakeCaseAndRoundTrips() throws {
        let (a, b) = driftTestPairs(count: 100, seed: 8)
        var accumulator = DriftAccumulator(layout: .trailing(units: 4))
        accumulator.add(a, b, at: 0)
        let stats = accumulator.finish()
        let data = try JSONEncoder().encode(stats)
        let text = try #require(String(data: data, encoding: .utf8))
        for key in [
            "\"delta_norm\"", "\"norm_a\"", "\"relative_change\"", "\"cosine_similarity\"", "\"changed_fraction\"",
            "\"sign_flips\"", "\"non_finite\"", "\"unit_relative_change\"", "\"unit_changed\"", "\"max_abs_delta\"",
        ] {
            #expect(text.contains(key), "missing \(key)")
        }
        #expect(try JSONDecoder().decode(DriftStats.self, from: data) == stats)
    }
}
