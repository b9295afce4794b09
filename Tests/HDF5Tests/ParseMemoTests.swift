import Foundation
import HDF5
import HDF5Writer
import TestSupport
import Testing

@Suite("Parses given again to files whose metadata is the same")
struct ParseMemoTests {
    /// A save of a small model: two weights and a bias in a group, the step in the root's attributes,
    /// a layer name list on the group. `scale` changes every value, `step` the attribute; `weight`
    /// names the first weight.
    static func writeSave(
        _ path: String, step: Int64, scale: Double, widths: (Int, Int) = (4, 3), note: String = "dense", weight: String = "dense.weight"
    ) throws {
        let writer = try HDF5Writer(creating: path)
        let (rows, columns) = widths
        try writer.write("/model/" + weight, (0..<(rows * columns)).map { Double($0) * scale }, shape: [rows, columns])
        try writer.write("/model/dense.bias", (0..<columns).map { Double($0) * scale - 1 }, shape: [columns])
        try writer.write("/model/out.weight", (0..<columns).map { Double($0) * scale * 2 }, shape: [columns, 1])
        try writer.setAttribute("step", .ints([step]), at: "/")
        try writer.setAttribute("loss", .double(1 / scale), at: "/")
        try writer.setAttribute("layer_names", .strings([note, "out"], .variableUTF8), at: "/model")
    }

    @Test("a save laid out like the one before is given its parse, with its own attribute values")
    func laidOutAlike() throws {
        let dir = try TemporaryDirectory()
        let (first, second) = (dir.path("step_1.h5"), dir.path("step_2.h5"))
        try Self.writeSave(first, step: 100, scale: 0.5)
        try Self.writeSave(second, step: 200, scale: 0.25, note: "dense")
        let memo = ParseMemo()
        let a = try HDF5File.open(first, nativeMetadata: true, memo: memo)
        #expect(memo.hits == 0)
        let b = try HDF5File.open(second, nativeMetadata: true, memo: memo)
        #expect(memo.hits == 1)
        // Every answer is the one a parse of its own gives: the values of the second file, not the first's.
        let fresh = try HDF5File.open(second, nativeMetadata: true, memo: nil)
        #expect(snapshot(b, reference: fresh) == snapshot(fresh, reference: fresh))
        #expect(try b.attribute("step", at: "/") == .integers([200]))
        #expect(try b.attribute("loss", at: "/") == .floats([4]))
        #expect(try a.attribute("step", at: "/") == .integers([100]))
        #expect(try b.datasetInfo("/model/dense.weight") == (try a.datasetInfo("/model/dense.weight")))
        #expect(try b.walk() == (try fresh.walk()))
    }

    @Test("a file whose structure differs in one place is parsed afresh")
    func structureDiffers() throws {
        let dir = try TemporaryDirectory()
        let (first, wider, renamed) = (dir.path("a.h5"), dir.path("b.h5"), dir.path("c.h5"))
        try Self.writeSave(first, step: 1, scale: 1)
        // Same size in bytes, another shape: the dataspace differs.
        try Self.writeSave(wider, step: 1, scale: 1, widths: (3, 4))
        let memo = ParseMemo()
        _ = try HDF5File.open(first, nativeMetadata: true, memo: memo)
        let b = try HDF5File.open(wider, nativeMetadata: true, memo: memo)
        #expect(memo.hits == 0)
        #expect(try b.datasetInfo("/model/dense.weight").shape == [3, 4])
        // A dataset renamed (same length): the group's names differ.
        try Self.writeSave(renamed, step: 1, scale: 1, weight: "dense.weighs")
        let c = try HDF5File.open(renamed, nativeMetadata: true, memo: memo)
        #expect(try c.datasetInfo("/model/dense.weighs").shape == [4, 3])
        #expect(throws: (any Error).self) { try c.datasetInfo("/model/dense.weight") }
        let fresh = try HDF5File.open(renamed, nativeMetadata: true, memo: nil)
        #expect(snapshot(c, reference: fresh) == snapshot(fresh, reference: fresh))
    }

    /// What the natively read metadata answers for `paths`: each dataset's description and each
    /// object's attributes, as text that compares.
    static func answers(_ native: NativeMetadata, paths: [String]) -> [String] {
        func outcome<T>(_ body: () throws -> T) -> String {
            do { return String(reflecting: try body()) } catch { return "error: \(error)" }
        }
        var lines = ["root \(native.rootAddress)"]
        for path in paths {
            lines.append("info \(path)\t" + outcome { try native.datasetInfo(path) })
            lines.append("attributes \(path)\t" + outcome { try native.attributes(path) })
            lines.append("step \(path)\t" + outcome { try native.attribute("step", at: path) })
        }
        return lines
    }

    @Test("every byte changed in turn: a file given a kept parse answers as its own parse does")
    func everyByte() throws {
        let dir = try TemporaryDirectory()
        let path = dir.path("save.h5")
        try Self.writeSave(path, step: 7, scale: 0.125)
        let image = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
        guard let superblock = FileProbe.findSignature(in: image) else {
            Issue.record("no signature")
            return
        }
        let paths = try HDF5File.open(path, nativeMetadata: false).walk().map(\.path) + ["/"]
        #expect(paths.count == 5)
        var given = 0, differing: [Int] = []
        // One bit of every byte (a different bit from byte to byte), the file kept whole otherwise.
        for offset in image.indices {
            var mutated = image
            mutated[offset] ^= UInt8(1 << (offset % 8))
            let memo = ParseMemo()
            _ = try NativeMetadata(image: image, superblockOffset: superblock, limits: ReadLimits(), memo: memo)
            let withMemo = try? NativeMetadata(image: mutated, superblockOffset: superblock, limits: ReadLimits(), memo: memo)
            guard memo.hits == 1, let withMemo else { continue }
            given += 1
            guard let fresh = try? NativeMetadata(image: mutated, superblockOffset: superblock, limits: ReadLimits(), memo: nil) else {
                differing.append(offset)
                continue
            }
            if Self.answers(withMemo, paths: paths) != Self.answers(fresh, paths: paths) { differing.append(offset) }
        }
        // The values and the attributes' values are not consulted by the parse: files changed there are given it.
        #expect(given > 100)
        #expect(differing.isEmpty, "offsets \(differing.prefix(10)) of \(image.count)")
    }

    @Test("saves of a sample run are given the first one's parse and describe themselves alike")
    func sampleRun() throws {
        let run = samplePath("dead-relu")
        // The first save holds no gradients yet: the next four are laid out alike.
        let files = try FileManager.default.contentsOfDirectory(atPath: run).filter { $0.hasSuffix(".h5") }.sorted().dropFirst().prefix(4)
        #expect(files.count == 4)
        let memo = ParseMemo()
        for name in files {
            let path = run + "/" + name
            let file = try HDF5File.open(path, nativeMetadata: true, memo: memo)
            let fresh = try HDF5File.open(path, nativeMetadata: true, memo: nil)
            #expect(snapshot(file, reference: fresh) == snapshot(fresh, reference: fresh), "\(name)")
        }
        #expect(memo.hits == 3)
    }
}
