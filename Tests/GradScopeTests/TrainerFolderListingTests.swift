import Foundation
import GradScopeRendering
import GradScopeSources
import TestSupport
import Testing

/// `gradscope ls` on a Hugging Face Trainer checkpoint folder, and on directories it cannot list.
@Suite("ls of Trainer folders")
struct TrainerFolderListingTests {
    @Test("ls of a checkpoint folder lists model.safetensors' and optimizer.pt's tensors, each file a group")
    func listsTheFolder() throws {
        let dir = try TemporaryDirectory()
        try TrainerFolderTests.outputDirectory(dir)
        let folder = dir.path("checkpoint-20")
        let listing = try FileListing.read(folder, withAttributes: false)
        #expect(listing.format == "trainer-folder")
        let groups = listing.items.filter { $0.dataset == nil }.map(\.entry.path)
        #expect(groups == ["model.safetensors", "optimizer.pt"])
        let model = try FileListing.read(folder + "/model.safetensors", withAttributes: false)
        let optimizer = try FileListing.read(folder + "/optimizer.pt", withAttributes: false)
        // Each file's tensors as ls lists the file alone, under its group.
        let listed = listing.items.filter { $0.dataset != nil }
        #expect(
            listed.map(\.entry.path) == model.items.map { "model.safetensors/" + $0.entry.path }
                + optimizer.items.map { "optimizer.pt/" + $0.entry.path })
        #expect(listed.allSatisfy { $0.entry.depth == 2 })
        #expect(listed.prefix(model.items.count).map { $0.dataset?.shape } == model.items.map { $0.dataset?.shape })
        #expect(listing.fileSize == model.fileSize + optimizer.fileSize)
        let count = TrainerFolderTests.parameters.count
        #expect(listed.count == count + 2 * count)
        let text = listing.renderText(showAttributes: false)
        #expect(text.hasPrefix(folder + "  (trainer-folder, "))
        #expect(text.contains("\(3 * count) tensors)"))
        #expect(text.contains("  model.safetensors/\n"))
        #expect(text.contains("    head.weight "))
        let json = try JSONSerialization.jsonObject(with: Data(listing.renderJSON(showAttributes: false).utf8)) as? [String: Any]
        #expect(json?["groups"] as? Int == 2)
        #expect(json?["datasets"] as? Int == 3 * count)
    }

    @Test("ls of a folder whose optimizer.pt is damaged lists the model and the reason")
    func damagedOptimizer() throws {
        let dir = try TemporaryDirectory()
        try TrainerFolderTests.outputDirectory(dir)
        let folder = dir.path("checkpoint-10")
        try Data("not a zip".utf8).write(to: URL(fileURLWithPath: folder + "/optimizer.pt"))
        let listing = try FileListing.read(folder, withAttributes: false)
        let group = try #require(listing.items.first { $0.entry.path == "optimizer.pt" })
        #expect(group.problem != nil)
        #expect(listing.items.filter { $0.dataset != nil }.count == TrainerFolderTests.parameters.count)
    }

    @Test("ls of a Trainer output directory, or of any other directory, says what to list instead, exit 2")
    func directoriesRefused() throws {
        let dir = try TemporaryDirectory()
        try TrainerFolderTests.outputDirectory(dir)
        #expect {
            _ = try FileListing.read(dir.url.path, withAttributes: false)
        } throws: { error in
            "\(error)".contains("checkpoint-10 … checkpoint-30")
        }
        #expect {
            _ = try FileListing.read(dir.path("runs"), withAttributes: false)
        } throws: { error in
            "\(error)".contains("ls lists one checkpoint file")
        }
        let binary = try #require(GradScopeBinary.path, "\(GradScopeBinary.notFoundMessage)")
        let output = try GradScopeBinary.run(binary, ["ls", dir.url.path])
        #expect(!output.crashed && output.status == 2)
        #expect(output.stderr.split(separator: "\n").count == 1)
        #expect(output.stderr.contains("a Trainer output directory") && !output.stderr.contains("is a directory"))
        let listed = try GradScopeBinary.run(binary, ["ls", dir.path("checkpoint-30")])
        #expect(listed.status == 0)
        #expect(listed.stdout.contains("optimizer.pt/"))
    }
}
