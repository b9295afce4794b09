import Foundation
import GradScopeDiagnosis
import GradScopeMeasurement
import GradScopeModel
import GradScopeRendering
import GradScopeStatistics
import TestSupport
import Testing

/// The tail of a scan made cheap: timelines read each save's table by position, points laid out
/// in a buffer, pieces handed on as they are written, detectors that build less. Each gives
/// byte for byte, finding for finding, what the plain way gives.
@Suite("Scan tail")
struct ScanTailTests {
    static func foundation<T: Encodable>(_ value: T) throws -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        encoder.nonConformingFloatEncodingStrategy = .convertToString(
            positiveInfinity: NonFiniteJSON.positiveInfinity, negativeInfinity: NonFiniteJSON.negativeInfinity, nan: NonFiniteJSON.nan)
        return String(decoding: try encoder.encode(value), as: UTF8.self)
    }

    /// Points with every field present or absent at random, numbers of every size (the extremes of
    /// Int, random bit patterns of Double, non-finite ones, negative zero) and lists long and empty.
    static func randomPoints(_ count: Int, seed: UInt64, longest: Int = 300) -> [TimelinePoint] {
        var noise = SplitMix64(state: seed)
        func chance() -> Bool { noise.next() % 3 != 0 }
        func integer() -> Int {
            switch noise.next() % 6 {
            case 0: return .min
            case 1: return .max
            case 2: return Int(bitPattern: UInt(noise.next()))
            case 3: return -Int(noise.next() % 1000)
            default: return Int(noise.next() % 100_000)
            }
        }
        func double() -> Double {
            switch noise.next() % 8 {
            case 0: return .nan
            case 1: return noise.next() % 2 == 0 ? .infinity : -.infinity
            case 2: return -0.0
            case 3: return Double(Int(noise.next() % 1000))
            case 4: return .greatestFiniteMagnitude
            case 5: return 5e-324
            default:
                let value = Double(bitPattern: noise.next())
                return value.isFinite ? value : 0.5
            }
        }
        func list() -> [Int] { (0..<Int(noise.next() % UInt64(longest + 1))).map { _ in integer() } }
        return (0..<count).map { _ in
            TimelinePoint(
                step: integer(), norm: chance() ? double() : nil, gradientNorm: chance() ? double() : nil,
                gradientRatio: chance() ? double() : nil, updateRatio: chance() ? double() : nil,
                updatePerSave: chance() ? double() : nil, zeroFraction: chance() ? double() : nil, nonFinite: integer(),
                log2Min: chance() ? integer() : nil, log2Counts: chance() ? list() : nil,
                gradientLog2Min: chance() ? integer() : nil, gradientLog2Counts: chance() ? list() : nil,
                gradientZeroFraction: chance() ? double() : nil, gradientNonFinite: chance() ? integer() : nil,
                deadUnits: chance() ? integer() : nil)
        }
    }

    @Test("a point laid out in its buffer is the bytes of Foundation's encoder, at any depth, whatever its numbers")
    func pointsLaidOutAsFoundationWrites() throws {
        let points = Self.randomPoints(400, seed: 3)
        #expect(points.contains { $0.log2Counts?.count ?? 0 > 200 })
        #expect(points.contains { $0.norm?.isNaN == true })
        #expect(try PrettyJSON.encode(points) == (try Self.foundation(points)))
        // Deeper: a point of a timeline, in a list, in objects.
        let timeline = TensorTimeline(name: "w", layer: "l", shape: [3, 2], units: 3, points: Array(points.prefix(60)))
        let nested = ["a": ["b": [[timeline]]]]
        #expect(try PrettyJSON.encode(nested) == (try Self.foundation(nested)))
        // Every field absent: an object of one field, and the empty point has none but its step and count.
        let bare = TimelinePoint(
            step: 0, norm: nil, gradientNorm: nil, updateRatio: nil, zeroFraction: nil, nonFinite: 0, log2Min: nil, log2Counts: nil,
            gradientLog2Min: nil, gradientLog2Counts: nil, deadUnits: nil)
        #expect(try PrettyJSON.encode([bare]) == (try Self.foundation([bare])))
        #expect(try PrettyJSON.encode(bare) == "{\n  \"non_finite\" : 0,\n  \"step\" : 0\n}")
    }

    @Test("the room reserved for a point holds its longest form")
    func roomHoldsTheLongestPoint() throws {
        // Every field at its longest: the most digits, the longest doubles, full lists.
        let longest = -2.2250738585072014e-308
        let counts = [Int](repeating: .min, count: 280)
        let point = TimelinePoint(
            step: .min, norm: longest, gradientNorm: longest, gradientRatio: longest, updateRatio: longest, updatePerSave: longest,
            zeroFraction: longest, nonFinite: .min, log2Min: .min, log2Counts: counts, gradientLog2Min: .min, gradientLog2Counts: counts,
            gradientZeroFraction: longest, gradientNonFinite: .min, deadUnits: .min)
        for depth in [0, 1, 4, 40] {
            var writer = PrettyJSON.Writer()
            try point.writeJSON(to: &writer, depth: depth)
            let text = String(decoding: writer.bytes, as: UTF8.self)
            #expect(writer.bytes.count <= PointBytes.room(point, depth: depth))
            #expect(text.hasPrefix("{\n") && text.hasSuffix("}"))
            #expect(text.components(separatedBy: "\(Int.min)").count - 1 == 2 * 280 + 6)
        }
        #expect(try PrettyJSON.encode([point]) == (try Self.foundation([point])))
    }

    /// Enough timelines for many pieces of more than a megabyte each.
    static func manyTimelines() -> [TensorTimeline] {
        let points = randomPoints(700, seed: 17, longest: 30)
        return (0..<20).map { (index: Int) -> TensorTimeline in
            let start: Int = index * 37 % 300
            let units: Int? = index % 2 == 0 ? 8 : nil
            let kept: [TimelinePoint] = index == 5 ? [] : Array(points[start...])
            return TensorTimeline(name: "blocks.\(index).w", layer: "blocks.\(index)", shape: [8, 4], units: units, points: kept)
        }
    }

    @Test("a long list streamed in pieces handed on as they are written is the list written in one buffer")
    func streamedPiecesAreTheWholeList() throws {
        let timelines = Self.manyTimelines()
        #expect(TimelineWriting.threads(timelines) >= 1)
        #expect(TimelineWriting.pieces(timelines).count > 4)
        var serial = PrettyJSON.Writer()
        try timelines.writeJSON(to: &serial, depth: 1, threads: 1)
        #expect(serial.bytes.count > 4 * PrettyJSON.Writer.flushSize)
        for threads in [2, 3, 8] {
            var side = PrettyJSON.Writer()
            try timelines.writeJSON(to: &side, depth: 1, threads: threads)
            #expect(side.bytes == serial.bytes)
        }
        // Streamed: the chunks, put together, are the value and its newline; none is empty.
        let value = ["timeline": timelines]
        var chunks: [Int] = []
        var streamed: [UInt8] = []
        try PrettyJSON.write(value) { bytes in
            chunks.append(bytes.count)
            streamed.append(contentsOf: bytes)
        }
        #expect(String(decoding: streamed, as: UTF8.self) == (try PrettyJSON.encode(value)) + "\n")
        #expect(chunks.count > 4 && chunks.allSatisfy { $0 > 0 })
        #expect(try PrettyJSON.encode(value) == (try Self.foundation(value)))
    }

    struct Refused: Error {}

    @Test("an output that fails while pieces are written ends the list with its error, no thread left waiting")
    func failingOutputStopsThePieces() throws {
        let value = ["timeline": Self.manyTimelines()]
        for failAt in [1, 2, 4] {
            var calls = 0
            #expect(throws: Refused.self) {
                try PrettyJSON.write(value) { _ in
                    calls += 1
                    if calls == failAt { throw Refused() }
                }
            }
            #expect(calls == failAt)
        }
    }

    /// The timelines as drawn before they read the tables by position: each point through the
    /// table's look-up by key, the gradient by its name.
    static func reference(_ run: RunMeasurements, findings: [Finding]) -> [TensorTimeline] {
        let records = run.records
        let drawn: [Int]
        if ScanReport.timelinesNeedFindings(run) {
            let findingSteps = Set(findings.flatMap { [$0.firstStep, $0.lastStep].compactMap { $0 } })
            let sampled = Set(StepSampling.indices(count: records.count))
            drawn = records.indices.filter { sampled.contains($0) || findingSteps.contains(records[$0].step) }
        } else {
            drawn = Array(records.indices)
        }
        return run.weightKeys.compactMap { key -> TensorTimeline? in
            var before: [Int: Int] = [:]
            var previous: Int?
            var lastIndex: Int?
            for (index, record) in records.enumerated() where record.tensors.layout.index[key] != nil {
                before[index] = previous
                previous = record.step
                lastIndex = index
            }
            guard let lastIndex, let last = records[lastIndex].tensors[key] else { return nil }
            let points = drawn.compactMap { index -> TimelinePoint? in
                let record = records[index]
                guard let m = record.tensors[key] else { return nil }
                let gradient = record.gradient(m.name)
                var ratio: Double?
                var perSave: Double?
                if let relative = m.drift?.relativeChange, let earlier = before[index] ?? nil {
                    ratio = relative / Double(max(record.step - earlier, 1))
                    perSave = relative
                }
                var gradientRatio: Double?
                if let g = gradient?.stats.l2Norm, let w = m.stats.l2Norm, w > 0, w.isFinite { gradientRatio = g / w }
                let log2Kept = record.tensors.detail >= .histogram
                return TimelinePoint(
                    step: record.step, norm: m.stats.l2Norm, gradientNorm: gradient?.stats.l2Norm,
                    gradientRatio: gradientRatio, updateRatio: ratio, updatePerSave: perSave,
                    zeroFraction: m.stats.count > 0 ? Double(m.stats.zeros) / Double(m.stats.count) : nil,
                    nonFinite: m.stats.nan + m.stats.posInf + m.stats.negInf,
                    log2Min: log2Kept ? m.stats.log2Histogram.minExponent : nil,
                    log2Counts: log2Kept ? m.stats.log2Histogram.counts : nil,
                    gradientLog2Min: log2Kept ? gradient?.stats.log2Histogram.minExponent : nil,
                    gradientLog2Counts: log2Kept ? gradient?.stats.log2Histogram.counts : nil,
                    gradientZeroFraction: gradient.flatMap { $0.stats.count > 0 ? Double($0.stats.zeros) / Double($0.stats.count) : nil },
                    gradientNonFinite: gradient.map { $0.stats.nan + $0.stats.posInf + $0.stats.negInf },
                    deadUnits: gradient?.zeroUnits)
            }
            return TensorTimeline(
                name: last.name, layer: last.layer, shape: last.shape,
                units: last.shape.count >= 2 ? TensorNames.units(shape: last.shape, unitAxis: last.unitAxis, gates: last.gates) : nil,
                points: points)
        }
    }

    @Test(
        "timelines read by position are those read by key, point for point",
        arguments: ["explode-then-dead", "dead-relu", "frozen-layer", "exploding-nan", "keras-legacy-h5", "trainer-high-lr"])
    func timelinesByPosition(run name: String) throws {
        let (report, run) = try Analysis.scan(samplePath(name))
        #expect(!report.timeline.isEmpty)
        #expect(report.timeline == Self.reference(run, findings: report.findings))
    }

    @Test("a long run's timelines, drawn at the sampled saves and the findings' steps, are those read by key")
    func longRunTimelinesByPosition() throws {
        var fixture = SyntheticRun()
        fixture.widths = [4, 4]
        fixture.steps = Array(0..<(StepSampling.limit + 5))
        let directory = try TemporaryDirectory()
        try fixture.write(to: directory.url.path)
        let (report, run) = try Analysis.scan(directory.url.path)
        #expect(ScanReport.timelinesNeedFindings(run))
        #expect(report.timeline.first.map { $0.points.count < run.records.count } == true)
        #expect(report.timeline == Self.reference(run, findings: report.findings))
    }

    @Test("a run whose saves hold different tensors draws each tensor at the saves that hold it")
    func timelinesOverChangingTables() throws {
        let (_, run) = try Analysis.scan(samplePath("explode-then-dead"))
        #expect(run.records.count >= 4)
        // Every other save without its first weight, and one save without any gradient.
        var changed = run
        let dropped = run.weightKeys[0]
        for index in changed.records.indices where index % 2 == 1 {
            let table = changed.records[index].tensors
            let kept = table.values.filter { $0.key != dropped && (index != 3 || $0.role != .gradient) }
            changed.records[index].tensors = MeasurementTable(kept, detail: table.detail)
        }
        let timelines = RunIndex.with(changed) { ScanReport.timelines(changed, findings: []) }
        #expect(timelines.weights == Self.reference(changed, findings: []))
        let first = try #require(timelines.weights.first { $0.name == dropped.name })
        #expect(first.points.count == (run.records.count + 1) / 2)
        #expect(timelines.weights.contains { $0.points.contains { $0.gradientNorm == nil } })
    }

    @Test("zero-gradient judges a series point by point as it judged lists of one")
    func zeroSinceWithoutLists() {
        var noise = SplitMix64(state: 5)
        for _ in 0..<500 {
            let zeros = (0..<Int(noise.next() % 8)).map { _ in noise.next() % 3 != 0 }
            let lists = zeros.map { zero in
                [
                    TensorMeasurement(
                        key: .gradient("g"), name: "g", layer: "l", role: .gradient, shape: [2], dtype: "float32", path: "/g",
                        stats: TensorStats(
                            count: 2, finiteCount: 2, mean: 0, std: 0, min: 0, max: zero ? 0 : 1, maxAbs: zero ? 0 : 1, l2Norm: zero ? 0 : 1,
                            zeros: zero ? 2 : 1, nan: 0, posInf: 0, negInf: 0, p1: nil, p5: nil, p50: nil, p95: nil, p99: nil, histogram: nil,
                            log2Histogram: Log2Histogram(minExponent: 0, counts: [], zeros: zero ? 2 : 1), unitNorms: nil, unitZeroCount: nil))
                ]
            }
            let expected = ZeroGradientDetector.zeroSince(lists)
            #expect(ZeroGradientDetector.zeroSince(count: zeros.count) { zeros[$0] } == expected)
            #expect(ZeroGradientDetector.zeroSince(count: lists.count) { ZeroGradientDetector.zero(lists[$0][0]) } == expected)
        }
        #expect(ZeroGradientDetector.zeroSince(count: 0) { _ in true } == nil)
        #expect(ZeroGradientDetector.zeroSince(count: 3) { $0 >= 1 } == 1)
        #expect(ZeroGradientDetector.zeroSince(count: 3) { $0 >= 2 } == nil)
        #expect(ZeroGradientDetector.zeroSince(count: 2) { _ in true } == 0)
    }

    @Test("a key is a kernel somewhere in the run exactly when a point of its series is one")
    func kernelsToldFromTheDescriptors() throws {
        for name in ["explode-then-dead", "frozen-layer", "keras-legacy-h5"] {
            let (_, run) = try Analysis.scan(samplePath(name))
            for key in run.weightKeys + run.keys(role: .gradient) {
                let series = run.series(key)
                #expect(DetectorSupport.mayBeKernel(run, key) == series.contains { DetectorSupport.isKernel($0.measurement) })
            }
            #expect(!DetectorSupport.mayBeKernel(run, .weight("no such tensor")))
            #expect(run.weightKeys.contains { DetectorSupport.mayBeKernel(run, $0) })
            #expect(run.weightKeys.contains { !DetectorSupport.mayBeKernel(run, $0) })
        }
    }

    @Test("the index keeps the series of weights and activations only, and answers every role as the run does")
    func indexKeepsWeightSeries() throws {
        let (_, run) = try Analysis.scan(samplePath("explode-then-dead"))
        let gradients = run.keys(role: .gradient)
        #expect(!gradients.isEmpty && !run.weightKeys.isEmpty)
        #expect(RunIndex.keeps(run.weightKeys[0]) && !RunIndex.keeps(gradients[0]))
        #expect(RunIndex.keeps(.activation("a")) && !RunIndex.keeps(.optimizer("m", "w")))
        RunIndex.with(run) {
            let index = RunIndex.current
            for key in gradients {
                #expect(run.indexedSeries(key).map(\.measurement.stats) == run.series(key, log2: false).map(\.measurement.stats))
            }
            #expect(index?.cachedPoints == 0)
            let key = run.weightKeys[0]
            #expect(run.indexedSeries(key).map(\.measurement.stats) == run.series(key, log2: false).map(\.measurement.stats))
            #expect(index?.cachedPoints == run.series(key).count)
        }
    }

    @Test("the tensors holding NaN or Inf are found at each save as the measurements show them, on any number of threads")
    func nonFinitePositions() throws {
        for name in ["exploding-nan", "explode-then-dead", "healthy"] {
            let (_, run) = try Analysis.scan(samplePath(name))
            let expected = run.records.map { record in
                record.ordered.indices.filter { DetectorSupport.nonFinite(record.ordered[$0]) > 0 }.map { Int32($0) }
            }
            #expect(RunIndex.nonFinitePositions(run, threads: 1) == expected)
            #expect(RunIndex.nonFinitePositions(run, threads: 3) == expected)
            #expect(run.indexedNonFinite() == expected)
            #expect(RunIndex.with(run) { run.indexedNonFinite() } == expected)
            #expect((name == "exploding-nan") == expected.contains { !$0.isEmpty })
            for step in run.steps {
                let first = run.records.first { $0.step > step && $0.ordered.contains { DetectorSupport.nonFinite($0) > 0 } }?.step
                #expect(run.firstNonFiniteSave(after: step, expected).map { run.records[$0].step } == first)
            }
        }
    }

    @Test("a weight is near zero by its parts as by its measurement")
    func nearZeroByParts() throws {
        let (_, run) = try Analysis.scan(samplePath("explode-then-dead"))
        var thresholds = Thresholds()
        for factor in [0.1, 1e3] {
            thresholds.initTooSmallFactor = factor
            for record in run.records {
                for weight in record.ordered {
                    #expect(
                        DetectorSupport.nearZero(weight, thresholds: thresholds)
                            == DetectorSupport.nearZero(
                                shape: weight.shape, unitAxis: weight.unitAxis, l2Norm: weight.stats.l2Norm,
                                finiteCount: weight.stats.finiteCount, thresholds: thresholds))
                }
            }
        }
        #expect(DetectorSupport.nearZero(shape: [4, 4], unitAxis: nil, l2Norm: 1e-9, finiteCount: 16, thresholds: Thresholds()))
        #expect(!DetectorSupport.nearZero(shape: [4, 4], unitAxis: nil, l2Norm: 1e-9, finiteCount: 0, thresholds: Thresholds()))
        #expect(!DetectorSupport.nearZero(shape: [4], unitAxis: nil, l2Norm: 1e-9, finiteCount: 4, thresholds: Thresholds()))
        #expect(!DetectorSupport.nearZero(shape: [4, 4], unitAxis: nil, l2Norm: nil, finiteCount: 16, thresholds: Thresholds()))
    }

    @Test("a tensor's places are the points of its series: the same saves, the same measurements")
    func placesAreTheSeries() throws {
        for name in ["explode-then-dead", "exploding-nan", "keras-legacy-h5"] {
            let (_, run) = try Analysis.scan(samplePath(name))
            for key in run.weightKeys + run.keys(role: .gradient) + [.weight("no such tensor")] {
                let series = run.series(key, log2: false)
                let places = run.places(of: key)
                #expect(places.map { run.records[$0.record].step } == series.map(\.step))
                #expect(places.map { run.measurement(at: $0).stats } == series.map(\.measurement.stats))
                #expect(places.map { run.measurement(at: $0).drift } == series.map(\.measurement.drift))
            }
        }
    }
}
