import Foundation
import GradScopeDiagnosis
import GradScopeModel
import GradScopeRendering
import GradScopeSources
import TestSupport
import Testing

/// Hugging Face Trainer output folders: `checkpoint-<step>/` with model.safetensors, optimizer.pt and
/// trainer_state.json, written here as the Trainer writes them.
@Suite("Trainer folders")
struct TrainerFolderTests {
    typealias P = TorchArchiveWriter.P

    /// The parameters of a small model in the order `model.named_parameters()` gives them.
    static let parameters: [(String, [Int])] = [
        ("enc.0.weight", [4, 3]), ("enc.0.bias", [4]), ("enc.1.weight", [4, 4]), ("enc.1.bias", [4]),
        ("norm.weight", [4]), ("norm.bias", [4]), ("head.weight", [2, 4]), ("head.bias", [2]),
    ]
    /// The Trainer's param groups: weights with decay first, then biases and norms, each in model order.
    static let groups: [[String]] = [
        ["enc.0.weight", "enc.1.weight", "head.weight"], ["enc.0.bias", "enc.1.bias", "norm.weight", "norm.bias", "head.bias"],
    ]

    static func count(_ shape: [Int]) -> Int { shape.reduce(1, *) }

    /// model.safetensors of the parameters, each filled with `value(name)` (safetensors stores them sorted by name).
    static func model(_ value: (String) -> Float) -> [UInt8] {
        SafetensorsWriter.file(
            parameters.sorted { $0.0 < $1.0 }.map { SafetensorsWriter.f32($0.0, Array(repeating: value($0.0), count: count($0.1)), shape: $0.1) })
    }

    /// optimizer.pt: `state[i]` = {step, exp_avg = i + 1, exp_avg_sq = (i + 1) / 1000} for parameter i of the
    /// groups' order, and two param groups listing the indices.
    static func optimizer(step: Int) -> [UInt8] {
        let order = groups.flatMap { $0 }
        var storages: [(String, [UInt8])] = []
        var state = P.emptyDict + P.mark
        for (index, name) in order.enumerated() {
            let shape = parameters.first { $0.0 == name }!.1
            let n = count(shape)
            let first = String(storages.count), second = String(storages.count + 1)
            storages.append((first, TorchArchiveWriter.bytes(Array(repeating: Float(index + 1), count: n))))
            storages.append((second, TorchArchiveWriter.bytes(Array(repeating: Float(index + 1) / 1000, count: n))))
            state +=
                P.int(index) + P.emptyDict + P.mark + P.str("step") + P.float(Double(step)) + P.str("exp_avg")
                + P.tensor("FloatStorage", key: first, numel: n, shape: shape) + P.str("exp_avg_sq")
                + P.tensor("FloatStorage", key: second, numel: n, shape: shape) + P.setItems
        }
        state += P.setItems
        var start = 0
        var groupList = P.emptyList + P.mark
        for (number, group) in groups.enumerated() {
            let indices = Array(start..<start + group.count)
            start += group.count
            groupList +=
                P.emptyDict + P.mark + P.str("lr") + P.float(0.01) + P.str("weight_decay") + P.float(number == 0 ? 0.01 : 0)
                + P.str("params") + P.emptyList + P.mark + indices.flatMap { P.int($0) } + P.appends + P.setItems
        }
        groupList += P.appends
        let pickle = P.proto + P.emptyDict + P.mark + P.str("state") + state + P.str("param_groups") + groupList + P.setItems + P.stop
        return TorchArchiveWriter.archive(pickle, storages: storages)
    }

    /// trainer_state.json at `step`, the loss logged every 5 steps; a non-finite number written bare, as Python writes it.
    static func state(step: Int, losses: (Int) -> Double, gradNorms: (Int) -> Double = { _ in 0.5 }) -> Data {
        func number(_ value: Double) -> Any {
            if value.isNaN { return "@NaN" }
            if value.isInfinite { return value > 0 ? "@Infinity" : "@-Infinity" }
            return value
        }
        var history: [[String: Any]] = []
        for logged in stride(from: 5, through: step, by: 5) {
            history.append([
                "step": logged, "loss": number(losses(logged)), "learning_rate": 0.01 - Double(logged) * 1e-4,
                "grad_norm": number(gradNorms(logged)), "epoch": 0.1,
            ])
        }
        let data = try! JSONSerialization.data(withJSONObject: ["global_step": step, "epoch": 1.0, "log_history": history, "max_steps": 100])
        var text = String(decoding: data, as: UTF8.self)
        for name in ["NaN", "Infinity", "-Infinity"] { text = text.replacingOccurrences(of: "\"@\(name)\"", with: name) }
        return Data(text.utf8)
    }

    /// A Trainer output directory with checkpoint-10, -20, -30 and what the Trainer writes beside them.
    static func outputDirectory(
        _ dir: TemporaryDirectory, losses: @escaping (Int) -> Double = { _ in 0.6931 }, gradNorms: @escaping (Int) -> Double = { _ in 0.5 }
    ) throws {
        for step in [10, 20, 30] {
            let folder = dir.path("checkpoint-\(step)")
            try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
            try SafetensorsWriter.write(model { name in Float(name.count) + Float(step) / 100 }, to: folder + "/model.safetensors")
            try SafetensorsWriter.write(optimizer(step: step), to: folder + "/optimizer.pt")
            try state(step: step, losses: losses, gradNorms: gradNorms).write(to: URL(fileURLWithPath: folder + "/trainer_state.json"))
            try Data("{\"model_type\": \"toy\"}".utf8).write(to: URL(fileURLWithPath: folder + "/config.json"))
            try Data([0x80, 0x02, 0x2E]).write(to: URL(fileURLWithPath: folder + "/training_args.bin"))
        }
        try FileManager.default.createDirectory(atPath: dir.path("runs/Dec01"), withIntermediateDirectories: true)
    }

    @Test(
        "a checkpoint folder is one save: weights, AdamW's moments named after their parameters by param group, step and loss from trainer_state.json"
    )
    func oneFolder() throws {
        let dir = try TemporaryDirectory()
        try Self.outputDirectory(dir) { step in 0.5 + Double(step) / 1000 }
        let report = try Analysis.inspect(dir.path("checkpoint-20"))
        #expect(report.step == 20)
        #expect(report.loss == 0.52)
        #expect(report.lr == 0.01 - 20e-4)
        #expect(report.layout == "safetensors")
        let order = Self.groups.flatMap { $0 }
        for tensor in report.tensors where tensor.role == .optimizer {
            let index = try #require(order.firstIndex(of: tensor.name), "\(tensor.name) is a parameter")
            let expected = tensor.slot == "exp_avg" ? Double(index + 1) : Double(Float(index + 1) / 1000)
            #expect(tensor.stats?.mean == expected, "\(tensor.name) \(tensor.slot ?? "")")
        }
        #expect(report.tensors.filter { $0.role == .optimizer }.count == 2 * Self.parameters.count)
        #expect(report.tensors.filter { $0.role == .weight }.count == Self.parameters.count)
        #expect(report.notes.contains { $0.contains("matched to the parameters by its param groups") })
        #expect(report.notes.contains { $0.contains("trainer_state.json: loss 0.52") })

        // Given alone, the folder is a run of one save.
        let run = try RunLoader.load(dir.path("checkpoint-20"))
        #expect(run.checkpoints.map { $0.metadata.step } == [20])

        // save_pretrained's output, the model and its config alone: one save, without a step of its own.
        let final = dir.path("final")
        try FileManager.default.createDirectory(atPath: final, withIntermediateDirectories: true)
        try SafetensorsWriter.write(Self.model { _ in 0.5 }, to: final + "/model.safetensors")
        try Data("{}".utf8).write(to: URL(fileURLWithPath: final + "/config.json"))
        let finalRun = try RunLoader.load(final)
        #expect(finalRun.checkpoints.count == 1)
        #expect(finalRun.checkpoints.first?.tensors.count == Self.parameters.count)
        #expect(finalRun.skipped.isEmpty)
    }

    @Test("a Trainer output directory is a run of its checkpoint folders; other entries are skipped with the reason")
    func outputDirectoryRun() throws {
        let dir = try TemporaryDirectory()
        try Self.outputDirectory(dir)
        // The final model beside them (trainer.save_model) without trainer_state.json has no step of its own.
        try SafetensorsWriter.write(Self.model { _ in 1 }, to: dir.path("model.safetensors"))
        try Data("{}".utf8).write(to: URL(fileURLWithPath: dir.path("config.json")))
        // A checkpoint folder still being written holds no model yet.
        try FileManager.default.createDirectory(atPath: dir.path("checkpoint-40"), withIntermediateDirectories: true)
        let run = try RunLoader.load(dir.url.path)
        #expect(run.checkpoints.map { $0.metadata.step } == [10, 20, 30])
        #expect(run.checkpoints.allSatisfy { $0.metadata.loss == 0.6931 })
        #expect(run.checkpoints.allSatisfy { $0.metadata.stepSource == .trainerGlobalStep })
        func reason(_ name: String) -> String? { run.skipped.first { $0.item == dir.path(name) }?.reason }
        #expect(reason("model.safetensors")?.contains("final model") == true)
        #expect(reason("checkpoint-40")?.contains("without model.safetensors") == true)
        #expect(reason("runs")?.contains("not a save") == true)
        #expect(reason("config.json")?.contains("not a save") == true)

        // With its own trainer_state.json after the last checkpoint, the final model is the last save.
        try Self.state(step: 35, losses: { _ in 0.6931 }).write(to: URL(fileURLWithPath: dir.path("trainer_state.json")))
        let withFinal = try RunLoader.load(dir.url.path)
        #expect(withFinal.checkpoints.map { $0.metadata.step } == [10, 20, 30, 35])
        #expect(withFinal.checkpoints.last?.source == dir.url.path)

        // The loss at ln 2 in every save is the loss-plateau rule's to find.
        let (report, _) = try Analysis.scan(dir.url.path)
        #expect(report.findings.contains { $0.kind == .lossPlateau })
        #expect(report.loss.map(\.loss) == [0.6931, 0.6931, 0.6931, 0.6931])
    }

    @Test("pytorch_model.bin instead of model.safetensors; a hostile optimizer.pt is skipped with its reason and the weights still read")
    func torchModelAndHostileOptimizer() throws {
        let dir = try TemporaryDirectory()
        let folder = dir.path("checkpoint-7")
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        let weights = Self.parameters.map { ($0.0, Array(repeating: Float(0.25), count: Self.count($0.1)), $0.1) }
        try SafetensorsWriter.write(TorchArchiveTests.archive(weights), to: folder + "/pytorch_model.bin")
        let hostile = P.proto + P.global("os", "system") + P.mark + P.str("echo owned") + P.tuple + P.reduce + P.stop
        try SafetensorsWriter.write(TorchArchiveWriter.archive(hostile, storages: []), to: folder + "/optimizer.pt")
        let run = try RunLoader.load(dir.url.path)
        let checkpoint = try #require(run.checkpoints.first)
        #expect(checkpoint.metadata.step == 7)
        #expect(checkpoint.layout == .torch)
        #expect(checkpoint.tensors.count == Self.parameters.count)
        let skipped = checkpoint.skipped.first { $0.item.hasSuffix("optimizer.pt") }
        #expect(skipped?.reason.contains("os.system") == true)
    }

    @Test("a broken trainer_state.json is skipped with the reason; the step then comes from the folder's name")
    func brokenState() throws {
        let dir = try TemporaryDirectory()
        try Self.outputDirectory(dir)
        try Data("{\"global_step\": [[[[".utf8).write(to: URL(fileURLWithPath: dir.path("checkpoint-20/trainer_state.json")))
        let opened = try #require(try CheckpointLoader.open(dir.path("checkpoint-20")).first)
        #expect(opened.checkpoint.metadata.step == 20)
        #expect(opened.checkpoint.metadata.stepSource == .trainerGlobalStep)
        #expect(opened.checkpoint.metadata.loss == nil)
        #expect(
            opened.checkpoint.skipped.contains { $0.item.hasSuffix("trainer_state.json") && $0.reason.contains("not a valid trainer_state.json") })
    }

    @Test("trainer_state.json: NaN and Infinity as Python writes them, the last logged loss at or before the save")
    func stateParsing() throws {
        let dir = try TemporaryDirectory()
        let text = """
            {"global_step": 30, "log_history": [{"step": 10, "loss": 0.9, "learning_rate": 0.001},
            {"step": 20, "loss": NaN, "grad_norm": Infinity}, {"step": 25, "eval_loss": 0.4},
            {"step": 30, "train_loss": 0.7, "train_runtime": 3.0}]}
            """
        try Data(text.utf8).write(to: URL(fileURLWithPath: dir.path("trainer_state.json")))
        let state = try #require(try TrainerFolder.readState(dir.path("trainer_state.json")))
        #expect(state.globalStep == 30)
        #expect(state.history.map(\.step) == [10, 20])
        #expect(state.history[1].loss?.isNaN == true)
        #expect(state.history[1].gradNorm == .infinity)
        #expect(state.entry(atOrBefore: 30)?.step == 20)
        #expect(state.entry(atOrBefore: 15)?.loss == 0.9)
        #expect(state.entry(atOrBefore: 5) == nil)
    }

    @Test("parameters of one shape are ordered as models register them where the names tell it, and said to be ambiguous where not")
    func moduleOrder() throws {
        let bert = [
            "bert.pooler.dense.weight", "bert.encoder.layer.10.attention.self.query.weight", "bert.encoder.layer.2.attention.output.dense.weight",
            "bert.encoder.layer.2.attention.self.value.weight", "bert.encoder.layer.2.attention.self.key.weight",
            "bert.encoder.layer.2.attention.self.query.weight",
        ]
        let sorted = bert.sorted { TrainerFolder.moduleOrder($0, $1).less }
        #expect(
            sorted == [
                "bert.encoder.layer.2.attention.self.query.weight", "bert.encoder.layer.2.attention.self.key.weight",
                "bert.encoder.layer.2.attention.self.value.weight", "bert.encoder.layer.2.attention.output.dense.weight",
                "bert.encoder.layer.10.attention.self.query.weight", "bert.pooler.dense.weight",
            ])
        #expect(TrainerFolder.moduleOrder("model.layers.0.self_attn.q_proj.weight", "model.layers.0.self_attn.o_proj.weight") == (true, true))
        #expect(TrainerFolder.moduleOrder("blocks.alpha.weight", "blocks.beta.weight") == (true, false))

        // Two parameters of one shape with names that do not tell their order: mapped, and said to be ambiguous.
        let dir = try TemporaryDirectory()
        let folder = dir.path("checkpoint-5")
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        try SafetensorsWriter.write(
            SafetensorsWriter.file([
                SafetensorsWriter.f32("alpha.weight", [1, 2, 3, 4], shape: [2, 2]),
                SafetensorsWriter.f32("beta.weight", [5, 6, 7, 8], shape: [2, 2]),
            ]), to: folder + "/model.safetensors")
        let state =
            P.emptyDict + P.mark + P.int(0) + P.emptyDict + P.mark + P.str("exp_avg") + P.tensor("FloatStorage", key: "0", numel: 4, shape: [2, 2])
            + P.setItems + P.int(1) + P.emptyDict + P.mark + P.str("exp_avg") + P.tensor("FloatStorage", key: "1", numel: 4, shape: [2, 2])
            + P.setItems
            + P.setItems
        let groupList =
            P.emptyList + P.mark + P.emptyDict + P.mark + P.str("params") + P.emptyList + P.mark + P.int(0) + P.int(1) + P.appends + P.setItems
            + P.appends
        let pickle = P.proto + P.emptyDict + P.mark + P.str("state") + state + P.str("param_groups") + groupList + P.setItems + P.stop
        let ones = TorchArchiveWriter.bytes([1, 1, 1, 1]), twos = TorchArchiveWriter.bytes([2, 2, 2, 2])
        try SafetensorsWriter.write(TorchArchiveWriter.archive(pickle, storages: [("0", ones), ("1", twos)]), to: folder + "/optimizer.pt")
        let report = try Analysis.inspect(folder)
        #expect(Set(report.tensors.filter { $0.role == .optimizer }.map(\.name)) == ["alpha.weight", "beta.weight"])
        #expect(report.notes.contains { $0.contains("ambiguous for 2 of them") })
        #expect(report.step == 5)
    }

    @Test("a Trainer run with a damaged file in each of its folders: every folder read or skipped with the reason, never a crash")
    func damagedFolders() throws {
        let dir = try TemporaryDirectory()
        let run = dir.path("output")
        try FileManager.default.copyItem(atPath: Self.sample, toPath: run)
        func damage(_ relative: String, _ change: (inout [UInt8]) -> Void) throws {
            let path = run + "/" + relative
            var bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
            change(&bytes)
            try Data(bytes).write(to: URL(fileURLWithPath: path))
        }
        try damage("checkpoint-60/model.safetensors") { $0 = Array($0.prefix($0.count / 2)) }
        try damage("checkpoint-120/model.safetensors") { $0[3] = 0x7F }
        try damage("checkpoint-180/optimizer.pt") { $0 = Array($0.prefix(1000)) }
        try damage("checkpoint-240/trainer_state.json") { $0 = Array($0.prefix(100)) }
        let loaded = try RunLoader.load(run)
        // Weights cut off or with a header length past the end: the folder is skipped with the reason.
        #expect(loaded.checkpoints.map { $0.metadata.step } == [180, 240, 300])
        let skipped = Dictionary(loaded.skipped.map { ($0.item, $0.reason) }, uniquingKeysWith: { a, _ in a })
        #expect(skipped[run + "/checkpoint-60"] != nil)
        #expect(skipped[run + "/checkpoint-120"]?.contains("header length") == true)
        // A cut-off optimizer.pt or trainer_state.json leaves the weights read, the file skipped with its reason.
        #expect(skipped[run + "/checkpoint-180/optimizer.pt"] != nil)
        #expect(loaded.checkpoints.first { $0.metadata.step == 180 }?.tensors.allSatisfy { $0.role == .weight } == true)
        #expect(skipped[run + "/checkpoint-240/trainer_state.json"]?.contains("not a valid trainer_state.json") == true)
        #expect(loaded.checkpoints.first { $0.metadata.step == 240 }?.metadata.loss == nil)
    }

    /// SampleCheckpoints/trainer-high-lr, written by the real transformers Trainer.
    static let sample = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("SampleCheckpoints/trainer-high-lr").path

    @Test("SampleCheckpoints/trainer-high-lr: five saves of a real Trainer run, the logged loss at ln 2 from step 20 to the last")
    func sampleRun() throws {
        let (report, _) = try Analysis.scan(Self.sample)
        #expect(report.steps == [60, 120, 180, 240, 300])
        #expect(report.layout == "safetensors")
        #expect(report.stepSource == StepSource.trainerGlobalStep.rawValue)
        #expect(
            TextRenderer(style: Style(color: false), explain: false, width: 200).render(report).hasPrefix(
                "gradscope scan \(Self.sample)  (5 steps, safetensors layout, steps 60–300 from the Trainer's global step)"))
        let plateau = try #require(report.findings.first { $0.kind == .lossPlateau })
        // The Trainer logged every 10 steps: the mean loss of steps 1-10 (0.729) lies 5% above ln 2, every
        // later one within 3% of it, so the plateau begins at the second logging step.
        #expect(plateau.firstStep == 20)
        #expect(plateau.evidence["logged_steps"] == .int(29))
        #expect(plateau.evidence["saves"] == .int(5))
        #expect(report.trainingLog?.count == 30)
        #expect(report.trainingLog?.allSatisfy { $0.loss != nil && $0.lr != nil && $0.gradNorm != nil } == true)
        #expect(plateau.lastStep == 300)
        #expect(plateau.severity == .error)
        #expect(report.findings.filter { $0.severity >= .warning }.map(\.kind) == [.lossPlateau])
        #expect(report.loss.allSatisfy { abs(($0.loss ?? 0) - log(2.0)) < 0.03 * log(2.0) })
        #expect(report.loss.allSatisfy { $0.lr != nil })

        // Every moment of optimizer.pt is named after a parameter of the model.
        let last = try Analysis.inspect(Self.sample + "/checkpoint-300")
        let weights = Set(last.tensors.filter { $0.role == .weight }.map(\.name))
        let moments = last.tensors.filter { $0.role == .optimizer }
        #expect(moments.count == 2 * weights.count)
        #expect(moments.allSatisfy { weights.contains($0.name) })
    }
}
