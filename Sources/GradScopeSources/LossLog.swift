import ElementTypes
import Foundation
import GradScopeModel
import HDF5

/// A training log written next to the checkpoints: Keras's `CSVLogger`
/// (`epoch,loss,...`, one row per epoch, epochs from 0), or any CSV or TSV with
/// an `epoch` (or `step`) column and a `loss` column. Keras checkpoints hold no
/// loss, so without such a log the loss-plateau rule cannot look at them.
public struct LossLog: Sendable {
    public enum Index: String, Sendable { case epoch, step }
    public let file: String
    public let index: Index
    public let rows: [(number: Int, loss: Double)]

    /// Largest log read: a CSVLogger file is a few hundred bytes per epoch; 4 MiB is about
    /// 100,000 rows of a log written every step.
    package static let maxBytes = 4 << 20

    /// Reads `path` as a loss log, or nil when it is not one (no header with an
    /// epoch or step column and a loss column, or no row with a finite loss).
    public static func read(_ path: String) -> LossLog? {
        guard let attributes = try? FileManager.default.attributesOfItem(atPath: path),
            let size = attributes[.size] as? Int, size > 0, size <= maxBytes,
            let data = FileManager.default.contents(atPath: path)
        else { return nil }
        return parse(String(decoding: data, as: UTF8.self), file: path)
    }

    package static func parse(_ text: String, file: String) -> LossLog? {
        // A byte-order mark (Excel's "CSV UTF-8", pandas' utf-8-sig) is no part of the first column's name.
        let text = text.hasPrefix("\u{FEFF}") ? String(text.dropFirst()) : text
        let lines = text.split(whereSeparator: \.isNewline).map(String.init).filter { !$0.trimmingCharacters(in: .whitespaces).isEmpty }
        guard let header = lines.first else { return nil }
        let separator: Character = header.contains("\t") ? "\t" : (header.contains(";") && !header.contains(",") ? ";" : ",")
        func fields(_ line: String) -> [String] {
            line.split(separator: separator, omittingEmptySubsequences: false).map {
                $0.trimmingCharacters(in: .whitespaces).trimmingCharacters(in: CharacterSet(charactersIn: "\""))
            }
        }
        let names = fields(header).map { $0.lowercased() }
        guard let lossColumn = names.firstIndex(where: { ["loss", "train_loss", "training_loss"].contains($0) }) else { return nil }
        let index: Index
        let indexColumn: Int
        if let column = names.firstIndex(where: { ["step", "global_step", "iteration", "iter"].contains($0) }) {
            (index, indexColumn) = (.step, column)
        } else if let column = names.firstIndex(of: "epoch") {
            (index, indexColumn) = (.epoch, column)
        } else {
            return nil
        }
        var rows: [(Int, Double)] = []
        for line in lines.dropFirst() {
            let values = fields(line)
            guard values.count > max(lossColumn, indexColumn),
                let number = Int(values[indexColumn]) ?? Double(values[indexColumn]).flatMap({ $0.isFinite && $0 >= 0 && $0 < 1e15 ? Int($0) : nil }),
                let loss = Double(values[lossColumn])
            else { continue }
            rows.append((number, loss))
        }
        guard rows.contains(where: { $0.1.isFinite }) else { return nil }
        return LossLog(file: file, index: index, rows: rows)
    }

    /// Gives each checkpoint without a loss the logged loss of its save, and says how,
    /// or why it could not. Rows match checkpoints by step when the log counts steps
    /// and the run's steps are read from the files; when the log counts epochs, by the
    /// epoch a checkpoint names (Keras's `{epoch}` counts from 1, CSVLogger's from 0),
    /// else one row per checkpoint in order when there are as many of each.
    package func apply(to checkpoints: inout [Checkpoint]) -> String? {
        let missing = checkpoints.indices.filter { checkpoints[$0].metadata.loss == nil }
        guard !missing.isEmpty else { return nil }
        let name = (file as NSString).lastPathComponent
        let byNumber = Dictionary(rows.map { ($0.number, $0.loss) }, uniquingKeysWith: { _, last in last })
        var matched = 0
        switch index {
        case .step:
            for index in missing {
                // Only steps that count optimizer updates are steps of the log (`weights.03.h5` numbers an epoch).
                guard let step = checkpoints[index].metadata.step, StepCounting.countsUpdates(checkpoints[index]),
                    let loss = byNumber[step]
                else { continue }
                checkpoints[index].metadata.loss = loss
                matched += 1
            }
        case .epoch:
            let epochs = missing.map { checkpoints[$0].metadata.epoch }
            if epochs.allSatisfy({ $0 != nil }) {
                // One-based epochs in the names (Keras), or zero-based (as the log counts).
                let oneBased = epochs.allSatisfy { byNumber[($0 ?? 0) - 1] != nil }
                for index in missing {
                    guard let epoch = checkpoints[index].metadata.epoch, let loss = byNumber[oneBased ? epoch - 1 : epoch] else { continue }
                    checkpoints[index].metadata.loss = loss
                    matched += 1
                }
            } else if rows.count == checkpoints.count {
                for (index, row) in zip(checkpoints.indices, rows) where checkpoints[index].metadata.loss == nil {
                    checkpoints[index].metadata.loss = row.loss
                    matched += 1
                }
            }
        }
        if matched == 0 {
            return
                "\(name): a loss log of \(rows.count) \(index.rawValue)(s) whose rows cannot be matched to the \(checkpoints.count) checkpoints (no loss used)"
        }
        return "loss from \(name) (\(index.rawValue) by \(index.rawValue)): \(matched) of \(checkpoints.count) checkpoints"
    }
}
