import Foundation
import GradScopeMeasurement
import GradScopeModel
import GradScopeSources
import HDF5Writer
import TestSupport
import Testing

/// Measuring a range's saves while the range before is combined: the same outcomes, errors and
/// progress, in the same order, as one range at a time.
@Suite("Measuring ranges overlapped")
struct SaveMeasuringOverlapTests {
    /// A run of `count` saves: a contiguous weight and its gradient (read directly), and a weight
    /// in shuffled gzip chunks (read step by step through libhdf5).
    static func writeRun(_ directory: String, count: Int) throws {
        var noise = SplitMix64(seed: 11)
        var contiguous = noise.normals(24 * 16, std: 0.2)
        var chunked = noise.normals(8 * 24, std: 0.2)
        for index in 0..<count {
            let writer = try HDF5Writer(creating: (directory as NSString).appendingPathComponent(String(format: "step_%06d.h5", index * 10)))
            try writer.setAttribute("format", .string("gradscope/1", .variableUTF8), at: "/")
            try writer.setAttribute("step", .int(Int64(index * 10)), at: "/")
            try writer.setAttribute("framework", .string("pytorch", .variableUTF8), at: "/")
            try writer.setAttribute("loss", .double(1.0 / Double(index + 1)), at: "/")
            for i in contiguous.indices { contiguous[i] += noise.normal() * 1e-3 }
            for i in chunked.indices { chunked[i] += noise.normal() * 1e-3 }
            try writer.write("/weights/l0.weight", contiguous, shape: [24, 16])
            try writer.write("/weights/l1.weight", chunked, shape: [8, 24], as: .float32, chunks: [4, 24], gzip: 4, shuffle: true)
            if index > 0 { try writer.write("/gradients/l0.weight", noise.normals(24 * 16, std: 0.01), shape: [24, 16]) }
            writer.close()
        }
    }

    /// Everything `measure` tells, in order: each save's outcome (as JSON) and each progress call.
    static func events(_ run: Run, overlap: Bool, threads: Int = 2, cache: SummaryCache? = nil) throws -> (events: [String], cached: Int) {
        var options = MeasureOptions()
        options.threads = threads
        var measuring = SaveMeasuring(run, load: LoadOptions(), options: options, reader: InProcessReader(), cache: cache)
        measuring.overlap = overlap
        var events: [String] = []
        var failure: Error?
        measuring.measure(0..<run.checkpoints.count, progress: { done, total in events.append("progress \(done) of \(total)") }) {
            index, outcome in
            let kind: String
            switch outcome {
            case .measured: kind = "measured"
            case .skipped: kind = "skipped"
            }
            do { events.append("\(index) \(kind) " + (try WorkerMessagesTests.json(outcome))) } catch { failure = error }
        }
        if let failure { throw failure }
        return (events, measuring.cached)
    }

    @Test("the gradient names are every save's, looked at once per shared tensor list")
    func gradientNamesOfSharedLists() throws {
        let dir = try TemporaryDirectory()
        try Self.writeRun(dir.url.path, count: 5)
        var run = try RunLoader.load(dir.url.path)
        // As decoded from the workers: saves alike share one list.
        var interner = DescriptionInterner()
        for index in run.checkpoints.indices { interner.intern(&run.checkpoints[index]) }
        #expect(DescriptionInterner.same(run.checkpoints[1].tensors, run.checkpoints[2].tensors))
        let direct = Array(Set(run.checkpoints.flatMap { $0.tensors(.gradient).map(\.name) })).sorted()
        #expect(SaveMeasuring.gradientNames(run.checkpoints) == direct && direct == ["l0.weight"])
        // A later save with a gradient of its own, in a list of its own, counts too.
        var other = run.checkpoints[4]
        other.tensors.append(
            TensorRef(name: "l9.weight", layer: "l9", role: .gradient, shape: [2], dtype: .float32, unitAxis: nil, path: "/gradients/l9.weight"))
        #expect(SaveMeasuring.gradientNames(run.checkpoints + [other, run.checkpoints[4]]) == ["l0.weight", "l9.weight"])
        #expect(SaveMeasuring.gradientNames(Array(run.checkpoints.prefix(1))).isEmpty)
    }

    @Test("several ranges give the same outcomes and progress, in the same order, overlapped or not")
    func sameAsOneAtATime() throws {
        let directory = try TemporaryDirectory()
        try Self.writeRun(directory.url.path, count: 2 * ScanEngine.rangeLength + 5)
        let run = try RunLoader.load(directory.url.path)
        #expect(run.checkpoints.count == 2 * ScanEngine.rangeLength + 5)
        let alone = try Self.events(run, overlap: false)
        let overlapped = try Self.events(run, overlap: true)
        #expect(overlapped.events == alone.events)
        let progress = overlapped.events.filter { $0.hasPrefix("progress") }
        #expect(progress == ["progress 16 of 37", "progress 32 of 37", "progress 37 of 37"])
        #expect(overlapped.events.filter { !$0.hasPrefix("progress") }.map { Int($0.prefix { $0 != " " }) } == Array(0..<37).map(Optional.some))
        // Both kinds of tensor were measured: directly and through libhdf5.
        let measuredLine = try #require(overlapped.events.first { $0.hasPrefix("20 ") })
        #expect(measuredLine.contains("weight:l0.weight") && measuredLine.contains("weight:l1.weight"))
        #expect(overlapped.events.filter { $0.contains(" measured ") }.count == 37)
        // One thread: the ranges are measured one at a time, to the same outcomes.
        #expect(try Self.events(run, overlap: true, threads: 1).events.count == alone.events.count)
    }

    @Test("a save whose file changed after it was described is skipped in its place, overlapped or not")
    func changedFile() throws {
        let directory = try TemporaryDirectory()
        try Self.writeRun(directory.url.path, count: 2 * ScanEngine.rangeLength + 3)
        let run = try RunLoader.load(directory.url.path)
        // Saves 17 (second range) and 33 (third) change on disk after the run was described.
        for index in [17, 33] {
            let handle = try #require(FileHandle(forWritingAtPath: run.checkpoints[index].file))
            handle.seekToEndOfFile()
            handle.write(Data([0, 1, 2, 3]))
            try handle.close()
        }
        let alone = try Self.events(run, overlap: false)
        let overlapped = try Self.events(run, overlap: true)
        #expect(overlapped.events == alone.events)
        let skipped = overlapped.events.filter { $0.contains(" skipped ") }.map { Int($0.prefix { $0 != " " }) }
        #expect(skipped == [17, 33])
        #expect(overlapped.events.count == 35 + 3)
    }

    @Test("saves stored in the cache by an overlapped scan are taken from it by the next, to the same outcomes")
    func cached() throws {
        let directory = try TemporaryDirectory()
        try Self.writeRun(directory.url.path, count: ScanEngine.rangeLength + 9)
        let run = try RunLoader.load(directory.url.path)
        let store = try TemporaryDirectory()
        let cache = SummaryCache(directory: store.path("cache"), minimumTensorElements: 0)
        cache.begin(directory.url.path)
        let first = try Self.events(run, overlap: true, cache: cache)
        #expect(first.cached == 0)
        cache.begin(directory.url.path)
        let second = try Self.events(run, overlap: true, cache: cache)
        #expect(second.cached == run.checkpoints.count)
        #expect(second.events == first.events)
        #expect(second.events == (try Self.events(run, overlap: false)).events)
    }
}
