import ElementTypes
import Foundation
import GradScopeMeasurement
import GradScopeModel
import GradScopeSources
import GradScopeStatistics
import HDF5
import HDF5Writer
import TestSupport
import Testing

/// Gzip-compressed chunked tensors measured run-wide in the scanning process (``SeriesMeasurer``,
/// from the chunk tables the describe phase records) give the libhdf5 path's statistics and
/// drift to the last bit.
@Suite("Compressed tensors measured across all steps at once")
struct ChunkedSeriesTests {
    /// A gradscope/1 run of `steps` saves whose tensors are all chunked and gzip-compressed:
    /// float32 (deflate, and shuffle then deflate on alternate saves), float64 with shuffle,
    /// big-endian float32, a vector, a gradient with dead rows, and a weight whose chunk shape
    /// changes at save 5 (no drift across it). Optionally a contiguous weight besides.
    static func writeRun(_ dir: TemporaryDirectory, steps: Int, contiguous: Bool = false) throws {
        var noise = SplitMix64(state: 31)
        var w = noise.normals(240 * 130, std: 0.05)
        var d = noise.normals(60 * 50, std: 1.0)
        var be = noise.normals(90 * 70, std: 0.2)
        var bias = noise.normals(130, std: 0.01)
        var regrid = noise.normals(64 * 48, std: 0.1)
        for index in 0..<steps {
            if index > 0 {
                for i in stride(from: index % 3, to: w.count, by: 3) { w[i] += noise.normal() * 1e-3 }
                for i in d.indices { d[i] += noise.normal() * 1e-6 }
                for i in stride(from: 0, to: be.count, by: 2) { be[i] *= 0.99 }
                for i in bias.indices where i % 4 == index % 4 { bias[i] = -bias[i] }
                for i in stride(from: 1, to: regrid.count, by: 5) { regrid[i] += 1e-2 }
            }
            let writer = try HDF5Writer(creating: dir.path(String(format: "step_%04d.h5", index * 10)))
            try writer.setAttribute("format", .string("gradscope/1", .variableUTF8), at: "/")
            try writer.setAttribute("step", .int(Int64(index * 10)), at: "/")
            try writer.setAttribute("loss", .double(1.0 / Double(index + 1)), at: "/")
            try writer.write("/weights/w", w, shape: [240, 130], as: .float32, chunks: [30, 40], gzip: 4, shuffle: index % 2 == 1)
            try writer.write("/weights/d", d, shape: [60, 50], as: .float64, chunks: [16, 50], gzip: 1, shuffle: true)
            try writer.write("/weights/be", be, shape: [90, 70], as: .float32BigEndian, chunks: [20, 20], gzip: 6)
            try writer.write("/weights/bias", bias, shape: [130], as: .float32, chunks: [50], gzip: 4)
            try writer.write(
                "/weights/regrid", regrid, shape: [64, 48], as: .float32, chunks: index < 5 ? [16, 16] : [64, 8], gzip: 4)
            var gradient = noise.normals(240 * 130, std: 1e-3)
            for row in 0..<240 where row % 7 == 0 { for c in 0..<130 { gradient[row * 130 + c] = 0 } }
            try writer.write("/gradients/w", gradient, shape: [240, 130], as: .float32, chunks: [30, 40], gzip: 4)
            if contiguous { try writer.write("/weights/plain", w.map { $0 * 2 }, shape: [240, 130], as: .float32) }
        }
    }

    static func options(blockElements: Int, threads: Int) -> MeasureOptions {
        var options = MeasureOptions()
        options.blockElements = blockElements
        options.threads = threads
        return options
    }

    /// The measurement of `tensor` at step `index` read through libhdf5 alone (`streamedStats` and
    /// `streamedBoth`), made into a measurement the way the scan makes one.
    static func libraryMeasurement(
        _ opened: [OpenCheckpoint], index: Int, tensor: TensorRef, gradientNames: Set<String>, options: MeasureOptions,
        wantUnits: Bool
    ) throws -> TensorMeasurement {
        let checkpoint = opened[index]
        let current = try checkpoint.data(for: tensor)
        let layout = TensorMeasurer.unitLayout(for: tensor)
        let parts = RunMeasurer.unitParts(of: tensor, gradientNames: gradientNames, perUnitEverywhere: false)
        let statsLayout = parts.stats ? layout : .none, driftLayout = parts.drift ? layout : .none
        var stats: TensorStats
        var drift: DriftStats?
        if tensor.role == .weight, index > 0, let previous = opened[index - 1].checkpoint.tensors.first(where: { $0.key == tensor.key }),
            previous.shape == tensor.shape
        {
            let before = try opened[index - 1].data(for: previous)
            let both =
                current.needsDouble || before.needsDouble
                ? try TensorMeasurer.streamedBoth(
                    before, current, as: Double.self, statsLayout: statsLayout, driftLayout: driftLayout, options: options)
                : try TensorMeasurer.streamedBoth(
                    before, current, as: Float.self, statsLayout: statsLayout, driftLayout: driftLayout, options: options)
            (stats, drift) = (both.0, both.1)
        } else {
            stats =
                current.needsDouble
                ? try TensorMeasurer.streamedStats(current, as: Double.self, layout: statsLayout, options: options)
                : try TensorMeasurer.streamedStats(current, as: Float.self, layout: statsLayout, options: options)
        }
        return RunMeasurer.measurement(
            of: tensor, stats: stats, drift: drift, wantUnits: wantUnits, gradientNames: gradientNames, options: options
        ).0
    }

    @Test("the describe phase records chunk tables; every compressed tensor is read run-wide except across a chunk shape change")
    func describedAndEligible() throws {
        let dir = try TemporaryDirectory()
        try Self.writeRun(dir, steps: 7, contiguous: true)
        let run = try RunLoader.load(dir.url.path)
        let steps = run.checkpoints.map(SeriesMeasurer.Step.init)
        let selected = SeriesMeasurer.eligible(steps)
        for (index, checkpoint) in run.checkpoints.enumerated() {
            for (t, tensor) in checkpoint.tensors.enumerated() {
                let storage = try #require(checkpoint.storage[t], "\(tensor.path) at \(index)")
                #expect((storage.chunks == nil) == (tensor.path == "/weights/plain"), "\(tensor.path)")
                if let table = storage.chunks {
                    #expect(table.count == table.addresses.count && table.sizes.count == table.count && table.count > 0)
                    #expect(table.shape == tensor.shape)
                }
                // The weight whose chunks changed shape has no drift partner stored alike at save 5: left to libhdf5 there.
                let expected = !(tensor.path == "/weights/regrid" && index == 5)
                #expect(selected[index].contains(t) == expected, "\(tensor.path) at \(index)")
            }
        }
        let byPath = Dictionary(uniqueKeysWithValues: run.checkpoints[1].tensors.indices.map { (run.checkpoints[1].tensors[$0].path, $0) })
        let shuffled = try #require(run.checkpoints[1].storage[byPath["/weights/w"]!]?.chunks)
        let plain = try #require(run.checkpoints[2].storage[byPath["/weights/w"]!]?.chunks)
        #expect(shuffled.shuffled && !plain.shuffled && shuffled.sameGrid(as: plain))
        #expect(try #require(run.checkpoints[1].storage[byPath["/weights/be"]!]?.chunks).swapsBytes)
        // The tables travel to the parent over the worker protocol unchanged.
        let back = try WorkerCoding.decode(Checkpoint.self, from: WorkerCoding.encode(run.checkpoints[1]))
        #expect(back.storage == run.checkpoints[1].storage)
    }

    @Test(
        "statistics and drift equal libhdf5's exactly: 18 saves (two windows), gzip and shuffle, float64, big-endian, any block size and thread count"
    )
    func identicalToLibrary() throws {
        let dir = try TemporaryDirectory()
        try Self.writeRun(dir, steps: 18)
        let run = try RunLoader.load(dir.url.path)
        let opened = try run.checkpoints.map { try Worker.reopen($0, options: LoadOptions()) }
        let steps = run.checkpoints.map(SeriesMeasurer.Step.init)
        let gradientNames = Set(run.checkpoints.flatMap { $0.tensors(.gradient).map(\.name) })
        var compared: [Int] = [], withDrift = 0
        for (blockElements, threads) in [(1 << 20, 2), (3000, 1), (3000, 2), (700, 3)] {
            compared.append(0)
            let options = Self.options(blockElements: blockElements, threads: threads)
            let selected = SeriesMeasurer.eligible(steps, blockElements: blockElements)
            let result = SeriesMeasurer.measure(
                steps, selected: selected, options: options, gradientNames: gradientNames, perUnitEverywhere: false, unitWindowStart: 12)
            #expect(result.stepErrors.isEmpty)
            for (index, checkpoint) in run.checkpoints.enumerated() {
                for t in selected[index].sorted() {
                    let tensor = checkpoint.tensors[t]
                    let outcome = try #require(result.outcomes[index][t], "\(tensor.path) at \(index)")
                    #expect(outcome.error == nil, "\(tensor.path) at \(index): \(outcome.error ?? "")")
                    let measured = try #require(outcome.measurement)
                    let library = try Self.libraryMeasurement(
                        opened, index: index, tensor: tensor, gradientNames: gradientNames, options: options, wantUnits: index >= 12)
                    #expect(measured.stats == library.stats, "\(tensor.path) at \(index), \(blockElements) \(threads)")
                    #expect(measured.drift == library.drift, "\(tensor.path) at \(index), \(blockElements) \(threads)")
                    #expect(measured.zeroUnits == library.zeroUnits && measured.unitCount == library.unitCount)
                    compared[compared.count - 1] += 1
                    if measured.drift != nil { withDrift += 1 }
                }
            }
        }
        // Every tensor of every save but the one after the chunk shape change; with blocks of 700
        // elements, rows of chunks larger than four blocks are left to libhdf5 (two tensors, and
        // the changed one after its change).
        #expect(compared == [107, 107, 107, 107 - 2 * 18 - 12])
        #expect(withDrift > 3 * 17 * 4)
        // One tensor alone, its windows the range's whole bytes: its chunks are inflated on every
        // thread (two blocks per save held), or in turn above the memory budget. The same numbers.
        for (blockElements, threads) in [(3000, 2), (700, 3), (1 << 20, 2)] {
            let options = Self.options(blockElements: blockElements, threads: threads)
            let selected = SeriesMeasurer.eligible(steps, blockElements: blockElements).enumerated().map { index, chosen in
                chosen.filter { run.checkpoints[index].tensors[$0].path == "/weights/be" }
            }
            let result = SeriesMeasurer.measure(
                steps, selected: selected, options: options, gradientNames: gradientNames, perUnitEverywhere: false, unitWindowStart: 12)
            for (index, checkpoint) in run.checkpoints.enumerated() {
                let t = try #require(selected[index].first)
                let measured = try #require(result.outcomes[index][t]?.measurement)
                let library = try Self.libraryMeasurement(
                    opened, index: index, tensor: checkpoint.tensors[t], gradientNames: gradientNames, options: options,
                    wantUnits: index >= 12)
                #expect(measured.stats == library.stats && measured.drift == library.drift, "/weights/be at \(index), \(threads)")
                #expect((measured.drift != nil) == (index > 0))
            }
        }
        // And through the whole scan (the rest in the step-by-step path): the same records.
        let options = Self.options(blockElements: 1 << 20, threads: 2)
        let measured = RunMeasurer.measure(run, options: options, full: true)
        #expect(measured.records.count == 18 && measured.records.allSatisfy { $0.failures.isEmpty })
        for (index, record) in measured.records.enumerated() {
            for tensor in run.checkpoints[index].tensors {
                let library = try Self.libraryMeasurement(
                    opened, index: index, tensor: tensor, gradientNames: gradientNames, options: options,
                    wantUnits: index >= RunMeasurer.windowStart(count: 18))
                let a = try #require(record.tensors[tensor.key])
                #expect(a.stats == library.stats && a.drift == library.drift, "\(tensor.path) at \(index)")
            }
        }
    }

    @Test("a corrupt chunk fails that tensor at that save with an error naming the file, the tensor and the chunk; the scan goes on")
    func corruptChunk() throws {
        let dir = try TemporaryDirectory()
        try Self.writeRun(dir, steps: 4)
        let victim = dir.path("step_0010.h5")
        let chunk = try #require(try HDF5File.open(victim).dataset("/weights/w").chunk(at: [60, 40]))
        var bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: victim)))
        for offset in stride(from: chunk.address + 4, to: chunk.address + chunk.size - 4, by: 5) { bytes[offset] = ~bytes[offset] }
        try Data(bytes).write(to: URL(fileURLWithPath: victim))
        let run = try RunLoader.load(dir.url.path)
        let steps = run.checkpoints.map(SeriesMeasurer.Step.init)
        let selected = SeriesMeasurer.eligible(steps)
        for threads in [1, 2] {
            let result = SeriesMeasurer.measure(
                steps, selected: selected, options: Self.options(blockElements: 1 << 20, threads: threads), gradientNames: [],
                perUnitEverywhere: false, unitWindowStart: 0)
            #expect(result.stepErrors.isEmpty)
            for (index, step) in steps.enumerated() {
                for (t, tensor) in step.tensors.enumerated() {
                    let outcome = try #require(result.outcomes[index][t])
                    if index == 1 && tensor.path == "/weights/w" {
                        #expect(outcome.measurement == nil)
                        let error = try #require(outcome.error)
                        #expect(error.contains("/weights/w") && error.contains("the chunk at [60, 40] is corrupt"), "\(error)")
                    } else {
                        #expect(outcome.error == nil && outcome.measurement != nil, "\(tensor.path) at \(index)")
                        // No drift from the save that could not be read; the others keep theirs.
                        if tensor.role == .weight && index > 0 {
                            #expect((outcome.measurement?.drift == nil) == (index == 2 && tensor.path == "/weights/w"), "\(tensor.path) at \(index)")
                        }
                    }
                }
            }
        }
        // The scan reports the failure against the file and tensor and measures everything else.
        let measured = RunMeasurer.measure(run)
        #expect(measured.records.count == 4)
        let failures = measured.records.flatMap(\.failures)
        #expect(failures.count == 1)
        #expect(failures.first?.item == victim + ":/weights/w")
        #expect(failures.first?.reason.contains("corrupt") == true)
        #expect(measured.records[1].tensors.count == 5 && measured.records[2].tensors.count == 6)
    }

    @Test("a chunk table that does not fit the file, or a file changed since it was described, is reported, not misread")
    func tableAndFileChecks() throws {
        let dir = try TemporaryDirectory()
        try Self.writeRun(dir, steps: 3)
        let run = try RunLoader.load(dir.url.path)
        var steps = run.checkpoints.map(SeriesMeasurer.Step.init)
        // A chunk said to lie past the end of the file (a cut file described as whole).
        let t = try #require(steps[1].tensors.firstIndex { $0.path == "/weights/bias" })
        let table = try #require(steps[1].storage[t]?.chunks)
        var addresses = table.addresses
        addresses[addresses.count - 1] = steps[1].size - 2
        steps[1].storage[t]?.chunks = DeflatedChunkTable(
            shape: table.shape, chunkShape: table.chunkShape, shuffled: table.shuffled, swapsBytes: table.swapsBytes,
            addresses: addresses, sizes: table.sizes)
        let result = SeriesMeasurer.measure(
            steps, selected: SeriesMeasurer.eligible(steps), options: Self.options(blockElements: 1 << 20, threads: 2),
            gradientNames: [], perUnitEverywhere: false, unitWindowStart: 0)
        let failed = try #require(result.outcomes[1][t])
        #expect(failed.measurement == nil && failed.error?.contains("implausible address or size") == true, "\(failed.error ?? "")")
        let next = try #require(result.outcomes[2][t])
        #expect(next.measurement != nil && next.measurement?.drift == nil)
        #expect(result.outcomes[0][t]?.measurement != nil)
        // A save cut short after it was described: its step is refused as changed, the others are measured.
        let victim = run.checkpoints[2].file
        let bytes = try Data(contentsOf: URL(fileURLWithPath: victim))
        try bytes.prefix(bytes.count - 100).write(to: URL(fileURLWithPath: victim))
        let fresh = run.checkpoints.map(SeriesMeasurer.Step.init)
        let cut = SeriesMeasurer.measure(
            fresh, selected: SeriesMeasurer.eligible(fresh), options: Self.options(blockElements: 1 << 20, threads: 2),
            gradientNames: [], perUnitEverywhere: false, unitWindowStart: 0)
        #expect(cut.stepErrors[2] == StoredFile.changedReason)
        #expect(cut.outcomes[1].compactMap { $0?.measurement }.count == 6)
        let measured = RunMeasurer.measure(run)
        #expect(measured.records.count == 2)
    }
}
