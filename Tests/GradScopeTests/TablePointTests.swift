import GradScopeDiagnosis
import GradScopeMeasurement
import GradScopeStatistics
import TestSupport
import Testing

/// The accessors a timeline point and the NaN/Inf checks read a save's table with must give what
/// ``MeasurementTable/measurement(at:log2:)`` gives, at every detail a table keeps.
@Suite("Table points read in place")
struct TablePointTests {
    /// Each accessor of the tensor at `t` against the measurement built there.
    static func expectSame(_ table: MeasurementTable, at t: Int, sourceLocation: SourceLocation = #_sourceLocation) {
        let m = table.measurement(at: t)
        let point = table.point(at: t)
        let nonFinite = m.stats.nan + m.stats.posInf + m.stats.negInf
        #expect(point.count == m.stats.count && point.zeros == m.stats.zeros && point.nonFinite == nonFinite, sourceLocation: sourceLocation)
        #expect(point.l2Norm == m.stats.l2Norm && point.std == m.stats.std, sourceLocation: sourceLocation)
        #expect(point.relativeChange == m.drift?.relativeChange, sourceLocation: sourceLocation)
        #expect(point.zeroUnits == m.zeroUnits && point.unitCount == m.unitCount, sourceLocation: sourceLocation)
        #expect(point.inactiveUnits == m.inactiveUnits, sourceLocation: sourceLocation)
        #expect(table.nonFinite(at: t) == nonFinite, sourceLocation: sourceLocation)
        #expect(table.log2Histogram(at: t) == m.stats.log2Histogram, sourceLocation: sourceLocation)
        // Without the log2 histogram, the numbers are the same ones.
        let compact = table.measurement(at: t, log2: false)
        #expect(compact.stats.count == point.count && compact.stats.l2Norm == point.l2Norm, sourceLocation: sourceLocation)
    }

    @Test("on every save of the sample runs, at every detail, the accessors equal the measurement's fields")
    func sampleRuns() throws {
        var checked = 0
        for name in ["explode-then-dead", "exploding-nan", "dead-relu", "keras-legacy-h5", "vanishing-sigmoid", "healthy"] {
            let (_, run) = try Analysis.scan(samplePath(name))
            #expect(!run.records.isEmpty)
            for record in run.records {
                for detail in [MeasurementDetail.full, .histogram, .compact] where detail <= record.tensors.detail {
                    let table = record.tensors.keeping(detail)
                    #expect(table.detail == detail)
                    for t in 0..<table.count { Self.expectSame(table, at: t) }
                    checked += table.count
                }
            }
        }
        #expect(checked > 100)
    }

    @Test("NaN/Inf positions read in place are those the measurements give, on a run with NaN")
    func nonFinitePositions() throws {
        let (_, run) = try Analysis.scan(samplePath("exploding-nan"))
        let positions = RunIndex.nonFinitePositions(run, threads: 2)
        #expect(positions.count == run.records.count)
        for (index, record) in run.records.enumerated() {
            let expected = (0..<record.tensors.count).filter { t in
                let stats = record.tensors.measurement(at: t).stats
                return stats.nan + stats.posInf + stats.negInf > 0
            }
            #expect(positions[index].map(Int.init) == expected)
        }
        #expect(positions.contains { !$0.isEmpty })
    }

    /// A weight's timeline as it was drawn from whole measurements, every save drawn.
    static func referencePoints(_ run: RunMeasurements, weight name: String) -> [TimelinePoint] {
        var points: [TimelinePoint] = []
        var previous: Int?
        for record in run.records {
            guard let position = record.tensors.layout.index[.weight(name)] else { continue }
            let m = record.tensors.measurement(at: position)
            let gradient = record.tensors.layout.index[.gradient(name)].map { record.tensors.measurement(at: $0) }
            let log2Kept = record.tensors.detail >= .histogram
            var ratio: Double?
            var perSave: Double?
            if let relative = m.drift?.relativeChange, let earlier = previous {
                ratio = relative / Double(max(record.step - earlier, 1))
                perSave = relative
            }
            var gradientRatio: Double?
            if let g = gradient?.stats.l2Norm, let w = m.stats.l2Norm, w > 0, w.isFinite { gradientRatio = g / w }
            points.append(
                TimelinePoint(
                    step: record.step, norm: m.stats.l2Norm, gradientNorm: gradient?.stats.l2Norm, gradientRatio: gradientRatio,
                    updateRatio: ratio, updatePerSave: perSave,
                    zeroFraction: m.stats.count > 0 ? Double(m.stats.zeros) / Double(m.stats.count) : nil,
                    nonFinite: m.stats.nan + m.stats.posInf + m.stats.negInf,
                    log2Min: log2Kept ? m.stats.log2Histogram.minExponent : nil, log2Counts: log2Kept ? m.stats.log2Histogram.counts : nil,
                    gradientLog2Min: log2Kept ? gradient?.stats.log2Histogram.minExponent : nil,
                    gradientLog2Counts: log2Kept ? gradient?.stats.log2Histogram.counts : nil,
                    gradientZeroFraction: gradient.flatMap { $0.stats.count > 0 ? Double($0.stats.zeros) / Double($0.stats.count) : nil },
                    gradientNonFinite: gradient.map { $0.stats.nan + $0.stats.posInf + $0.stats.negInf }, deadUnits: gradient?.zeroUnits))
            previous = record.step
        }
        return points
    }

    @Test("timelines read in place equal the ones drawn from whole measurements on the sample runs")
    func timelinesMatch() throws {
        var compared = 0
        for name in ["explode-then-dead", "exploding-nan", "dead-relu", "keras-legacy-h5", "healthy"] {
            let (_, run) = try Analysis.scan(samplePath(name))
            #expect(!ScanReport.timelinesNeedFindings(run))
            let (weights, activations) = ScanReport.timelines(run, findings: [], threads: 2)
            #expect(!weights.isEmpty)
            for timeline in weights where run.records.contains(where: { $0.tensors.layout.index[.weight(timeline.name)] != nil }) {
                #expect(timeline.points == Self.referencePoints(run, weight: timeline.name))
                compared += timeline.points.count
            }
            for timeline in activations {
                let places = run.records.compactMap { record in
                    record.tensors.layout.index[.activation(timeline.name)].map { (record, $0) }
                }
                guard places.count == timeline.points.count, let last = places.last else { continue }
                for (point, (record, position)) in zip(timeline.points, places) {
                    let m = record.tensors.measurement(at: position)
                    #expect(point.norm == m.stats.std && point.nonFinite == m.stats.nan + m.stats.posInf + m.stats.negInf)
                    #expect(point.deadUnits == m.inactiveUnits && point.step == record.step)
                }
                #expect(timeline.units == last.0.tensors.measurement(at: last.1).unitCount)
            }
        }
        #expect(compared > 50)
    }

    static func stats(count: Int, zeros: Int, nan: Int, posInf: Int, negInf: Int, numbers: Bool, log2: Log2Histogram) -> TensorStats {
        TensorStats(
            count: count, finiteCount: count - nan - posInf - negInf, mean: numbers ? 0.5 : nil, std: numbers ? 1.5 : nil,
            min: numbers ? -2 : nil, max: numbers ? 3 : nil, maxAbs: numbers ? 3 : nil, l2Norm: numbers ? 9 : nil, zeros: zeros, nan: nan,
            posInf: posInf, negInf: negInf, p1: nil, p5: nil, p50: nil, p95: nil, p99: nil, histogram: nil, log2Histogram: log2,
            unitNorms: nil, unitZeroCount: nil)
    }

    static func drift(count: Int, relative: Double?, changed: Int) -> DriftStats {
        DriftStats(
            count: count, finiteCount: count, deltaNorm: nil, normA: nil, normB: nil, relativeChange: relative, maxAbsDelta: nil,
            cosineSimilarity: nil, changed: changed, changedFraction: count > 0 ? Double(changed) / Double(count) : nil, signFlips: 0,
            nonFinite: 0, unitRelativeChange: nil, unitChanged: nil)
    }

    @Test("failed and empty measurements, nil statistics, non-finite and wide counts, with and without drift and units")
    func awkwardTables() {
        let huge = 5_000_000_000
        let measurements = [
            // A tensor that could not be measured: no element, no number, an empty histogram.
            TensorMeasurement(
                key: .weight("failed"), name: "failed", layer: "l", role: .weight, shape: [0], dtype: "float32", path: "/failed",
                stats: Self.stats(
                    count: 0, zeros: 0, nan: 0, posInf: 0, negInf: 0, numbers: false,
                    log2: Log2Histogram(minExponent: 0, counts: [], zeros: 0))),
            // All NaN and ±Inf: counts but no finite number.
            TensorMeasurement(
                key: .gradient("bad"), name: "bad", layer: "l", role: .gradient, shape: [6, 2], unitAxis: 0, dtype: "float32",
                path: "/bad",
                stats: Self.stats(
                    count: 12, zeros: 0, nan: 7, posInf: 3, negInf: 2, numbers: false,
                    log2: Log2Histogram(minExponent: 0, counts: [], zeros: 0)),
                drift: Self.drift(count: 12, relative: nil, changed: 0), zeroUnits: 0, unitCount: 6, inactiveUnits: nil),
            // Wide counts, drift, units and a histogram.
            TensorMeasurement(
                key: .weight("wide"), name: "wide", layer: "m", role: .weight, shape: [huge], dtype: "float32", path: "/wide",
                stats: Self.stats(
                    count: huge, zeros: huge - 10, nan: 0, posInf: 1, negInf: 0, numbers: true,
                    log2: Log2Histogram(minExponent: -4, counts: [3, 0, 6], zeros: huge - 10)),
                drift: Self.drift(count: huge, relative: 0.125, changed: huge - 1), zeroUnits: 2, unitCount: 4, inactiveUnits: 1),
        ]
        for detail in [MeasurementDetail.compact, .histogram, .full] {
            let table = MeasurementTable(measurements, detail: detail)
            #expect(table.count == measurements.count)
            for t in 0..<table.count { Self.expectSame(table, at: t) }
            #expect(table.point(at: 0).l2Norm == nil && table.point(at: 0).count == 0 && table.point(at: 0).relativeChange == nil)
            #expect(table.point(at: 1).nonFinite == 12 && table.point(at: 1).std == nil && table.point(at: 1).unitCount == 6)
            #expect(table.nonFinite(at: 2) == 1 && table.point(at: 2).zeros == huge - 10 && table.point(at: 2).relativeChange == 0.125)
            #expect(table.point(at: 2).inactiveUnits == 1 && table.point(at: 0).zeroUnits == nil)
            #expect((table.log2Histogram(at: 2).counts == [3, 0, 6]) == (detail >= .histogram))
            // A tensor this save lacks has no position: a timeline skips the save.
            #expect(table.layout.index[.weight("missing")] == nil)
        }
        // An empty table (a save whose tensors all failed) has nothing to read.
        #expect(MeasurementTable([], detail: .compact).isEmpty)
    }
}
