import ArgumentParser
import Foundation
import GradScope
import HDF5

struct ProbeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "probe", shouldDisplay: false)
    @Argument var file: String
    @OptionGroup var reading: ReadingOptions
    func run() throws {
        do {
            for checkpoint in try CheckpointLoader.load(file, options: reading.loadOptions) {
                print("\(checkpoint.source) layout=\(checkpoint.layout.rawValue) step=\(String(describing: checkpoint.metadata.step)) src=\(String(describing: checkpoint.metadata.stepSource)) opt=\(checkpoint.metadata.optimizer ?? "-") lr=\(String(describing: checkpoint.metadata.learningRate)) fw=\(checkpoint.metadata.framework ?? "-")")
                print("  layers: \(checkpoint.layers.joined(separator: ", "))")
                for t in checkpoint.tensors { print("  \(t.role.rawValue)\t\(t.slotName ?? "")\t\(t.name)\t\(t.layer)\t\(t.shape)\t\(t.dtype)\tunit=\(t.unitAxis.map(String.init) ?? "-")\ttrain=\(t.trainable.map { "\($0)" } ?? "?")\t\(t.path)") }
                for n in checkpoint.notes { print("  note: \(n)") }
                for s in checkpoint.skipped.prefix(8) { print("  skipped: \(s.item): \(s.reason)") }
            }
        } catch { exitWithInputError(error) }
    }
}
