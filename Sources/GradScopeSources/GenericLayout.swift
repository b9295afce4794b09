import ElementTypes
import GradScopeModel
import HDF5
import Synchronization

/// Any other HDF5 file, e.g. a PyTorch `state_dict` written with h5py.
///
/// Every floating-point dataset is a tensor. A path segment `grad`, `grads`,
/// `gradient` or `gradients` makes it the gradient of the parameter with the
/// remaining name; `exp_avg`, `exp_avg_sq`, `momentum`, `momentum_buffer`,
/// `velocity`, `m`, `v` mark optimizer state; `activations` marks module
/// outputs. Containers such as `model`, `state_dict` or `model_state_dict`
/// are dropped from names. Root attributes (or root scalar datasets) `step`,
/// `iteration`, `global_step`, `loss`, `lr`, `learning_rate` are read when present.
package enum GenericLayout {
    /// Root attributes that mark well-known HDF5 formats that are not checkpoints.
    package static func foreignFormat(_ file: HDF5File, root: String) -> String? {
        guard let attributes = try? file.attributes(at: root) else { return nil }
        let names = Set(attributes.map(\.name))
        if names.contains("_NCProperties") || names.contains("Conventions") { return "a netCDF-4 data file" }
        if let encoding = attributes.first(where: { $0.name == "encoding-type" })?.value.string, encoding.contains("anndata") {
            return "an AnnData (.h5ad) file"
        }
        if file.superblockOffset >= 512 { return "a MATLAB v7.3 .mat file (HDF5 with a user block)" }
        if names.contains("pandas_type") || names.contains("pandas_version") { return "a pandas HDFStore" }
        if names.contains("PYTABLES_FORMAT_VERSION") { return "a PyTables / pandas HDFStore file" }
        if file.exists("/matrix/barcodes") { return "a 10x Genomics feature-barcode matrix" }
        if file.exists("/obs") && file.exists("/var") { return "an AnnData (.h5ad) file" }
        return nil
    }

    /// The step's metadata, tensors, skipped items and notes, and each tensor's address in the file (0: unknown).
    package static func read(
        file: HDF5File, entries: [Entry], root: String, source: String
    ) -> (StepMetadata, [TensorRef], [SkippedItem], [String], addresses: [UInt64]) {
        var metadata = StepMetadata()
        if let step = LayoutSupport.intAttribute(file, ["step", "global_step", "iteration", "iter", "steps"], at: root) {
            metadata.step = step
            metadata.stepSource = .attribute
        }
        metadata.loss = LayoutSupport.doubleAttribute(file, ["loss", "train_loss", "training_loss"], at: root)
        metadata.learningRate = LayoutSupport.doubleAttribute(file, ["lr", "learning_rate"], at: root)
        metadata.framework = LayoutSupport.stringAttribute(file, ["framework"], at: root)
        metadata.optimizer = LayoutSupport.stringAttribute(file, ["optimizer"], at: root)
        metadata.epoch = LayoutSupport.intAttribute(file, ["epoch"], at: root)
        let keras = (metadata.framework ?? "").lowercased().contains("keras")

        let listing = DatasetListing(file: file, entries: entries, under: root)
        var tensors: [TensorRef] = []
        var addresses: [UInt64] = []
        var skipped = listing.skippedLinks(source: source)
        var optimizerSteps: Int?
        for item in listing.items {
            guard let info = item.info else {
                skipped.append(SkippedItem(item: source + ":" + item.path, kind: .unreadable, reason: item.problem ?? "unreadable"))
                continue
            }
            // Scalars at the root carry metadata, not parameters (the name is split only for scalars).
            let segments = info.shape.isEmpty ? item.relative.split(separator: "/") : []
            if segments.count == 1 {
                let key = segments[0].lowercased()
                if let value = LayoutSupport.scalarValue(file, item.path) {
                    switch key {
                    case "step", "global_step", "iteration", "iter":
                        if metadata.step == nil, value.isFinite, value >= 0, value < 1e15 {
                            metadata.step = Int(value)
                            metadata.stepSource = .attribute
                        }
                    case "loss", "train_loss": if metadata.loss == nil { metadata.loss = value }
                    case "lr", "learning_rate": if metadata.learningRate == nil { metadata.learningRate = value }
                    case "epoch": if metadata.epoch == nil, value.isFinite, value >= 0, value < 1e15 { metadata.epoch = Int(value) }
                    default: break
                    }
                }
                skipped.append(SkippedItem(item: source + ":" + item.path, kind: .metadata, reason: "scalar, read as metadata"))
                continue
            }
            switch classify(relative: item.relative, path: item.path, shape: info.shape, type: info.type, keras: keras, optimizer: metadata.optimizer)
            {
            case .tensor(let tensor):
                tensors.append(tensor)
                addresses.append(item.address)
            case .optimizerCounter(let isStep):
                if isStep, let value = LayoutSupport.scalarValue(file, item.path), value.isFinite, value >= 0, value < 1e15 {
                    optimizerSteps = max(optimizerSteps ?? 0, Int(value))
                }
                skipped.append(SkippedItem(item: source + ":" + item.path, kind: .metadata, reason: "optimizer setting or counter, read as metadata"))
            case .skipped(let kind, let reason):
                skipped.append(SkippedItem(item: source + ":" + item.path, kind: kind, reason: reason))
            }
        }
        if metadata.step == nil, let optimizerSteps, optimizerSteps > 0 {
            // PyTorch's Adam, AdamW, RMSprop... count their updates per parameter (`state/<i>/step`).
            metadata.step = optimizerSteps
            metadata.stepSource = .optimizerIterations
        }
        var notes: [String] = []
        if mapIndexedOptimizerState(&tensors, addresses: addresses) {
            notes.append(
                "optimizer state stored by parameter index (PyTorch optimizer.state_dict()) matched to the parameters in the order they were written, checked by shape"
            )
        } else if tensors.contains(where: { $0.role == .optimizer && $0.name.split(separator: "/").last.map({ Int($0) != nil }) == true }) {
            notes.append(
                "optimizer state stored by parameter index (PyTorch optimizer.state_dict()) could not be matched to the parameters by shape (the optimizer may hold only some of them): it is listed under its indices and not used by the detectors"
            )
        }
        if !tensors.isEmpty && !keras {
            notes.append("generic layout: units read along axis 0, as PyTorch stores weights ([out, in, ...])")
        }
        return (metadata, tensors, skipped, notes, addresses)
    }

    /// What the generic naming rules make of one stored array, from its name and shape alone.
    package enum Classified: Sendable {
        /// A tensor to analyse, with its role, name, layer and unit axis.
        case tensor(TensorRef)
        /// An optimizer setting or counter, read as metadata; `isStep` when it is a per-parameter
        /// update counter (`state/3/step`) whose value may give the step.
        case optimizerCounter(isStep: Bool)
        /// Not analysed, with the kind of skip and the reason.
        case skipped(SkipKind, String)
    }

    /// Classifies one stored array by the rules above: `relative` is its name with `/` between
    /// levels (a flat `state_dict` name such as `layer.0.weight` is one level), `path` where it is
    /// read from. Scalars at the root are the caller's (they carry the step's metadata). Shared by
    /// every source of PyTorch-style names (HDF5 written with h5py, safetensors).
    package static func classify(relative: String, path: String, shape: [Int], type: ElementType, keras: Bool, optimizer: String?) -> Classified {
        // The saves of a run hold the same arrays file after file: each answer is remembered (the
        // rules depend on the arguments alone), at most `classifiedLimit` of them at a time.
        let key = ClassifyKey(relative: relative, path: path, shape: shape, type: type, keras: keras, optimizer: optimizer)
        if let known = classified.withLock({ $0[key] }) { return known }
        let answer = classifyAfresh(relative: relative, path: path, shape: shape, type: type, keras: keras, optimizer: optimizer)
        classified.withLock { table in
            if table.count >= classifiedLimit { table.removeAll(keepingCapacity: true) }
            table[key] = answer
        }
        return answer
    }

    /// The most answers of ``classify(relative:path:shape:type:keras:optimizer:)`` remembered (a few hundred
    /// bytes each); past it they are forgotten all at once.
    package static let classifiedLimit = 8192
    private static let classified = Mutex<[ClassifyKey: Classified]>([:])

    private struct ClassifyKey: Hashable, Sendable {
        let relative: String
        let path: String
        let shape: [Int]
        let type: ElementType
        let keras: Bool
        let optimizer: String?

        static func == (a: Self, b: Self) -> Bool {
            a.path == b.path && a.relative == b.relative && a.shape == b.shape && a.type == b.type && a.keras == b.keras
                && a.optimizer == b.optimizer
        }

        func hash(into hasher: inout Hasher) {
            hasher.combine(path)
            hasher.combine(shape)
            hasher.combine(keras)
        }
    }

    private static func classifyAfresh(
        relative: String, path: String, shape: [Int], type: ElementType, keras: Bool, optimizer: String?
    ) -> Classified {
        var segments = relative.split(separator: "/").map(String.init)
        let lowered = segments.map { $0.lowercased() }
        let elementCount = shape.reduce(1) { $0.multipliedReportingOverflow(by: $1).partialValue }
        // Optimizer bookkeeping (PyTorch's optimizer.state_dict() written by hand): per-parameter step
        // counters (`state/0/step`, float or int64), param-group settings (`param_groups/0/betas`).
        let optimizerTree =
            segments.count >= 2
            && (LayoutSupport.explicitOptimizerContainers.contains(lowered[0])
                || (lowered[0] == "state" && lowered.count >= 3 && Int(lowered[1]) != nil))
        if optimizerTree
            && (lowered.contains("param_groups")
                || (elementCount <= 1 && type.isNumeric
                    && !LayoutSupport.genericSlotNames.contains(lowered.last ?? "")))
        {
            return .optimizerCounter(isStep: lowered.last == "step" && elementCount == 1)
        }
        if lowered.last?.hasSuffix("num_batches_tracked") == true {
            return .skipped(.metadata, "BatchNorm's batch counter, read as metadata")
        }
        guard type.isFloatingPoint else {
            let reason = type.isNumeric ? "\(type) data (a counter or index, not a trained tensor)" : "\(type) data, not a tensor"
            return .skipped(.notAnalysed, reason)
        }
        var role = TensorRole.weight
        var slotName: String?
        if let index = lowered.firstIndex(where: { LayoutSupport.gradientSegments.contains($0) }) {
            role = .gradient
            segments.remove(at: index)
        } else if let index = lowered.firstIndex(where: { LayoutSupport.activationSegments.contains($0) }) {
            role = .activation
            segments.remove(at: index)
        } else if segments.count >= 2,
            let index = lowered.lastIndex(where: { LayoutSupport.genericSlotNames.contains($0) }),
            index == 0 || index == lowered.count - 1 || LayoutSupport.optimizerContainers.contains(lowered[0])
        {
            role = .optimizer
            slotName = segments[index]
            segments.remove(at: index)
            if let first = segments.first, LayoutSupport.optimizerContainers.contains(first.lowercased()) {
                segments.removeFirst()
                // PyTorch Lightning saves a list of optimizers: `optimizer_states/0/state/3/exp_avg`.
                if first.lowercased() == "optimizer_states", segments.count >= 3, Int(segments[0]) != nil, segments[1].lowercased() == "state" {
                    segments.removeFirst()
                }
            }
        }
        if role == .weight, let last = segments.last {
            // `fc1.weight.grad` / `fc1.weight_grad`: PyTorch's attribute name for the gradient, written
            // next to the parameter.
            for suffix in [".grad", "_grad"] where last.lowercased().hasSuffix(suffix) && last.count > suffix.count {
                role = .gradient
                segments[segments.count - 1] = String(last.dropLast(suffix.count))
                break
            }
        }
        if role == .weight, optimizerTree {
            // Per-parameter state under a parameter index (`state/3/ax`, an optimizer's own slot name)
            // is optimizer state; anything else under an optimizer group matches no parameter.
            guard lowered.dropFirst().contains(where: { Int($0) != nil }) else {
                return .skipped(.notAnalysed, "optimizer data that names no parameter")
            }
            role = .optimizer
            slotName = segments.last
            segments.removeLast()
            if let first = segments.first, LayoutSupport.optimizerContainers.contains(first.lowercased()) { segments.removeFirst() }
        }
        if role == .optimizer && shape.isEmpty {
            return .skipped(.notAnalysed, "optimizer scalar, not a tensor")
        }
        if let first = segments.first, segments.count > 1, LayoutSupport.parameterContainers.contains(first.lowercased()) {
            segments.removeFirst()
        }
        guard !segments.isEmpty else {
            return .skipped(.notAnalysed, "no parameter name left after removing its role")
        }
        let name = segments.joined(separator: "/")
        let layer = role == .activation ? name : LayoutSupport.layer(of: name)
        let unitAxis: Int?
        if role == .activation {
            unitAxis = shape.count >= 2 ? shape.count - 1 : nil
        } else {
            unitAxis = keras ? kerasUnitAxis(shape) : torchUnitAxis(shape)
        }
        return .tensor(
            TensorRef(
                name: name, layer: layer, role: role,
                slot: slotName.map { LayoutSupport.classifySlot($0, optimizer: optimizer) },
                slotName: slotName, shape: shape, dtype: type, unitAxis: unitAxis,
                path: path))
    }

    /// PyTorch's `optimizer.state_dict()` names state by parameter index
    /// (`state/0/exp_avg`). Those indices follow `model.parameters()`, which is the
    /// order parameters were written (the file's order), running statistics aside.
    /// Maps them when every indexed tensor's shape matches its parameter's.
    package static func mapIndexedOptimizerState(_ tensors: inout [TensorRef], addresses: [UInt64]) -> Bool {
        let indexed = tensors.indices.filter { index in
            guard tensors[index].role == .optimizer else { return false }
            let parts = tensors[index].name.split(separator: "/")
            guard let last = parts.last, Int(last) != nil else { return false }
            return parts.count == 1 || (parts.count == 2 && (parts[0] == "state" || parts[0] == "param_groups"))
        }
        guard !indexed.isEmpty else { return false }
        let candidates = tensors.indices.filter { tensors[$0].role == .weight && !isRunningStatistic(tensors[$0].name) }
        // The order of model.parameters(): the order written, by address; libhdf5 reuses freed space, so
        // when the shapes do not line up, the layers' depth order (CheckpointLoader.orderLayers), with each
        // layer's parameters by address, then with weights before biases (as modules register them).
        let byAddress = candidates.sorted { addresses[$0] < addresses[$1] }
        let createdAt = Dictionary(tensors.indices.map { (tensors[$0].path, addresses[$0]) }, uniquingKeysWith: { a, _ in a })
        let rank = Dictionary(
            CheckpointLoader.orderLayers(tensors, createdAt: createdAt).enumerated().map { ($0.element, $0.offset) },
            uniquingKeysWith: { a, _ in a })
        func byDepth(weightsFirst: Bool) -> [Int] {
            candidates.sorted { a, b in
                let ra = rank[tensors[a].layer] ?? .max, rb = rank[tensors[b].layer] ?? .max
                if ra != rb { return ra < rb }
                let ba = weightsFirst && TensorNames.isBias(tensors[a].name), bb = weightsFirst && TensorNames.isBias(tensors[b].name)
                return ba != bb ? !ba : addresses[a] < addresses[b]
            }
        }
        func mapping(_ parameters: [Int]) -> [(Int, TensorRef)]? {
            var mapped: [(Int, TensorRef)] = []
            for index in indexed {
                guard let number = tensors[index].name.split(separator: "/").last.flatMap({ Int($0) }),
                    number >= 0, number < parameters.count
                else { return nil }
                let parameter = tensors[parameters[number]]
                guard parameter.shape == tensors[index].shape else { return nil }
                mapped.append((index, parameter))
            }
            return mapped
        }
        guard let mapped = mapping(byAddress) ?? mapping(byDepth(weightsFirst: false)) ?? mapping(byDepth(weightsFirst: true)) else { return false }
        for (index, parameter) in mapped {
            tensors[index].name = parameter.name
            tensors[index].layer = parameter.layer
            tensors[index].unitAxis = parameter.unitAxis
        }
        return true
    }

    package static func isRunningStatistic(_ name: String) -> Bool {
        let lower = name.lowercased()
        return lower.contains("running_mean") || lower.contains("running_var") || lower.contains("num_batches_tracked")
            || lower.contains("moving_mean") || lower.contains("moving_variance")
    }
}
