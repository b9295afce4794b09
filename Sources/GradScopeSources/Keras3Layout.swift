import ElementTypes
import GradScopeModel
import HDF5

/// Keras 3 `.weights.h5` (also `model.weights.h5` inside a `.keras` zip).
///
/// Variables live in `<holder>/vars/<i>`, where a holder is a layer group
/// (`layers/dense_1`, `layers/lstm/cell`), named by class, with the user's
/// layer name in the `name` attribute (Keras >= 3.10). Optimizer variables
/// are positional in `optimizer/vars/<i>`: scalars first (iteration, then the
/// learning rate when no schedule is used), then each trainable variable's
/// slots in order, matched here by shape. Under mixed precision the optimizer
/// is a LossScaleOptimizer and the real optimizer's variables sit, in the same
/// order, in `optimizer/inner_optimizer/vars/<i>`: those are read instead.
package enum Keras3Layout {
    package static func matches(_ entries: [Entry], root: String) -> Bool {
        let prefix = root == "/" ? "/" : root + "/"
        // By index: the entries are read in place, not copied one by one.
        return entries.indices.contains { index in
            let path = entries[index].path
            guard path.hasPrefix(prefix) else { return false }
            let relative = path.dropFirst(prefix.count)
            return (relative.hasPrefix("layers/") || LayoutSupport.contains(relative, "_layer_checkpoint_dependencies"))
                && LayoutSupport.contains(relative, "/vars/")
        }
    }

    /// Names of a layer's variables by the layer's class, as Keras creates them.
    package static func variableNames(holder: String, count: Int) -> [String]? {
        let last = holder.split(whereSeparator: { $0 == "/" || $0 == "\\" }).last.map(String.init) ?? holder
        var base = last
        while let underscore = base.lastIndex(of: "_"), base[base.index(after: underscore)...].allSatisfy(\.isNumber),
            base.index(after: underscore) < base.endIndex
        {
            base = String(base[..<underscore])
        }
        switch base {
        case "dense", "einsum_dense", "conv1d", "conv2d", "conv3d", "conv1d_transpose", "conv2d_transpose", "conv3d_transpose",
            "query", "key", "value", "attention_output", "output_dense":
            return count == 2 ? ["kernel", "bias"] : (count == 1 ? ["kernel"] : nil)
        case "depthwise_conv1d", "depthwise_conv2d":
            return count == 2 ? ["depthwise_kernel", "bias"] : (count == 1 ? ["depthwise_kernel"] : nil)
        case "separable_conv1d", "separable_conv2d":
            return count == 3 ? ["depthwise_kernel", "pointwise_kernel", "bias"] : nil
        case "embedding": return count == 1 ? ["embeddings"] : nil
        case "batch_normalization": return count == 4 ? ["gamma", "beta", "moving_mean", "moving_variance"] : nil
        case "layer_normalization", "group_normalization": return count == 2 ? ["gamma", "beta"] : nil
        case "cell", "lstm_cell", "gru_cell", "simple_rnn_cell":
            return count == 3 ? ["kernel", "recurrent_kernel", "bias"] : (count == 2 ? ["kernel", "recurrent_kernel"] : nil)
        default: return nil
        }
    }

    package struct Holder {
        package var path: String
        package var layer: String
        package var variables: [DatasetListing.Item]
    }

    package static func read(
        file: HDF5File, entries: [Entry], root: String, source: String, optimizerHint: String?,
        nonTrainableLayers: Set<String> = []
    ) -> (StepMetadata, [TensorRef], [SkippedItem], [String], [String]) {
        read(shards: [(file, entries)], root: root, source: source, optimizerHint: optimizerHint, nonTrainableLayers: nonTrainableLayers)
    }

    /// Reads one checkpoint whose variables may be spread over several shard files
    /// (`save_weights(..., max_shard_size=...)`): each variable's data and a layer's
    /// `name` attribute can sit in any shard.
    /// `nonTrainableLayers`: layers a `.keras` archive's config marks `trainable: false`; they have no
    /// optimizer slots, so slots are never matched to them.
    package static func read(
        shards: [(file: HDF5File, entries: [Entry])], root: String, source: String, optimizerHint: String?,
        nonTrainableLayers: Set<String> = []
    )
        -> (StepMetadata, [TensorRef], [SkippedItem], [String], [String])
    {
        let listing = DatasetListing(shards: shards.map { DatasetListing(file: $0.file, entries: $0.entries, under: root) })
        func attribute(_ name: String, at path: String) -> String? {
            for shard in shards {
                if let value = LayoutSupport.stringAttribute(shard.file, [name], at: path) { return value }
            }
            return nil
        }
        func scalar(_ item: DatasetListing.Item) -> Double? {
            LayoutSupport.scalarValue(shards[item.fileIndex].file, item.path)
        }
        var skipped = listing.skippedLinks(source: source)
        var notes: [String] = []
        var holders: [String: Holder] = [:]
        var optimizerVars: [DatasetListing.Item] = []
        for item in listing.items {
            let parts = item.relative.split(separator: "/").map(String.init)
            guard parts.count >= 2, parts[parts.count - 2] == "vars", Int(parts[parts.count - 1]) != nil else {
                skipped.append(SkippedItem(item: source + ":" + item.path, reason: "not a variable of the Keras 3 layout"))
                continue
            }
            let holderPath = parts.dropLast(2).joined(separator: "/")
            if holderPath == "optimizer" || holderPath == "optimizer/inner_optimizer" {
                optimizerVars.append(item)
                continue
            }
            guard !holderPath.isEmpty else {
                skipped.append(SkippedItem(item: source + ":" + item.path, reason: "model-level variable"))
                continue
            }
            var layer = holderPath.replacingOccurrences(of: "\\", with: "/")
            if layer.hasPrefix("layers/") { layer = String(layer.dropFirst("layers/".count)) }
            layer = layer.replacingOccurrences(of: "/_layer_checkpoint_dependencies/", with: "/")
                .replacingOccurrences(of: "_layer_checkpoint_dependencies/", with: "")
            // The user's layer name, when Keras saved it.
            let layerGroup =
                (root == "/" ? "" : root) + "/"
                + holderPath.split(separator: "/").prefix(holderPath.hasPrefix("layers/") ? 2 : 1).joined(separator: "/")
            if let userName = attribute("name", at: layerGroup + "/vars"), !userName.isEmpty {
                let rest = layer.split(separator: "/").dropFirst().joined(separator: "/")
                layer = rest.isEmpty ? userName : userName + "/" + rest
            }
            holders[holderPath, default: Holder(path: holderPath, layer: layer, variables: [])].variables.append(item)
        }

        // Layers in the order the file was written (object addresses grow as a file is written).
        func position(_ holder: Holder) -> (Int, UInt64) {
            holder.variables.map { ($0.fileIndex, $0.address) }.min { $0 < $1 } ?? (0, 0)
        }
        let ordered = holders.values.sorted { a, b in
            let positionA = position(a), positionB = position(b)
            return positionA == positionB ? numericAwareLess(a.path, b.path) : positionA < positionB
        }
        var weights: [TensorRef] = []
        var knownNonTrainable = Set<Int>()
        for holder in ordered {
            let variables = holder.variables.sorted { numericAwareLess($0.relative, $1.relative) }
            let names = variableNames(holder: holder.path, count: variables.count)
            for (index, item) in variables.enumerated() {
                guard let info = item.info else {
                    skipped.append(SkippedItem(item: source + ":" + item.path, kind: .unreadable, reason: item.problem ?? "unreadable"))
                    continue
                }
                guard info.type.isFloatingPoint else {
                    skipped.append(SkippedItem(item: source + ":" + item.path, reason: "\(info.type) variable, not a trained tensor"))
                    continue
                }
                let varName = names?[index] ?? String(index)
                if varName == "moving_mean" || varName == "moving_variance" { knownNonTrainable.insert(weights.count) }
                weights.append(
                    TensorRef(
                        name: holder.layer + "/" + varName, layer: holder.layer, role: .weight,
                        shape: info.shape, dtype: info.type, unitAxis: kerasUnitAxis(info.shape), path: item.path,
                        fileIndex: item.fileIndex))
            }
        }

        var metadata = StepMetadata(framework: "keras")
        let base = root == "/" ? "" : root
        // Mixed precision: a LossScaleOptimizer keeps the real optimizer's variables (its iteration,
        // learning rate and slots) under `optimizer/inner_optimizer/vars`; its own `optimizer/vars`
        // hold its counters and loss scale (and, in Keras 3.15, a copy of the inner variables).
        let inner = optimizerVars.filter { $0.relative.hasPrefix("optimizer/inner_optimizer/") }
        let wrapper = inner.isEmpty ? [] : optimizerVars.filter { !$0.relative.hasPrefix("optimizer/inner_optimizer/") }
        if !inner.isEmpty {
            optimizerVars = inner
            for item in wrapper {
                let scalar = item.info?.shape.isEmpty ?? false
                skipped.append(
                    SkippedItem(
                        item: source + ":" + item.path, kind: scalar ? .metadata : .notAnalysed,
                        reason: scalar
                            ? "the LossScaleOptimizer's own counter or loss scale"
                            : "a variable of the LossScaleOptimizer itself; the real optimizer's slots are read from optimizer/inner_optimizer"
                    ))
            }
        }
        let wrapperName = inner.isEmpty ? nil : attribute("name", at: base + "/optimizer/vars")
        let optimizerName =
            inner.isEmpty
            ? optimizerHint ?? attribute("name", at: base + "/optimizer/vars")
            : optimizerHint.flatMap { $0.lowercased().contains("lossscale") ? nil : $0 }
                ?? attribute("name", at: base + "/optimizer/inner_optimizer/vars")
        metadata.optimizer = optimizerName
        if !inner.isEmpty {
            notes.append(
                "mixed precision: the optimizer (\(optimizerName ?? "unnamed")) is wrapped in a \(wrapperName ?? "LossScaleOptimizer"); its slots and step counter are read from optimizer/inner_optimizer"
            )
        }
        var slotItems: [(DatasetListing.Item, DatasetInfo)] = []
        for item in optimizerVars.sorted(by: { numericAwareLess($0.relative, $1.relative) }) {
            guard let info = item.info else {
                skipped.append(SkippedItem(item: source + ":" + item.path, kind: .unreadable, reason: item.problem ?? "unreadable"))
                continue
            }
            if info.shape.isEmpty {
                let value = scalar(item)
                if case .integer = info.type, metadata.step == nil, let value, value >= 0, value < 1e15 {
                    metadata.step = Int(value)
                    metadata.stepSource = .optimizerIterations
                } else if info.type.isFloatingPoint, metadata.learningRate == nil, let value, value > 0, value < 10 {
                    metadata.learningRate = value
                }
                skipped.append(SkippedItem(item: source + ":" + item.path, kind: .metadata, reason: "optimizer scalar, read as metadata"))
                continue
            }
            slotItems.append((item, info))
        }

        var tensors = weights
        if !slotItems.isEmpty {
            let names = OptimizerMatching.slotNames(forOptimizer: optimizerName)
            let candidates = weights.enumerated().map { index, weight in
                let layerName = weight.layer.split(separator: "/").last.map(String.init) ?? weight.layer
                let frozen = nonTrainableLayers.contains(weight.layer) || nonTrainableLayers.contains(layerName)
                return OptimizerMatching.Candidate(shape: weight.shape, mayBeTrainable: !knownNonTrainable.contains(index) && !frozen)
            }
            if let (perVariable, assignments, inOrder) = OptimizerMatching.matchAny(
                slots: slotItems.map(\.1.shape), weights: candidates,
                preferred: names.map { [$0.count] } ?? [], blocked: false)
            {
                // Without the optimizer's name, two slots per variable is the Adam family's momentum and velocity.
                let slotNames =
                    (names?.count == perVariable)
                    ? names ?? []
                    : (perVariable == 2 ? ["momentum", "velocity"] : (0..<perVariable).map { "slot\($0)" })
                var trainable = Set<Int>()
                for assignment in assignments {
                    let weight = weights[assignment.weight]
                    trainable.insert(assignment.weight)
                    let (item, info) = slotItems[assignment.slot]
                    let slotName = slotNames[assignment.kind]
                    tensors.append(
                        TensorRef(
                            name: weight.name, layer: weight.layer, role: .optimizer,
                            slot: LayoutSupport.classifySlot(slotName, optimizer: optimizerName ?? (perVariable == 2 ? "adam" : nil)),
                            slotName: slotName, shape: info.shape, dtype: info.type,
                            unitAxis: weight.unitAxis, path: item.path, fileIndex: item.fileIndex))
                }
                for index in weights.indices { tensors[index].trainable = trainable.contains(index) }
                notes.append(
                    inOrder
                        ? "optimizer slots matched to weights by position and shape (\(perVariable) per variable)"
                        : "optimizer slots matched to weights by shape only (\(perVariable) per variable): the file's order is not the optimizer's, so slots of same-shaped weights may be swapped"
                )
            } else {
                notes.append("the optimizer's \(slotItems.count) slot variables could not be matched to the weights by shape; they are not used")
                for (item, _) in slotItems {
                    skipped.append(SkippedItem(item: source + ":" + item.path, reason: "optimizer slot that matches no weight by shape"))
                }
            }
        } else if !optimizerVars.isEmpty {
            notes.append("the optimizer holds no slot variables (saved before the first update, or an optimizer without state)")
        }
        let layers = ordered.map(\.layer)
        return (metadata, tensors, skipped, notes, layers)
    }
}
