import ElementTypes
import GradScopeDiagnosis
import GradScopeMeasurement
import GradScopeModel
import GradScopeSources
import GradScopeStatistics
import HDF5

extension FileListing {
    /// The tree as text: one line per object, indented by depth, datasets
    /// with shape, type, layout and stored size aligned in columns. Names,
    /// link targets, problems and attributes come from the file: their control
    /// characters are shown escaped (``terminalSafe(_:)``).
    public func renderText(showAttributes: Bool) -> String {
        var lines: [String] = []
        let datasets = items.filter { $0.dataset != nil }.count
        let groups = items.filter { if case .group = $0.entry.kind { return true } else { return false } }.count
        if format == "HDF5" {
            lines.append("\(terminalSafe(path))  (HDF5, \(formatBytes(fileSize)), \(groups) groups, \(datasets) datasets)")
        } else {
            lines.append("\(terminalSafe(path))  (\(format), \(formatBytes(fileSize)), \(datasets) tensors)")
        }
        if showAttributes { lines.append(contentsOf: attributeLines(rootAttributes, indent: "  ")) }

        let nameWidth = min(items.map { ($0.entry.depth - 1) * 2 + terminalSafe($0.entry.name).count + 1 }.max() ?? 10, 60)
        let shapeWidth = items.compactMap { $0.dataset.map { formatShape($0.shape).count } }.max() ?? 6
        let typeWidth = items.compactMap { $0.dataset.map { typeLabel($0).count } }.max() ?? 7
        for item in items {
            let indent = String(repeating: "  ", count: item.entry.depth - 1)
            var label = indent + terminalSafe(item.entry.name)
            switch item.entry.kind {
            case .group: label += "/"
            case .softLink(let target): label += " -> \(terminalSafe(target))"
            case .externalLink(let file, let object): label += " -> \(terminalSafe(file)):\(terminalSafe(object))"
            case .alias(let target): label += " = \(terminalSafe(target))"
            default: break
            }
            var line = "  " + pad(label, nameWidth)
            if let info = item.dataset {
                let layout =
                    info.layout.rawValue + (info.chunkShape.map { " " + formatShape($0) } ?? "")
                    + (info.filters.isEmpty ? "" : " " + terminalSafe(info.filters.map(\.name).joined(separator: "+")))
                line += "  " + pad(formatShape(info.shape), shapeWidth)
                line += "  " + pad(typeLabel(info), typeWidth)
                line += "  " + pad(formatBytes(info.storageSize), 8)
                line += "  " + layout
            }
            if let problem = item.problem {
                line += "  [\(terminalSafe(problem))]"
            }
            lines.append(line.trailingSpacesRemoved)
            if showAttributes {
                lines.append(contentsOf: attributeLines(item.attributes, indent: "  " + indent + "    "))
            }
        }
        return lines.joined(separator: "\n") + "\n"
    }

    private func typeLabel(_ info: DatasetInfo) -> String {
        terminalSafe(info.byteOrder == .big ? "\(info.type) (BE)" : info.type.description)
    }

    private func attributeLines(_ attributes: [Attribute], indent: String) -> [String] {
        attributes.map { attribute in
            var text = terminalSafe(attribute.value.description)
            if text.count > 200 { text = String(text.prefix(200)) + "…" }
            return "\(indent)@\(terminalSafe(attribute.name)) = \(text)"
        }
    }
}

package func pad(_ text: String, _ width: Int) -> String {
    text.count >= width ? text : text + String(repeating: " ", count: width - text.count)
}

extension String {
    package var trailingSpacesRemoved: String {
        var copy = self
        while copy.last == " " { copy.removeLast() }
        return copy
    }
}
