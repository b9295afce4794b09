import Foundation
import GradScopeDiagnosis

/// Renders reports as CSV for spreadsheets and scripts: a header row, then one
/// row per tensor (per tensor and step for a scan). Fields are quoted as RFC
/// 4180 asks; a missing number is an empty cell, a non-finite one `nan`, `inf`
/// or `-inf`. Findings are not in the CSV (they are in the table and the JSON).
package struct CSVRenderer: ReportRenderer, Sendable {
    /// A renderer; CSV has no options.
    package init() {}

    /// One row per weight tensor and saved step of the scan's timeline.
    package func render(_ report: ScanReport) -> String {
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

    /// One row per tensor of the checkpoint with its statistics (empty cells for a tensor that could not be read).
    package func render(_ report: InspectReport) -> String {
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

    /// One row per tensor present in both checkpoints with its drift, in the report's order.
    package func render(_ report: DiffReport) -> String {
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
