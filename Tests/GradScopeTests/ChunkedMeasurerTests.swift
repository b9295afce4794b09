import Foundation
import GradScopeMeasurement
import GradScopeModel
import GradScopeSources
import GradScopeStatistics
import HDF5
import HDF5Writer
import TestSupport
import Testing

/// Statistics of one dataset both ways: read and inflated here (`ChunkedMeasurer`) and through
/// libhdf5 (`TensorMeasurer.streamedStats`); nil when the direct path does not apply.
func bothWays(_ dataset: Dataset, layout: UnitLayout, options: MeasureOptions) throws -> (direct: TensorStats, library: TensorStats)? {
    guard let chunks = dataset.deflatedChunks(),
        let direct = try ChunkedMeasurer.stats(of: dataset, chunks: chunks, layout: layout, options: options)
    else { return nil }
    let library =
        dataset.needsDouble
        ? try TensorMeasurer.streamedStats(dataset, as: Double.self, layout: layout, options: options)
        : try TensorMeasurer.streamedStats(dataset, as: Float.self, layout: layout, options: options)
    return (direct, library)
}

/// The files under `root` (a directory), recursively; none when it is absent.
func filesUnder(_ root: String) -> [String] {
    guard let enumerator = FileManager.default.enumerator(atPath: root) else { return [] }
    return enumerator.compactMap { $0 as? String }.sorted().map { root + "/" + $0 }.filter { path in
        var isDirectory: ObjCBool = false
        return FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) && !isDirectory.boolValue
    }
}

@Suite("Chunked gzip tensors read without libhdf5 give libhdf5's statistics exactly")
struct ChunkedMeasurerTests {
    static func options(blockElements: Int, threads: Int) -> MeasureOptions {
        var options = MeasureOptions()
        options.blockElements = blockElements
        options.threads = threads
        return options
    }

    @Test("every shape, type, filter pipeline, block size, thread count and unit layout: identical statistics")
    func identicalStatistics() throws {
        let dir = try TemporaryDirectory()
        let path = dir.path("chunked.h5")
        var rng = SplitMix64(state: 21)
        func values(_ count: Int) -> [Double] {
            (0..<count).map { index in
                switch index % 97 {
                case 0: return 0
                case 1: return -0.0
                case 2: return 1e-40
                default: return rng.normal() * 0.05 + (index % 5 == 0 ? 3 : 0)
                }
            }
        }
        let shapes: [([Int], [Int])] = [
            ([300, 200], [64, 48]), ([37, 53, 3], [8, 10, 2]), ([5000], [700]), ([16, 8, 3, 3], [4, 8, 3, 3]),
            ([1, 1000], [1, 128]), ([129, 7], [129, 7]), ([40, 30], [1, 30]),
        ]
        let types: [(String, HDF5Writer.StoredType)] = [("f32", .float32), ("f64", .float64), ("be", .float32BigEndian)]
        do {
            let writer = try HDF5Writer(creating: path)
            for (index, (shape, chunks)) in shapes.enumerated() {
                let data = values(shape.reduce(1, *))
                for (name, type) in types {
                    try writer.write("s\(index)-\(name)", data, shape: shape, as: type, chunks: chunks, gzip: 4)
                    try writer.write("s\(index)-\(name)-shuffle", data, shape: shape, as: type, chunks: chunks, gzip: 1, shuffle: true)
                }
            }
            // Non-finite values, which the statistics count apart.
            var special = values(2000)
            special[3] = .nan
            special[700] = .infinity
            special[1999] = -.infinity
            try writer.write("special", special, shape: [40, 50], as: .float32, chunks: [7, 9], gzip: 4)
        }
        let file = try HDF5File.open(path)
        var compared = 0, leftToLibrary = 0
        let names = shapes.indices.flatMap { index in types.flatMap { ["s\(index)-\($0.0)", "s\(index)-\($0.0)-shuffle"] } } + ["special"]
        for name in names {
            let dataset = try file.dataset("/" + name)
            #expect(dataset.deflatedChunks() != nil, "\(name): \(dataset.deflatedChunksRefusal ?? "")")
            let layouts = [UnitLayout.none, .forShape(dataset.shape, unitAxis: 0), .forShape(dataset.shape, unitAxis: dataset.shape.count - 1)]
            for layout in layouts {
                for blockElements in [1 << 20, 3000, 500] {
                    for threads in [1, 2, 3] {
                        let options = Self.options(blockElements: blockElements, threads: threads)
                        guard let (direct, library) = try bothWays(dataset, layout: layout, options: options) else {
                            leftToLibrary += 1
                            continue
                        }
                        #expect(direct == library, "\(name) \(layout) \(blockElements) \(threads)")
                        compared += 1
                    }
                }
            }
        }
        // Most are read directly; small blocks across wide chunk rows are left to libhdf5.
        #expect(compared > 300)
        #expect(leftToLibrary > 0)
        let special = try #require(try bothWays(file.dataset("/special"), layout: .none, options: Self.options(blockElements: 1 << 20, threads: 2)))
        #expect(special.direct.nan == 1 && special.direct.posInf == 1 && special.direct.negInf == 1)
    }

    @Test("through TensorMeasurer: statistics and drift of two gzip saves equal the libhdf5 path's; other chunk shapes fall back")
    func driftAndDispatch() throws {
        let dir = try TemporaryDirectory()
        var rng = SplitMix64(state: 22)
        let a = rng.normals(240 * 130, std: 0.05)
        let b = a.enumerated().map { $0.offset % 11 == 0 ? -$0.element : $0.element + rng.normal() * 1e-3 }
        func save(
            _ name: String, _ step: Int, _ values: [Double], chunks: [Int], shuffle: Bool = false, type: HDF5Writer.StoredType = .float32
        )
            throws
        {
            let writer = try HDF5Writer(creating: dir.path(name))
            try writer.setAttribute("format", .string("gradscope/1", .variableUTF8), at: "/")
            try writer.setAttribute("step", .int(Int64(step)), at: "/")
            try writer.write("/weights/w", values, shape: [240, 130], as: type, chunks: chunks, gzip: 4, shuffle: shuffle)
        }
        try save("a.h5", 1, a, chunks: [30, 40])
        try save("b.h5", 2, b, chunks: [30, 40], shuffle: true)
        try save("c.h5", 2, b, chunks: [16, 130])
        try save("d.h5", 2, b, chunks: [30, 40], type: .float64)
        func open(_ name: String) throws -> (OpenCheckpoint, TensorRef) {
            let checkpoint = try #require(try CheckpointLoader.open(dir.path(name)).first)
            return (checkpoint, try #require(checkpoint.checkpoint.weight(named: "w")))
        }
        let (first, earlier) = try open("a.h5")
        for name in ["b.h5", "c.h5", "d.h5"] {
            let (second, tensor) = try open(name)
            for threads in [1, 2] {
                let options = Self.options(blockElements: 10_000, threads: threads)
                let (stats, drift) = try TensorMeasurer.statsAndDrift(of: tensor, in: second, previous: earlier, in: first, options: options)
                let layout = TensorMeasurer.unitLayout(for: tensor)
                let current = try second.data(for: tensor), before = try first.data(for: earlier)
                let (libraryStats, libraryDrift): (TensorStats, DriftStats)
                if current.needsDouble || before.needsDouble {
                    (libraryStats, libraryDrift) = try TensorMeasurer.streamedBoth(
                        before, current, as: Double.self, statsLayout: layout, driftLayout: layout, options: options)
                } else {
                    (libraryStats, libraryDrift) = try TensorMeasurer.streamedBoth(
                        before, current, as: Float.self, statsLayout: layout, driftLayout: layout, options: options)
                }
                #expect(stats == libraryStats, "\(name)")
                #expect(drift == libraryDrift, "\(name)")
                #expect(drift.changed > 0 && drift.signFlips > 0)
                // b.h5 shares a's chunk grid, so both are read directly; c.h5 and d.h5 (another grid, another type) are not.
                let direct = try ChunkedMeasurer.statsAndDrift(
                    earlier: #require(before.deflatedChunks()), current: #require(current.deflatedChunks()), of: current,
                    statsLayout: layout, driftLayout: layout, options: options)
                #expect((direct != nil) == (name == "b.h5"), "\(name)")
                #expect(try TensorMeasurer.stats(of: tensor, in: second, options: options) == libraryStats, "\(name)")
            }
        }
    }

    @Test("a corrupt chunk fails the tensor with an error naming it and the chunk; a truncated file falls back to libhdf5's error")
    func corruptChunk() throws {
        let dir = try TemporaryDirectory()
        var rng = SplitMix64(state: 23)
        let path = dir.path("good.h5")
        do {
            let writer = try HDF5Writer(creating: path)
            try writer.setAttribute("format", .string("gradscope/1", .variableUTF8), at: "/")
            try writer.setAttribute("step", .int(1), at: "/")
            try writer.write("/weights/w", rng.normals(100 * 80, std: 1), shape: [100, 80], as: .float32, chunks: [25, 40], gzip: 4)
        }
        let chunk = try #require(try HDF5File.open(path).dataset("/weights/w").chunk(at: [50, 40]))
        var bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: path)))
        for offset in stride(from: chunk.address + 4, to: chunk.address + chunk.size - 4, by: 5) { bytes[offset] = ~bytes[offset] }
        let corrupt = dir.path("corrupt.h5")
        try Data(bytes).write(to: URL(fileURLWithPath: corrupt))
        let checkpoint = try #require(try CheckpointLoader.open(corrupt).first)
        let tensor = try #require(checkpoint.checkpoint.weight(named: "w"))
        #expect(try checkpoint.data(for: tensor).deflatedChunks() != nil)
        for threads in [1, 2] {
            do {
                _ = try TensorMeasurer.stats(of: tensor, in: checkpoint, options: Self.options(blockElements: 1 << 20, threads: threads))
                Issue.record("a corrupt chunk was measured")
            } catch let error as HDF5Error {
                #expect(error.object == "/weights/w")
                #expect(error.reason == .corrupt)
                #expect(error.description.contains("the chunk at [50, 40] is corrupt"), "\(error)")
            }
        }
        // A stored size past the end of the file: the direct path stands aside and libhdf5 reports it.
        let cut = dir.path("cut.h5")
        try Data(bytes.prefix(chunk.address + chunk.size / 2)).write(to: URL(fileURLWithPath: cut))
        if let opened = try? CheckpointLoader.open(cut).first, let cutTensor = opened.checkpoint.weight(named: "w") {
            #expect(try opened.data(for: cutTensor).deflatedChunks() == nil)
            #expect(throws: (any Error).self) { try TensorMeasurer.stats(of: cutTensor, in: opened) }
        }
    }

    @Test("every float chunked dataset of the sample runs and the shared corpus: identical statistics both ways")
    func samplesAndCorpus() throws {
        var roots = [packageRoot.appendingPathComponent("SampleCheckpoints").path]
        let corpus = packageRoot.deletingLastPathComponent().appendingPathComponent("shared/corpus").path
        if FileManager.default.fileExists(atPath: corpus) { roots.append(corpus) }
        var compared = 0
        for root in roots {
            for path in filesUnder(root) {
                guard let file = try? HDF5File.open(path), let entries = try? file.walk() else { continue }
                for entry in entries where entry.kind == .dataset {
                    guard let dataset = try? file.dataset(entry.path), dataset.info.layout == .chunked, dataset.info.elementCount > 0,
                        (try? dataset.checkReadable()) != nil, dataset.deflatedChunks() != nil
                    else { continue }
                    for layout in [UnitLayout.none, .forShape(dataset.shape, unitAxis: 0)] {
                        for threads in [1, 2] {
                            let options = Self.options(blockElements: 1 << 20, threads: threads)
                            guard let (direct, library) = try bothWays(dataset, layout: layout, options: options) else { continue }
                            #expect(direct == library, "\(path) \(entry.path)")
                            compared += 1
                        }
                    }
                }
            }
        }
        // The sample runs alone hold hundreds of gzip-compressed float32 tensors.
        #expect(compared > 100)
    }
}
