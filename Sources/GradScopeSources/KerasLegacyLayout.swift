import ElementTypes
import GradScopeModel
import HDF5

/// Legacy Keras `.h5`: full models (`model.save("m.h5")`, weights under
/// `/model_weights`) and `save_weights` files (the same content at the root),
/// written by Keras 1, Keras 2, tf.keras and Keras 3.
///
/// Weights are resolved through the `layer_names` and `weight_names`
/// attributes, never by assuming a depth. Optimizer state under
/// `/optimizer_weights` is matched to weights by name where the writer named
/// it (tf.keras 2.x, Keras 3) and by position and shape where it did not
/// (Keras 1, Keras 2.0-2.3), following HDF5-NOTES.md.
package enum KerasLegacyLayout {
    package static func weightsRoot(_ file: HDF5File, root: String) -> String? {
        let modelWeights = (root == "/" ? "" : root) + "/model_weights"
        if file.exists(modelWeights), (try? file.stringList("layer_names", at: modelWeights)) != nil {
            return modelWeights
        }
        // A root `layer_names` that is one JSON string (NeuPy) is not Keras's list of names.
        if let names = try? file.stringList("layer_names", at: root), !names.isEmpty,
            !((names.count == 1 && names[0].hasPrefix("[")) || names[0].hasPrefix("{"))
        {
            return root
        }
        return nil
    }

    package static let counterNames: Set<String> = ["iterations", "iter", "iteration"]
    package static let slotSuffixes: [String] = [
        "momentum", "velocity", "m", "v", "vhat", "rms", "accumulator", "delta_accumulator",
        "average_gradient", "velocity_hat", "u",
    ]

    package static func read(
        file: HDF5File, root: String, weightsRoot: String, source: String
    ) -> (StepMetadata, [TensorRef], [SkippedItem], [String], [String]) {
        var skipped: [SkippedItem] = []
        var notes: [String] = []
        var metadata = StepMetadata(framework: "keras")
        let version =
            LayoutSupport.stringAttribute(file, ["keras_version"], at: weightsRoot)
            ?? LayoutSupport.stringAttribute(file, ["keras_version"], at: root)
        let backend =
            LayoutSupport.stringAttribute(file, ["backend"], at: weightsRoot)
            ?? LayoutSupport.stringAttribute(file, ["backend"], at: root)
        if let version { metadata.framework = "keras \(version)" }
        let trainingConfig = LayoutSupport.stringAttribute(file, ["training_config"], at: root)
        metadata.optimizer = LayoutSupport.optimizerClass(fromTrainingConfig: trainingConfig)

        let layerNames = ((try? file.stringList("layer_names", at: weightsRoot)) ?? nil) ?? []
        let prefix = weightsRoot == "/" ? "" : weightsRoot
        var weights: [TensorRef] = []
        var layers: [String] = []
        var nonTrainable = Set<Int>()
        for layer in layerNames {
            let group = prefix + "/" + layer
            guard let weightNames = (try? file.stringList("weight_names", at: group)) ?? nil else {
                skipped.append(SkippedItem(item: source + ":" + group, reason: "layer listed in layer_names has no weight_names"))
                continue
            }
            if !weightNames.isEmpty { layers.append(layer) }
            for weightName in weightNames {
                let path = group + "/" + weightName
                guard let info = try? file.datasetInfo(path) else {
                    skipped.append(
                        SkippedItem(item: source + ":" + path, kind: .unreadable, reason: "named in weight_names but missing or unreadable"))
                    continue
                }
                if let refusal = info.refusal(limits: file.options.limits, followLinks: file.options.followLinks) {
                    skipped.append(SkippedItem(item: source + ":" + path, kind: .unreadable, reason: refusal))
                    continue
                }
                guard info.type.isFloatingPoint else {
                    skipped.append(SkippedItem(item: source + ":" + path, reason: "\(info.type) data, not a trained tensor"))
                    continue
                }
                var name = weightName.hasSuffix(":0") ? String(weightName.dropLast(2)) : weightName
                if !name.hasPrefix(layer + "/"), let range = name.range(of: "/" + layer + "/") {
                    name = String(name[name.index(after: range.lowerBound)...])
                }
                let lower = name.lowercased()
                if lower.contains("moving_mean") || lower.contains("moving_variance") || lower.contains("running_") {
                    nonTrainable.insert(weights.count)
                }
                var unitAxis = kerasUnitAxis(info.shape)
                if backend == "theano" && info.shape.count >= 3 { unitAxis = 0 }
                weights.append(
                    TensorRef(
                        name: name, layer: layer, role: .weight, shape: info.shape, dtype: info.type,
                        unitAxis: unitAxis, path: path))
            }
        }

        var tensors = weights
        let optimizerGroup = (root == "/" ? "" : root) + "/optimizer_weights"
        if file.exists(optimizerGroup), let optimizerNames = (try? file.stringList("weight_names", at: optimizerGroup)) ?? nil {
            let (slotTensors, trainable, optimizerNotes, optimizerSkipped) = matchOptimizer(
                file: file, group: optimizerGroup, names: optimizerNames, weights: weights, nonTrainable: nonTrainable,
                metadata: &metadata, source: source)
            tensors.append(contentsOf: slotTensors)
            notes.append(contentsOf: optimizerNotes)
            skipped.append(contentsOf: optimizerSkipped)
            if let trainable {
                for index in weights.indices { tensors[index].trainable = trainable.contains(index) }
            }
        }
        return (metadata, tensors, skipped, notes, layers)
    }

    /// Maps every optimizer variable to its weight and slot.
    package static func matchOptimizer(
        file: HDF5File, group: String, names: [String], weights: [TensorRef], nonTrainable: Set<Int>,
        metadata: inout StepMetadata, source: String
    )
        -> ([TensorRef], Set<Int>?, [String], [SkippedItem])
    {
        var skipped: [SkippedItem] = []
        var notes: [String] = []
        var named: [(index: Int, slot: String, info: DatasetInfo, path: String)] = []
        var anonymous: [(name: String, info: DatasetInfo, path: String)] = []
        let weightKeys = weights.map { $0.name }

        // Mixed precision (Keras 3): a LossScaleOptimizer's own counters sit in a group of their own
        // (`loss_scale_optimizer/iteration` stays 0; `dynamic_scale`, `step_counter`) beside the real
        // optimizer's (`rm_sprop/iteration`, `rm_sprop/..._velocity`): its variables are not the optimizer's.
        func isLossScaleWrapper(_ name: String) -> Bool {
            name.split(separator: "/").first.map { $0.lowercased().hasPrefix("loss_scale_optimizer") } ?? false
        }
        if metadata.optimizer == nil, let first = names.first(where: { $0.contains("/") && !isLossScaleWrapper($0) }) {
            var head = String(first.split(separator: "/").first ?? "")
            if head == "training", first.split(separator: "/").count > 1 { head = String(first.split(separator: "/")[1]) }
            if let underscore = head.lastIndex(of: "_"), head[head.index(after: underscore)...].allSatisfy(\.isNumber) {
                head = String(head[..<underscore])
            }
            if !head.isEmpty && head != "training" && !head.hasPrefix("Variable") { metadata.optimizer = head }
        }

        for name in names {
            let path = group + "/" + name
            guard let info = try? file.datasetInfo(path),
                info.refusal(limits: file.options.limits, followLinks: file.options.followLinks) == nil
            else {
                skipped.append(
                    SkippedItem(item: source + ":" + path, kind: .unreadable, reason: "named in weight_names but missing, unreadable or refused"))
                continue
            }
            let stripped = name.hasSuffix(":0") ? String(name.dropLast(2)) : name
            let parts = stripped.split(separator: "/").map(String.init)
            let last = parts.last ?? stripped
            if isLossScaleWrapper(stripped) {
                skipped.append(
                    SkippedItem(
                        item: source + ":" + path, kind: info.shape.isEmpty ? .metadata : .notAnalysed,
                        reason: "the LossScaleOptimizer's own counter or loss scale, not the optimizer's"))
                continue
            }
            if info.shape.isEmpty || counterNames.contains(last) {
                let value = LayoutSupport.scalarValue(file, path)
                if last == "learning_rate" || last == "lr" {
                    if let value { metadata.learningRate = value }
                } else if let value, value.isFinite, value >= 0, value < 1e15, value.rounded() == value, metadata.step == nil {
                    metadata.step = Int(value)
                    metadata.stepSource = .optimizerIterations
                }
                skipped.append(SkippedItem(item: source + ":" + path, kind: .metadata, reason: "optimizer scalar, read as metadata"))
                continue
            }
            if let (index, slot) = resolveNamed(parts: parts, weights: weightKeys) {
                named.append((index, slot, info, path))
            } else {
                anonymous.append((stripped, info, path))
            }
        }

        var result: [TensorRef] = []
        var trainable = Set<Int>()
        for entry in named {
            let weight = weights[entry.index]
            guard entry.info.shape == weight.shape else {
                skipped.append(
                    SkippedItem(
                        item: source + ":" + entry.path,
                        reason: "optimizer slot for \(weight.name) with shape \(entry.info.shape), not \(weight.shape)"))
                continue
            }
            trainable.insert(entry.index)
            result.append(
                TensorRef(
                    name: weight.name, layer: weight.layer, role: .optimizer,
                    slot: LayoutSupport.classifySlot(entry.slot, optimizer: metadata.optimizer),
                    slotName: entry.slot, shape: entry.info.shape, dtype: entry.info.type,
                    unitAxis: weight.unitAxis, path: entry.path))
        }
        if !named.isEmpty { notes.append("optimizer slots matched to weights by name") }

        if !anonymous.isEmpty {
            var slots = anonymous
            // AMSGrad placeholders: a last block of shape-(1,) variables, written even with amsgrad off.
            let placeholderCount = slots.reversed().prefix { $0.info.shape == [1] && $0.name.lowercased().contains("vhat") }.count
            if placeholderCount > 0 {
                for slot in slots.suffix(placeholderCount) {
                    skipped.append(SkippedItem(item: source + ":" + slot.path, reason: "AMSGrad placeholder of shape (1,), unused"))
                }
                slots.removeLast(placeholderCount)
            } else if slots.count % 3 == 0 && slots.count >= 3 {
                let third = slots.count / 3
                if slots.suffix(third).allSatisfy({ $0.info.shape == [1] }) && !slots.prefix(third).allSatisfy({ $0.info.shape == [1] }) {
                    for slot in slots.suffix(third) {
                        skipped.append(SkippedItem(item: source + ":" + slot.path, reason: "AMSGrad placeholder of shape (1,), unused"))
                    }
                    slots.removeLast(third)
                }
            }
            let slotNames = blockedSlotNames(optimizer: metadata.optimizer)
            let candidates = weights.enumerated().map {
                OptimizerMatching.Candidate(shape: $0.element.shape, mayBeTrainable: !nonTrainable.contains($0.offset))
            }
            if let (perVariable, assignments, inOrder) = OptimizerMatching.matchAny(
                slots: slots.map(\.info.shape), weights: candidates,
                preferred: slotNames.map { [$0.count] } ?? [], blocked: true)
            {
                let kinds = (slotNames?.count == perVariable) ? slotNames ?? [] : defaultBlockedNames(perVariable)
                for assignment in assignments {
                    let weight = weights[assignment.weight]
                    let slot = slots[assignment.slot]
                    trainable.insert(assignment.weight)
                    var slotName = kinds[assignment.kind]
                    let lower = slot.name.lowercased().split(separator: "/").last.map(String.init) ?? ""
                    if lower.hasPrefix("m_") {
                        slotName = "m"
                    } else if lower.hasPrefix("v_") {
                        slotName = "v"
                    } else if lower.hasPrefix("moment_") {
                        slotName = "momentum"
                    }
                    result.append(
                        TensorRef(
                            name: weight.name, layer: weight.layer, role: .optimizer,
                            slot: LayoutSupport.classifySlot(slotName, optimizer: metadata.optimizer),
                            slotName: slotName, shape: slot.info.shape, dtype: slot.info.type,
                            unitAxis: weight.unitAxis, path: slot.path))
                }
                notes.append(
                    inOrder
                        ? "anonymous optimizer slots matched to weights by position and shape (\(perVariable) per weight)"
                        : "anonymous optimizer slots matched to weights by shape only (\(perVariable) per weight): the file's order is not the optimizer's, so slots of same-shaped weights may be swapped"
                )
            } else {
                notes.append("\(slots.count) anonymous optimizer slots could not be matched to the weights by shape; they are not used")
                for slot in slots {
                    skipped.append(
                        SkippedItem(item: source + ":" + slot.path, reason: "anonymous optimizer slot that matches no weight by position and shape"))
                }
            }
        }
        let matchedAny = !result.isEmpty
        return (result, matchedAny ? trainable : nil, notes, skipped)
    }

    /// Resolves a named slot (`Adam/dense/kernel/m`, `Adam/m/dense/kernel`,
    /// `adam/sequential_dense_kernel_momentum`) to a weight index and slot name.
    package static func resolveNamed(parts: [String], weights: [String]) -> (Int, String)? {
        guard parts.count >= 2 else { return nil }
        var body = parts
        if body.first == "training" { body.removeFirst() }
        guard body.count >= 2 else { return nil }
        body.removeFirst()  // the optimizer's name: Adam, SGD, adam, Adam_1 ...
        // tf.keras 2.11+: <slot>/<layer>/<var>
        if body.count >= 3, slotSuffixes.contains(body[0]) {
            if let index = findWeight(body.dropFirst().joined(separator: "/"), in: weights) { return (index, body[0]) }
        }
        // tf.keras 2.2-2.10: <layer>/<var>/<slot>
        if body.count >= 2, let last = body.last, slotSuffixes.contains(last) {
            if let index = findWeight(body.dropLast().joined(separator: "/"), in: weights) { return (index, last) }
        }
        // Keras 3 legacy: <model>_<layer>_<var>_<slot>, flattened with underscores.
        if body.count == 1 {
            let flat = body[0]
            for suffix in slotSuffixes.sorted(by: { $0.count > $1.count }) where flat.hasSuffix("_" + suffix) {
                let stem = String(flat.dropLast(suffix.count + 1))
                var best: (Int, Int)?
                for (index, weight) in weights.enumerated() {
                    let weightFlat = weight.replacingOccurrences(of: "/", with: "_")
                    if stem == weightFlat || stem.hasSuffix("_" + weightFlat) {
                        if best == nil || weightFlat.count > best?.1 ?? 0 { best = (index, weightFlat.count) }
                    }
                }
                if let best { return (best.0, suffix) }
            }
        }
        return nil
    }

    /// The weight whose name equals `name`, or ends with it after a `/`, or the reverse.
    package static func findWeight(_ name: String, in weights: [String]) -> Int? {
        if let exact = weights.firstIndex(of: name) { return exact }
        if let suffix = weights.firstIndex(where: { $0.hasSuffix("/" + name) || name.hasSuffix("/" + $0) }) { return suffix }
        return nil
    }

    package static func blockedSlotNames(optimizer: String?) -> [String]? {
        guard let name = optimizer?.lowercased() else { return nil }
        if name.contains("adamax") { return ["m", "u"] }
        if name.contains("adam") { return ["m", "v"] }
        if name.contains("rmsprop") { return ["ms"] }
        if name.contains("adagrad") { return ["accumulator"] }
        if name.contains("adadelta") { return ["accumulator", "delta_accumulator"] }
        if name.contains("sgd") { return ["momentum"] }
        return nil
    }

    package static func defaultBlockedNames(_ count: Int) -> [String] {
        switch count {
        case 1: return ["accumulator"]
        case 2: return ["m", "v"]
        default: return (0..<count).map { "slot\($0)" }
        }
    }
}
