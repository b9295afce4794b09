import Foundation
import HDF5Writer
import TestSupport
import Testing

@testable import HDF5

@Suite("Groups, attributes, links and names")
struct StructureTests {
    @Test("names sort the way people count")
    func numericSort() {
        let names = ["vars/10", "vars/2", "vars/1", "step_100", "step_9", "a", "vars/02", "dense_1", "dense"]
        let sorted = names.sorted(by: numericAwareLess)
        #expect(
            sorted == ["a", "dense", "dense_1", "step_9", "step_100", "vars/1", "vars/2", "vars/02", "vars/10"]
                || sorted == ["a", "dense", "dense_1", "step_9", "step_100", "vars/1", "vars/02", "vars/2", "vars/10"])
        #expect(numericAwareLess("layer9", "layer10"))
        #expect(!numericAwareLess("layer10", "layer9"))
    }

    /// The order as first written, scalar by scalar, for the byte-wise version to match.
    static func scalarwiseLess(_ lhs: String, _ rhs: String) -> Bool {
        let left = Array(lhs.unicodeScalars), right = Array(rhs.unicodeScalars)
        func digit(_ s: Unicode.Scalar) -> Bool { s.isASCII && s.properties.numericType == .decimal }
        var i = 0, j = 0
        while i < left.count && j < right.count {
            let a = left[i], b = right[j]
            if digit(a) && digit(b) {
                var endA = i, endB = j
                while endA < left.count, digit(left[endA]) { endA += 1 }
                while endB < right.count, digit(right[endB]) { endB += 1 }
                var sa = i, sb = j
                while sa < endA - 1 && left[sa] == "0" { sa += 1 }
                while sb < endB - 1 && right[sb] == "0" { sb += 1 }
                let lenA = endA - sa, lenB = endB - sb
                if lenA != lenB { return lenA < lenB }
                for k in 0..<lenA where left[sa + k] != right[sb + k] { return left[sa + k].value < right[sb + k].value }
                i = endA
                j = endB
                continue
            }
            if a != b { return a.value < b.value }
            i += 1
            j += 1
        }
        if left.count - i != right.count - j { return left.count - i < right.count - j }
        return lhs < rhs
    }

    @Test("the byte-wise name order is the scalar-wise one, on names with digits, zeros, accents and other scripts")
    func numericSortMatchesScalarOrder() {
        let pieces = ["0", "00", "1", "9", "10", "007", "a", "B", "_", ".", "/", "é", "e\u{301}", "٣", "日本", "😀", "Z", ""]
        var generator = SystemRandomNumberGenerator()
        var names: [String] = []
        for _ in 0..<600 {
            names.append((0..<Int.random(in: 0...5, using: &generator)).map { _ in pieces.randomElement(using: &generator)! }.joined())
        }
        var mismatches = 0
        for a in names.prefix(200) {
            for b in names where numericAwareLess(a, b) != Self.scalarwiseLess(a, b) { mismatches += 1 }
        }
        #expect(mismatches == 0)
    }

    @Test("attributes of every kind checkpoints use decode exactly")
    func attributes() throws {
        let dir = try TemporaryDirectory()
        let path = dir.path("attrs.h5")
        do {
            let writer = try HDF5Writer(creating: path)
            try writer.createGroup("/model_weights/dense")
            try writer.setAttribute("step", .int(1200), at: "/")
            try writer.setAttribute("loss", .double(0.6931), at: "/")
            try writer.setAttribute("flag", .bool(true), at: "/")
            try writer.setAttribute("shape", .ints([3, 4]), at: "/")
            try writer.setAttribute("framework", .string("pytorch", .variableUTF8), at: "/")
            try writer.setAttribute("backend", .string("tensorflow", .variableASCII), at: "/")
            try writer.setAttribute("layer_names", .strings(["dense", "dense_1", "é"], .fixed), at: "/model_weights")
            try writer.setAttribute("weight_names0", .strings(["a/kernel:0", "a/bias:0"], .variableUTF8), at: "/model_weights/dense")
            try writer.setAttribute("weight_names1", .strings(["b/kernel:0"], .fixed), at: "/model_weights/dense")
            try writer.setAttribute("empty_names", .doubles([]), at: "/model_weights/dense")
        }
        let file = try HDF5File.open(path)
        #expect(try file.attribute("step", at: "/")?.int == 1200)
        #expect(try file.attribute("loss", at: "/")?.double == 0.6931)
        #expect(try file.attribute("flag", at: "/") == .bools([true]))
        #expect(try file.attribute("shape", at: "/") == .integers([3, 4]))
        #expect(try file.attribute("framework", at: "/")?.string == "pytorch")
        #expect(try file.attribute("backend", at: "/")?.string == "tensorflow")
        #expect(try file.attribute("missing", at: "/") == nil)
        #expect(try file.stringList("layer_names", at: "/model_weights") == ["dense", "dense_1", "é"])
        #expect(try file.stringList("weight_names", at: "/model_weights/dense") == ["a/kernel:0", "a/bias:0", "b/kernel:0"])
        #expect(try file.stringList("empty_names", at: "/model_weights/dense") == [])
        let all = try file.attributes(at: "/")
        #expect(all.map(\.name) == ["backend", "flag", "framework", "loss", "shape", "step"])
    }

    @Test("the walk lists groups and datasets in numeric order and does not follow links")
    func walk() throws {
        let dir = try TemporaryDirectory()
        let path = dir.path("tree.h5")
        let other = dir.path("other.h5")
        do {
            let target = try HDF5Writer(creating: other)
            try target.write("secret", [1, 2, 3], shape: [3])
        }
        try Data([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16]).write(to: URL(fileURLWithPath: dir.path("raw.bin")))
        do {
            let writer = try HDF5Writer(creating: path)
            for index in [10, 2, 1] {
                try writer.write("/layers/dense/vars/\(index)", [1, 2], shape: [2])
            }
            try writer.softLink("/soft", target: "/layers/dense/vars/1")
            try writer.externalLink("/ext", file: other, object: "/secret")
            try writer.writeExternal("/external_storage", rawFile: dir.path("raw.bin"), count: 4)
            try writer.hardLink("/layers/dense/loop", target: "/layers")
        }
        let file = try HDF5File.open(path)
        let entries = try file.walk()
        let paths = entries.map(\.path)
        #expect(paths.filter { $0.hasPrefix("/layers/dense/vars/") } == ["/layers/dense/vars/1", "/layers/dense/vars/2", "/layers/dense/vars/10"])
        let soft = try #require(entries.first { $0.path == "/soft" })
        #expect(soft.kind == .softLink(target: "/layers/dense/vars/1"))
        let ext = try #require(entries.first { $0.path == "/ext" })
        #expect(ext.kind == .externalLink(file: other, object: "/secret"))
        #expect(ext.notFollowedReason?.contains("not followed") == true)
        let loop = try #require(entries.first { $0.path == "/layers/dense/loop" })
        #expect(loop.kind == .alias(of: "/layers"))
        #expect(!paths.contains { $0.hasPrefix("/layers/dense/loop/") })

        // The external link cannot be opened through the reader, even by path.
        #expect(throws: HDF5Error.self) { try file.dataset("/ext") }
        // The external-storage dataset is described but its bytes are refused.
        let external = try file.dataset("/external_storage")
        #expect(external.info.externalFileCount == 1)
        #expect(external.info.refusal(limits: ReadLimits(), followLinks: false) != nil)
        #expect(throws: HDF5Error.self) { _ = try external.read(as: Float.self) }
        #expect(file.kind(of: "/soft") == .softLink(target: "?"))
        #expect(file.exists("/layers/dense/vars/10"))
        #expect(!file.exists("/soft"))
    }

    @Test("deep nesting is bounded by the depth limit")
    func deepNesting() throws {
        let dir = try TemporaryDirectory()
        let path = dir.path("deep.h5")
        do {
            let writer = try HDF5Writer(creating: path)
            try writer.createGroup("/" + (0..<40).map { "g\($0)" }.joined(separator: "/"))
        }
        var options = OpenOptions()
        options.limits.maxDepth = 10
        let file = try HDF5File.open(path, options: options)
        let entries = try file.walk()
        #expect(entries.contains { if case .truncatedListing = $0.kind { return true } else { return false } })
        #expect(entries.map(\.depth).max() ?? 0 <= 11)
    }

    @Test("huge attributes and huge groups are bounded before they are read")
    func attributeAndObjectLimits() throws {
        let dir = try TemporaryDirectory()
        let path = dir.path("big.h5")
        do {
            let writer = try HDF5Writer(creating: path)
            try writer.setAttribute("names", .strings((0..<2000).map { "layer_\($0)_" + String(repeating: "x", count: 40) }, .variableUTF8), at: "/")
            try writer.setAttribute("fixed", .strings((0..<2000).map { "n\($0)" }, .fixed), at: "/")
            for index in 0..<50 { try writer.write("/g/d\(index)", [1], shape: [1]) }
        }
        var options = OpenOptions()
        options.limits.maxAttributeBytes = 4096
        options.limits.maxObjects = 20
        let file = try HDF5File.open(path, options: options)
        guard case .unsupported(let why)? = try file.attribute("names", at: "/") else {
            Issue.record("a 90 KB string attribute was read past a 4 KB limit")
            return
        }
        #expect(why.contains("limit"))
        if case .strings? = try file.attribute("fixed", at: "/") { Issue.record("fixed-length strings past the limit were read") }
        let entries = try file.walk()
        #expect(entries.count <= 22)
        #expect(entries.contains { if case .truncatedListing = $0.kind { return true } else { return false } })
        // With the default limits the same file reads in full.
        let open = try HDF5File.open(path)
        #expect(try open.attribute("names", at: "/")?.strings?.count == 2000)
        #expect(try open.walk().count == 51)
    }
}
