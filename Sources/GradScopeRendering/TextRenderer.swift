import ElementTypes
import Foundation
import GradScopeDiagnosis
import GradScopeMeasurement
import GradScopeModel
import GradScopeSources
import GradScopeStatistics

/// Renders reports as text for people: the `table` output format.
///
/// Every string that came from a file (names, paths, messages built from
/// them, notes, skipped items) is printed with its control characters escaped
/// (``terminalSafe(_:)``), so a hostile file cannot drive the terminal.
///
/// With a `width` (a terminal's, or `COLUMNS`), lines fit it: findings, notes
/// and other prose wrap at spaces with a hanging indent (words are never
/// split), sparklines shrink, and the tables drop columns in this order until
/// they fit, the names being shortened in the middle (`…`) only after that:
/// - scan: `shape`, `update/step`, then the sparklines shortened from 16
///   glyphs to 8, then `‖g‖ last`, `‖W‖ first→last`, `ratio`, `grad`;
///   `tensor` and `norm` stay;
/// - inspect: `log2|x|`, `layer`, `dtype`, `shape`, `min`, `max`, `mean`,
///   `role`; `tensor`, `std`, `zeros` and `flags` stay;
/// - diff: `sign flips`, `shape`, `max|ΔW|`, `‖W‖ a→b`, `cosine`, `changed`,
///   `per step`; `tensor`, `‖ΔW‖/‖W‖` and `status` stay.
/// Without a width (a pipe or a file without `COLUMNS`) nothing is wrapped or
/// dropped: one line per record.
public struct TextRenderer: ReportRenderer, Sendable {
    public var style: Style
    public var explain: Bool
    /// The columns every line should fit in; nil for lines of any length.
    public var width: Int?

    /// A renderer with `style`, explanations when `explain`, fitting `width` columns when given.
    public init(style: Style, explain: Bool, width: Int? = nil) {
        self.style = style
        self.explain = explain
        self.width = width
    }

    /// `text` wrapped to the width with a hanging indent of `indent` spaces, each line passed through `styled`.
    package func wrapped(_ text: String, indent: Int, _ styled: (String) -> String = { $0 }) -> [String] {
        wrapHanging(text, width: width, indent: indent).map(styled)
    }

    /// `prefix + rest` wrapped to the width with a hanging indent; the prefix,
    /// which stays whole at the start of the first line, shown as `styledPrefix`.
    package func wrapped(prefix: String, styledPrefix: String, rest: String, indent: Int) -> [String] {
        var lines = wrapHanging(prefix + rest, width: width, indent: indent)
        if let first = lines.first, first.hasPrefix(prefix) {
            lines[0] = styledPrefix + first.dropFirst(prefix.count)
        }
        return lines
    }

    /// The story of a scan: each root cause, then what it caused, indented under it, with the step
    /// each began; nothing when no finding is linked to another.
    package func storyLines(_ story: [StoryEvent]) -> [String] {
        guard !story.isEmpty else { return [] }
        var depth: [Int: Int] = [:]
        for (index, event) in story.enumerated() {
            depth[index] = event.causedBy.isEmpty ? 0 : 1 + (event.causedBy.compactMap { depth[$0] }.max() ?? 0)
        }
        var lines = [style.bold("Story") + style.dim(" (cause → consequences, in the order they began):")]
        for chain in Story.chains(story) {
            for index in chain {
                let event = story[index]
                let level = depth[index] ?? 0
                let step = event.firstStep.map { "step \($0)" } ?? ""
                let lead = String(repeating: "  ", count: level) + (level > 0 ? "→ " : "")
                let prefix = "  " + step.padding(toLength: 10, withPad: " ", startingAt: 0) + lead
                lines.append(contentsOf: wrapped(prefix: prefix, styledPrefix: style.dim(prefix), rest: event.summary, indent: prefix.count))
            }
        }
        lines.append("")
        return lines
    }

    package func findingLines(_ findings: [Finding], notChecked: [NotChecked]) -> [String] {
        var lines: [String] = []
        if findings.isEmpty {
            lines.append(style.good("No findings."))
        }
        let textWidth = width.map { min(96, max($0 - 8, 24)) } ?? 96
        for finding in findings {
            let label = finding.severity.rawValue.uppercased().padding(toLength: 7, withPad: " ", startingAt: 0)
            let steps: String
            if let first = finding.firstStep {
                steps = finding.lastStep.map { $0 != first ? " [steps \(first)–\($0)]" : " [step \(first)]" } ?? " [step \(first)]"
            } else {
                steps = ""
            }
            lines.append(
                contentsOf: wrapped(
                    prefix: label + " " + finding.kind.rawValue,
                    styledPrefix: style.severity(finding.severity, label) + " " + style.bold(finding.kind.rawValue),
                    rest: "\(steps)  \(finding.message)", indent: 8))
            if explain {
                lines.append(contentsOf: wrapText(finding.explanation, width: textWidth).map { "        " + $0 })
                let evidence = finding.evidence.sorted { $0.key < $1.key }.map { "\($0.key)=\(describe($0.value))" }.joined(separator: ", ")
                lines.append(contentsOf: wrapText("evidence: " + evidence, width: textWidth).map { "        " + style.dim($0) })
                lines.append("")
            }
        }
        if !notChecked.isEmpty {
            lines.append("")
            lines.append(style.dim("Not checked:"))
            for item in notChecked {
                lines.append(contentsOf: wrapped("  \(item.kind.rawValue): \(item.reason)", indent: 4, style.dim))
            }
        }
        return lines
    }

    package func describe(_ value: EvidenceValue) -> String {
        switch value {
        case .int(let v): return String(v)
        case .double(let v): return formatNumber(v)
        case .string(let v): return v
        case .bool(let v): return v ? "true" : "false"
        case .null: return "null"
        case .list(let values):
            let shown = values.prefix(8).map(describe).joined(separator: " ")
            return "[" + shown + (values.count > 8 ? " …" : "") + "]"
        }
    }

    package func verdictLine(_ verdict: String, worst: Severity?) -> String {
        guard let worst, worst >= .warning else { return style.good(verdict) }
        return style.severity(worst, verdict)
    }

    /// The verdict wrapped to the width, each line coloured by the worst severity.
    package func verdictLines(_ verdict: String, worst: Severity?) -> [String] {
        wrapped(verdict, indent: 2) { verdictLine($0, worst: worst) }
    }

    /// Up to `limit` lines of `items`, then how many more there are.
    package func listed(_ items: [String], limit: Int, indent: String, styled: (String) -> String) -> [String] {
        var lines = items.prefix(limit).flatMap { wrapped(indent + $0, indent: indent.count + 2, styled) }
        if items.count > limit {
            lines += wrapped(
                indent + "… and \(groupedCount(items.count - limit)) more (--format json lists them all)", indent: indent.count + 2, styled)
        }
        return lines
    }

    /// When most of a run's files were skipped, a line saying so under the verdict: the
    /// count by kind of skip, and the steps used (nil when most files were used).
    package func skippedHeadline(_ skippedFiles: [SkippedItem], stepsUsed: Int) -> String? {
        guard skippedFiles.count > stepsUsed else { return nil }
        let kinds: [(SkipKind, String)] = [
            (.superseded, "superseded by another file (a duplicate step, another layout)"),
            (.unreadable, "unreadable"),
            (.notAnalysed, "not checkpoints"),
            (.metadata, "metadata"),
        ]
        let parts = kinds.compactMap { kind, words -> String? in
            let count = skippedFiles.filter { $0.kind == kind }.count
            return count > 0 ? "\(groupedCount(count)) \(words)" : nil
        }
        return "Most files were skipped: \(groupedCount(skippedFiles.count)) skipped (\(parts.joined(separator: ", "))), "
            + "\(groupedCount(stepsUsed)) step\(stepsUsed == 1 ? "" : "s") used; the list is below."
    }

    /// The scan's tensor table: a column per quantity, with sparklines of `sparkWidth` glyphs.
    /// `perSave`: the step numbers do not count optimizer updates (epochs, the files' order), so the
    /// update column gives the change per save interval, and says so.
    package func scanColumns(_ timeline: [TensorTimeline], sparkWidth: Int, perSave: Bool = false) -> [TableColumn] {
        var cells = [[String]](repeating: [], count: 8)
        for tensor in timeline {
            let norms = tensor.points.map { $0.nonFinite > 0 ? Double.nan : $0.norm }
            let grads = tensor.points.map(\.gradientNorm)
            let ratios = tensor.points.map { perSave ? $0.updatePerSave ?? $0.updateRatio : $0.updateRatio }
            let hasGrad = grads.contains { $0 != nil }
            let lastRatio = ratios.last { $0 != nil } ?? nil
            let row = [
                tensor.name, formatShape(tensor.shape),
                "\(formatNumber(norms.first ?? nil))→\(formatNumber(norms.last ?? nil))",
                sparkline(norms, width: sparkWidth),
                hasGrad ? formatNumber(grads.last ?? nil) : "-",
                hasGrad ? sparkline(grads, width: sparkWidth) : "",
                formatNumber(lastRatio),
                ratios.count > 1 ? sparkline(ratios, width: sparkWidth) : "",
            ]
            for (index, cell) in row.enumerated() { cells[index].append(cell) }
        }
        // The order in which columns give way to a narrow terminal (see the type's comment).
        return [
            TableColumn("tensor", cells[0]), TableColumn("shape", cells[1], dropRank: 1),
            TableColumn("‖W‖ first→last", cells[2], dropRank: 4), TableColumn("norm", cells[3]),
            TableColumn("‖g‖ last", cells[4], dropRank: 3), TableColumn("grad", cells[5], dropRank: 6),
            TableColumn(perSave ? "update/save" : "update/step", cells[6], dropRank: 2), TableColumn("ratio", cells[7], dropRank: 5),
        ]
    }

    /// How the steps were found, for the scan's first line: " from file names", " from the optimizer's counter".
    package func stepOrigin(_ source: String?) -> String {
        switch source.flatMap(StepSource.init(rawValue:)) {
        case .attribute?: return " from the files' step attribute"
        case .optimizerIterations?: return " from the optimizer's counter"
        case .fileName?: return " from file names"
        case .groupName?: return " from group names"
        case .epoch?: return " are epochs"
        case .position?: return " by the files' order"
        case .trainerGlobalStep?: return " from the Trainer's global step"
        case nil: return ""
        }
    }

    /// A scan: its verdict, the loss, a row per weight tensor with sparklines over the steps, the findings and what was skipped.
    public func render(_ report: ScanReport) -> String {
        let report = report.terminalSafe
        var lines: [String] = []
        lines.append(
            contentsOf: wrapped(
                prefix: "gradscope scan \(report.source)", styledPrefix: style.bold("gradscope scan \(report.source)"),
                rest: "  (\(report.steps.count) step\(report.steps.count == 1 ? "" : "s")"
                    + (report.layout.map { ", \($0) layout" } ?? "")
                    + (report.steps.isEmpty
                        ? ")" : ", steps \(report.steps.first ?? 0)–\(report.steps.last ?? 0)\(stepOrigin(report.stepSource)))"),
                indent: 4))
        lines.append(contentsOf: verdictLines(report.verdict, worst: report.findings.map(\.severity).max()))
        let skippedFiles = report.skipped.filter { !$0.item.contains(":/") }
        if let headline = skippedHeadline(skippedFiles, stepsUsed: report.steps.count) {
            lines.append(contentsOf: wrapped(headline, indent: 2) { style.severity(.warning, $0) })
        }
        lines.append("")
        let losses = report.loss.map(\.loss)
        if losses.contains(where: { $0 != nil }) {
            let finite = losses.compactMap { $0 }.filter(\.isFinite)
            let range = "\(formatNumber(finite.first)) → \(formatNumber(losses.last ?? nil))"
            let sparkWidth = width.map { max(8, min(40, $0 - 8 - range.count)) } ?? 40
            lines.append("loss  \(sparkline(losses, logScale: false, width: sparkWidth))  \(range)")
            lines.append("")
        }
        if !report.timeline.isEmpty {
            // Shape and update/step go first; only then are the sparklines shortened, and more columns dropped.
            let perSave = report.stepsCountUpdates == false
            var columns = fitColumns(scanColumns(report.timeline, sparkWidth: 16, perSave: perSave), width: width, upToRank: 2)
            if let width, tableWidth(columns) > width {
                columns = fitColumns(scanColumns(report.timeline, sparkWidth: 8, perSave: perSave), width: width)
            }
            lines.append(renderTable(tableRows(columns), style: style))
            lines.append(contentsOf: wrapped(sparklineLegend, indent: 2, style.dim))
            lines.append("")
        }
        lines.append(contentsOf: storyLines(report.story))
        lines.append(contentsOf: findingLines(report.findings, notChecked: report.notChecked))
        for model in (report.models ?? []) where !model.primary {
            // Another model of the folder, judged on its own: its verdict, its findings, its files.
            lines.append("")
            let files = model.stepFiles.map { ($0.file as NSString).lastPathComponent }
            let fileSpan = files.count > 1 ? "\(files.first ?? "") … \(files.last ?? "")" : files.first ?? ""
            lines.append(style.bold("Model \(model.model) of this folder (\(model.steps.count) saves: \(fileSpan)):"))
            lines.append(contentsOf: wrapped(model.verdict, indent: 2))
            let serious = model.findings.filter { $0.severity >= .warning }
            lines.append(contentsOf: listed(serious.map { "\($0.severity.rawValue): \($0.message)" }, limit: 8, indent: "  ", styled: { $0 }))
        }
        if !report.notes.isEmpty {
            lines.append("")
            lines.append(style.dim("Notes:"))
            lines.append(contentsOf: listed(report.notes, limit: 12, indent: "  ", styled: style.dim))
        }
        if !skippedFiles.isEmpty {
            lines.append("")
            lines.append(style.dim("Skipped \(skippedFiles.count) file(s):"))
            lines.append(contentsOf: listed(skippedFiles.map { "\($0.item): \($0.reason)" }, limit: 20, indent: "  ", styled: style.dim))
        }
        if !explain && !report.findings.isEmpty {
            lines.append("")
            lines.append(
                contentsOf: wrapped(
                    "Run with --explain for what each finding means and what to try; --format json for scripts.", indent: 0, style.dim))
        }
        return lines.joined(separator: "\n") + "\n"
    }

    /// One checkpoint: its verdict, a row per tensor with its statistics and flags, and the findings.
    public func render(_ report: InspectReport) -> String {
        let report = report.terminalSafe
        var lines: [String] = []
        var header = "  (\(report.layout) layout"
        if let step = report.step { header += ", step \(step)" }
        if let loss = report.loss { header += ", loss \(formatNumber(loss))" }
        if let lr = report.lr { header += ", lr \(formatNumber(lr))" }
        if let optimizer = report.optimizer { header += ", \(optimizer)" }
        let title = "gradscope inspect \(report.file)"
        lines.append(contentsOf: wrapped(title + header + ")", indent: 4, style.bold))
        lines.append(contentsOf: verdictLines(report.verdict, worst: report.findings.map(\.severity).max()))
        lines.append("")
        var cells = [[String]](repeating: [], count: 12)
        for tensor in report.tensors {
            let row: [String]
            if let stats = tensor.stats {
                var flags: [String] = []
                if stats.nan > 0 { flags.append(style.severity(.error, "NaN×\(stats.nan)")) }
                if stats.posInf + stats.negInf > 0 { flags.append(style.severity(.error, "Inf×\(stats.posInf + stats.negInf)")) }
                if stats.count > 0 && stats.zeros == stats.count { flags.append(style.severity(.warning, "all-zero")) }
                if let dead = tensor.deadUnits, dead > 0 { flags.append("\(dead) zero units") }
                if tensor.trainable == false { flags.append("not trained") }
                let zeroPercent = stats.count > 0 ? formatNumber(Double(stats.zeros) / Double(stats.count) * 100) + "%" : "-"
                row = [
                    tensor.name, tensor.layer, roleLabel(tensor), formatShape(tensor.shape), tensor.dtype,
                    formatNumber(stats.mean), formatNumber(stats.std), formatNumber(stats.min), formatNumber(stats.max),
                    zeroPercent, log2Bars(stats.log2Histogram), flags.joined(separator: " "),
                ]
            } else {
                row = [
                    tensor.name, tensor.layer, roleLabel(tensor), formatShape(tensor.shape), tensor.dtype, "", "", "", "", "", "",
                    style.severity(.warning, tensor.error ?? "unreadable"),
                ]
            }
            for (index, cell) in row.enumerated() { cells[index].append(cell) }
        }
        // The order in which columns give way to a narrow terminal (see the type's comment).
        let columns = [
            TableColumn("tensor", cells[0]), TableColumn("layer", cells[1], dropRank: 2), TableColumn("role", cells[2], dropRank: 8),
            TableColumn("shape", cells[3], dropRank: 4), TableColumn("dtype", cells[4], dropRank: 3),
            TableColumn("mean", cells[5], dropRank: 7), TableColumn("std", cells[6]), TableColumn("min", cells[7], dropRank: 5),
            TableColumn("max", cells[8], dropRank: 6), TableColumn("zeros", cells[9]), TableColumn("log2|x|", cells[10], dropRank: 1),
            TableColumn("flags", cells[11]),
        ]
        lines.append(renderTable(tableRows(fitColumns(columns, width: width)), style: style))
        lines.append("")
        lines.append(contentsOf: findingLines(report.findings, notChecked: report.notChecked))
        if !report.notes.isEmpty {
            lines.append("")
            lines.append(contentsOf: report.notes.flatMap { wrapped("note: " + $0, indent: 6, style.dim) })
        }
        return lines.joined(separator: "\n") + "\n"
    }

    /// Two checkpoints: their verdict, a row per common tensor with its drift, the tensors added, removed or reshaped, and the findings.
    public func render(_ report: DiffReport) -> String {
        let report = report.terminalSafe
        var lines: [String] = []
        let title = "gradscope diff \(report.a) → \(report.b)"
        lines.append(
            contentsOf: wrapped(
                prefix: title, styledPrefix: style.bold(title),
                rest: "  (step \(report.stepA.map(String.init) ?? "?") → \(report.stepB.map(String.init) ?? "?"))", indent: 4))
        lines.append(contentsOf: verdictLines(report.verdict, worst: report.findings.map(\.severity).max()))
        lines.append("")
        var cells = [[String]](repeating: [], count: 10)
        for tensor in report.tensors {
            let status: String
            switch tensor.status {
            case "frozen", "collapsing": status = style.severity(.warning, tensor.status)
            case "non-finite": status = style.severity(.error, tensor.status)
            default: status = tensor.status
            }
            let row = [
                tensor.name, formatShape(tensor.shape), formatNumber(tensor.drift.relativeChange), formatNumber(tensor.perStep),
                formatNumber(tensor.drift.maxAbsDelta), formatNumber(tensor.drift.cosineSimilarity),
                tensor.drift.changedFraction.map { formatNumber($0 * 100) + "%" } ?? "-", String(tensor.drift.signFlips),
                "\(formatNumber(tensor.normA))→\(formatNumber(tensor.normB))", status,
            ]
            for (index, cell) in row.enumerated() { cells[index].append(cell) }
        }
        // The order in which columns give way to a narrow terminal (see the type's comment).
        let columns = [
            TableColumn("tensor", cells[0]), TableColumn("shape", cells[1], dropRank: 2), TableColumn("‖ΔW‖/‖W‖", cells[2]),
            TableColumn("per step", cells[3], dropRank: 7), TableColumn("max|ΔW|", cells[4], dropRank: 3),
            TableColumn("cosine", cells[5], dropRank: 5), TableColumn("changed", cells[6], dropRank: 6),
            TableColumn("sign flips", cells[7], dropRank: 1), TableColumn("‖W‖ a→b", cells[8], dropRank: 4), TableColumn("status", cells[9]),
        ]
        if !report.tensors.isEmpty { lines.append(renderTable(tableRows(fitColumns(columns, width: width)), style: style)) }
        for (title, items) in [("added", report.added), ("removed", report.removed), ("reshaped", report.reshaped)] where !items.isEmpty {
            lines.append("")
            lines.append(
                contentsOf: wrapped(
                    "\(items.count) tensor(s) \(title): " + items.prefix(10).joined(separator: ", ") + (items.count > 10 ? ", …" : ""), indent: 4))
        }
        if !report.notes.isEmpty {
            lines.append("")
            for note in report.notes { lines.append(contentsOf: wrapped("note: " + note, indent: 6).map(style.dim)) }
        }
        lines.append("")
        lines.append(contentsOf: findingLines(report.findings, notChecked: report.notChecked))
        return lines.joined(separator: "\n") + "\n"
    }

    package func roleLabel(_ tensor: InspectedTensor) -> String {
        tensor.role == .optimizer ? "opt:" + (tensor.slot ?? "?") : tensor.role.rawValue
    }

    /// The log-magnitude histogram as a compact bar strip over its exponent range.
    package func log2Bars(_ histogram: Log2Histogram) -> String {
        guard let high = histogram.maxExponent, !histogram.counts.isEmpty else { return histogram.zeros > 0 ? "0" : "" }
        let bars = sparkline(histogram.counts.map { Double($0) }, logScale: false, width: 12)
        return "2^\(histogram.minExponent)\(bars)2^\(high)"
    }
}

/// Splits text into lines of at most `width` characters at spaces.
package func wrapText(_ text: String, width: Int) -> [String] {
    var lines: [String] = []
    var current = ""
    for word in text.split(separator: " ", omittingEmptySubsequences: true) {
        if current.count + word.count + 1 > width && !current.isEmpty {
            lines.append(current)
            current = ""
        }
        current += (current.isEmpty ? "" : " ") + word
    }
    if !current.isEmpty { lines.append(current) }
    return lines
}

/// A count with its thousands grouped by commas: 2,587.
package func groupedCount(_ count: Int) -> String {
    let digits = String(count.magnitude)
    var grouped = ""
    for (index, digit) in digits.enumerated() {
        if index > 0 && (digits.count - index) % 3 == 0 { grouped += "," }
        grouped.append(digit)
    }
    return (count < 0 ? "-" : "") + grouped
}
