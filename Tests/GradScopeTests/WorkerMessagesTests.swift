import ElementTypes
import Foundation
import GradScopeMeasurement
import GradScopeModel
import GradScopeSources
import Testing

#if canImport(Glibc)
import TestSupport
#endif

@Suite("Worker messages written field by field")
struct WorkerMessagesTests {
    /// Every field, through the JSON of the values' own `Codable` form.
    static func json<T: Encodable>(_ value: T) throws -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        encoder.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
        return String(decoding: try encoder.encode(value), as: UTF8.self)
    }

    /// Checkpoints of every kind the samples and a compressed run give: contiguous and chunked storage,
    /// shuffled and byte-swapped chunks, Keras and PyTorch names, optimizer slots, skipped items.
    static func describedCheckpoints() throws -> [Checkpoint] {
        var checkpoints: [Checkpoint] = []
        for sample in ["healthy", "keras-weights-h5", "keras-legacy-h5", "trainer-high-lr", "dead-relu"] {
            checkpoints += try RunLoader.load(samplePath(sample)).checkpoints
        }
        let dir = try TemporaryDirectory()
        try ChunkedSeriesTests.writeRun(dir, steps: 3)
        checkpoints += try RunLoader.load(dir.url.path).checkpoints
        return checkpoints
    }

    @Test("described checkpoints come back exactly as they went, storage and chunk tables included")
    func describedRoundTrip() throws {
        let checkpoints = try Self.describedCheckpoints()
        #expect(checkpoints.contains { $0.storage.contains { $0?.chunks?.shuffled == true } })
        #expect(checkpoints.contains { $0.storage.contains { $0?.chunks?.swapsBytes == true } })
        #expect(checkpoints.contains { $0.tensors.contains { $0.role == .optimizer } })
        var odd = checkpoints[0]
        // Fields the samples leave empty: a multi-step file's step, NaN and infinite numbers, every optional.
        odd.file = odd.source + ".h5"
        odd.source += ":/step_7"
        odd.metadata = StepMetadata(
            step: -3, stepSource: .groupName, loss: .nan, learningRate: -.infinity, framework: "ƒramework", optimizer: "Adam", epoch: 2)
        odd.metadata.nameKey = [Int.min, 0, Int.max]
        odd.skipped = [SkippedItem(item: "f:/x", kind: .metadata, reason: "a scalar"), SkippedItem(item: "g", reason: "")]
        odd.notes = ["", "é"]
        odd.modified = Date(timeIntervalSinceReferenceDate: -1.5)
        odd.stamp = FileStamp(size: Int.max, mtime: 1.25e9)
        odd.tensors[0].gates = 4
        odd.tensors[0].trainable = false
        odd.tensors[0].slot = .maxSecondMoment
        odd.tensors[0].slotName = "vhat"
        for checkpoint in checkpoints + [odd] {
            let data = try WorkerCoding.encode(WorkerResponse(checkpoints: [checkpoint, checkpoint]))
            let back = try #require(try WorkerCoding.decode(WorkerResponse.self, from: data).checkpoints)
            #expect(back.count == 2)
            #expect(try Self.json(back[1]) == (try Self.json(checkpoint)), "\(checkpoint.source)")
            #expect(back[0].storage == checkpoint.storage)
            #expect(back[0].tensors == checkpoint.tensors)
            #expect(back[0].metadata.loss?.bitPattern == checkpoint.metadata.loss?.bitPattern)
            #expect(back[0].file == checkpoint.file && back[0].modified == checkpoint.modified)
        }
    }

    @Test("saves that repeat a tensor list share one decoded copy of it; a list that differs is decoded on its own")
    func repeatedListsDecodedOnce() throws {
        let run = try RunLoader.load(samplePath("healthy"))
        // Two saves alike (the first save of this run holds no gradients yet).
        let pair = try #require(run.checkpoints.indices.dropFirst().first { run.checkpoints[$0 - 1].tensors == run.checkpoints[$0].tensors })
        let first = run.checkpoints[pair - 1]
        var second = run.checkpoints[pair]
        // Two messages, as two workers would send them: equal lists come back as one storage.
        let a = try #require(
            try WorkerCoding.decode(WorkerResponse.self, from: try WorkerCoding.encode(WorkerResponse(checkpoints: [first]))).checkpoints)
        let b = try #require(
            try WorkerCoding.decode(WorkerResponse.self, from: try WorkerCoding.encode(WorkerResponse(checkpoints: [second]))).checkpoints)
        #expect(DescriptionInterner.same(a[0].tensors, b[0].tensors))
        #expect(a[0].tensors == first.tensors && b[0].layers == second.layers)
        #expect(b[0].metadata.step == second.metadata.step && b[0].source == second.source)
        // One name differs: its own list, read as it was written.
        second.tensors[1].name += "x"
        let c = try #require(
            try WorkerCoding.decode(WorkerResponse.self, from: try WorkerCoding.encode(WorkerResponse(checkpoints: [second]))).checkpoints)
        #expect(!DescriptionInterner.same(c[0].tensors, a[0].tensors))
        #expect(c[0].tensors == second.tensors && c[0].tensors != first.tensors)
        // Storage that differs only in one offset is not taken for the earlier one.
        var moved = first
        let index = try #require(moved.storage.firstIndex { $0 != nil })
        moved.storage[index]?.offset += 8
        let d = try #require(
            try WorkerCoding.decode(WorkerResponse.self, from: try WorkerCoding.encode(WorkerResponse(checkpoints: [first, moved]))).checkpoints)
        #expect(d[0].storage == first.storage && d[1].storage == moved.storage && d[0].storage != d[1].storage)
    }

    @Test("a measure request and a measured step's answer come back as they went")
    func requestAndMeasuredRoundTrip() throws {
        let run = try RunLoader.load(samplePath("exploding-nan"))
        let open = try run.checkpoints.map { try Worker.reopen($0, options: LoadOptions()) }
        let (record, units) = RunMeasurer.measureStep(
            open[1], previous: open[0], index: 1, wantUnits: true, gradientNames: [], options: MeasureOptions())
        let response = WorkerResponse(record: record, units: units, error: "partly")
        let back = try WorkerCoding.decode(WorkerResponse.self, from: try WorkerCoding.encode(response))
        #expect(try Self.json(back) == (try Self.json(response)))
        #expect(back.checkpoints == nil)

        var request = WorkerRequest(
            task: .measure, path: run.checkpoints[1].file, layout: .native, followLinks: true, allowPlugins: false,
            current: run.checkpoints[1], previous: run.checkpoints[0], index: 1, wantUnits: true, gradientNames: ["b", "a"],
            only: [.weight("w"), .optimizer("exp_avg", "w")], blockElements: 1 << 20, threads: 3, histogramBins: 64,
            deadActivationFraction: 0.99)
        request.perUnitEverywhere = true
        let decoded = try WorkerCoding.decode(WorkerRequest.self, from: try WorkerCoding.encode(request))
        #expect(try Self.json(decoded) == (try Self.json(request)))
        let load = WorkerRequest(
            task: .load, path: "/x", followLinks: false, allowPlugins: true, index: 0, wantUnits: false, gradientNames: [],
            blockElements: 1, threads: 1, histogramBins: 32, deadActivationFraction: 0.5)
        #expect(try Self.json(try WorkerCoding.decode(WorkerRequest.self, from: try WorkerCoding.encode(load))) == (try Self.json(load)))
    }

    @Test("a cut, corrupt, foreign or newer message is an error, never a crash or a huge allocation")
    func badMessages() throws {
        let checkpoints = Array(try RunLoader.load(samplePath("healthy")).checkpoints.prefix(2))
        let good = try WorkerCoding.encode(WorkerResponse(checkpoints: checkpoints, error: "x"))
        // Every cut: whatever the bytes say, the message ends too soon.
        for length in 0..<good.count {
            #expect(throws: (any Error).self) { try WorkerCoding.decode(WorkerResponse.self, from: good.prefix(length)) }
        }
        #expect(throws: (any Error).self) { try WorkerCoding.decode(WorkerResponse.self, from: good + Data([0])) }
        var newer = good
        newer[1] = WorkerMessages.version + 1
        do {
            _ = try WorkerCoding.decode(WorkerResponse.self, from: newer)
            Issue.record("a message of another version was read")
        } catch {
            #expect("\(error)".contains("version"))
        }
        // A request is not an answer, and an answer in the generic binary coding is not one either.
        let request = try WorkerCoding.encode(WorkerRequestTests.request(.load, "/x"))
        #expect(throws: (any Error).self) { try WorkerCoding.decode(WorkerResponse.self, from: request) }
        #expect(throws: (any Error).self) { try WorkerCoding.decode(WorkerRequest.self, from: good) }
        #expect(throws: (any Error).self) {
            try WorkerCoding.decode(WorkerResponse.self, from: try BinaryCoding.encode(WorkerResponse(error: "x")))
        }
        // A list of checkpoints that claims 2^62 entries.
        let huge = Data([WorkerMessages.magic, WorkerMessages.version, 0x41, 1, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x40])
        #expect(throws: (any Error).self) { try WorkerCoding.decode(WorkerResponse.self, from: huge) }
        // Random damage: an error or a message that decodes; never a trap.
        var random = SplitMix64(seed: 11)
        var rejected = 0
        for _ in 0..<2000 {
            var bytes = [UInt8](good)
            for _ in 0..<(1 + random.index(below: 3)) {
                bytes[random.index(below: bytes.count)] = UInt8(truncatingIfNeeded: random.next())
            }
            if (try? WorkerCoding.decode(WorkerResponse.self, from: Data(bytes))) == nil { rejected += 1 }
        }
        #expect(rejected > 0)
    }

    @Test("a worker's answer that cannot be decoded fails its request with the reason")
    func undecodableAnswer() throws {
        let good = try WorkerCoding.encode(WorkerResponse(checkpoints: try RunLoader.load(samplePath("healthy")).checkpoints))
        guard case .failed(let reason) = WorkerPool.decode(good.prefix(good.count - 3)) else {
            Issue.record("a cut answer was accepted")
            return
        }
        #expect(reason.contains("could not be decoded") && reason.contains("malformed worker message"))
        guard case .response(let response) = WorkerPool.decode(good) else {
            Issue.record("a whole answer was refused")
            return
        }
        #expect(response.checkpoints?.count == 13)
    }
}
