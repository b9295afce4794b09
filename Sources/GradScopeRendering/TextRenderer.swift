import ElementTypes
import Foundation
import GradScopeDiagnosis
import GradScopeMeasurement
import GradScopeModel
import GradScopeSources
import GradScopeStatistics

/// Renders reports as text for people: the `table` output format.
public struct TextRenderer: ReportRenderer, Sendable {
    public var style: Style
    public var explain: Bool

    public init(style: Style, explain: Bool) {
        self.style = style
        self.explain = explain
    }

    package func findingLines(_ findings: [Finding], notChecked: [NotChecked]) -> [String] {
        var lines: [String] = []
        if findings.isEmpty {
            lines.append(style.good("No findings."))
        }
        for finding in findings {
            let label = style.severity(finding.severity, finding.severity.rawValue.uppercased().padding(toLength: 7, withPad: " ", startingAt: 0))
            let steps: String
            if let first = finding.firstStep {
                steps = finding.lastStep.map { $0 != first ? " [steps \(first)–\($0)]" : " [step \(first)]" } ?? " [step \(first)]"
            } else {
                steps = ""
            }
            lines.append("\(label) \(style.bold(finding.kind.rawValue))\(steps)  \(finding.message)")
            if explain {
                lines.append(contentsOf: wrapText(finding.explanation, width: 96).map { "        " + $0 })
                let evidence = finding.evidence.sorted { $0.key < $1.key }.map { "\($0.key)=\(describe($0.value))" }.joined(separator: ", ")
                lines.append(contentsOf: wrapText("evidence: " + evidence, width: 96).map { "        " + style.dim($0) })
                lines.append("")
            }
        }
        if !notChecked.isEmpty {
            lines.append("")
            lines.append(style.dim("Not checked:"))
            for item in notChecked {
                lines.append(style.dim("  \(item.kind.rawValue): \(item.reason)"))
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

    /// A scan: its verdict, the loss, a row per weight tensor with sparklines over the steps, the findings and what was skipped.
    public func render(_ report: ScanReport) -> String {
        var lines: [String] = []
        lines.append(
            style.bold("gradscope scan \(report.source)") + "  (\(report.steps.count) step\(report.steps.count == 1 ? "" : "s")"
                + (report.layout.map { ", \($0) layout" } ?? "")
                + (report.steps.isEmpty ? ")" : ", steps \(report.steps.first ?? 0)–\(report.steps.last ?? 0))"))
        lines.append(verdictLine(report.verdict, worst: report.findings.map(\.severity).max()))
        lines.append("")
        let losses = report.loss.map(\.loss)
        if losses.contains(where: { $0 != nil }) {
            let finite = losses.compactMap { $0 }.filter(\.isFinite)
            lines.append(
                "loss  \(sparkline(losses, logScale: false, width: 40))  \(formatNumber(finite.first)) → \(formatNumber(losses.last ?? nil))")
            lines.append("")
        }
        if !report.timeline.isEmpty {
            var rows: [[String]] = [["tensor", "shape", "‖W‖ first→last", "norm", "‖g‖ last", "grad", "update/step", "ratio"]]
            for tensor in report.timeline {
                let norms = tensor.points.map { $0.nonFinite > 0 ? Double.nan : $0.norm }
                let grads = tensor.points.map(\.gradientNorm)
                let ratios = tensor.points.map(\.updateRatio)
                let hasGrad = grads.contains { $0 != nil }
                let lastRatio = ratios.last { $0 != nil } ?? nil
                rows.append([
                    tensor.name, formatShape(tensor.shape),
                    "\(formatNumber(norms.first ?? nil))→\(formatNumber(norms.last ?? nil))",
                    sparkline(norms, width: 16),
                    hasGrad ? formatNumber(grads.last ?? nil) : "-",
                    hasGrad ? sparkline(grads, width: 16) : "",
                    formatNumber(lastRatio),
                    ratios.count > 1 ? sparkline(ratios, width: 16) : "",
                ])
            }
            lines.append(renderTable(rows, style: style))
            lines.append("")
        }
        lines.append(contentsOf: findingLines(report.findings, notChecked: report.notChecked))
        if !report.notes.isEmpty {
            lines.append("")
            lines.append(style.dim("Notes:"))
            lines.append(contentsOf: report.notes.prefix(12).map { style.dim("  " + $0) })
        }
        let skippedFiles = report.skipped.filter { !$0.item.contains(":/") }
        if !skippedFiles.isEmpty {
            lines.append("")
            lines.append(style.dim("Skipped \(skippedFiles.count) file(s):"))
            lines.append(contentsOf: skippedFiles.prefix(20).map { style.dim("  \($0.item): \($0.reason)") })
        }
        if !explain && !report.findings.isEmpty {
            lines.append("")
            lines.append(style.dim("Run with --explain for what each finding means and what to try; --format json for scripts."))
        }
        return lines.joined(separator: "\n") + "\n"
    }

    /// One checkpoint: its verdict, a row per tensor with its statistics and flags, and the findings.
    public func render(_ report: InspectReport) -> String {
        var lines: [String] = []
        var header = "gradscope inspect \(report.file)  (\(report.layout) layout"
        if let step = report.step { header += ", step \(step)" }
        if let loss = report.loss { header += ", loss \(formatNumber(loss))" }
        if let lr = report.lr { header += ", lr \(formatNumber(lr))" }
        if let optimizer = report.optimizer { header += ", \(optimizer)" }
        lines.append(style.bold(header + ")"))
        lines.append(verdictLine(report.verdict, worst: report.findings.map(\.severity).max()))
        lines.append("")
        var rows: [[String]] = [["tensor", "layer", "role", "shape", "dtype", "mean", "std", "min", "max", "zeros", "log2|x|", "flags"]]
        for tensor in report.tensors {
            guard let stats = tensor.stats else {
                rows.append([
                    tensor.name, tensor.layer, roleLabel(tensor), formatShape(tensor.shape), tensor.dtype, "", "", "", "", "", "",
                    style.severity(.warning, tensor.error ?? "unreadable"),
                ])
                continue
            }
            var flags: [String] = []
            if stats.nan > 0 { flags.append(style.severity(.error, "NaN×\(stats.nan)")) }
            if stats.posInf + stats.negInf > 0 { flags.append(style.severity(.error, "Inf×\(stats.posInf + stats.negInf)")) }
            if stats.count > 0 && stats.zeros == stats.count { flags.append(style.severity(.warning, "all-zero")) }
            if let dead = tensor.deadUnits, dead > 0 { flags.append("\(dead) zero units") }
            if tensor.trainable == false { flags.append("not trained") }
            let zeroPercent = stats.count > 0 ? formatNumber(Double(stats.zeros) / Double(stats.count) * 100) + "%" : "-"
            rows.append([
                tensor.name, tensor.layer, roleLabel(tensor), formatShape(tensor.shape), tensor.dtype,
                formatNumber(stats.mean), formatNumber(stats.std), formatNumber(stats.min), formatNumber(stats.max),
                zeroPercent, log2Bars(stats.log2Histogram), flags.joined(separator: " "),
            ])
        }
        lines.append(renderTable(rows, style: style))
        lines.append("")
        lines.append(contentsOf: findingLines(report.findings, notChecked: report.notChecked))
        if !report.notes.isEmpty {
            lines.append("")
            lines.append(contentsOf: report.notes.map { style.dim("note: " + $0) })
        }
        return lines.joined(separator: "\n") + "\n"
    }

    /// Two checkpoints: their verdict, a row per common tensor with its drift, the tensors added, removed or reshaped, and the findings.
    public func render(_ report: DiffReport) -> String {
        var lines: [String] = []
        lines.append(
            style.bold("gradscope diff \(report.a) → \(report.b)")
                + "  (step \(report.stepA.map(String.init) ?? "?") → \(report.stepB.map(String.init) ?? "?"))")
        lines.append(verdictLine(report.verdict, worst: report.findings.map(\.severity).max()))
        lines.append("")
        var rows: [[String]] = [["tensor", "shape", "‖ΔW‖/‖W‖", "per step", "max|ΔW|", "cosine", "changed", "sign flips", "‖W‖ a→b", "status"]]
        for tensor in report.tensors {
            let status: String
            switch tensor.status {
            case "frozen", "collapsing": status = style.severity(.warning, tensor.status)
            case "non-finite": status = style.severity(.error, tensor.status)
            default: status = tensor.status
            }
            rows.append([
                tensor.name, formatShape(tensor.shape), formatNumber(tensor.drift.relativeChange), formatNumber(tensor.perStep),
                formatNumber(tensor.drift.maxAbsDelta), formatNumber(tensor.drift.cosineSimilarity),
                tensor.drift.changedFraction.map { formatNumber($0 * 100) + "%" } ?? "-", String(tensor.drift.signFlips),
                "\(formatNumber(tensor.normA))→\(formatNumber(tensor.normB))", status,
            ])
        }
        if !report.tensors.isEmpty { lines.append(renderTable(rows, style: style)) }
        for (title, items) in [("added", report.added), ("removed", report.removed), ("reshaped", report.reshaped)] where !items.isEmpty {
            lines.append("")
            lines.append("\(items.count) tensor(s) \(title): " + items.prefix(10).joined(separator: ", ") + (items.count > 10 ? ", …" : ""))
        }
        if !report.notes.isEmpty {
            lines.append("")
            lines.append(contentsOf: report.notes.map { style.dim("note: " + $0) })
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
