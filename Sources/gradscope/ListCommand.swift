import ArgumentParser
import Foundation
import GradScope
import HDF5

struct ListCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ls",
        abstract:
            "List an HDF5 file's tree: groups, datasets (shape, type, layout, size) and links; or the tensors of a safetensors or torch.save file, or of a Trainer checkpoint folder's files.",
        discussion: "Like h5ls -r, but readable. Soft and external links are shown, never followed."
    )

    @Argument(help: "The HDF5, safetensors or torch.save file, or the Trainer checkpoint folder, to list.")
    var file: String

    @Flag(name: .long, help: "Show every attribute, decoded.")
    var attrs = false

    @Option(name: .long, help: "Output format: table (for people) or json (the contract in docs/JSON.md).")
    var format: ListFormat = .table

    func run() throws {
        do {
            let listing = try FileListing.read(file, withAttributes: attrs)
            switch format {
            case .table: print(listing.renderText(showAttributes: attrs), terminator: "")
            case .json: print(try listing.renderJSON(showAttributes: attrs), terminator: "")
            }
        } catch {
            exitWithInputError(error)
        }
    }
}

/// The output formats of `ls`: the tree has no CSV form.
enum ListFormat: String, CaseIterable, ExpressibleByArgument {
    case table, json
}
