import ElementTypes
import Foundation
import GradScopeModel
import HDF5

/// A Hugging Face Trainer save: a folder (`checkpoint-500/`, or the output folder holding the final
/// model) with the model's weights (`model.safetensors`, `pytorch_model.bin`, sharded through
/// their `*.index.json`), AdamW's moments in `optimizer.pt`, and `trainer_state.json`, whose
/// `global_step` is the step and whose `log_history` gives the loss and learning rate. One save.
struct TrainerFolderSource: CheckpointSource {
    var name: String { "trainer-folder" }
    func recognises(path: String, head: [UInt8]) -> Bool { TrainerFolder.modelFile(in: path) != nil }
    func open(_ path: String, options: LoadOptions) throws -> [OpenCheckpoint] { [try TrainerFolder.open(path)] }
}

/// Reading Hugging Face Trainer folders.
package enum TrainerFolder {
    /// The model files of a save, in the order they are preferred.
    static let modelNames = [
        "model.safetensors.index.json", "model.safetensors", "pytorch_model.bin.index.json", "pytorch_model.bin",
        "adapter_model.safetensors", "adapter_model.bin",
    ]
    /// Files the Trainer writes beside the model that are not read as tensors.
    static let companionNames: Set<String> = [
        "trainer_state.json", "optimizer.pt", "scheduler.pt", "rng_state.pth", "training_args.bin", "config.json",
        "generation_config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt", "vocab.json",
        "merges.txt", "adapter_config.json", "README.md", "scaler.pt", "sentencepiece.bpe.model", "spiece.model", "tokenizer.model",
        "added_tokens.json", "preprocessor_config.json",
    ]
    /// The largest `trainer_state.json` read (its log history is about 150 bytes per logging step).
    static let maxState = 64 * 1024 * 1024

    /// Whether `path` is a directory (symbolic links followed).
    static func isDirectory(_ path: String) -> Bool {
        var isDirectory: ObjCBool = false
        return FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) && isDirectory.boolValue
    }

    /// Whether `path` is a regular file (symbolic links followed).
    static func isRegularFile(_ path: String) -> Bool {
        var isDirectory: ObjCBool = false
        return FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) && !isDirectory.boolValue
            && FileProbe.irregularKind(path) == nil
    }

    /// The model file of a folder that is a save, or nil when `folder` is not a directory holding one.
    package static func modelFile(in folder: String) -> String? {
        guard isDirectory(folder) else { return nil }
        return modelNames.lazy.map { (folder as NSString).appendingPathComponent($0) }.first(where: isRegularFile)
    }

    /// Whether `folder` is a save the Trainer (or `save_pretrained`) wrote: a model file with a
    /// `config.json`, a `trainer_state.json`, an `optimizer.pt` or `training_args.bin` beside it.
    package static func isSave(_ folder: String) -> Bool {
        guard modelFile(in: folder) != nil else { return false }
        return ["config.json", "trainer_state.json", "optimizer.pt", "training_args.bin", "adapter_config.json"].contains {
            isRegularFile((folder as NSString).appendingPathComponent($0))
        }
    }

    /// The step a Trainer checkpoint folder's name gives: `checkpoint-500` is 500.
    package static func checkpointNumber(_ name: String) -> Int? {
        guard name.hasPrefix("checkpoint-") else { return nil }
        let digits = name.dropFirst("checkpoint-".count)
        guard !digits.isEmpty, digits.count <= 15, digits.allSatisfy({ $0.isASCII && $0.isNumber }) else { return nil }
        return Int(digits)
    }

    /// One logged entry of `log_history`.
    package typealias LogEntry = TrainingLogEntry

    /// What `trainer_state.json` says.
    package struct State: Sendable {
        package var globalStep: Int?
        package var epoch: Double?
        /// The training entries of `log_history` (those with a loss, a learning rate or a gradient norm), in order.
        package var history: [LogEntry]

        /// The logged training entry at `step`, else the last one before it that holds a loss.
        package func entry(atOrBefore step: Int) -> LogEntry? {
            if let exact = history.last(where: { $0.step == step && $0.loss != nil }) { return exact }
            return history.last { $0.step <= step && $0.loss != nil }
        }
    }

    /// Reads a `trainer_state.json`; nil when there is none, an error when it is not valid.
    package static func readState(_ path: String) throws -> State? {
        guard isRegularFile(path) else { return nil }
        func refuse(_ reason: String) -> CheckpointError { CheckpointError(file: path, reason: "not a valid trainer_state.json: " + reason) }
        let (size, _) = FileIdentity.of(path)
        guard size <= maxState else { throw refuse("\(size) bytes, over the \(maxState / 1024 / 1024) MB limit") }
        guard let data = FileManager.default.contents(atPath: path) else { throw CheckpointError(file: path, reason: "cannot be read") }
        let json = try SafetensorsFile.parseObject(quotingNonFinite([UInt8](data)), what: "state", refuse: refuse)
        func number(_ value: Any?) -> Double? {
            if let text = value as? String { return nonFinite[text] }
            guard let number = value as? NSNumber else { return nil }
            return number.doubleValue
        }
        func step(_ value: Any?) -> Int? {
            guard let value = number(value), value.isFinite, value >= 0, value < 1e15, value == value.rounded() else { return nil }
            return Int(value)
        }
        var state = State(globalStep: step(json["global_step"]), epoch: number(json["epoch"]), history: [])
        for case let item as [String: Any] in (json["log_history"] as? [Any]) ?? [] {
            guard let at = step(item["step"]) else { continue }
            let entry = LogEntry(
                step: at, loss: number(item["loss"]), gradNorm: number(item["grad_norm"]), learningRate: number(item["learning_rate"]))
            if entry.loss != nil || entry.gradNorm != nil || entry.learningRate != nil { state.history.append(entry) }
        }
        return state
    }

    /// The training log of a run of Trainer saves: the `log_history` of the last save's
    /// `trainer_state.json` (the Trainer keeps the whole history in every save, so the last one holds
    /// every logging step up to it), in step order; nil when no save is a Trainer folder with a
    /// logged loss or gradient norm.
    package static func trainingLog(of checkpoints: [Checkpoint]) -> [TrainingLogEntry]? {
        guard let last = checkpoints.last(where: { ($0.layout == .safetensors || $0.layout == .torch) && isDirectory($0.source) }),
            let state = try? readState((last.source as NSString).appendingPathComponent("trainer_state.json"))
        else { return nil }
        let history = state.history.enumerated().sorted { ($0.element.step, $0.offset) < ($1.element.step, $1.offset) }.map(\.element)
        guard history.contains(where: { $0.loss != nil || $0.gradNorm != nil }) else { return nil }
        return history
    }

    /// The non-finite numbers Python's json writes, by the name they are quoted as.
    static let nonFinite: [String: Double] = ["NaN": .nan, "Infinity": .infinity, "-Infinity": -.infinity]

    /// `bytes` with Python's bare `NaN`, `Infinity` and `-Infinity` (a diverged loss) quoted as strings
    /// outside string literals, so that a strict JSON parser reads them.
    static func quotingNonFinite(_ bytes: [UInt8]) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(bytes.count + 64)
        var strings = JSONStringTracker()
        var index = 0
        while index < bytes.count {
            let byte = bytes[index]
            if strings.isInString(byte) {
                out.append(byte)
                index += 1
                continue
            }
            var matched = false
            let candidate = byte == UInt8(ascii: "-") || byte == UInt8(ascii: "I") || byte == UInt8(ascii: "N")
            for token in ["-Infinity", "Infinity", "NaN"] where candidate {
                let utf8 = Array(token.utf8)
                if index + utf8.count <= bytes.count, Array(bytes[index..<index + utf8.count]) == utf8 {
                    out += [UInt8(ascii: "\"")] + utf8 + [UInt8(ascii: "\"")]
                    index += utf8.count
                    matched = true
                    break
                }
            }
            if !matched {
                out.append(byte)
                index += 1
            }
        }
        return out
    }

    /// Opens a Trainer folder as one save: its weights, the optimizer's moments matched to them,
    /// its step and the loss and learning rate logged at it.
    static func open(_ folder: String) throws -> OpenCheckpoint {
        guard let model = modelFile(in: folder) else {
            throw CheckpointError(file: folder, reason: "a folder without model.safetensors or pytorch_model.bin: not a Trainer save")
        }
        let modelName = (model as NSString).lastPathComponent
        let torch = modelName.hasSuffix(".bin") || modelName.hasSuffix(".bin.index.json")
        var files: [SafetensorsFile] = []
        var weightMap: [String: String]?
        var notes: [String] = []
        var skipped: [SkippedItem] = []
        var paths = [model]
        if modelName.hasSuffix(".index.json") {
            weightMap = try SafetensorsFile.weightMap(of: model)
            paths = try SafetensorsFile.shardFiles(of: model)
        }
        for path in paths {
            if torch {
                let (file, fileNotes, fileSkipped, _) = try TorchArchive.read(path)
                files.append(file)
                notes += fileNotes
                skipped += fileSkipped
            } else {
                files.append(try SafetensorsFile(path: path))
            }
        }
        let modelFiles = files.count
        // AdamW's moments: `state/<index>/exp_avg`, matched to the parameters below.
        var groups: [TorchParamGroup] = []
        let optimizerPath = (folder as NSString).appendingPathComponent("optimizer.pt")
        if isRegularFile(optimizerPath) {
            do {
                let (file, _, optimizerSkipped, paramGroups) = try TorchArchive.read(optimizerPath)
                files.append(file)
                skipped += optimizerSkipped
                groups = paramGroups
            } catch let error as CheckpointError {
                // The weights are still worth reading without the moments.
                skipped.append(SkippedItem(item: optimizerPath, kind: .unreadable, reason: error.reason))
            }
        }
        let layout: LayoutKind = torch ? .torch : .safetensors
        var open = try SafetensorsFile.checkpoint(
            files, source: folder, weightMap: weightMap, layout: layout, extraSkipped: skipped, mapOptimizerState: false)
        var checkpoint = open.checkpoint
        checkpoint.metadata.framework = "pytorch"
        let what = files.count > modelFiles ? "weights from \(modelName), optimizer state from optimizer.pt" : "weights from \(modelName)"
        notes.append("Hugging Face Trainer save: \(what)")
        if files.count > modelFiles {
            notes.append(mapOptimizerState(&checkpoint.tensors, groups: groups, modelFiles: modelFiles))
        }
        // The step: trainer_state.json's global_step, else the folder's name (`checkpoint-<global_step>`).
        let statePath = (folder as NSString).appendingPathComponent("trainer_state.json")
        let state: State?
        do {
            state = try readState(statePath)
        } catch let error as CheckpointError {
            state = nil
            checkpoint.skipped.append(SkippedItem(item: statePath, kind: .unreadable, reason: error.reason))
        }
        let named = checkpointNumber((folder as NSString).lastPathComponent)
        if let step = state?.globalStep ?? named {
            checkpoint.metadata.step = step
            checkpoint.metadata.stepSource = .trainerGlobalStep
            checkpoint.metadata.nameKey = nil
            if let named, let global = state?.globalStep, named != global {
                notes.append("the folder is named for step \(named) but trainer_state.json says global_step \(global): \(global) is used")
            }
        }
        if let epoch = state?.epoch, epoch.isFinite, epoch >= 0, epoch < 1e15 { checkpoint.metadata.epoch = Int(epoch) }
        if let state, let step = checkpoint.metadata.step, let entry = state.entry(atOrBefore: step) {
            checkpoint.metadata.loss = entry.loss
            if let rate = entry.learningRate { checkpoint.metadata.learningRate = rate }
            var logged = "loss \(formatSignificant(entry.loss ?? .nan))"
            if let rate = entry.learningRate { logged += ", learning rate \(formatSignificant(rate))" }
            if let norm = entry.gradNorm { logged += ", gradient norm \(formatSignificant(norm))" }
            notes.append(
                "trainer_state.json: \(logged) logged at step \(entry.step)\(entry.step == step ? "" : ", the last logging step before the save")")
        }
        checkpoint.notes = checkpoint.notes.filter { !$0.hasPrefix("sharded save") } + notes
        if weightMap != nil { checkpoint.notes.append("sharded save: \(modelFiles) shard file(s) read as one step") }
        open.checkpoint = checkpoint
        return open
    }

    /// Whether a parameter is one the Trainer exempts from weight decay (its second parameter
    /// group): biases and normalisation layers' parameters.
    static func exemptFromDecay(_ name: String) -> Bool {
        let lower = name.lowercased()
        if lower.contains("bias") || lower.contains("layernorm") || lower.contains("layer_norm") || lower.contains("rmsnorm") { return true }
        let parts = lower.split(separator: ".")
        return parts.contains { $0 == "norm" || $0.hasSuffix("_norm") || $0.hasPrefix("ln_") || $0 == "ln" || $0.hasPrefix("norm") }
    }

    /// Sibling modules in the order models register them, where the order of their names differs
    /// (`query` before `key`, `self` before `output`, `weight` before `bias`; lower-cased).
    static let registrationOrders: [[String]] = [
        ["query", "key", "value"], ["q", "k", "v", "o"], ["q_proj", "k_proj", "v_proj", "o_proj"], ["wq", "wk", "wv", "wo"],
        ["q_lin", "k_lin", "v_lin", "out_lin"], ["query_key_value", "dense"], ["self", "output"], ["attention", "intermediate", "output"],
        ["self_attn", "mlp", "input_layernorm", "post_attention_layernorm"], ["gate_proj", "up_proj", "down_proj"],
        ["w1", "w3", "w2"], ["dense", "layernorm"], ["ln_1", "attn", "ln_2", "mlp"], ["c_attn", "c_proj"], ["c_fc", "c_proj"],
        ["embed_tokens", "layers", "norm"], ["model", "lm_head"], ["transformer", "lm_head"], ["weight", "bias"],
        ["embeddings", "encoder", "pooler"], ["word_embeddings", "position_embeddings", "token_type_embeddings", "layernorm"],
        ["wte", "wpe", "h", "ln_f"],
    ]

    /// How two parameter names compare in the model's order, and whether that order is known: their
    /// first differing segment is ordered by number, or by a known registration order, else (not
    /// known) by name.
    package static func moduleOrder(_ a: String, _ b: String) -> (less: Bool, known: Bool) {
        let sa = a.split(separator: "."), sb = b.split(separator: ".")
        for (x, y) in zip(sa, sb) where x != y {
            if let nx = Int(x), let ny = Int(y) { return (nx < ny, true) }
            let lx = x.lowercased(), ly = y.lowercased()
            for order in registrationOrders {
                if let ix = order.firstIndex(of: lx), let iy = order.firstIndex(of: ly) { return (ix < iy, true) }
            }
            return (x < y, false)
        }
        return (sa.count < sb.count, true)
    }

    /// Names the optimizer's state (`state/<index>/exp_avg`) after the parameters: index i is the
    /// i-th entry of the param groups' `params` lists. The Trainer puts the parameters with weight
    /// decay in its first group and the exempt ones (biases, norms) in the second, each in the
    /// model's order, so each group's states are given, in order, to the first parameter of their
    /// kind and shape not yet matched, the parameters taken in ``moduleOrder(_:_:)``. A safetensors
    /// file stores its tensors by name, not in the model's order: parameters of one shape whose order
    /// the names do not tell are reported as ambiguous. Returns what was done.
    static func mapOptimizerState(_ tensors: inout [TensorRef], groups: [TorchParamGroup], modelFiles: Int) -> String {
        let stateIndices = tensors.indices.filter { tensors[$0].role == .optimizer && tensors[$0].fileIndex >= modelFiles }
        guard !stateIndices.isEmpty else { return "optimizer.pt holds no moments (no update yet?)" }
        func number(_ tensor: TensorRef) -> Int? { tensor.name.split(separator: "/").last.flatMap { Int($0) } }
        let parameters = tensors.indices.filter {
            tensors[$0].role == .weight && tensors[$0].fileIndex < modelFiles && !GenericLayout.isRunningStatistic(tensors[$0].name)
        }.sorted { moduleOrder(tensors[$0].name, tensors[$1].name).less }
        // The shape of each index's state, from its first slot.
        var shapeOf: [Int: [Int]] = [:]
        for index in stateIndices { if let n = number(tensors[index]), shapeOf[n] == nil { shapeOf[n] = tensors[index].shape } }
        let ordered = groups.isEmpty ? [shapeOf.keys.sorted()] : groups.map(\.params)
        let split = groups.count == 2
        /// Matches the indices of each group, or nil when some state has no parameter of its shape;
        /// with the parameters whose place among others of their shape the names do not tell.
        /// The parameters of each kind and shape are taken in order, so the work is linear.
        func assign(bySplit: Bool) -> (map: [Int: Int], ambiguous: Set<Int>)? {
            struct Bucket: Hashable {
                let exempt: Bool
                let shape: [Int]
            }
            var buckets: [Bucket: (members: [Int], next: Int)] = [:]
            for parameter in parameters {
                let key = Bucket(exempt: bySplit && exemptFromDecay(tensors[parameter].name), shape: tensors[parameter].shape)
                buckets[key, default: ([], 0)].members.append(parameter)
            }
            var map: [Int: Int] = [:]
            var ambiguous = Set<Int>()
            for (groupIndex, group) in ordered.enumerated() {
                for index in group {
                    guard let shape = shapeOf[index], map[index] == nil else { continue }
                    let key = Bucket(exempt: bySplit && groupIndex == 1, shape: shape)
                    guard let bucket = buckets[key], bucket.next < bucket.members.count else { return nil }
                    let chosen = bucket.members[bucket.next]
                    // The next of the same kind and shape: their order is a guess when the names do not tell it.
                    if bucket.next + 1 < bucket.members.count {
                        let following = bucket.members[bucket.next + 1]
                        if !moduleOrder(tensors[chosen].name, tensors[following].name).known { ambiguous.formUnion([chosen, following]) }
                    }
                    buckets[key]?.next += 1
                    map[index] = chosen
                }
            }
            // Every state must belong to a group.
            guard Set(map.keys) == Set(shapeOf.keys) else { return nil }
            return (map, ambiguous)
        }
        guard let (map, ambiguous) = (split ? assign(bySplit: true) : nil) ?? assign(bySplit: false) else {
            return
                "optimizer.pt: its state by parameter index could not be matched to the parameters by shape: it is listed under its indices and not used by the detectors"
        }
        for index in stateIndices {
            guard let n = number(tensors[index]), let parameter = map[n] else { continue }
            tensors[index].name = tensors[parameter].name
            tensors[index].layer = tensors[parameter].layer
            tensors[index].unitAxis = tensors[parameter].unitAxis
        }
        var note = "optimizer.pt: the state of \(map.count) parameter(s) matched to the parameters by its param groups and shapes"
        if !ambiguous.isEmpty {
            let names = ambiguous.map { tensors[$0].name }.sorted()
            let listed = names.prefix(3).joined(separator: ", ") + (names.count > 3 ? " and \(names.count - 3) more" : "")
            note +=
                "; ambiguous for \(names.count) of them (\(listed)): parameters of one shape whose order in the model their names do not tell were taken in name order"
        }
        return note
    }

    /// The folders of a Trainer output directory that are saves: `checkpoint-<step>/` holding a
    /// model file, by step; the others (and `checkpoint-*` folders without a model) in `skipped`.
    package static func checkpointFolders(in directory: String, names: [String], skipped: inout [SkippedItem]) -> [String] {
        var folders: [(Int, String)] = []
        for name in names {
            guard let number = checkpointNumber(name) else { continue }
            let path = (directory as NSString).appendingPathComponent(name)
            guard isDirectory(path) else { continue }
            if modelFile(in: path) == nil {
                skipped.append(
                    SkippedItem(
                        item: path, kind: .unreadable,
                        reason: "a Trainer checkpoint folder without model.safetensors or pytorch_model.bin (a save in progress?)"))
                continue
            }
            folders.append((number, path))
        }
        return folders.sorted { $0.0 < $1.0 }.map(\.1)
    }

    /// The bytes a save's folder holds in its model and optimizer files (for progress).
    package static func byteSize(_ folder: String) -> Int {
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: folder) else { return 0 }
        return names.filter { $0.hasSuffix(".safetensors") || $0.hasSuffix(".bin") || $0 == "optimizer.pt" }.reduce(0) { total, name in
            total + ((try? FileManager.default.attributesOfItem(atPath: (folder as NSString).appendingPathComponent(name))[.size] as? Int) ?? 0)
        }
    }
}
