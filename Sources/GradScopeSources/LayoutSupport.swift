import ElementTypes
import Foundation
import GradScopeModel
import HDF5

/// Helpers shared by the layout readers.
package enum LayoutSupport {
    /// Slot names frameworks use, mapped to what the slot holds.
    /// `optimizer` (the class name, lower-cased) disambiguates Keras's
    /// `momentum`, which is Adam's first moment but SGD's momentum buffer.
    package static func classifySlot(_ rawName: String, optimizer: String?) -> OptimizerSlot {
        let name = rawName.lowercased()
        let opt = (optimizer ?? "").lowercased()
        let adamLike = opt.contains("adam") || opt.contains("nadam") || opt.contains("lamb") || opt.contains("lion")
        switch name {
        case "exp_avg", "m", "first_moment", "mu": return .firstMoment
        case "exp_avg_sq", "v", "second_moment", "square_avg", "nu", "rms", "ms": return .secondMoment
        case "max_exp_avg_sq", "vhat", "max_second_moment", "velocity_hat": return .maxSecondMoment
        case "momentum_buffer", "moment": return .momentum
        case "momentum": return adamLike ? .firstMoment : .momentum
        case "velocity": return .secondMoment
        case "sum", "accumulator", "acc_delta", "accumulators", "delta_accumulator", "average_gradient", "u": return .accumulator
        default: return .other
        }
    }

    /// Path segments that mark optimizer state in hand-written files.
    package static let genericSlotNames: Set<String> = [
        "exp_avg", "exp_avg_sq", "max_exp_avg_sq", "momentum", "momentum_buffer",
        "velocity", "m", "v", "vhat", "square_avg", "sum", "acc_delta",
    ]
    /// Path segments that mark gradients.
    package static let gradientSegments: Set<String> = ["grad", "grads", "gradient", "gradients"]
    /// Groups that hold parameters in hand-written files.
    package static let parameterContainers: Set<String> = [
        "model", "weights", "params", "parameters", "state_dict",
        "model_state_dict", "module", "net", "network",
    ]
    /// Groups whose name says they hold optimizer state (`state` alone may be a model's).
    package static let explicitOptimizerContainers: Set<String> = [
        "optimizer", "optim", "optimizer_state", "optimizer_state_dict", "opt",
        "optimizer_states",
    ]
    /// Groups that hold optimizer state in hand-written files.
    package static let optimizerContainers: Set<String> = [
        "optimizer", "optim", "optimizer_state", "optimizer_state_dict", "state", "opt",
        "optimizer_states",
    ]
    /// Groups that hold activations.
    package static let activationSegments: Set<String> = ["activations", "activation", "outputs", "probe"]

    /// The layer of a parameter name: everything before the last `.` for
    /// dotted (PyTorch) names, before the last `/` otherwise.
    package static func layer(of name: String) -> String {
        if !contains(name, "/"), let dot = name.lastIndex(of: ".") {
            return String(name[..<dot])
        }
        if let slash = name.lastIndex(of: "/") { return String(name[..<slash]) }
        if let dot = name.lastIndex(of: ".") { return String(name[..<dot]) }
        return name
    }

    /// Whether `text` contains `needle` (ASCII), as Foundation's `contains` answers: from the
    /// bytes when `text` is ASCII too (every tensor of every file is asked, and Foundation's
    /// search costs more than the rest of naming it), through Foundation otherwise.
    package static func contains<S: StringProtocol>(_ text: S, _ needle: StaticString) -> Bool {
        let pattern = UnsafeBufferPointer(start: needle.utf8Start, count: needle.utf8CodeUnitCount)
        func search(_ bytes: UnsafeBufferPointer<UInt8>) -> Bool? {
            guard bytes.allSatisfy({ $0 < 0x80 }) else { return nil }
            guard let first = pattern.first else { return true }
            var start = 0
            while start + pattern.count <= bytes.count {
                if bytes[start] == first, (1..<pattern.count).allSatisfy({ bytes[start + $0] == pattern[$0] }) { return true }
                start += 1
            }
            return false
        }
        let ascii = text.utf8.withContiguousStorageIfAvailable(search) ?? Array(text.utf8).withUnsafeBufferPointer(search)
        return ascii ?? text.contains(needle.description)
    }

    /// The first integer-looking value among root attributes with these names that can be a
    /// step or epoch counter (0 ≤ n < 10^15, so differences between steps never overflow).
    package static func intAttribute(_ file: HDF5File, _ names: [String], at path: String) -> Int? {
        for name in names {
            if let value = try? file.attribute(name, at: path), let int = value.int, int >= 0, int < 1_000_000_000_000_000 { return int }
        }
        return nil
    }

    package static func doubleAttribute(_ file: HDF5File, _ names: [String], at path: String) -> Double? {
        for name in names {
            if let value = try? file.attribute(name, at: path), let double = value.double { return double }
        }
        return nil
    }

    package static func stringAttribute(_ file: HDF5File, _ names: [String], at path: String) -> String? {
        for name in names {
            if let value = try? file.attribute(name, at: path), let string = value.string { return string }
        }
        return nil
    }

    /// Reads a scalar dataset as a Double (step counters, learning rates).
    package static func scalarValue(_ file: HDF5File, _ path: String) -> Double? {
        guard let dataset = try? file.dataset(path), dataset.info.elementCount == 1,
            let values = try? dataset.read(as: Double.self, maxElements: 1)
        else { return nil }
        return values.first
    }

    /// A step number read from a file name, and what it counts.
    package struct FileNameStep: Equatable {
        package var number: Int
        /// Labelled as an epoch (`epoch_3`, `ep03`, `e5`): it does not count optimizer updates.
        package var isEpoch: Bool
        /// Labelled as a step (`step1200`, `iter_500`, `global_step-9`): it counts updates.
        package var isStep: Bool
        /// Every number the name holds that may order the files (steps, epochs, plain integers, in
        /// the order they appear): `gru-02-0010` -> [2, 10], `model_20240501-235730` -> [20240501, 235730].
        package var key: [Int] = []
    }

    /// Keras's `{batch}` is the batch within the epoch, so `batch` is not a step label.
    package static let stepLabels: Set<String> = [
        "step", "steps", "globalstep", "iter", "iters", "iteration", "iterations",
        "it", "update", "updates",
    ]
    package static let epochLabels: Set<String> = ["epoch", "epochs", "ep", "e"]
    /// Labels of numbers that are metrics or settings, never steps
    /// (`weights.{epoch:02d}-{val_loss:.2f}.h5`, `lr1e-3`, `acc98`).
    package static let metricLabels: Set<String> = [
        "loss", "valloss", "acc", "accuracy", "valacc", "auc", "lr", "score", "f", "mae",
        "mse", "rmse", "err", "error", "ppl", "bleu", "top", "map", "iou", "dice", "wd",
        "seed", "bs", "dim", "v", "version", "val", "metric",
    ]

    /// The step in a file name's stem. A number labelled as a step wins
    /// (`epoch=2-step=400` -> 400), then one labelled as an epoch, then the last
    /// unlabelled integer (`ckpt-00500` -> 500). Decimals (`0.45`), exponents
    /// (`1e-4`) and numbers labelled as metrics or settings (`loss0.12`,
    /// `acc98`, `lr3`) are never steps: Keras's documented pattern
    /// `weights.{epoch:02d}-{val_loss:.2f}` gives `weights.03-0.45` -> 3.
    package static func stepInFileName(_ stem: String) -> FileNameStep? {
        let chars = Array(stem)
        func isDigit(_ c: Character) -> Bool { c.isASCII && c.isNumber }
        func isLetter(_ c: Character) -> Bool { c.isASCII && c.isLetter }
        var step: Int?
        var epoch: Int?
        var plain: Int?
        var key: [Int] = []
        // Identifiers, whose digits are no number: UUIDs (8-4-4-4-12 hexadecimal digits), and runs of
        // 6 or more hexadecimal digits in which letters and digits alternate more than once
        // (`ckpt-043b27b6`, a hash), not a label followed by a number (`e000100`).
        var identifier = [Bool](repeating: false, count: chars.count)
        var tokenStart = 0
        while tokenStart < chars.count {
            guard chars[tokenStart].isASCII && (chars[tokenStart].isLetter || chars[tokenStart].isNumber) else {
                tokenStart += 1
                continue
            }
            var tokenEnd = tokenStart
            while tokenEnd < chars.count, chars[tokenEnd].isASCII && (chars[tokenEnd].isLetter || chars[tokenEnd].isNumber) { tokenEnd += 1 }
            let token = Array(chars[tokenStart..<tokenEnd])
            let switches = zip(token, token.dropFirst()).filter { isDigit($0) != isDigit($1) }.count
            if token.count >= 6, token.allSatisfy({ $0.isHexDigit }), switches >= 2 {
                for position in tokenStart..<tokenEnd { identifier[position] = true }
            }
            tokenStart = tokenEnd
        }
        let uuidShape = [8, 4, 4, 4, 12]
        var groupStart = 0
        while groupStart < chars.count {
            var cursor = groupStart, lengths: [Int] = []
            while lengths.count < 5 {
                var length = 0
                while cursor < chars.count, chars[cursor].isHexDigit {
                    cursor += 1
                    length += 1
                }
                lengths.append(length)
                guard lengths.count < 5, cursor < chars.count, chars[cursor] == "-" else { break }
                cursor += 1
            }
            if lengths == uuidShape, groupStart == 0 || !chars[groupStart - 1].isHexDigit {
                for position in groupStart..<cursor { identifier[position] = true }
                groupStart = cursor
            } else {
                groupStart += 1
            }
        }
        var index = 0
        while index < chars.count {
            guard isDigit(chars[index]), !identifier[index] else {
                index += 1
                continue
            }
            let start = index
            while index < chars.count, isDigit(chars[index]) { index += 1 }
            let end = index
            // Leading zeros dropped; more than 15 digits is no step counter (an id, a hash).
            let digits = String(chars[start..<end]).drop { $0 == "0" }
            guard digits.count <= 15, let number = digits.isEmpty ? 0 : Int(digits) else { continue }
            // Part of a decimal or of an exponent: a metric or a setting.
            let fraction = start >= 2 && chars[start - 1] == "." && isDigit(chars[start - 2])
            let integerPart = end + 1 < chars.count && chars[end] == "." && isDigit(chars[end + 1])
            var exponent = false
            if end < chars.count, chars[end] == "e" || chars[end] == "E" {
                var next = end + 1
                if next < chars.count, chars[next] == "-" || chars[next] == "+" { next += 1 }
                exponent = next < chars.count && isDigit(chars[next])
            }
            let afterExponent =
                start >= 2 && (chars[start - 1] == "-" || chars[start - 1] == "+")
                && (chars[start - 2] == "e" || chars[start - 2] == "E") && start >= 3 && isDigit(chars[start - 3])
            let exponentDigits = start >= 2 && (chars[start - 1] == "e" || chars[start - 1] == "E") && isDigit(chars[start - 2])
            if fraction || integerPart || exponent || afterExponent || exponentDigits { continue }
            // The label: the letters just before the number (one separator allowed, `_` joining words),
            // else just after it (`3epochs`).
            var cursor = start - 1
            if cursor >= 0, "_-=. ".contains(chars[cursor]) { cursor -= 1 }
            let labelEnd = cursor + 1
            while cursor >= 0 {
                if isLetter(chars[cursor]) {
                    cursor -= 1
                    continue
                }
                if chars[cursor] == "_", cursor > 0, isLetter(chars[cursor - 1]), cursor + 1 < labelEnd {
                    cursor -= 1
                    continue
                }
                break
            }
            // `model_ep05` is labelled `ep`, `global_step9` `globalstep`, `val_loss0.3` `valloss`.
            let words = String(chars[(cursor + 1)..<labelEnd]).lowercased().split(separator: "_").map(String.init)
            let label = words.last ?? ""
            let joined = words.suffix(2).joined()
            var suffixEnd = end
            while suffixEnd < chars.count, isLetter(chars[suffixEnd]) { suffixEnd += 1 }
            let suffix = String(chars[end..<suffixEnd]).lowercased()
            func labelled(_ set: Set<String>) -> Bool {
                set.contains(label) || set.contains(joined) || set.contains(where: { label.hasSuffix($0) && $0.count >= 4 })
                    || (!suffix.isEmpty && set.contains(suffix))
            }
            if labelled(stepLabels) {
                step = number
            } else if labelled(epochLabels) {
                epoch = number
            } else if labelled(metricLabels) {
                continue
            } else {
                plain = number
            }
            key.append(number)
        }
        if let step { return FileNameStep(number: step, isEpoch: false, isStep: true, key: key) }
        if let epoch { return FileNameStep(number: epoch, isEpoch: true, isStep: false, key: key) }
        if let plain { return FileNameStep(number: plain, isEpoch: false, isStep: false, key: key) }
        return nil
    }

    /// Names of the layers a Keras model config (`config.json` of a `.keras` archive) marks
    /// `"trainable": false`, with every layer nested in a non-trainable model.
    package static func nonTrainableLayers(inConfig json: [String: Any]) -> Set<String> {
        var names = Set<String>()
        func walk(_ value: Any, frozen: Bool) {
            if let list = value as? [Any] {
                for item in list { walk(item, frozen: frozen) }
                return
            }
            guard let object = value as? [String: Any] else { return }
            var inherited = frozen
            if object["class_name"] is String, let config = object["config"] as? [String: Any] {
                inherited = frozen || (config["trainable"] as? Bool) == false
                if inherited, let name = config["name"] as? String { names.insert(name) }
                for (key, child) in config where key == "layers" || key == "layer" || key == "forward_layer" || key == "backward_layer" {
                    walk(child, frozen: inherited)
                }
                return
            }
            for (_, child) in object { walk(child, frozen: inherited) }
        }
        walk(json, frozen: false)
        return names
    }

    /// Parses JSON text into a dictionary, or nil.
    package static func json(_ text: String?) -> [String: Any]? {
        guard let text, let data = text.data(using: .utf8) else { return nil }
        return (try? JSONSerialization.jsonObject(with: data)) as? [String: Any]
    }

    /// The optimizer class named in a Keras `training_config` or `compile_config`.
    package static func optimizerClass(fromTrainingConfig text: String?) -> String? {
        guard let config = json(text) else { return nil }
        let optimizer = (config["optimizer_config"] as? [String: Any]) ?? (config["optimizer"] as? [String: Any])
        guard var name = optimizer?["class_name"] as? String else { return nil }
        // Mixed precision: the LossScaleOptimizer wraps the optimizer whose slots the file holds.
        if name.hasSuffix("LossScaleOptimizer"), let wrapped = (optimizer?["config"] as? [String: Any])?["inner_optimizer"] as? [String: Any],
            let innerName = wrapped["class_name"] as? String
        {
            name = innerName
        }
        if let range = name.range(of: ">", options: .backwards) { name = String(name[range.upperBound...]) }
        return name
    }
}

/// Datasets of a file under one group, with their metadata, in file order.
package struct DatasetListing {
    package struct Item {
        package let path: String
        /// Path relative to the listing's root, without a leading slash.
        package let relative: String
        package let info: DatasetInfo?
        package let problem: String?
        package let address: UInt64
        /// Which file of a sharded checkpoint holds it.
        package var fileIndex: Int = 0
    }

    package var items: [Item]
    package var notFollowed: [Entry]

    /// The listings of several shards of one checkpoint, as one.
    package init(shards: [DatasetListing]) {
        items = shards.enumerated().flatMap { index, listing in
            listing.items.map { item in
                var copy = item
                copy.fileIndex = index
                return copy
            }
        }
        notFollowed = shards.flatMap(\.notFollowed)
    }

    package init(file: HDF5File, entries: [Entry], under root: String) {
        let prefix = root == "/" ? "/" : root + "/"
        var items: [Item] = []
        var notFollowed: [Entry] = []
        for entry in entries where entry.path.hasPrefix(prefix) {
            switch entry.kind {
            case .dataset:
                var info: DatasetInfo?
                var problem: String?
                do {
                    let described = try file.datasetInfo(entry.path)
                    if let refusal = described.refusal(limits: file.options.limits, followLinks: file.options.followLinks) {
                        problem = refusal
                    } else {
                        info = described
                    }
                } catch {
                    problem = (error as? HDF5Error)?.message ?? "\(error)"
                }
                items.append(
                    Item(
                        path: entry.path, relative: String(entry.path.dropFirst(prefix.count)),
                        info: info, problem: problem, address: entry.address ?? 0))
            case .group, .namedType, .alias:
                break
            default:
                notFollowed.append(entry)
            }
        }
        self.items = items
        self.notFollowed = notFollowed
    }

    /// Skipped entries for links and unreadable objects that were not followed.
    package func skippedLinks(source: String) -> [SkippedItem] {
        notFollowed.map { SkippedItem(item: source + ":" + $0.path, reason: $0.notFollowedReason ?? "not followed") }
    }
}

/// Recurrent layers stack their gates along the unit axis: a Keras LSTM's kernel is
/// `[in, 4·hidden]` (GRU `3·hidden`), PyTorch's `weight_ih_l0` is `[4·hidden, in]`. Their units are
/// the hidden units, each made of one column (row) per gate. The recurrent matrix tells the gate
/// count by its shape alone: Keras's `recurrent_kernel` is `[hidden, gates·hidden]`, PyTorch's
/// `weight_hh_l<k>` is `[gates·hidden, hidden]`. Its name only says which tensor to look at; the
/// count is taken when the shape gives 3 or 4 (GRU, LSTM) and the input kernel of the same cell has
/// the same gate axis. A SimpleRNN (one gate) and the split Keras 1 tensors (`lstm_1_W_i`: one gate
/// each) need nothing.
package enum RecurrentGates {
    /// Sets ``TensorRef/gates`` on the weights, gradients and optimizer slots of recurrent kernels.
    package static func mark(_ tensors: inout [TensorRef]) {
        // Only a weight named `…recurrent_kernel` or `…weight_hh…` can give a gate count: most
        // checkpoints have none, and are passed over without splitting every name.
        guard tensors.indices.contains(where: { tensors[$0].role == .weight && mayBeRecurrent(tensors[$0].name) }) else { return }
        var gatesByName: [String: Int] = [:]
        let weights = tensors.filter { $0.role == .weight }
        var byCell: [String: [TensorRef]] = [:]
        for weight in weights {
            let (cell, _) = split(weight.name)
            byCell[cell, default: []].append(weight)
        }
        for (_, members) in byCell {
            for recurrent in members {
                let (_, last) = split(recurrent.name)
                guard recurrent.shape.count == 2 else { continue }
                if last == "recurrent_kernel", recurrent.unitAxis == 1 {
                    // Keras: [hidden, gates·hidden].
                    let hidden = recurrent.shape[0], width = recurrent.shape[1]
                    guard hidden > 0, width % hidden == 0, [3, 4].contains(width / hidden) else { continue }
                    let gates = width / hidden
                    gatesByName[recurrent.name] = gates
                    for kernel in members
                    where split(kernel.name).last == "kernel" && kernel.shape.last == width && kernel.unitAxis == kernel.shape.count - 1 {
                        gatesByName[kernel.name] = gates
                    }
                } else if last.hasPrefix("weight_hh"), recurrent.unitAxis == 0 {
                    // PyTorch: [gates·hidden, hidden], with `weight_ih<suffix>` beside it.
                    let width = recurrent.shape[0], hidden = recurrent.shape[1]
                    guard hidden > 0, width % hidden == 0, [3, 4].contains(width / hidden) else { continue }
                    let gates = width / hidden
                    let suffix = last.dropFirst("weight_hh".count)
                    gatesByName[recurrent.name] = gates
                    for kernel in members
                    where split(kernel.name).last == "weight_ih" + suffix && kernel.shape.count == 2 && kernel.shape[0] == width
                        && kernel.unitAxis == 0
                    {
                        gatesByName[kernel.name] = gates
                    }
                }
            }
        }
        guard !gatesByName.isEmpty else { return }
        for index in tensors.indices where tensors[index].role != .activation {
            if let gates = gatesByName[tensors[index].name], tensors[index].shape.count >= 2 { tensors[index].gates = gates }
        }
    }

    /// Whether `name` holds `recurrent_kernel` or `weight_hh`, compared byte for byte (the names
    /// ``mark(_:)`` looks for are ASCII, and a name's last component is a part of it).
    package static func mayBeRecurrent(_ name: String) -> Bool {
        var name = name
        return name.withUTF8 { bytes in contains(bytes, recurrentKernel) || contains(bytes, weightHH) }
    }

    /// The names' marks of a recurrent weight, made once (not an array per tensor and file).
    private static let recurrentKernel = Array("recurrent_kernel".utf8), weightHH = Array("weight_hh".utf8)

    private static func contains(_ bytes: UnsafeBufferPointer<UInt8>, _ needle: [UInt8]) -> Bool {
        guard bytes.count >= needle.count else { return false }
        for start in 0...(bytes.count - needle.count) where bytes[start] == needle[0] {
            var index = 1
            while index < needle.count, bytes[start + index] == needle[index] { index += 1 }
            if index == needle.count { return true }
        }
        return false
    }

    /// A tensor's name split into its cell (everything before the last component) and its last
    /// component, without Keras's `:0`.
    private static func split(_ name: String) -> (cell: String, last: String) {
        guard let cut = name.lastIndex(where: { $0 == "/" || $0 == "." }) else { return ("", strip(name)) }
        return (String(name[..<cut]), strip(String(name[name.index(after: cut)...])))
    }

    private static func strip(_ component: String) -> String {
        component.hasSuffix(":0") ? String(component.dropLast(2)) : component
    }
}
