import ElementTypes
import Foundation
import GradScopeDiagnosis
import GradScopeMeasurement
import GradScopeModel
import GradScopeRendering
import GradScopeSources
import GradScopeStatistics
import Testing

#if canImport(Glibc)
import Glibc
import TestSupport
#endif

@Suite("Worker processes: frames and scheduling")
struct WorkerPoolTests {
    @Test("every request is handed out once; each slot starts with a contiguous share in order")
    func indexQueueSharesAndSteals() {
        for (count, slots) in [(0, 2), (1, 2), (6, 2), (7, 3), (100, 4), (5, 8)] {
            let queue = IndexQueue(count: count, slots: slots)
            var taken: [[Int]] = Array(repeating: [], count: slots)
            // Slot 0 runs alone first: it works through its share, then steals from the others' ends.
            while let index = queue.next(slot: 0) {
                taken[0].append(index)
                if taken[0].count == count / slots { break }
            }
            var progress = true
            while progress {
                progress = false
                for slot in 0..<slots {
                    if let index = queue.next(slot: slot) {
                        taken[slot].append(index)
                        progress = true
                    }
                }
            }
            #expect(taken.flatMap { $0 }.sorted() == Array(0..<count), "count \(count), slots \(slots)")
            #expect(Array(taken[0].prefix(count / slots)) == Array(0..<(count / slots)))
        }
    }

    @Test("frames arrive whole whatever the pipe's chunking; a closed pipe ends; a silent one times out")
    func framesOverAPipe() throws {
        var fds: [Int32] = [0, 0]
        #expect(pipe(&fds) == 0)
        defer { close(fds[0]) }
        let big = Data((0..<200_000).map { UInt8(truncatingIfNeeded: $0 &* 7) })
        let frames =
            WorkerFrame.encode(kind: WorkerFrame.marker, payload: Data("reading /w".utf8))
            + WorkerFrame.encode(kind: WorkerFrame.answer, payload: big)
            + WorkerFrame.encode(kind: WorkerFrame.answer, payload: Data())
        let writer = fds[1]
        let sending = Thread {
            // In pieces of odd sizes, with pauses, as a busy worker would write.
            var offset = 0
            var size = 1
            while offset < frames.count {
                let end = min(frames.count, offset + size)
                _ = WorkerFrame.write(frames.subdata(in: offset..<end), to: writer)
                offset = end
                size = size * 3 + 1
                usleep(200)
            }
        }
        sending.start()
        var reader = FrameReader(fd: fds[0])
        guard case .frame(let kind1, let payload1) = reader.next(deadline: FrameReader.now() + 10) else {
            Issue.record("no first frame")
            return
        }
        #expect(kind1 == WorkerFrame.marker && String(decoding: payload1, as: UTF8.self) == "reading /w")
        guard case .frame(let kind2, let payload2) = reader.next(deadline: FrameReader.now() + 10) else {
            Issue.record("no second frame")
            return
        }
        #expect(kind2 == WorkerFrame.answer && payload2 == big)
        guard case .frame(_, let payload3) = reader.next(deadline: FrameReader.now() + 10) else {
            Issue.record("no third frame")
            return
        }
        #expect(payload3.isEmpty)
        // Nothing more is written: the deadline passes.
        let start = FrameReader.now()
        guard case .timedOut = reader.next(deadline: start + 0.2) else {
            Issue.record("no time-out")
            return
        }
        #expect(FrameReader.now() - start >= 0.19)
        close(writer)
        guard case .end = reader.next(deadline: FrameReader.now() + 10) else {
            Issue.record("no end")
            return
        }
    }

    @Test("a frame announcing an absurd length is refused, not allocated")
    func hostileFrameLength() throws {
        var fds: [Int32] = [0, 0]
        #expect(pipe(&fds) == 0)
        defer { close(fds[0]) }
        var bytes = Data([WorkerFrame.answer])
        withUnsafeBytes(of: UInt64.max.littleEndian) { bytes.append(contentsOf: $0) }
        _ = WorkerFrame.write(bytes, to: fds[1])
        close(fds[1])
        var reader = FrameReader(fd: fds[0])
        guard case .malformed = reader.next(deadline: FrameReader.now() + 10) else {
            Issue.record("accepted")
            return
        }
    }
}

@Suite("Binary coding between the parent and its workers")
struct BinaryCodingTests {
    /// Compares through the JSON the command line prints, which covers every field.
    static func json<T: Encodable>(_ value: T) throws -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        encoder.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
        return String(decoding: try encoder.encode(value), as: UTF8.self)
    }

    @Test("a measured step and a described checkpoint come back exactly as they went")
    func roundTripOfRealMessages() throws {
        let run = try RunLoader.load(samplePath("exploding-nan"))
        let checkpoints = try run.checkpoints.map { try Worker.reopen($0, options: LoadOptions()) }
        #expect(checkpoints.count >= 2)
        let (record, units) = RunMeasurer.measureStep(
            checkpoints[1], previous: checkpoints[0], index: 1, wantUnits: true,
            gradientNames: [], options: MeasureOptions())
        let response = WorkerResponse(checkpoints: [run.checkpoints[1]], record: record, units: units)
        let decoded = try BinaryCoding.decode(WorkerResponse.self, from: try BinaryCoding.encode(response))
        #expect(try Self.json(decoded) == (try Self.json(response)))
        #expect(decoded.units?.first?.alive == units.first?.alive)
        // Every double exactly, NaN and infinities included.
        let values: [Double] = [.nan, .infinity, -.infinity, -0.0, .leastNonzeroMagnitude, .greatestFiniteMagnitude, 0.1, -1e-300]
        let back = try BinaryCoding.decode([Double].self, from: try BinaryCoding.encode(values))
        #expect(back.map(\.bitPattern) == values.map(\.bitPattern))
        let optionals: [Int?] = [1, nil, -5, Int.max, Int.min]
        #expect(try BinaryCoding.decode([Int?].self, from: try BinaryCoding.encode(optionals)) == optionals)
        let table = ["b": [UInt8(1), 255], "a": []]
        #expect(try BinaryCoding.decode([String: [UInt8]].self, from: try BinaryCoding.encode(table)) == table)
    }

    @Test("cut, corrupted or hostile messages are errors, never crashes or huge allocations")
    func badMessages() throws {
        let good = try BinaryCoding.encode(WorkerResponse(error: "a reason"))
        for length in 0..<good.count {
            #expect(throws: (any Error).self) { try BinaryCoding.decode(WorkerResponse.self, from: good.prefix(length)) }
        }
        var random = SplitMix64(seed: 5)
        for _ in 0..<300 {
            var bytes = [UInt8](good)
            bytes[random.index(below: bytes.count)] = UInt8(truncatingIfNeeded: random.next())
            _ = try? BinaryCoding.decode(WorkerResponse.self, from: Data(bytes))
        }
        // A list that claims 2^60 elements, and nesting 100 deep.
        let huge = Data([7, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x10])
        #expect(throws: (any Error).self) { try BinaryCoding.decode([Int].self, from: huge) }
        let deep = Data(Array(repeating: UInt8(7), count: 100).flatMap { [$0, 1] } + [0])
        #expect(throws: (any Error).self) { try BinaryCoding.decode([Int].self, from: deep) }
        // A number where a string belongs.
        #expect(throws: (any Error).self) { try BinaryCoding.decode(String.self, from: try BinaryCoding.encode(3.5)) }
        #expect(throws: (any Error).self) { try BinaryCoding.decode(UInt8.self, from: try BinaryCoding.encode(300)) }
    }
}

@Suite("Worker requests, in process")
struct WorkerRequestTests {
    static func request(_ task: WorkerRequest.Task, _ path: String) -> WorkerRequest {
        WorkerRequest(
            task: task, path: path, layout: nil, followLinks: false, allowPlugins: false, current: nil, previous: nil,
            index: 0, wantUnits: false, gradientNames: [], blockElements: 1 << 20, threads: 1,
            histogramBins: 32, deadActivationFraction: 0.99)
    }

    @Test("a file rewritten between being described and being measured is refused, even while the worker holds it open")
    func fileChangedBetweenPhases() throws {
        let directory = try TemporaryDirectory()
        var run = SyntheticRun()
        run.steps = [0, 100]
        try run.write(to: directory.url.path)
        let path = directory.path("step_000100.h5")
        let described = Worker.handle(Self.request(.load, path)) { _ in }
        let summary = try #require(described.checkpoints?.first)
        // Measured as described: fine (and served from the file the worker still holds open).
        var measure = Self.request(.measure, path)
        measure.current = summary
        let first = Worker.handle(measure) { _ in }
        #expect(first.error == nil && first.record?.tensors.isEmpty == false)
        // A save in progress rewrites the file with other numbers.
        var other = SyntheticRun()
        other.steps = [100]
        other.seed = 99
        other.widths = [16, 48, 4]
        let elsewhere = try TemporaryDirectory()
        try other.write(to: elsewhere.url.path)
        try FileManager.default.removeItem(atPath: path)
        try FileManager.default.copyItem(atPath: elsewhere.path("step_000100.h5"), toPath: path)
        let second = Worker.handle(measure) { _ in }
        #expect(second.record == nil)
        #expect(second.error?.contains("changed while the run was being scanned") == true)
    }
}

extension WorkerRequestTests {
    @Test("files kept open by a worker: the last three on disk, never an archive read into memory")
    func keptOpenFiles() throws {
        let directory = try TemporaryDirectory()
        var run = SyntheticRun()
        run.steps = [0, 100, 200, 300, 400]
        try run.write(to: directory.url.path)
        let cache = OpenCheckpoints()
        let paths = run.steps.map { directory.path(String(format: "step_%06d.h5", $0)) }
        for path in paths {
            let checkpoints = try CheckpointLoader.open(path)
            cache.keep(checkpoints, file: path, size: 1, mtime: 2)
        }
        #expect(cache.take(file: paths[0], size: 1, mtime: 2) == nil)
        #expect(cache.take(file: paths[1], size: 1, mtime: 2) == nil)
        #expect(cache.take(file: paths[4], size: 1, mtime: 2)?.first?.checkpoint.source == paths[4])
        // Another size or time: not served (and dropped).
        #expect(cache.take(file: paths[3], size: 9, mtime: 2) == nil)
        #expect(cache.take(file: paths[3], size: 1, mtime: 2) == nil)
        // A `.keras` archive from the shared corpus, when it is there.
        if let keras = Self.anyKerasArchive() {
            let archive = try CheckpointLoader.open(keras)
            #expect(archive.first?.isMemoryImage == true)
            cache.keep(archive, file: keras, size: 1, mtime: 2)
            #expect(cache.take(file: keras, size: 1, mtime: 2) == nil)
        }
    }

    /// Some `.keras` archive of the shared corpus.
    static func anyKerasArchive() -> String? {
        guard let root = corpusFile("") else { return nil }
        let files = FileManager.default.enumerator(atPath: root)?.compactMap { $0 as? String } ?? []
        return files.first { $0.hasSuffix(".keras") }.map { (root as NSString).appendingPathComponent($0) }
    }
}
