import ArgumentParser
import Foundation
import GradScope
import HDF5

struct ListCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ls",
        abstract: "List an HDF5 file's tree: groups, datasets (shape, type, layout, size) and links.",
        discussion: "Like h5ls -r, but readable. Soft and external links are shown, never followed."
    )

    @Argument(help: "The HDF5 file to list.")
    var file: String

    @Flag(name: .long, help: "Show every attribute, decoded.")
    var attrs = false

    func run() throws {
        do {
            let opened = try HDF5File.open(file)
            let listing = try FileListing(file: opened, withAttributes: attrs)
            print(listing.renderText(showAttributes: attrs), terminator: "")
        } catch {
            exitWithInputError(error)
        }
    }
}
