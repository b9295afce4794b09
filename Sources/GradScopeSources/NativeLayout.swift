import ElementTypes
import GradScopeModel
import HDF5

/// The layout the exporters in Tools/ write: one file per step,
/// `/weights/<name>`, `/gradients/<name>`, `/optimizer/<slot>/<name>`,
/// `/activations/<module>`, and root attributes `format = "gradscope/1"`,
/// `step`, `loss`, `lr`, `framework`, `optimizer`.
package enum NativeLayout {
    package static func matches(_ file: HDF5File, root: String) -> Bool {
        guard let format = LayoutSupport.stringAttribute(file, ["format"], at: root) else { return false }
        return format.hasPrefix("gradscope/")
    }

    package static func read(file: HDF5File, entries: [Entry], root: String, source: String) -> (StepMetadata, [TensorRef], [SkippedItem], [String]) {
        var metadata = StepMetadata()
        if let step = LayoutSupport.intAttribute(file, ["step"], at: root) {
            metadata.step = step
            metadata.stepSource = .attribute
        }
        metadata.loss = LayoutSupport.doubleAttribute(file, ["loss"], at: root)
        metadata.learningRate = LayoutSupport.doubleAttribute(file, ["lr", "learning_rate"], at: root)
        metadata.framework = LayoutSupport.stringAttribute(file, ["framework"], at: root)
        metadata.optimizer = LayoutSupport.stringAttribute(file, ["optimizer"], at: root)
        metadata.epoch = LayoutSupport.intAttribute(file, ["epoch"], at: root)

        let framework = (metadata.framework ?? "").lowercased()
        let listing = DatasetListing(file: file, entries: entries, under: root)
        var tensors: [TensorRef] = []
        var skipped = listing.skippedLinks(source: source)
        for item in listing.items {
            guard let info = item.info else {
                skipped.append(SkippedItem(item: source + ":" + item.path, kind: .unreadable, reason: item.problem ?? "unreadable"))
                continue
            }
            let parts = item.relative.split(separator: "/").map(String.init)
            guard parts.count >= 2 else {
                skipped.append(
                    SkippedItem(item: source + ":" + item.path, reason: "outside the weights, gradients, optimizer and activations groups"))
                continue
            }
            guard info.type.isNumeric else {
                skipped.append(SkippedItem(item: source + ":" + item.path, reason: "\(info.type) data, not a tensor"))
                continue
            }
            let group = parts[0]
            var role: TensorRole
            var slotName: String?
            var nameParts = Array(parts.dropFirst())
            switch group {
            case "weights": role = .weight
            case "gradients": role = .gradient
            case "activations": role = .activation
            case "optimizer":
                role = .optimizer
                guard nameParts.count >= 2 else {
                    skipped.append(
                        SkippedItem(item: source + ":" + item.path, reason: "optimizer scalar (\(nameParts.joined(separator: "/"))), not a tensor"))
                    continue
                }
                slotName = nameParts.removeFirst()
            default:
                skipped.append(SkippedItem(item: source + ":" + item.path, reason: "group \(group) is not part of the native layout"))
                continue
            }
            if role == .optimizer && info.shape.isEmpty {
                skipped.append(SkippedItem(item: source + ":" + item.path, reason: "optimizer scalar (\(slotName ?? "")), not a tensor"))
                continue
            }
            let name = nameParts.joined(separator: "/")
            var unitAxis: Int?
            if let axis = (try? file.attribute("unit_axis", at: item.path))??.int, axis >= 0, axis < info.shape.count {
                unitAxis = axis
            } else if role != .activation {
                unitAxis = framework == "keras" ? kerasUnitAxis(info.shape) : torchUnitAxis(info.shape)
            } else {
                unitAxis = info.shape.count >= 2 ? info.shape.count - 1 : nil
            }
            var trainable: Bool?
            if role == .weight, let flag = (try? file.attribute("in_optimizer", at: item.path))??.int {
                trainable = flag != 0
            }
            let layer: String
            if role == .activation {
                layer = (try? file.attribute("module", at: item.path))??.string ?? name
            } else if framework == "keras" {
                layer = name.contains("/") ? String(name[..<(name.lastIndex(of: "/") ?? name.endIndex)]) : name
            } else {
                layer = LayoutSupport.layer(of: name)
            }
            tensors.append(
                TensorRef(
                    name: name, layer: layer, role: role,
                    slot: slotName.map { LayoutSupport.classifySlot($0, optimizer: metadata.optimizer) },
                    slotName: slotName, shape: info.shape, dtype: info.type, unitAxis: unitAxis,
                    path: item.path, trainable: trainable))
        }
        return (metadata, tensors, skipped, [])
    }
}
