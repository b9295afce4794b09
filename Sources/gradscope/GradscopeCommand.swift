import ArgumentParser
import Foundation
import GradScope
import HDF5

@main
struct GradscopeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gradscope",
        abstract: "Find what went wrong in a training run, from its HDF5 checkpoints.",
        discussion: """
        gradscope reads checkpoints saved as HDF5 (Keras .weights.h5, .keras and legacy .h5 files, \
        PyTorch state_dicts written with h5py, and the native layout its exporters write) and tells \
        you which layers are frozen, collapsing, dead, vanishing or exploding, where NaN first \
        appeared, and whether the loss sits at ln 2.
        """,
        version: GradScopeVersion.string,
        subcommands: [ScanCommand.self, InspectCommand.self, DiffCommand.self, ListCommand.self, WorkerCommand.self]
    )
}

/// Prints `gradscope: message` on stderr and exits with code 2.
func exitWithInputError(_ error: Error) -> Never {
    let text = (error as? HDF5Error)?.description ?? String(describing: error)
    FileHandle.standardError.write(Data("gradscope: \(text)\n".utf8))
    Foundation.exit(2)
}
