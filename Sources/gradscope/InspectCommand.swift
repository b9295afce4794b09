import ArgumentParser
import Foundation
import GradScope

struct InspectCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "inspect",
        abstract: "Every tensor of one checkpoint: role, shape, statistics, a log-magnitude histogram, and what looks wrong.",
        discussion: """
        Shows each tensor's layer and role (weight, gradient, optimizer slot, activation), mean, std, min, max, \
        fraction of exact zeros, and the spread of its magnitudes in powers of two, and reports what one file \
        can show: NaN/Inf, poor initialisation, all-zero gradients, dead units. Findings that need several steps \
        (frozen, collapsing, loss at ln 2) come from `gradscope scan`.
        """
    )

    @Argument(help: "A checkpoint file (.h5, .weights.h5, .keras, native or hand-written).")
    var file: String

    @OptionGroup var reading: ReadingOptions
    @OptionGroup var analysis: AnalysisOptions

    func run() throws {
        let report: InspectReport
        do {
            report = try Analysis.inspect(file, load: reading.loadOptions, thresholds: try analysis.thresholds(), select: analysis.selection)
        } catch {
            exitWithInputError(error)
        }
        switch analysis.format {
        case .json: emit((try encodeJSON(report)) + "\n")
        case .table: emit(analysis.renderer.render(report))
        case .csv:
            var lines = ["name,layer,role,slot,shape,dtype,count,mean,std,min,max,max_abs,l2_norm,zeros,nan,pos_inf,neg_inf,p1,p5,p50,p95,p99"]
            for tensor in report.tensors {
                let s = tensor.stats
                let cells: [String] = [tensor.name, tensor.layer, tensor.role.rawValue, tensor.slot ?? "",
                                       tensor.shape.map(String.init).joined(separator: "x"), tensor.dtype,
                                       s.map { String($0.count) } ?? "", csvNumber(s?.mean), csvNumber(s?.std), csvNumber(s?.min),
                                       csvNumber(s?.max), csvNumber(s?.maxAbs), csvNumber(s?.l2Norm), s.map { String($0.zeros) } ?? "",
                                       s.map { String($0.nan) } ?? "", s.map { String($0.posInf) } ?? "", s.map { String($0.negInf) } ?? "",
                                       csvNumber(s?.p1), csvNumber(s?.p5), csvNumber(s?.p50), csvNumber(s?.p95), csvNumber(s?.p99)]
                lines.append(cells.map(csvField).joined(separator: ","))
            }
            emit(lines.joined(separator: "\n") + "\n")
        }
        throw ExitCode(analysis.exitCode(report.findings))
    }
}

func csvNumber(_ value: Double?) -> String {
    guard let value else { return "" }
    return value.isFinite ? "\(value)" : (value.isNaN ? "nan" : (value > 0 ? "inf" : "-inf"))
}
