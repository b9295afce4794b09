import ElementTypes
import Foundation
import GradScopeMeasurement
import GradScopeModel
import GradScopeSources
import GradScopeStatistics
import Testing

#if canImport(Glibc)
import TestSupport
#endif

@Suite("A save's record put together from its measured tensors")
struct CombineTests {
    /// Saves 1 and 2 of a sample run measured step by step, and save 2's tensors.
    static func measured() throws -> (first: StepRecord, second: StepRecord, tensors: [TensorRef], source: String) {
        let run = try RunLoader.load(samplePath("exploding-nan"))
        let open = try run.checkpoints.map { try Worker.reopen($0, options: LoadOptions()) }
        try #require(open.count >= 3)
        let (first, _) = RunMeasurer.measureStep(
            open[1], previous: open[0], index: 1, wantUnits: false, gradientNames: [], options: MeasureOptions())
        let (second, _) = RunMeasurer.measureStep(
            open[2], previous: open[1], index: 2, wantUnits: false, gradientNames: [], options: MeasureOptions())
        try #require(second.failures.isEmpty && second.tensors.count == run.checkpoints[2].tensors.count)
        return (first, second, run.checkpoints[2].tensors, run.checkpoints[2].source)
    }

    static func combine(
        _ direct: [SeriesMeasurer.Outcome?], tensors: [TensorRef], source: String, layout: TableLayout?, detail: MeasurementDetail,
        rest: (StepRecord, [UnitSnapshot])? = nil
    ) -> StepRecord {
        RunMeasurer.combine(
            tensors: tensors, source: source, step: 2, metadata: StepMetadata(), direct: direct, rest: rest, layout: layout, detail: detail
        ).0
    }

    @Test("kept at a detail, the record is the full record kept at that detail, sharing the save before's layout")
    func detailAndLayout() throws {
        let (first, second, tensors, source) = try Self.measured()
        let direct: [SeriesMeasurer.Outcome?] = second.tensors.values.map { .init(measurement: $0, snapshot: nil, error: nil) }
        let full = Self.combine(direct, tensors: tensors, source: source, layout: nil, detail: .full)
        #expect(full.tensors.detail == .full)
        #expect(try WorkerMessagesTests.json(full.tensors) == (try WorkerMessagesTests.json(second.tensors)))
        for detail in [MeasurementDetail.compact, .histogram, .full] {
            let kept = Self.combine(direct, tensors: tensors, source: source, layout: first.tensors.layout, detail: detail)
            #expect(kept.tensors.detail == detail)
            #expect(kept.tensors.layout === first.tensors.layout, "the save before's layout describes these tensors")
            #expect(try WorkerMessagesTests.json(kept.tensors) == (try WorkerMessagesTests.json(full.tensors.keeping(detail))))
        }
        // Measured through libhdf5 instead: the same record.
        let viaRest = Self.combine(
            [], tensors: tensors, source: source, layout: first.tensors.layout, detail: .histogram, rest: (second, []))
        #expect(viaRest.tensors.layout === first.tensors.layout)
        #expect(try WorkerMessagesTests.json(viaRest.tensors) == (try WorkerMessagesTests.json(full.tensors.keeping(.histogram))))
    }

    @Test("failed tensors are listed in order and left out; a key measured twice keeps its first place and its last numbers")
    func failuresAndRepeatedKeys() throws {
        let (first, second, tensors, source) = try Self.measured()
        let values = second.tensors.values
        try #require(values.count >= 3)
        var direct: [SeriesMeasurer.Outcome?] = values.map { .init(measurement: $0, snapshot: nil, error: nil) }
        direct[1] = .init(measurement: nil, snapshot: nil, error: "bad block")
        direct[2] = nil
        let record = Self.combine(direct, tensors: tensors, source: source, layout: first.tensors.layout, detail: .full)
        #expect(record.failures == [SkippedItem(item: source + ":" + tensors[1].path, kind: .unreadable, reason: "bad block")])
        #expect(record.tensors.keys == values.enumerated().filter { $0.offset != 1 && $0.offset != 2 }.map(\.element.key))
        #expect(record.tensors.layout !== first.tensors.layout, "fewer tensors than the save before's: a layout of their own")

        // The last tensor measured again under the first one's key.
        var repeated = values
        var again = values[values.count - 1]
        again.key = values[0].key
        again.name = values[0].name
        repeated[repeated.count - 1] = again
        let twice = Self.combine(
            repeated.map { .init(measurement: $0, snapshot: nil, error: nil) }, tensors: tensors, source: source,
            layout: first.tensors.layout, detail: .full)
        #expect(twice.tensors.count == values.count - 1)
        #expect(twice.tensors.keys == Array(values.dropLast().map(\.key)))
        #expect(twice.tensors.layout !== first.tensors.layout)
        let kept = try #require(twice.tensors[values[0].key])
        #expect(kept.path == again.path && kept.stats.count == again.stats.count && kept.stats.mean == again.stats.mean)
    }
}

@Suite("Jobs handed out to the measuring threads")
struct JobQueueTests {
    @Test("every job index goes to exactly one thread, in order, and none past the count", arguments: [0, 1, 7, 5000])
    func eachJobOnce(count: Int) throws {
        let queue = JobQueue(count: count)
        let threads = 4
        var taken = [[Int]](repeating: [], count: threads)
        try taken.withUnsafeMutableBufferPointer { slots in
            try TensorMeasurer.inParallel(threads) { thread in
                while let job = queue.next() { slots[thread].append(job) }
            }
        }
        #expect(taken.flatMap { $0 }.sorted() == Array(0..<count))
        #expect(taken.allSatisfy { $0 == $0.sorted() }, "each thread gets its jobs in ascending order")
        #expect(queue.next() == nil && queue.next() == nil)
    }
}
