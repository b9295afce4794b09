import ElementTypes
import Foundation
import GradScopeDiagnosis
import GradScopeMeasurement
import GradScopeModel
import GradScopeRendering
import GradScopeSources
import GradScopeStatistics
import HDF5
import HDF5Writer
import TestSupport
import Testing

/// What real Keras runs showed: mixed precision, recurrent units, several models in one folder,
/// epochs as steps, a first save after training began.
@Suite("Real runs: what Keras files and folders hold in practice")
struct RealRunTests {
    // MARK: mixed precision

    @Test("Keras 3 mixed precision: the inner optimizer's slots are matched, its counter is the step")
    func mixedPrecisionWeights() throws {
        let files = try FileManager.default.contentsOfDirectory(atPath: samplePath("keras-mixed-precision")).sorted()
        #expect(files.count == 5)
        for file in files {
            let checkpoint = try #require(try CheckpointLoader.load(samplePath("keras-mixed-precision") + "/" + file).first)
            let slots = checkpoint.tensors(.optimizer)
            // Two Dense layers, kernel and bias each, momentum and velocity each.
            #expect(slots.count == 8, "\(file): \(slots.map(\.label))")
            #expect(Set(slots.compactMap(\.slotName)) == ["momentum", "velocity"])
            #expect(slots.allSatisfy { $0.path.contains("/optimizer/inner_optimizer/vars/") })
            #expect(checkpoint.metadata.stepSource == .optimizerIterations)
            #expect(file.contains(String(format: "%06d", checkpoint.metadata.step ?? -1)))
            #expect(checkpoint.metadata.optimizer == "adam")
            #expect(!checkpoint.notes.contains { $0.contains("could not be matched") })
            #expect(checkpoint.notes.contains { $0.hasPrefix("mixed precision") })
            // The wrapper's copies of the slots are not analysed twice.
            #expect(checkpoint.tensors(.weight).count == 4)
            #expect(!checkpoint.skipped.contains { $0.reason.contains("matches no weight") })
        }
    }

    @Test("Keras 3 mixed precision run: healthy, nothing unmatched, the moments used")
    func mixedPrecisionScan() throws {
        let report = try Analysis.scan(samplePath("keras-mixed-precision")).0
        #expect(report.warnings.isEmpty, "\(report.warnings.map(\.message))")
        #expect(report.steps == [0, 32, 64, 96, 128])
        #expect(!report.skipped.contains { $0.reason.contains("matches no weight") })
        // With Adam's moments read, the zero-gradient and exploding-gradient rules can look.
        #expect(!report.notChecked.contains { $0.kind == .zeroGradient })
        #expect(!report.notChecked.contains { $0.kind == .explodingGradient })
    }

    @Test("Keras 3 mixed precision, whole-model saves: .keras zip and legacy .h5 read the real optimizer")
    func mixedPrecisionWholeModel() throws {
        for name in ["final.keras", "final.h5"] {
            let path = samplePath("keras-mixed-precision-final") + "/" + name
            let checkpoint = try #require(try CheckpointLoader.load(path).first)
            #expect(checkpoint.tensors(.optimizer).count == 8, "\(name)")
            // The wrapper's own iteration stays 0; the real optimizer's counts the 128 updates.
            #expect(checkpoint.metadata.step == 128, "\(name)")
            #expect(checkpoint.metadata.optimizer?.lowercased() == "adam", "\(name): \(checkpoint.metadata.optimizer ?? "nil")")
        }
    }

    // MARK: recurrent units

    /// A PyTorch-style LSTM (hidden 8, input 4) and a head, in the native layout: the gradients of
    /// hidden units 1 and 5 are zero in all four gates; unit 3 only in its input gate.
    static func writeLSTMRun(to directory: String, saves: Int = 6) throws {
        let hidden = 8, input = 4, gates = 4, out = 3
        var noise = SplitMix64(state: 5)
        var ih = noise.normals(gates * hidden * input, std: 0.3)
        var hh = noise.normals(gates * hidden * hidden, std: 0.3)
        let head = noise.normals(out * hidden, std: 0.3)
        for save in 0..<saves {
            let step = save * 10
            let writer = try HDF5Writer(creating: (directory as NSString).appendingPathComponent(String(format: "step_%06d.h5", step)))
            try writer.setAttribute("format", .string("gradscope/1", .variableUTF8), at: "/")
            try writer.setAttribute("step", .int(Int64(step)), at: "/")
            try writer.setAttribute("framework", .string("pytorch", .variableUTF8), at: "/")
            for i in ih.indices { ih[i] += noise.normal() * 1e-3 }
            for i in hh.indices { hh[i] += noise.normal() * 1e-3 }
            try writer.write("/weights/lstm.weight_ih_l0", ih, shape: [gates * hidden, input])
            try writer.write("/weights/lstm.weight_hh_l0", hh, shape: [gates * hidden, hidden])
            try writer.write("/weights/fc.weight", head, shape: [out, hidden])
            if save > 0 {
                func gradient(columns: Int) -> [Double] {
                    var values = noise.normals(gates * hidden * columns, std: 0.01)
                    for gate in 0..<gates {
                        for unit in [1, 5] + (gate == 0 ? [3] : []) {
                            let row = gate * hidden + unit
                            for column in 0..<columns { values[row * columns + column] = 0 }
                        }
                    }
                    return values
                }
                try writer.write("/gradients/lstm.weight_ih_l0", gradient(columns: input), shape: [gates * hidden, input])
                try writer.write("/gradients/lstm.weight_hh_l0", gradient(columns: hidden), shape: [gates * hidden, hidden])
                try writer.write("/gradients/fc.weight", noise.normals(out * hidden, std: 0.01), shape: [out, hidden])
            }
            writer.close()
        }
    }

    @Test("LSTM: units are the hidden units, a unit dead only when every gate's row is")
    func lstmUnits() throws {
        let directory = try TemporaryDirectory()
        try Self.writeLSTMRun(to: directory.url.path)
        let checkpoint = try #require(try CheckpointLoader.load(directory.path("step_000010.h5")).first)
        let gated = checkpoint.tensors.filter { $0.gates == 4 }
        #expect(Set(gated.map(\.name)) == ["lstm.weight_ih_l0", "lstm.weight_hh_l0"])
        #expect(checkpoint.weight(named: "fc.weight")?.gates == nil)
        let report = try Analysis.scan(directory.url.path).0
        #expect(report.timeline.first { $0.name == "lstm.weight_ih_l0" }?.units == 8)
        let dead = report.findings(.deadUnits).filter { $0.layer == "lstm" }
        #expect(!dead.isEmpty)
        for finding in dead {
            #expect(finding.evidence["units"] == .int(8), "\(finding.evidence)")
            // Units 1 and 5; unit 3 still gets a gradient through three of its gates.
            #expect(finding.evidence["dead_units"] == .int(2), "\(finding.evidence)")
        }
    }

    @Test("Keras GRU and LSTM kernels: gates from the recurrent kernel's shape; a SimpleRNN and a Dense unchanged")
    func kerasRecurrentGates() throws {
        func weight(_ name: String, _ shape: [Int]) -> TensorRef {
            TensorRef(name: name, layer: "x", role: .weight, shape: shape, dtype: .float32, unitAxis: kerasUnitAxis(shape), path: "/" + name)
        }
        var tensors = [
            weight("gru/cell/kernel", [1, 210]), weight("gru/cell/recurrent_kernel", [70, 210]), weight("gru/cell/bias", [2, 210]),
            weight("lstm_1/lstm_1/kernel:0", [16, 256]), weight("lstm_1/lstm_1/recurrent_kernel:0", [64, 256]),
            weight("rnn/cell/kernel", [4, 8]), weight("rnn/cell/recurrent_kernel", [8, 8]),
            // Named like a recurrent kernel, shaped like none: not marked.
            weight("odd/recurrent_kernel", [7, 10]), weight("odd/kernel", [3, 10]),
            weight("dense/kernel", [16, 32]),
        ]
        RecurrentGates.mark(&tensors)
        let gates = Dictionary(uniqueKeysWithValues: tensors.map { ($0.name, $0.gates) })
        #expect(gates["gru/cell/kernel"] == 3)
        #expect(gates["gru/cell/recurrent_kernel"] == 3)
        #expect(gates["lstm_1/lstm_1/kernel:0"] == 4)
        #expect(gates["lstm_1/lstm_1/recurrent_kernel:0"] == 4)
        #expect(gates["rnn/cell/kernel"] == .some(nil))
        #expect(gates["odd/kernel"] == .some(nil))
        #expect(gates["dense/kernel"] == .some(nil))
        #expect(TensorNames.units(shape: [16, 256], unitAxis: 1, gates: 4) == 64)
        #expect(TensorNames.units(shape: [256, 16], unitAxis: 0, gates: 4) == 64)
        #expect(TensorNames.units(shape: [16, 256], unitAxis: 1) == 256)
    }

    @Test("Gated unit layouts group every gate's column or row of a unit")
    func gatedLayouts() {
        // Keras [in 2, 4 gates x 3 units]: column c belongs to unit c % 3.
        #expect(UnitLayout.forShape([2, 12], unitAxis: 1, gates: 4) == .trailing(units: 3))
        // PyTorch [4 gates x 3 units, in 2]: row r belongs to unit r % 3.
        let layout = UnitLayout.forShape([12, 2], unitAxis: 0, gates: 4)
        #expect(layout == .leadingGated(units: 3, gates: 4, innerSize: 2))
        var units: [Int] = []
        StatsUnitMap(layout).forEachRun(offset: 0, count: 24) { unit, _, length in units += Array(repeating: unit, count: length) }
        #expect(units == [0, 0, 1, 1, 2, 2, 0, 0, 1, 1, 2, 2, 0, 0, 1, 1, 2, 2, 0, 0, 1, 1, 2, 2])
        // A gate count that does not divide the axis leaves the plain layout.
        #expect(UnitLayout.forShape([10, 2], unitAxis: 0, gates: 4) == .leading(units: 10, innerSize: 2))
    }

    // MARK: poor-init after training began

    @Test("poor-init: a first save after training began is judged when the scale held to the last save")
    func poorInitHeldScale() throws {
        let directory = try TemporaryDirectory()
        var run = SyntheticRun()
        run.steps = Array(stride(from: 100, through: 1000, by: 100))
        // std 5 for fan-in 16 and 32: 14x to 20x above sqrt(2/fan_in), far past the factor 10.
        run.initScale = { _ in 5.0 }
        try run.write(to: directory.url.path)
        let report = try Analysis.scan(directory.url.path).0
        let poor = report.findings(.poorInit)
        #expect(!poor.isEmpty)
        #expect(poor.allSatisfy { $0.firstStep == 100 && $0.message.contains("after training began") })
        #expect(poor.allSatisfy { $0.evidence["scale_held_to_step"] == .int(1000) })
        #expect(!report.notChecked.contains { $0.kind == .poorInit })
    }

    @Test("poor-init: not judged when the run after the first save is shorter than the training before it")
    func poorInitShortSpan() throws {
        let directory = try TemporaryDirectory()
        var run = SyntheticRun()
        run.steps = [500, 600, 700]
        run.initScale = { _ in 5.0 }
        try run.write(to: directory.url.path)
        let report = try Analysis.scan(directory.url.path).0
        #expect(report.findings(.poorInit).isEmpty)
        #expect(report.notChecked.contains { $0.kind == .poorInit && $0.reason.contains("after training began") })
    }

    @Test("poor-init: not judged when the scale moved by more than a factor of 2")
    func poorInitMovingScale() throws {
        let directory = try TemporaryDirectory()
        var run = SyntheticRun()
        run.steps = Array(stride(from: 100, through: 1000, by: 100))
        run.initScale = { _ in 5.0 }
        // The weights shrink 3x by the last save.
        run.weightHook = { _, save, weights, gradient in
            (save == 9 ? weights.map { $0 / 3 } : weights, gradient)
        }
        try run.write(to: directory.url.path)
        let report = try Analysis.scan(directory.url.path).0
        #expect(report.findings(.poorInit).isEmpty)
        #expect(report.notChecked.contains { $0.kind == .poorInit })
    }

    @Test("poor-init: a healthy scale that held is judged and not flagged")
    func poorInitHeldHealthy() throws {
        let directory = try TemporaryDirectory()
        var run = SyntheticRun()
        run.steps = Array(stride(from: 100, through: 1000, by: 100))
        try run.write(to: directory.url.path)
        let report = try Analysis.scan(directory.url.path).0
        #expect(report.findings(.poorInit).isEmpty)
        #expect(!report.notChecked.contains { $0.kind == .poorInit })
    }

    // MARK: how steps were found

    /// Plain weight files named by epoch (`weights_epoch_01.h5`), no step inside: the generic layout.
    static func writeEpochRun(
        to directory: String, epochs: [Int], prefix: String = "weights_epoch_", widths: [Int] = [8, 16, 4], seed: UInt64 = 3
    )
        throws
    {
        var noise = SplitMix64(state: seed)
        var kernels = zip(widths, widths.dropFirst()).map { noise.normals($0 * $1, std: (2 / Double($0)).squareRoot()) }
        for epoch in epochs {
            let writer = try HDF5Writer(creating: (directory as NSString).appendingPathComponent(String(format: "\(prefix)%02d.h5", epoch)))
            for (layer, pair) in zip(widths, widths.dropFirst()).enumerated() {
                for i in kernels[layer].indices { kernels[layer][i] += noise.normal() * 0.01 }
                try writer.write("/dense_\(layer)/kernel", kernels[layer], shape: [pair.0, pair.1])
            }
            writer.close()
        }
    }

    @Test("Steps that are epochs: the table gives the update per save, the header and JSON say how steps were found")
    func epochSteps() throws {
        let directory = try TemporaryDirectory()
        try Self.writeEpochRun(to: directory.url.path, epochs: [1, 2, 3, 4, 5])
        let report = try Analysis.scan(directory.url.path).0
        #expect(report.steps == [1, 2, 3, 4, 5])
        #expect(report.stepSource == "epoch")
        #expect(report.stepsCountUpdates == false)
        #expect(report.stepFiles?.map(\.step) == [1, 2, 3, 4, 5])
        #expect(report.stepFiles?.first?.file.hasSuffix("weights_epoch_01.h5") == true)
        let text = TextRenderer(style: Style(color: false), explain: false, width: 200).render(report)
        #expect(text.contains("steps 1–5 are epochs"))
        #expect(text.contains("update/save"))
        #expect(!text.contains("update/step"))
        let json = try JSONRenderer().render(report)
        #expect(json.contains("\"step_files\""))
        #expect(json.contains("\"step_source\" : \"epoch\""))
        #expect(json.contains("\"update_per_save\""))
    }

    @Test("Steps from the optimizer's counter are said so, and the column stays per step")
    func counterSteps() throws {
        let report = try Analysis.scan(samplePath("keras-mixed-precision")).0
        #expect(report.stepSource == "optimizer-iterations")
        #expect(report.stepsCountUpdates == true)
        let text = TextRenderer(style: Style(color: false), explain: false, width: 200).render(report)
        #expect(text.contains("steps 0–128 from the optimizer's counter"))
        #expect(text.contains("update/step"))
        #expect(report.stepFiles?.count == 5)
        #expect(report.stepFiles?.last?.file.hasSuffix("step_000128.weights.h5") == true)
    }

    // MARK: several models in one folder

    /// Copies the files of sample runs into `directory`, each run's names given a prefix.
    static func copySamples(_ runs: [(run: String, prefix: String)], to directory: String) throws {
        for (run, prefix) in runs {
            for name in try FileManager.default.contentsOfDirectory(atPath: samplePath(run)) {
                try FileManager.default.copyItem(
                    atPath: samplePath(run) + "/" + name, toPath: (directory as NSString).appendingPathComponent(prefix + name))
            }
        }
    }

    @Test("Two different models in one folder: recognised, said in the verdict, each judged on its own")
    func twoModels() throws {
        let directory = try TemporaryDirectory()
        try Self.copySamples([("keras-weights-h5", "old_"), ("keras-mixed-precision", "new_")], to: directory.url.path)
        // The mixed-precision files are the newer ones.
        let later = Date().addingTimeInterval(60)
        for name in try FileManager.default.contentsOfDirectory(atPath: directory.url.path) where name.hasPrefix("new_") {
            try FileManager.default.setAttributes([.modificationDate: later], ofItemAtPath: directory.path(name))
        }
        let report = try Analysis.scan(directory.url.path).0
        let models = try #require(report.models)
        #expect(models.count == 2)
        #expect(report.verdict.hasPrefix("2 different models in one folder"))
        let primary = try #require(models.first { $0.primary })
        #expect(primary.steps == [0, 32, 64, 96, 128])
        #expect(report.steps == primary.steps)
        #expect(primary.stepFiles.allSatisfy { $0.file.contains("new_") })
        let other = try #require(models.first { !$0.primary })
        #expect(other.steps == Array(stride(from: 0, through: 640, by: 64)))
        #expect(other.stepFiles.allSatisfy { $0.file.contains("old_") })
        // Judged on its own: the frozen layer of the older model is found there, not lost as a duplicate.
        #expect(other.findings.contains { $0.kind == .frozen && $0.layer == "hidden2" })
        #expect(report.findings.allSatisfy { $0.layer != "hidden2" })
        #expect(report.allFindings.contains { $0.kind == .frozen })
        // No step was dropped as a duplicate of the other model's.
        #expect(!report.skipped.contains { $0.reason.contains("duplicate step") })
        let text = TextRenderer(style: Style(color: false), explain: false, width: 200).render(report)
        #expect(text.contains("Model 1 of this folder") || text.contains("Model 2 of this folder"))
        #expect(try JSONRenderer().render(report).contains("\"models\""))
    }

    @Test("One model whose saves add a tensor stays one model; a run of one model has no models list")
    func oneModel() throws {
        func checkpoint(_ step: Int, _ names: [String]) -> Checkpoint {
            Checkpoint(
                source: "s\(step)", layout: .native, metadata: StepMetadata(step: step, stepSource: .attribute),
                tensors: names.map { TensorRef(name: $0, layer: $0, role: .weight, shape: [4, 4], dtype: .float32, unitAxis: 0, path: "/" + $0) },
                layers: names)
        }
        let grown = RunLoader.assemble(
            source: "r", checkpoints: [checkpoint(0, ["a", "b", "c"]), checkpoint(1, ["a", "b", "c", "head"])], skipped: [])
        #expect(grown.otherModels.isEmpty)
        #expect(grown.checkpoints.count == 2)
        let replaced = RunLoader.assemble(
            source: "r", checkpoints: [checkpoint(0, ["a", "b", "c"]), checkpoint(1, ["x", "y", "c"])], skipped: [])
        #expect(replaced.otherModels.count == 1)
        #expect(replaced.notes.contains { $0.contains("2 different models") })
        let report = try Analysis.scan(samplePath("healthy")).0
        #expect(report.models == nil)
    }

    @Test("A step saved twice by one model: the file used and why are noted")
    func duplicateStep() throws {
        let directory = try TemporaryDirectory()
        try Self.copySamples([("healthy", "a_")], to: directory.url.path)
        try FileManager.default.copyItem(atPath: samplePath("healthy") + "/step_000060.h5", toPath: directory.path("b_step_000060.h5"))
        let report = try Analysis.scan(directory.url.path).0
        #expect(report.models == nil)
        #expect(report.notes.contains { $0.contains("a_step_000060.h5 used") && $0.contains("first by name") })
        #expect(report.skipped.contains { $0.item.hasSuffix("b_step_000060.h5") && $0.kind == .superseded })
    }

    // MARK: names are evidence, not verdicts

    static func measurement(_ name: String, _ shape: [Int]) -> TensorMeasurement {
        TensorMeasurement(
            key: .weight(name), name: name, layer: name, role: .weight, shape: shape, unitAxis: shape.count >= 2 ? 0 : nil,
            dtype: "float32", path: "/" + name,
            stats: TensorStats(
                count: 1, finiteCount: 1, mean: 0, std: 0, min: 0, max: 0, maxAbs: 0, l2Norm: 0, zeros: 1, nan: 0, posInf: 0, negInf: 0,
                p1: nil, p5: nil, p50: nil, p95: nil, p99: nil, histogram: nil,
                log2Histogram: Log2Histogram(minExponent: 0, counts: [], zeros: 1), unitNorms: nil, unitZeroCount: nil))
    }

    @Test(
        "Kernels whose names merely contain a normalisation or embedding word stay kernels",
        arguments: [
            ("subnet/dense/kernel", [64, 32]), ("subnet.0.weight", [32, 64]), ("abnormal_head.weight", [10, 20]),
            ("lnet.fc.weight", [8, 8]), ("spectral_norm_conv/kernel", [3, 3, 16, 32]), ("features.gn_proj.weight", [16, 16]),
            ("encoder/bnk/kernel", [16, 16]), ("resembler.weight", [4, 8]),
        ])
    func notNormalization(name: String, shape: [Int]) {
        #expect(DetectorSupport.isKernel(Self.measurement(name, shape)), "\(name) \(shape)")
    }

    @Test(
        "Normalisation parameters are still recognised, by name and by their one-per-feature shape",
        arguments: [
            ("bn1.weight", [64]), ("layers.0.norm.weight", [512]), ("batch_normalization_1/gamma", [32]),
            ("encoder/layer_normalization/beta", [1, 1, 64]), ("model.layers.3.input_layernorm.weight", [4096]), ("ln_f.weight", [768]),
            ("transformer/final_rmsnorm/scale", [256]), ("gamma:0", [10]),
        ])
    func normalization(name: String, shape: [Int]) {
        #expect(DetectorSupport.isNormalization(name, shape: shape), "\(name) \(shape)")
        if shape.count >= 2 { #expect(!DetectorSupport.isKernel(Self.measurement(name, shape))) }
    }

    @Test("Embedding tables: a word of the name and a matrix shape")
    func embeddings() {
        #expect(DetectorSupport.isEmbedding("emb.0.weight", shape: [1000, 8]))
        #expect(DetectorSupport.isEmbedding("model.embed_tokens.weight", shape: [32000, 4096]))
        #expect(DetectorSupport.isEmbedding("bert/embeddings/word_embeddings", shape: [30522, 768]))
        #expect(DetectorSupport.isEmbedding("user_factors.weight", shape: [500, 16]))
        #expect(DetectorSupport.isEmbedding("transformer.wte.weight", shape: [50257, 768]))
        // A patch-embedding convolution and a positional parameter of rank 3 are not lookup tables.
        #expect(!DetectorSupport.isEmbedding("patch_embed.proj.weight", shape: [768, 3, 16, 16]))
        #expect(!DetectorSupport.isEmbedding("pos_embed", shape: [1, 197, 768]))
        // Words, not pieces of words.
        #expect(!DetectorSupport.isEmbedding("member_fc.weight", shape: [16, 16]))
        #expect(!DetectorSupport.isEmbedding("semblance.weight", shape: [16, 16]))
    }

    @Test("A kernel in a layer named `subnet` is judged by the kernel rules (poor-init flags its scale)")
    func subnetJudged() throws {
        let directory = try TemporaryDirectory()
        for step in [0, 10, 20] {
            let writer = try HDF5Writer(creating: directory.path(String(format: "step_%06d.h5", step)))
            try writer.setAttribute("format", .string("gradscope/1", .variableUTF8), at: "/")
            try writer.setAttribute("step", .int(Int64(step)), at: "/")
            var noise = SplitMix64(state: UInt64(step + 1))
            // std 20 for fan-in 32: 56x above sqrt(2/32).
            try writer.write("/weights/subnet.0.weight", noise.normals(64 * 32, std: 20), shape: [64, 32])
            try writer.write("/weights/subnet.2.weight", noise.normals(4 * 64, std: (2.0 / 64).squareRoot()), shape: [4, 64])
            writer.close()
        }
        let report = try Analysis.scan(directory.url.path).0
        #expect(report.findings(.poorInit).contains { $0.tensor == "subnet.0.weight" })
    }

    // MARK: one architecture, two runs

    @Test("A restart of the same architecture from a fresh initialisation: two runs, judged separately")
    func restartSameArchitecture() throws {
        let directory = try TemporaryDirectory()
        var first = SyntheticRun()
        first.steps = Array(stride(from: 0, through: 500, by: 100))
        try first.write(to: directory.url.path)
        var second = SyntheticRun()
        second.seed = 99
        second.steps = Array(stride(from: 600, through: 1100, by: 100))
        try second.write(to: directory.url.path)
        let report = try Analysis.scan(directory.url.path).0
        let models = try #require(report.models)
        #expect(models.count == 2)
        #expect(report.verdict.contains("jumps to unrelated values at step 600"))
        #expect(report.steps == [600, 700, 800, 900, 1000, 1100])
        #expect(models.first { !$0.primary }?.steps == [0, 100, 200, 300, 400, 500])
        // Judged on its own, neither run shows the jump as a huge update.
        #expect(report.allFindings.filter { $0.kind == .updateRatio }.isEmpty)
    }

    @Test("One run saved on: no jump, one model")
    func noJumpInOneRun() throws {
        let directory = try TemporaryDirectory()
        var run = SyntheticRun()
        run.updateRatio = 5e-3
        try run.write(to: directory.url.path)
        let report = try Analysis.scan(directory.url.path).0
        #expect(report.models == nil)
        #expect(!report.verdict.contains("unrelated"))
    }

    @Test("Two runs of one architecture saved in turn: the mix is said first, the runs cannot be told apart")
    func interleavedRuns() throws {
        let directory = try TemporaryDirectory()
        var first = SyntheticRun()
        first.steps = [0, 100, 200, 300]
        try first.write(to: directory.url.path)
        var second = SyntheticRun()
        second.seed = 42
        second.steps = [50, 150, 250, 350]
        try second.write(to: directory.url.path)
        let report = try Analysis.scan(directory.url.path).0
        #expect(report.models == nil)
        #expect(report.verdict.hasPrefix("Saves of different runs seem mixed in this folder"))
    }

    @Test("Real Keras GRU and LSTM files: units are the hidden size (70, 50, 128)")
    func corpusRecurrentUnits() throws {
        for (file, kernel, units) in [
            ("keras3/gru-congestion.weights.h5", "gru_1/cell/kernel", 70), ("keras-legacy/k2.0.6-lstm-rmsprop.h5", "lstm_1/kernel", 50),
            ("keras3/lstm-renewable-3.8.0.keras", "lstm_1/cell/kernel", 128),
        ] {
            guard let path = corpusFile(file) else { continue }
            let report = try Analysis.scan(path).0
            let timeline = try #require(report.timeline.first { $0.name == kernel }, "\(file): \(report.timeline.map(\.name))")
            #expect(timeline.units == units, "\(file)")
        }
    }
}
