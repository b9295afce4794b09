import ElementTypes
import Foundation
import GradScopeMeasurement
import GradScopeModel
import GradScopeSources
import HDF5
import HDF5Writer
import Testing

#if canImport(Glibc)
import TestSupport
#endif

/// Describing a run's files: on several threads without isolation, with the answers that depend only
/// on a file's structure remembered from the save before, each the answer worked out afresh.
@Suite("Describing a run's files")
struct DescribeTests {
    /// A run of h5py-style saves (`/model/<name>`, `/grads/<name>`), a file that is not HDF5 and a
    /// truncated one among them; `blocks` changes the structure from save `changeAt` on.
    static func writeRun(_ dir: TemporaryDirectory, saves: Int, changeAt: Int? = nil) throws -> [String] {
        var noise = SplitMix64(state: 5)
        var files: [String] = []
        for index in 0..<saves {
            let path = dir.path(String(format: "step_%04d.h5", index))
            files.append(path)
            if index == 3 {
                try Data("not an HDF5 file at all".utf8).write(to: URL(fileURLWithPath: path))
                continue
            }
            let w = try HDF5Writer(creating: path)
            try w.setAttribute("step", .int(Int64(index * 10)), at: "/")
            try w.setAttribute("loss", .double(1.0 / Double(index + 1)), at: "/")
            let blocks = changeAt.map { index >= $0 ? 3 : 2 } ?? 2
            for block in 0..<blocks {
                for (name, shape) in [("attn.weight", [8, 4]), ("attn.bias", [8]), ("mlp.weight", [4, 8])] {
                    let count = shape.reduce(1, *)
                    try w.write("/model/blocks.\(block).\(name)", noise.normals(count, std: 0.1), shape: shape)
                    try w.write("/grads/blocks.\(block).\(name)", noise.normals(count, std: 0.01), shape: shape)
                }
            }
            try w.write("/model/head.weight", noise.normals(12, std: 0.1), shape: [3, 4])
        }
        // A save cut off in the middle.
        let whole = try Data(contentsOf: URL(fileURLWithPath: files[1]))
        let cut = dir.path(String(format: "step_%04d.h5", saves))
        try whole.prefix(whole.count / 3).write(to: URL(fileURLWithPath: cut))
        files.append(cut)
        return files
    }

    static func outcomes(_ reader: InProcessReader, _ files: [String]) throws -> (done: [Int], answers: [Data]) {
        let requests = files.map {
            WorkerRequest(
                task: .load, path: $0, followLinks: false, allowPlugins: false, index: 0, wantUnits: false, gradientNames: [],
                blockElements: 1 << 16, threads: 1, histogramBins: 64, deadActivationFraction: 0.99)
        }
        var done: [Int] = []
        let outcomes = reader.run(requests) { done.append($0) }
        let answers = try outcomes.map { outcome -> Data in
            switch outcome {
            case .response(let response): return try WorkerCoding.encode(response)
            case .failed(let reason): return Data(("failed: " + reason).utf8)
            }
        }
        return (done, answers)
    }

    @Test("files described on two threads give each file's answer, errors included, reported in the files' order")
    func twoThreads() throws {
        let dir = try TemporaryDirectory()
        let files = try Self.writeRun(dir, saves: 12, changeAt: 7)
        let one = try Self.outcomes(InProcessReader(threads: 1), files)
        for _ in 0..<3 {
            let two = try Self.outcomes(InProcessReader(threads: 2), files)
            #expect(two.done == Array(files.indices))
            #expect(two.answers == one.answers)
        }
        #expect(one.done == Array(files.indices))
        // The bad files are answered with their reasons, the others with their checkpoints.
        let responses = try one.answers.map { try WorkerCoding.decode(WorkerResponse.self, from: $0) }
        #expect(responses[3].checkpoints == nil)
        #expect(responses[3].error?.contains("not an HDF5 file") == true)
        #expect(responses[files.count - 1].checkpoints == nil)
        #expect(responses[files.count - 1].error != nil)
        #expect(responses[0].checkpoints?.first?.tensors.count == 13)
        #expect(responses[8].checkpoints?.first?.tensors.count == 19)
    }

    @Test("a scan without isolation on two threads is the scan on one")
    func scanOnTwoThreads() throws {
        let dir = try TemporaryDirectory()
        _ = try Self.writeRun(dir, saves: 9)
        final class Lines: @unchecked Sendable {
            let lock = NSLock()
            var lines: [[Int]] = []
        }
        let lines = Lines()
        let (run, _) = try ScanEngine.scan(
            dir.url.path,
            loadProgress: { done, total, bytes, totalBytes in
                lines.lock.withLock { lines.lines.append([done, total, bytes, totalBytes]) }
            })
        let progress = lines.lock.withLock { lines.lines }
        #expect(progress.map { $0[0] } == Array(1...10))
        #expect(progress.map { $0[2] } == progress.map { $0[2] }.sorted())
        #expect(run.checkpoints.map(\.metadata.step) == [0, 10, 20, 40, 50, 60, 70, 80])
        #expect(run.skipped.filter { $0.kind == .unreadable }.count == 2)
        let one = try RunLoader.load(dir.url.path)
        #expect(one.checkpoints.map(\.layers) == run.checkpoints.map(\.layers))
        #expect(one.skipped.filter { $0.kind == .unreadable }.map(\.reason) == run.skipped.filter { $0.kind == .unreadable }.map(\.reason))
    }

    func weight(_ name: String, layer: String, role: TensorRole = .weight, shape: [Int] = [4, 4]) -> TensorRef {
        TensorRef(name: name, layer: layer, role: role, shape: shape, dtype: .float32, unitAxis: 0, path: "/" + role.rawValue + "/" + name)
    }

    @Test("a remembered layer order is the order of the same layers, roles and addresses, and only of those")
    func layerOrders() {
        let tensors = [
            weight("conv1.weight", layer: "conv1"), weight("bn1.weight", layer: "bn1"), weight("conv2.weight", layer: "conv2"),
            weight("conv1.weight", layer: "conv1", role: .gradient),
        ]
        // Written conv1, bn1, conv2: that order; conv2 written before bn1: conv2 first.
        let asWritten: [UInt64] = [100, 200, 300, 900]
        let swapped: [UInt64] = [100, 300, 200, 900]
        for _ in 0..<2 {
            #expect(CheckpointLoader.orderLayers(tensors, addresses: asWritten) == ["conv1", "bn1", "conv2"])
            #expect(CheckpointLoader.orderLayers(tensors, addresses: swapped) == ["conv1", "conv2", "bn1"])
            // A gradient's address plays no part; a weight turned gradient does.
            #expect(CheckpointLoader.orderLayers(tensors, addresses: [100, 300, 200, 1]) == ["conv1", "conv2", "bn1"])
            var regraded = tensors
            regraded[1].role = .gradient
            #expect(CheckpointLoader.orderLayers(regraded, addresses: swapped) == ["conv1", "conv2"])
            // Renamed layers, and more structures than are remembered at once.
            for extra in 0..<(LayerOrders.capacity + 2) {
                var renamed = tensors
                renamed[2].layer = "conv\(extra + 3)"
                #expect(CheckpointLoader.orderLayers(renamed, addresses: swapped) == ["conv1", "conv\(extra + 3)", "bn1"])
            }
            // The path-keyed form gives the same answers.
            let createdAt = Dictionary(uniqueKeysWithValues: zip(tensors.map(\.path), swapped))
            #expect(CheckpointLoader.orderLayers(tensors, createdAt: createdAt) == ["conv1", "conv2", "bn1"])
            #expect(CheckpointLoader.orderLayers(tensors, createdAt: [:]) == ["conv1", "bn1", "conv2"])
        }
    }

    @Test("recurrent kernels are marked by their names and shapes; other names are passed over")
    func recurrentGates() {
        var lstm = [
            TensorRef(name: "rnn.weight_ih_l0", layer: "rnn", role: .weight, shape: [32, 5], dtype: .float32, unitAxis: 0, path: "/a"),
            TensorRef(name: "rnn.weight_hh_l0", layer: "rnn", role: .weight, shape: [32, 8], dtype: .float32, unitAxis: 0, path: "/b"),
            TensorRef(name: "rnn.weight_hh_l0", layer: "rnn", role: .gradient, shape: [32, 8], dtype: .float32, unitAxis: 0, path: "/c"),
            TensorRef(name: "fc.weight", layer: "fc", role: .weight, shape: [32, 8], dtype: .float32, unitAxis: 0, path: "/d"),
        ]
        RecurrentGates.mark(&lstm)
        #expect(lstm.map(\.gates) == [4, 4, 4, nil])
        var keras = [
            TensorRef(name: "gru/kernel:0", layer: "gru", role: .weight, shape: [5, 24], dtype: .float32, unitAxis: 1, path: "/a"),
            TensorRef(name: "gru/recurrent_kernel:0", layer: "gru", role: .weight, shape: [8, 24], dtype: .float32, unitAxis: 1, path: "/b"),
        ]
        RecurrentGates.mark(&keras)
        #expect(keras.map(\.gates) == [3, 3])
        // The names only appear inside another component, or only a gradient bears one: nothing is marked.
        var lookalikes = [
            TensorRef(name: "weight_hh_l0.proj", layer: "x", role: .weight, shape: [32, 8], dtype: .float32, unitAxis: 0, path: "/a"),
            TensorRef(name: "recurrent_kernel_2/w", layer: "y", role: .weight, shape: [8, 24], dtype: .float32, unitAxis: 1, path: "/b"),
            TensorRef(name: "z.weight_hh_l0", layer: "z", role: .gradient, shape: [32, 8], dtype: .float32, unitAxis: 0, path: "/c"),
        ]
        RecurrentGates.mark(&lookalikes)
        #expect(lookalikes.map(\.gates) == [nil, nil, nil])
        #expect(RecurrentGates.mayBeRecurrent("lstm.weight_hh_l0"))
        #expect(RecurrentGates.mayBeRecurrent("cell/recurrent_kernel:0"))
        #expect(!RecurrentGates.mayBeRecurrent("blocks.0.attn.weight"))
        #expect(!RecurrentGates.mayBeRecurrent("weight_h"))
    }
}
