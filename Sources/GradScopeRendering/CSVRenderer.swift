import Foundation
import GradScopeDiagnosis

/// The table a CSV holds (`--csv-table`): CSV has one table per output.
package enum CSVTable: String, CaseIterable, Sendable {
    /// Scan's default: one row per weight tensor and saved step.
    case timeline
    /// The default of inspect and diff: one row per tensor.
    case tensors
    /// One row per finding: kind, severity, tensor, layer, first_step, last_step, message.
    case findings
    /// One row per save: step, loss, lr (scan's run; inspect's one file).
    case loss
}

/// Renders reports as CSV for spreadsheets and scripts: a header row, then one
/// row per tensor (per tensor and step for a scan), or, as `table` asks, one
/// row per finding (of every model, with a `model` column, when a scanned folder
/// holds several) or per save's loss. Fields are quoted as RFC 4180 asks; a
/// missing number is an empty cell, a non-finite one `nan`, `inf` or `-inf`.
package struct CSVRenderer: ReportRenderer, Sendable {
    /// The table to print; nil for the report's own rows (scan's timeline, the tensors of inspect and diff).
    package var table: CSVTable?

    /// A renderer of `table` (nil: the report's own rows).
    package init(table: CSVTable? = nil) { self.table = table }

    /// The scan's timeline, or its findings or loss as `table` asks (``CSVTable/tensors`` is the timeline).
    package func render(_ report: ScanReport) -> String {
        switch table {
        case .findings: return report.models.map { modelFindingRows($0, primaryFindings: report.findings) } ?? findingRows(report.findings)
        case .loss: return lossRows(report.loss)
        case nil, .timeline, .tensors: return timelineRows(report)
        }
    }

    /// A folder of several models: one row per finding of every model, model by model in their order,
    /// with a last column `model` holding the model's number (`models[].model` of the JSON).
    /// `primaryFindings`: the findings of the model the report is about (the report's own).
    package func modelFindingRows(_ models: [ModelReport], primaryFindings: [Finding]) -> String {
        var lines = ["kind,severity,tensor,layer,first_step,last_step,message,model"]
        for model in models.sorted(by: { $0.model < $1.model }) {
            for finding in model.primary ? primaryFindings : model.findings {
                lines.append((findingCells(finding) + [String(model.model)]).map(csvField).joined(separator: ","))
            }
        }
        return lines.joined(separator: "\n") + "\n"
    }

    /// A finding's cells: kind, severity, tensor, layer, first_step, last_step, message.
    package func findingCells(_ finding: Finding) -> [String] {
        [
            finding.kind.rawValue, finding.severity.rawValue, finding.tensor ?? "", finding.layer ?? "",
            finding.firstStep.map(String.init) ?? "", finding.lastStep.map(String.init) ?? "", finding.message,
        ]
    }

    /// One row per finding, in the report's order.
    package func findingRows(_ findings: [Finding]) -> String {
        var lines = ["kind,severity,tensor,layer,first_step,last_step,message"]
        for finding in findings { lines.append(findingCells(finding).map(csvField).joined(separator: ",")) }
        return lines.joined(separator: "\n") + "\n"
    }

    /// One row per save: its step, loss and learning rate (empty cells when not saved).
    package func lossRows(_ points: [LossPoint]) -> String {
        var lines = ["step,loss,lr"]
        for point in points {
            lines.append([String(point.step), csvNumber(point.loss), csvNumber(point.lr)].map(csvField).joined(separator: ","))
        }
        return lines.joined(separator: "\n") + "\n"
    }

    /// One row per weight tensor and saved step of the scan's timeline.
    package func timelineRows(_ report: ScanReport) -> String {
        var lines = ["step,tensor,layer,norm,gradient_norm,update_ratio,zero_fraction,non_finite"]
        for tensor in report.timeline {
            for point in tensor.points {
                lines.append(
                    [
                        String(point.step), tensor.name, tensor.layer, csvNumber(point.norm), csvNumber(point.gradientNorm),
                        csvNumber(point.updateRatio), csvNumber(point.zeroFraction), String(point.nonFinite),
                    ].map(csvField).joined(separator: ","))
            }
        }
        return lines.joined(separator: "\n") + "\n"
    }

    /// The checkpoint's tensors, or its findings, or its one save's loss, as `table` asks
    /// (``CSVTable/timeline`` is the tensors; a checkpoint without a step has no loss row).
    package func render(_ report: InspectReport) -> String {
        switch table {
        case .findings: return findingRows(report.findings)
        case .loss: return lossRows(report.step.map { [LossPoint(step: $0, loss: report.loss, lr: report.lr)] } ?? [])
        case nil, .timeline, .tensors: return tensorRows(report)
        }
    }

    /// One row per tensor of the checkpoint with its statistics (empty cells for a tensor that could not be read).
    package func tensorRows(_ report: InspectReport) -> String {
        var lines = ["name,layer,role,slot,shape,dtype,count,mean,std,min,max,max_abs,l2_norm,zeros,nan,pos_inf,neg_inf,p1,p5,p50,p95,p99"]
        for tensor in report.tensors {
            let s = tensor.stats
            let cells: [String] = [
                tensor.name, tensor.layer, tensor.role.rawValue, tensor.slot ?? "",
                tensor.shape.map(String.init).joined(separator: "x"), tensor.dtype,
                s.map { String($0.count) } ?? "", csvNumber(s?.mean), csvNumber(s?.std), csvNumber(s?.min),
                csvNumber(s?.max), csvNumber(s?.maxAbs), csvNumber(s?.l2Norm), s.map { String($0.zeros) } ?? "",
                s.map { String($0.nan) } ?? "", s.map { String($0.posInf) } ?? "", s.map { String($0.negInf) } ?? "",
                csvNumber(s?.p1), csvNumber(s?.p5), csvNumber(s?.p50), csvNumber(s?.p95), csvNumber(s?.p99),
            ]
            lines.append(cells.map(csvField).joined(separator: ","))
        }
        return lines.joined(separator: "\n") + "\n"
    }

    /// The tensors in both checkpoints, or the findings as `table` asks (a diff has no loss table:
    /// ``CSVTable/loss`` gives the tensors, and the command refuses it).
    package func render(_ report: DiffReport) -> String {
        table == .findings ? findingRows(report.findings) : driftRows(report)
    }

    /// One row per tensor present in both checkpoints with its drift, in the report's order.
    package func driftRows(_ report: DiffReport) -> String {
        var lines = ["name,layer,role,shape,relative_change,per_step,max_abs_delta,cosine,changed_fraction,sign_flips,norm_a,norm_b,status"]
        for t in report.tensors {
            lines.append(
                [
                    t.name, t.layer, t.role.rawValue, t.shape.map(String.init).joined(separator: "x"), csvNumber(t.drift.relativeChange),
                    csvNumber(t.perStep), csvNumber(t.drift.maxAbsDelta), csvNumber(t.drift.cosineSimilarity),
                    csvNumber(t.drift.changedFraction), String(t.drift.signFlips), csvNumber(t.normA), csvNumber(t.normB),
                    t.status,
                ].map(csvField).joined(separator: ","))
        }
        return lines.joined(separator: "\n") + "\n"
    }
}

/// A number as a CSV cell: Swift's shortest round-tripping form, `nan`, `inf`
/// or `-inf` when not finite, and an empty cell when missing.
package func csvNumber(_ value: Double?) -> String {
    guard let value else { return "" }
    return value.isFinite ? "\(value)" : (value.isNaN ? "nan" : (value > 0 ? "inf" : "-inf"))
}

/// Quotes a CSV field when needed (RFC 4180).
public func csvField(_ text: String) -> String {
    if text.contains(",") || text.contains("\"") || text.contains("\n") {
        return "\"" + text.replacingOccurrences(of: "\"", with: "\"\"") + "\""
    }
    return text
}
