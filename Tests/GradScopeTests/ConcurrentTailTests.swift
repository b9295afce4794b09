import Foundation
import GradScopeDiagnosis
import GradScopeMeasurement
import GradScopeModel
import GradScopeRendering
import TestSupport
import Testing

/// What runs after the measuring: detectors side by side, timelines built beside the diagnosis, and
/// numbers written straight into the JSON: each gives what it gave one after the other, byte for byte.
@Suite("Concurrent tail")
struct ConcurrentTailTests {
    /// Runs whose detectors find something of most kinds.
    static let runs = ["explode-then-dead", "frozen-layer", "dead-relu", "weight-decay-collapse", "vanishing-sigmoid", "exploding-nan"]

    @Test("detectors side by side give the findings and not-checked entries of one after the other", arguments: runs)
    func detectorsSideBySide(run name: String) throws {
        let (_, run) = try Analysis.scan(samplePath(name))
        let detectors = DetectorRegistry.detectors(for: .run)
        let serial = RunIndex.with(run) { Diagnoser.detect(run, thresholds: Thresholds(), detectors: detectors, threads: 1) }
        #expect(!serial.findings.isEmpty || !serial.notChecked.isEmpty)
        for threads in [2, 3, 4, 16] {
            // A fresh index each time, and one too small to hold every series (built afresh past it).
            for budget in [RunIndex.maxCachedPoints, 7] {
                let (concurrent, index) = RunIndex.with(run, budget: budget) {
                    (Diagnoser.detect(run, thresholds: Thresholds(), detectors: detectors, threads: threads), RunIndex.current)
                }
                #expect(concurrent.findings == serial.findings)
                #expect(concurrent.notChecked == serial.notChecked)
                // A series built by two detectors at once is kept once, within the budget.
                #expect((index?.cachedPoints ?? 0) <= budget)
            }
        }
    }

    @Test("a frozen and a stopped weight are found the same with detectors side by side")
    func frozenAndStoppedSideBySide() throws {
        var fixture = SyntheticRun()
        fixture.frozenLayers = [1]
        fixture.weightHook = { layer, index, weights, gradient in
            // Layer 3's weight is set at step 700, then never changes again (its gradient does).
            layer == 3 && index >= 7 ? (weights.map { _ in 0.05 }, gradient) : (weights, gradient)
        }
        let directory = try TemporaryDirectory()
        try fixture.write(to: directory.url.path)
        let (_, run) = try Analysis.scan(directory.url.path)
        let detectors = DetectorRegistry.detectors(for: .run)
        let serial = RunIndex.with(run) { Diagnoser.detect(run, thresholds: Thresholds(), detectors: detectors, threads: 1) }
        let frozen = serial.findings.filter { $0.kind == .frozen }
        #expect(frozen.contains { $0.tensor == "l1.weight" && $0.evidence["last_moved_step"] == nil })
        #expect(frozen.contains { $0.tensor == "l3.weight" && $0.evidence["last_moved_step"] == .int(700) && $0.firstStep == 800 })
        let concurrent = RunIndex.with(run) { Diagnoser.detect(run, thresholds: Thresholds(), detectors: detectors, threads: 2) }
        #expect(concurrent.findings == serial.findings)
        // The stopped check alone finds the weight that stopped, and only it.
        let keys = run.weightKeys.filter { !DetectorSupport.isRunningStatistic($0.name) }
        let detector = try #require(DetectorRegistry.detector(for: .frozen) as? FrozenDetector)
        RunIndex.with(run) {
            let stopped = detector.stopped(run, keys: keys, medianOther: 1e-3)
            #expect(stopped.map(\.tensor) == ["l3.weight"])
        }
    }

    @Test("a run too small to gain by threads runs its detectors on one")
    func smallRunsStayOnOneThread() throws {
        let (_, run) = try Analysis.scan(samplePath("healthy"))
        #expect(run.records.reduce(0) { $0 + $1.tensors.count } < Diagnoser.concurrentMeasurements)
        #expect(Diagnoser.detectorThreads(run) == 1)
        var empty = run
        empty.records = []
        #expect(Diagnoser.detectorThreads(empty) == 1)
        // No detector: nothing found, nothing unchecked, on any number of threads.
        let none = RunIndex.with(run) { Diagnoser.detect(run, thresholds: Thresholds(), detectors: [], threads: 4) }
        #expect(none.findings.isEmpty && none.notChecked.isEmpty)
    }

    @Test("timelines built beside the diagnosis are the report's own", arguments: ["explode-then-dead", "dead-relu", "healthy"])
    func timelinesAside(run name: String) throws {
        let path = samplePath(name)
        let (report, run) = try Analysis.scan(path)
        let expected = try encodeJSON(report)
        for aside in [true, false] {
            let built = RunIndex.with(run) {
                let (diagnosis, timelines) = Analysis.diagnoseAndDrawTimelines(run, thresholds: Thresholds(), aside: aside)
                #expect((timelines != nil) == aside)
                return ScanReport(
                    run: Run(source: report.source, checkpoints: []), measurements: run, diagnosis: diagnosis, timelines: timelines)
            }
            var same = built
            same.notes = report.notes
            same.skipped = report.skipped
            #expect(try encodeJSON(same) == expected)
        }
    }

    @Test("a run longer than the sampling limit draws its timelines from the findings")
    func longRunsWaitForTheFindings() throws {
        var fixture = SyntheticRun()
        fixture.widths = [4, 4]
        fixture.steps = Array(0..<(StepSampling.limit + 5))
        let directory = try TemporaryDirectory()
        try fixture.write(to: directory.url.path)
        let (report, run) = try Analysis.scan(directory.url.path)
        #expect(ScanReport.timelinesNeedFindings(run))
        let timelines = RunIndex.with(run) { Analysis.diagnoseAndDrawTimelines(run, thresholds: Thresholds(), aside: true).1 }
        #expect(timelines == nil)
        #expect(report.timeline.first.map { $0.points.count < run.records.count } == true)
    }

    @Test("integers are written digit by digit as their description")
    func integersWrittenInPlace() {
        var values: [Int64] = [0, 1, -1, 9, 10, -10, 99, 100, 12345, Int64.max, Int64.min, Int64.max - 1, Int64.min + 1]
        var noise = SplitMix64(state: 7)
        for _ in 0..<2000 {
            let bits = Int64(bitPattern: noise.next())
            values.append(bits)
            values.append(bits >> Int64(noise.next() % 63))
        }
        for value in values {
            var writer = PrettyJSON.Writer()
            writer.write(.int(value))
            #expect(String(decoding: writer.bytes, as: UTF8.self) == value.description)
        }
        for value: UInt64 in [0, 7, 10, UInt64.max, UInt64.max / 10, 1 << 63] + (0..<500).map({ _ in noise.next() }) {
            var writer = PrettyJSON.Writer()
            writer.write(.uint(value))
            #expect(String(decoding: writer.bytes, as: UTF8.self) == value.description)
        }
    }

    @Test("floating-point numbers are written in place as their description without a trailing .0")
    func floatingPointWrittenInPlace() {
        func expected(_ text: String) -> String { text.hasSuffix(".0") ? String(text.dropLast(2)) : text }
        var doubles: [Double] = [0, -0.0, 1, 100, 1e16, 1e15, 0.1, 1.0 / 3, 5e-324, .greatestFiniteMagnitude, -2.5e-300, 123_456_789_012.5]
        var floats: [Float] = [0, -0.0, 16_777_216, 0.3, 1e-45, 3.4e38, -1.5]
        var noise = SplitMix64(state: 11)
        while doubles.count < 3000 {
            let value = Double(bitPattern: noise.next())
            if value.isFinite { doubles.append(value) }
            doubles.append(Double(Int64(bitPattern: noise.next()) >> 40))
        }
        while floats.count < 2000 {
            let value = Float(bitPattern: UInt32(truncatingIfNeeded: noise.next()))
            if value.isFinite { floats.append(value) }
        }
        for value in doubles {
            var writer = PrettyJSON.Writer()
            writer.bytes = Array("x.".utf8)
            writer.write(.double(value))
            // What stood before the number is never taken for its trailing ".0".
            #expect(String(decoding: writer.bytes, as: UTF8.self) == "x." + expected(value.description))
        }
        for value in floats {
            var writer = PrettyJSON.Writer()
            writer.write(.float(value))
            #expect(String(decoding: writer.bytes, as: UTF8.self) == expected(value.description))
        }
        // Non-finite numbers stay the contract's strings.
        var writer = PrettyJSON.Writer()
        for value in [Double.nan, .infinity, -.infinity] { writer.write(.double(value)) }
        #expect(String(decoding: writer.bytes, as: UTF8.self) == "\"nan\"\"inf\"\"-inf\"")
    }

    @Test("timelines written in pieces side by side are the bytes of one after the other and of Foundation's encoder")
    func timelinesInPieces() throws {
        let (report, _) = try Analysis.scan(samplePath("explode-then-dead"))
        #expect(!report.timeline.isEmpty)
        // Enough timelines to make many pieces, one of them with no point.
        var timelines = (0..<40).flatMap { copy in
            report.timeline.map { timeline in
                var renamed = timeline
                renamed.name += ".\(copy)"
                return renamed
            }
        }
        timelines[3].points = []
        #expect(timelines.reduce(0) { $0 + $1.points.count } >= TimelineWriting.concurrentPoints / 2)
        func written(_ list: [TensorTimeline], threads: Int) throws -> String {
            var writer = PrettyJSON.Writer()
            try list.writeJSON(to: &writer, depth: 1, threads: threads)
            return String(decoding: writer.bytes, as: UTF8.self)
        }
        let serial = try written(timelines, threads: 1)
        for threads in [2, 3, 8] { #expect(try written(timelines, threads: threads) == serial) }
        // The list as a field of an object goes the same way, and matches Foundation's bytes.
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        encoder.nonConformingFloatEncodingStrategy = .convertToString(
            positiveInfinity: NonFiniteJSON.positiveInfinity, negativeInfinity: NonFiniteJSON.negativeInfinity, nan: NonFiniteJSON.nan)
        let wrapped = ["timeline": timelines]
        #expect(try PrettyJSON.encode(wrapped) == String(decoding: try encoder.encode(wrapped), as: UTF8.self))
        #expect(try PrettyJSON.encode(wrapped).contains(serial))
        // An empty list and a list of one.
        #expect(try written([], threads: 4) == "[\n\n  ]")
        #expect(try PrettyJSON.encode(["t": [TensorTimeline]()]) == String(decoding: try encoder.encode(["t": [TensorTimeline]()]), as: UTF8.self))
        #expect(try written([timelines[0]], threads: 4) == (try written([timelines[0]], threads: 1)))
        // The streamed report is the report's JSON.
        var streamed: [UInt8] = []
        try JSONRenderer().write(report) { streamed.append(contentsOf: $0) }
        #expect(String(decoding: streamed, as: UTF8.self) == (try encodeJSON(report)) + "\n")
    }

    @Test("a list of timelines is cut into consecutive pieces of bounded points")
    func timelinePieces() throws {
        let (report, _) = try Analysis.scan(samplePath("healthy"))
        let one = try #require(report.timeline.first)
        #expect(one.points.count > 2)
        func list(_ sizes: [Int]) -> [TensorTimeline] {
            sizes.map { size in
                var timeline = one
                timeline.points = Array(repeating: one.points[0], count: size)
                return timeline
            }
        }
        #expect(TimelineWriting.pieces([]).isEmpty)
        #expect(TimelineWriting.pieces(list([5]), pointsPerPiece: 2) == [0..<1])
        #expect(TimelineWriting.pieces(list([1, 1, 1, 1, 1]), pointsPerPiece: 2) == [0..<2, 2..<4, 4..<5])
        #expect(TimelineWriting.pieces(list([3, 0, 9, 1, 1]), pointsPerPiece: 4) == [0..<2, 2..<3, 3..<5])
        #expect(TimelineWriting.threads(list([1, 1])) == 1)
        #expect(TimelineWriting.threads(list([TimelineWriting.concurrentPoints])) == 1)
        #expect(TimelineWriting.threads(list([TimelineWriting.concurrentPoints, 1])) >= 1)
    }

    @Test("timelines built on several threads are those built on one, in order", arguments: ["dead-relu", "explode-then-dead"])
    func timelinesOnThreads(run name: String) throws {
        let (_, run) = try Analysis.scan(samplePath(name))
        let (one, many) = RunIndex.with(run) {
            (ScanReport.timelines(run, findings: [], threads: 1), [2, 3, 64].map { ScanReport.timelines(run, findings: [], threads: $0) })
        }
        #expect(!one.weights.isEmpty)
        for timelines in many {
            #expect(try encodeJSON(timelines.weights) == (try encodeJSON(one.weights)))
            #expect(try encodeJSON(timelines.activations) == (try encodeJSON(one.activations)))
        }
        #expect(ScanReport.orderedMap(Array(0..<10), threads: 3) { $0 * 2 } == Array(0..<10).map { $0 * 2 })
        #expect(ScanReport.orderedMap(Array(0..<2), threads: 8) { $0 + 1 } == [1, 2])
        #expect(ScanReport.orderedMap([Int](), threads: 4) { $0 }.isEmpty)
    }
}
