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

@Suite("Layouts: tensors with the right name, layer, role and unit axis")
struct LayoutTests {
    @Test("the byte-wise search for path markers answers as Foundation's contains, ASCII or not")
    func markerSearch() {
        let texts = [
            "layers/dense/vars/0", "model/fc.weight", "", "/", "x/vars", "/vars/", "a_layer_checkpoint_dependencies/b/vars/1",
            "é/vars/0", "x/vars/\u{301}0", "名前/vars/1", "model.fc", "/\u{301}",
        ]
        for text in texts {
            for needle: StaticString in ["/", "/vars/", "_layer_checkpoint_dependencies"] {
                #expect(LayoutSupport.contains(text, needle) == text.contains(needle.description), "\(text) \(needle)")
                #expect(LayoutSupport.contains(text.dropFirst(0), needle) == text.contains(needle.description))
            }
        }
    }

    @Test("native: weights, gradients, optimizer slots, activations and in_optimizer")
    func native() throws {
        let dir = try TemporaryDirectory()
        let path = dir.path("ckpt.h5")
        do {
            let w = try HDF5Writer(creating: path)
            try w.setAttribute("format", .string("gradscope/1", .variableUTF8), at: "/")
            try w.setAttribute("step", .int(300), at: "/")
            try w.setAttribute("loss", .double(0.5), at: "/")
            try w.setAttribute("lr", .double(0.001), at: "/")
            try w.setAttribute("framework", .string("pytorch", .variableUTF8), at: "/")
            try w.setAttribute("optimizer", .string("Adam", .variableUTF8), at: "/")
            try w.write("/weights/head.3.weight", [Double](repeating: 0.1, count: 12), shape: [3, 4])
            try w.setAttribute("in_optimizer", .int(0), at: "/weights/head.3.weight")
            try w.write("/weights/head.3.bias", [0, 0, 0], shape: [3])
            try w.write("/gradients/head.3.weight", [Double](repeating: 0.01, count: 12), shape: [3, 4])
            try w.write("/optimizer/exp_avg/head.3.weight", [Double](repeating: 0, count: 12), shape: [3, 4])
            try w.write("/optimizer/exp_avg_sq/head.3.weight", [Double](repeating: 0, count: 12), shape: [3, 4])
            try w.write("/optimizer/step/head.3.weight", [3], shape: [])
            try w.write("/activations/logits", [0.1, -0.1], shape: [2, 1])
            try w.setAttribute("module", .string("head.3", .variableUTF8), at: "/activations/logits")
        }
        let checkpoint = try #require(try CheckpointLoader.load(path).first)
        #expect(checkpoint.layout == .native)
        #expect(checkpoint.metadata.step == 300)
        #expect(checkpoint.metadata.stepSource == .attribute)
        #expect(checkpoint.metadata.loss == 0.5)
        #expect(checkpoint.metadata.learningRate == 0.001)
        let weight = try #require(checkpoint.weight(named: "head.3.weight"))
        #expect(weight.layer == "head.3")
        #expect(weight.unitAxis == 0)
        #expect(weight.trainable == false)
        let gradient = try #require(checkpoint.tensors.first { $0.role == .gradient })
        #expect(gradient.name == "head.3.weight")
        let slots = checkpoint.tensors(.optimizer)
        #expect(Set(slots.compactMap(\.slot)) == [.firstMoment, .secondMoment])
        #expect(slots.allSatisfy { $0.name == "head.3.weight" && $0.layer == "head.3" })
        let activation = try #require(checkpoint.tensors(.activation).first)
        #expect(activation.name == "logits")
        #expect(activation.layer == "head.3")
        #expect(checkpoint.skipped.contains { $0.item.hasSuffix("/optimizer/step/head.3.weight") })
        #expect(checkpoint.layers == ["head.3"])
    }

    @Test("generic: a PyTorch state_dict written by hand, gradients in grads/, optimizer moments")
    func generic() throws {
        let dir = try TemporaryDirectory()
        let path = dir.path("model_ckpt_700.h5")
        do {
            let w = try HDF5Writer(creating: path)
            try w.write("/model_state_dict/features.0.weight", [Double](repeating: 0.1, count: 8), shape: [2, 4])
            try w.write("/model_state_dict/features.10.weight", [Double](repeating: 0.1, count: 4), shape: [2, 2])
            try w.write("/model_state_dict/features.2.weight", [Double](repeating: 0.1, count: 4), shape: [2, 2])
            try w.write("/model_state_dict/bn1.num_batches_tracked", [5], shape: [], as: .int64)
            try w.write("/grads/features.0.weight", [Double](repeating: 0.01, count: 8), shape: [2, 4])
            try w.write("/optimizer/exp_avg/features.0.weight", [Double](repeating: 0, count: 8), shape: [2, 4])
            try w.setAttribute("loss", .double(1.25), at: "/")
            try w.setAttribute("learning_rate", .double(0.1), at: "/")
        }
        let checkpoint = try #require(try CheckpointLoader.load(path).first)
        #expect(checkpoint.layout == .generic)
        #expect(checkpoint.metadata.step == 700)
        #expect(checkpoint.metadata.stepSource == .fileName)
        #expect(checkpoint.metadata.loss == 1.25)
        #expect(checkpoint.metadata.learningRate == 0.1)
        let names = checkpoint.tensors(.weight).map(\.name)
        #expect(names == ["features.0.weight", "features.2.weight", "features.10.weight"])
        #expect(checkpoint.tensors(.weight).map(\.layer) == ["features.0", "features.2", "features.10"])
        #expect(checkpoint.tensors(.weight).allSatisfy { $0.unitAxis == 0 })
        #expect(checkpoint.tensors(.gradient).map(\.name) == ["features.0.weight"])
        #expect(checkpoint.tensors(.optimizer).first?.slot == .firstMoment)
        #expect(checkpoint.tensors(.optimizer).first?.name == "features.0.weight")
        #expect(checkpoint.skipped.contains { $0.item.hasSuffix("num_batches_tracked") && $0.reason.contains("batch counter") })
    }

    @Test("multi-step file: one group per step")
    func multiStep() throws {
        let dir = try TemporaryDirectory()
        let path = dir.path("run.h5")
        do {
            let w = try HDF5Writer(creating: path)
            for step in [100, 20, 3] {
                try w.write("/step_\(step)/fc.weight", [Double](repeating: Double(step), count: 4), shape: [2, 2])
                try w.write("/step_\(step)/grads/fc.weight", [1, 1, 1, 1], shape: [2, 2])
            }
        }
        let checkpoints = try CheckpointLoader.load(path)
        #expect(checkpoints.map(\.metadata.step) == [3, 20, 100])
        #expect(checkpoints.allSatisfy { $0.metadata.stepSource == .groupName })
        #expect(checkpoints.first?.tensors.map(\.key) == [.weight("fc.weight"), .gradient("fc.weight")])
        let run = try RunLoader.load(path)
        #expect(run.steps == [3, 20, 100])
    }

    @Test("Keras 3 .weights.h5 from the corpus: layer names, BatchNorm statistics untrained, Adam slots matched")
    func keras3WeightsFile() throws {
        guard let path = corpusFile("keras3/space-invaders-dense-bn.weights.h5") else { return }
        let checkpoint = try #require(try CheckpointLoader.load(path).first)
        #expect(checkpoint.layout == .keras3)
        #expect(checkpoint.metadata.step == 1280)
        #expect(checkpoint.metadata.stepSource == .optimizerIterations)
        #expect(checkpoint.metadata.optimizer == "adam")
        #expect(checkpoint.layers.prefix(3) == ["dense", "batch_normalization", "dense_1"])
        let kernel = try #require(checkpoint.weight(named: "dense/kernel"))
        #expect(kernel.shape == [21, 128])
        #expect(kernel.unitAxis == 1)
        #expect(kernel.trainable == true)
        #expect(checkpoint.weight(named: "batch_normalization/moving_mean")?.trainable == false)
        #expect(checkpoint.weight(named: "batch_normalization/gamma")?.trainable == true)
        let slots = checkpoint.tensors(.optimizer).filter { $0.name == "dense_1/kernel" }
        #expect(slots.map(\.slotName) == ["momentum", "velocity"])
        #expect(slots.map(\.slot) == [.firstMoment, .secondMoment])
        #expect(checkpoint.tensors(.optimizer).count == 28)
    }

    @Test("a .keras zip is read from memory, its optimizer named by config.json")
    func kerasArchive() throws {
        guard let path = corpusFile("keras3/lstm-renewable-3.8.0.keras") else { return }
        let checkpoint = try #require(try CheckpointLoader.load(path).first)
        #expect(checkpoint.layout == .keras3)
        #expect(checkpoint.metadata.optimizer == "RMSprop")
        #expect(checkpoint.tensors(.optimizer).allSatisfy { $0.slotName == "velocity" && $0.slot == .secondMoment })
        #expect(checkpoint.tensors(.optimizer).count == checkpoint.tensors(.weight).count)
        #expect(checkpoint.weight(named: "lstm/cell/kernel") != nil)
    }

    @Test("legacy Keras: every optimizer naming scheme maps to the right weights")
    func legacyNamingSchemes() throws {
        // Keras 2.3: m_N, v_N, then AMSGrad placeholders vhat_N of shape (1,).
        if let path = corpusFile("keras-legacy/k2.3.1-adam-checkpoint.hdf5") {
            let checkpoint = try #require(try CheckpointLoader.load(path).first)
            #expect(checkpoint.layout == .kerasLegacy)
            #expect(checkpoint.metadata.step == 2288)
            let m = checkpoint.tensors(.optimizer).filter { $0.slotName == "m" }
            #expect(m.map(\.name) == ["dense_1/kernel", "dense_1/bias", "dense_2/kernel", "dense_2/bias", "dense_3/kernel", "dense_3/bias"])
            #expect(checkpoint.skipped.filter { $0.reason.contains("AMSGrad") }.count == 6)
        }
        // tf.keras 2.2-2.10: Adam/<layer>/<var>/m:0 by name; BatchNorm moving statistics get no slots.
        if let path = corpusFile("keras-legacy/k2.2.4-tf-batchnorm-adam.h5") {
            let checkpoint = try #require(try CheckpointLoader.load(path).first)
            #expect(checkpoint.notes.contains { $0.contains("by name") })
            let untrained = checkpoint.tensors(.weight).filter { $0.trainable == false }.map(\.name)
            #expect(untrained.allSatisfy { $0.contains("moving_") })
            #expect(untrained.count == 4)
        }
        // Keras 3 writing legacy .h5: SGD/<model>_<layer>_<var>_momentum.
        if let path = corpusFile("keras-legacy/k3.12.0-chatbot-sgd-legacy.h5") {
            let checkpoint = try #require(try CheckpointLoader.load(path).first)
            let slots = checkpoint.tensors(.optimizer)
            #expect(slots.count == 6)
            #expect(slots.allSatisfy { $0.slot == .momentum })
            #expect(Set(slots.map(\.name)) == Set(checkpoint.tensors(.weight).map(\.name)))
            #expect(checkpoint.metadata.step == 800)
        }
        // Keras 1 (Theano): param_0 is the step counter, then first and second moments by position.
        if let path = corpusFile("keras-legacy/k1.1.1-titanic-adam-paramN.hdf5") {
            let checkpoint = try #require(try CheckpointLoader.load(path).first)
            #expect(checkpoint.metadata.step == 24300)
            #expect(checkpoint.tensors(.optimizer).count == 2 * checkpoint.tensors(.weight).count)
        }
        // tf.keras 2.11's new optimizer: only the iteration counter.
        if let path = corpusFile("keras-legacy/k2.11.0-attention-newadam.h5") {
            let checkpoint = try #require(try CheckpointLoader.load(path).first)
            #expect(checkpoint.tensors(.optimizer).isEmpty)
            #expect(checkpoint.metadata.stepSource == .optimizerIterations)
        }
    }

    @Test("legacy Keras written by hand: tf.keras 2.11+ names and split weight_names")
    func legacyFixture() throws {
        let dir = try TemporaryDirectory()
        let path = dir.path("w.h5")
        do {
            let w = try HDF5Writer(creating: path)
            try w.createGroup("/model_weights/dense")
            try w.setAttribute("layer_names", .strings(["dense"], .fixed), at: "/model_weights")
            try w.setAttribute("weight_names0", .strings(["dense/kernel:0"], .variableUTF8), at: "/model_weights/dense")
            try w.setAttribute("weight_names1", .strings(["dense/bias:0"], .variableUTF8), at: "/model_weights/dense")
            try w.write("/model_weights/dense/dense/kernel:0", [Double](repeating: 0.1, count: 6), shape: [3, 2])
            try w.write("/model_weights/dense/dense/bias:0", [0, 0], shape: [2])
            try w.createGroup("/optimizer_weights")
            try w.setAttribute(
                "weight_names",
                .strings(
                    [
                        "iteration:0", "Adam/m/dense/kernel:0", "Adam/v/dense/kernel:0",
                        "Adam/m/dense/bias:0", "Adam/v/dense/bias:0",
                    ], .variableUTF8), at: "/optimizer_weights")
            try w.write("/optimizer_weights/iteration:0", [42], shape: [], as: .int64)
            try w.write("/optimizer_weights/Adam/m/dense/kernel:0", [Double](repeating: 0, count: 6), shape: [3, 2])
            try w.write("/optimizer_weights/Adam/v/dense/kernel:0", [Double](repeating: 0, count: 6), shape: [3, 2])
            try w.write("/optimizer_weights/Adam/m/dense/bias:0", [0, 0], shape: [2])
            try w.write("/optimizer_weights/Adam/v/dense/bias:0", [0, 0], shape: [2])
        }
        let checkpoint = try #require(try CheckpointLoader.load(path).first)
        #expect(checkpoint.layout == .kerasLegacy)
        #expect(checkpoint.metadata.step == 42)
        #expect(checkpoint.tensors(.weight).map(\.name) == ["dense/kernel", "dense/bias"])
        #expect(checkpoint.weight(named: "dense/kernel")?.unitAxis == 1)
        let slots = checkpoint.tensors(.optimizer)
        #expect(slots.map(\.name) == ["dense/kernel", "dense/kernel", "dense/bias", "dense/bias"])
        #expect(slots.map(\.slot) == [.firstMoment, .secondMoment, .firstMoment, .secondMoment])
    }

    @Test("every real checkpoint in the corpus loads with tensors and sane roles")
    func corpusCheckpoints() throws {
        let folders = ["keras-legacy", "keras3", "torch-h5"]
        for folder in folders {
            guard let directory = corpusFile(folder) else { continue }
            for name in try FileManager.default.contentsOfDirectory(atPath: directory).sorted() {
                let path = directory + "/" + name
                let checkpoints = try CheckpointLoader.load(path)
                #expect(!checkpoints.isEmpty, "\(name)")
                for checkpoint in checkpoints {
                    #expect(!checkpoint.tensors(.weight).isEmpty, "\(name)")
                    for tensor in checkpoint.tensors {
                        #expect(!tensor.name.isEmpty && !tensor.layer.isEmpty, "\(name): \(tensor.path)")
                        if let axis = tensor.unitAxis { #expect(axis >= 0 && axis < tensor.shape.count, "\(name): \(tensor.path)") }
                    }
                    // Optimizer slots always have the shape of their weight.
                    for slot in checkpoint.tensors(.optimizer) {
                        #expect(checkpoint.weight(named: slot.name)?.shape == slot.shape, "\(name): \(slot.path)")
                    }
                }
            }
        }
    }

    @Test("a sharded Keras 3 save (.weights.json and _NNNNN shards) is one step, in a run too")
    func shardedKeras() throws {
        let dir = try TemporaryDirectory()
        for step in [10, 20] {
            let first = try HDF5Writer(creating: dir.path("ckpt\(step)_00000.weights.h5"))
            try first.write("/layers/dense/vars/0", [Double](repeating: 0.1 * Double(step), count: 6), shape: [3, 2])
            try first.write("/layers/dense/vars/1", [0, 0], shape: [2])
            try first.setAttribute("name", .string("hidden", .variableUTF8), at: "/layers/dense/vars")
            try first.write("/optimizer/vars/0", [Double(step)], shape: [], as: .int64)
            first.close()
            let second = try HDF5Writer(creating: dir.path("ckpt\(step)_00001.weights.h5"))
            try second.write("/optimizer/vars/1", [0.001], shape: [], as: .float32)
            for (index, shape) in [(2, [3, 2]), (3, [3, 2]), (4, [2]), (5, [2])] {
                try second.write("/optimizer/vars/\(index)", [Double](repeating: 0, count: shape.reduce(1, *)), shape: shape)
            }
            try second.setAttribute("name", .string("adam", .variableUTF8), at: "/optimizer/vars")
            second.close()
            let manifest = """
                {"metadata": {"total_size": 100}, "weight_map": {"/layers/dense/vars": "ckpt\(step)_00000.weights.h5",
                 "/optimizer/vars": ["ckpt\(step)_00000.weights.h5", "ckpt\(step)_00001.weights.h5"]}}
                """
            try Data(manifest.utf8).write(to: URL(fileURLWithPath: dir.path("ckpt\(step).weights.json")))
        }
        let opened = try #require(try CheckpointLoader.open(dir.path("ckpt10.weights.json")).first)
        let checkpoint = opened.checkpoint
        #expect(opened.files.count == 2)
        #expect(checkpoint.metadata.step == 10)
        #expect(checkpoint.metadata.learningRate == Double(Float(0.001)))
        #expect(checkpoint.metadata.optimizer == "adam")
        #expect(checkpoint.tensors(.weight).map(\.name) == ["hidden/kernel", "hidden/bias"])
        let slots = checkpoint.tensors(.optimizer)
        #expect(slots.map(\.slotName) == ["momentum", "velocity", "momentum", "velocity"])
        #expect(slots.allSatisfy { $0.fileIndex == 1 })
        let stats = try TensorMeasurer.stats(of: try #require(checkpoint.weight(named: "hidden/kernel")), in: opened)
        #expect(stats.mean == Double(Float(1.0)))
        let run = try RunLoader.load(dir.url.path)
        #expect(run.steps == [10, 20])
        #expect(run.checkpoints.allSatisfy { $0.source.hasSuffix(".weights.json") })
    }

    @Test("PyTorch optimizer state stored by parameter index maps to the parameters, running statistics aside")
    func indexedOptimizerState() throws {
        let dir = try TemporaryDirectory()
        let path = dir.path("epoch_2.h5")
        do {
            let w = try HDF5Writer(creating: path)
            try w.write("/model/0.weight", [Double](repeating: 0.1, count: 6), shape: [3, 2])
            try w.write("/model/0.bias", [0, 0, 0], shape: [3])
            try w.write("/model/1.running_mean", [0, 0, 0], shape: [3])
            try w.write("/model/2.weight", [Double](repeating: 0.1, count: 3), shape: [1, 3])
            try w.write("/optimizer/state/0/exp_avg", [Double](repeating: 0, count: 6), shape: [3, 2])
            try w.write("/optimizer/state/1/exp_avg", [0, 0, 0], shape: [3])
            try w.write("/optimizer/state/2/exp_avg", [0, 0, 0], shape: [1, 3])
        }
        let checkpoint = try #require(try CheckpointLoader.load(path).first)
        #expect(checkpoint.tensors(.optimizer).map(\.name) == ["0.weight", "0.bias", "2.weight"])
        #expect(checkpoint.notes.contains { $0.contains("parameter index") })
        let run = try RunLoader.load(dir.url.path)
        let measurements = RunMeasurer.measure(run)
        #expect(measurements.stepsCountUpdates == false)
    }

    @Test("Keras 3: optimizer slots are never given to layers a .keras config marks trainable: false")
    func kerasFrozenLayerSlots() throws {
        let config = try #require(
            try JSONSerialization.jsonObject(
                with: Data(
                    """
                    {"class_name": "Sequential", "config": {"name": "sequential", "trainable": true, "layers": [
                      {"class_name": "Dense", "config": {"name": "pretrained", "trainable": false}},
                      {"class_name": "Functional", "config": {"name": "backbone", "trainable": false, "layers": [
                        {"class_name": "Dense", "config": {"name": "inner", "trainable": true}}]}},
                      {"class_name": "Dense", "config": {"name": "head_hidden", "trainable": true}}]}}
                    """.utf8)) as? [String: Any])
        #expect(LayoutSupport.nonTrainableLayers(inConfig: config) == ["pretrained", "backbone", "inner"])

        // A frozen 16x16 layer before a trainable one of the same shape: shapes alone would give the
        // trainable layer's slots to the frozen one.
        let dir = try TemporaryDirectory()
        let path = dir.path("model.weights.h5")
        do {
            let w = try HDF5Writer(creating: path)
            for layer in ["pretrained", "head_hidden"] {
                try w.write("/layers/\(layer)/vars/0", [Double](repeating: 0.1, count: 256), shape: [16, 16])
                try w.write("/layers/\(layer)/vars/1", [Double](repeating: 0, count: 16), shape: [16])
            }
            try w.write("/optimizer/vars/0", [Double(64)], shape: [], as: .int64)
            try w.write("/optimizer/vars/1", [1e-3], shape: [])
            try w.write("/optimizer/vars/2", [Double](repeating: 0.01, count: 256), shape: [16, 16])
            try w.write("/optimizer/vars/3", [Double](repeating: 1e-4, count: 256), shape: [16, 16])
            try w.write("/optimizer/vars/4", [Double](repeating: 0.01, count: 16), shape: [16])
            try w.write("/optimizer/vars/5", [Double](repeating: 1e-4, count: 16), shape: [16])
        }
        let file = try HDF5File.open(path)
        let entries = try file.walk()
        let unaware = Keras3Layout.read(file: file, entries: entries, root: "/", source: path, optimizerHint: "adam").1
        #expect(unaware.filter { $0.role == .optimizer }.map(\.layer).allSatisfy { $0 == "pretrained" })
        let aware = Keras3Layout.read(
            file: file, entries: entries, root: "/", source: path, optimizerHint: "adam",
            nonTrainableLayers: ["pretrained"]
        ).1
        #expect(aware.filter { $0.role == .optimizer }.map(\.layer) == ["head_hidden", "head_hidden", "head_hidden", "head_hidden"])
        #expect(aware.first { $0.role == .weight && $0.layer == "pretrained" }?.trainable == false)
        #expect(aware.first { $0.role == .weight && $0.layer == "head_hidden" }?.trainable == true)
    }

    @Test("hand-written PyTorch files: layers in the order written, '.grad' datasets, optimizer settings and step counters")
    func handWrittenDetails() throws {
        let dir = try TemporaryDirectory()
        let path = dir.path("model.h5")
        // Written in state_dict order; by name, classifier and blocks would come before input_proj.
        let order = ["input_proj", "blocks.0", "blocks.1", "blocks.2", "blocks.10", "classifier"]
        do {
            let w = try HDF5Writer(creating: path)
            for layer in order {
                try w.write("/model_state_dict/\(layer).weight", [Double](repeating: 0.1, count: 4), shape: [2, 2])
                try w.write("/model_state_dict/\(layer).weight.grad", [Double](repeating: 0.01, count: 4), shape: [2, 2])
            }
            try w.write("/optimizer/state/0/exp_avg", [Double](repeating: 0, count: 4), shape: [2, 2])
            try w.write("/optimizer/state/0/step", [Double(420)], shape: [])
            try w.write("/optimizer/param_groups/0/betas", [0.9, 0.999], shape: [2])
            try w.write("/optimizer/param_groups/0/lr", [1e-3], shape: [])
        }
        let checkpoint = try #require(try CheckpointLoader.load(path).first)
        #expect(checkpoint.layers == order)
        #expect(checkpoint.tensors(.weight).count == order.count)
        #expect(checkpoint.tensors(.gradient).map(\.name).sorted() == order.map { $0 + ".weight" }.sorted())
        #expect(checkpoint.tensors(.optimizer).map(\.name) == ["input_proj.weight"])
        #expect(checkpoint.metadata.step == 420)
        #expect(checkpoint.metadata.stepSource == .optimizerIterations)
        #expect(checkpoint.skipped.contains { $0.item.hasSuffix("param_groups/0/betas") })

        // Families of numbered names that interleave as written (a ResNet block: conv1, bn1, conv2, bn2).
        let resnet = dir.path("resnet.h5")
        do {
            let w = try HDF5Writer(creating: resnet)
            for layer in ["stem", "conv1", "bn1", "conv2", "bn2", "fc"] {
                try w.write("/\(layer).weight", [Double](repeating: 0.1, count: 4), shape: layer.hasPrefix("bn") ? [4] : [2, 2])
            }
        }
        #expect(try #require(try CheckpointLoader.load(resnet).first).layers == ["stem", "conv1", "bn1", "conv2", "bn2", "fc"])

        // PyTorch Lightning: a list of optimizers, `optimizer_states/0/state/<i>/exp_avg`.
        let lightning = dir.path("epoch=1-step=200.h5")
        do {
            let w = try HDF5Writer(creating: lightning)
            try w.write("/state_dict/fc1.weight", [Double](repeating: 0.1, count: 4), shape: [2, 2])
            try w.write("/state_dict/fc2.weight", [Double](repeating: 0.1, count: 6), shape: [3, 2])
            try w.write("/optimizer_states/0/state/0/exp_avg", [Double](repeating: 0, count: 4), shape: [2, 2])
            try w.write("/optimizer_states/0/state/1/exp_avg", [Double](repeating: 0, count: 6), shape: [3, 2])
        }
        let lightningCheckpoint = try #require(try CheckpointLoader.load(lightning).first)
        #expect(lightningCheckpoint.tensors(.optimizer).map(\.name) == ["fc1.weight", "fc2.weight"])
        #expect(lightningCheckpoint.metadata.step == 200)

        // A model's own group named `state` (a Flax TrainState, `{"state": model.state_dict()}`) is no optimizer.
        let flax = dir.path("flax.h5")
        do {
            let w = try HDF5Writer(creating: flax)
            try w.write("/state/params/Dense_0/kernel", [Double](repeating: 0.1, count: 6), shape: [3, 2])
            try w.write("/state/params/Dense_0/bias", [0, 0], shape: [2])
        }
        let flaxCheckpoint = try #require(try CheckpointLoader.load(flax).first)
        #expect(flaxCheckpoint.tensors(.weight).count == 2)
        #expect(flaxCheckpoint.tensors(.optimizer).isEmpty)
    }

    @Test("biases are never kernels, whatever their rank; LoRA's kernel_b is one")
    func biasNames() {
        #expect(TensorNames.isBias("gru/gru_cell/bias"))
        #expect(TensorNames.isBias("rnn.bias_hh_l0"))
        #expect(TensorNames.isBias("dense_1/bias:0"))
        #expect(!TensorNames.isBias("lora/lora_kernel_b"))
        #expect(!TensorNames.isBias("fc1.weight"))
        // Matrix factorisation: a per-user bias table, and the factor tables, which are embeddings.
        #expect(TensorNames.isBias("user_biases.weight"))
        #expect(DetectorSupport.isEmbedding("item_factors.weight"))
    }
}
