import Foundation
import HDF5
import HDF5Writer
import TestSupport
import Testing

/// Everything a file says about itself through the describing calls, as text that compares
/// (NaN attributes included): the walk, each group's children, each dataset's info, each
/// object's attributes, each attribute looked up by name, and a few names looked up that are not there.
/// `reference` is the same file opened without the native reader: its walk names the objects to ask about.
func snapshot(_ file: HDF5File, reference: HDF5File) -> [String] {
    func outcome<T>(_ body: () throws -> T) -> String {
        do { return String(reflecting: try body()) } catch { return "error: \(error)" }
    }
    // Each line is a question, a tab, and the answer.
    var lines: [String] = ["walk\t" + outcome { try file.walk() }]
    let entries = (try? reference.walk()) ?? []
    var objects = ["/"]
    for entry in entries {
        switch entry.kind {
        case .group:
            objects.append(entry.path)
            lines.append("children \(entry.path)\t" + outcome { try file.children(of: entry.path) })
        case .dataset:
            objects.append(entry.path)
            lines.append("info \(entry.path)\t" + outcome { try file.datasetInfo(entry.path) })
        default:
            lines.append("info \(entry.path)\t" + outcome { try file.datasetInfo(entry.path) })
        }
        lines.append("kind \(entry.path)\t\(String(reflecting: file.kind(of: entry.path))) \(file.exists(entry.path))")
        lines.append("kind below \(entry.path)\t\(String(reflecting: file.kind(of: entry.path + "/x")))")
    }
    lines.append("children /\t" + outcome { try file.children(of: "/") })
    lines.append("children missing\t" + outcome { try file.children(of: "/no/such/group") })
    for object in objects {
        lines.append("attributes \(object)\t" + outcome { try file.attributes(at: object) })
        for attribute in (try? file.attributes(at: object)) ?? [] {
            lines.append("attribute \(object) \(attribute.name)\t" + outcome { try file.attribute(attribute.name, at: object) })
        }
        lines.append("absent \(object)\t" + outcome { try file.attribute("no such attribute", at: object) })
        for name in ["layer_names", "weight_names"] {
            lines.append("list \(object) \(name)\t" + outcome { try file.stringList(name, at: object) })
        }
    }
    return lines
}

/// What the native reader answers itself (without libhdf5) for a file: whether it parsed it, and
/// which objects' info or attributes it could not describe.
private func nativeCoverage(_ file: HDF5File) -> (parsed: Bool, misses: [String]) {
    guard let native = file.native else { return (false, []) }
    var misses: [String] = []
    let entries = (try? file.walk()) ?? []
    if (try? native.attributes("/")) == nil { misses.append("attributes /") }
    for entry in entries {
        switch entry.kind {
        case .dataset:
            if (try? native.datasetInfo(entry.path)) == nil,
                (try? HDF5File.open(file.path, nativeMetadata: false).datasetInfo(entry.path))?.layout != .chunked
            {
                misses.append("info \(entry.path)")
            }
            if (try? native.attributes(entry.path)) == nil { misses.append("attributes \(entry.path)") }
        case .group:
            if (try? native.attributes(entry.path)) == nil { misses.append("attributes \(entry.path)") }
        default: break
        }
    }
    return (true, misses)
}

/// Compares the native and libhdf5 answers for the file at `path`; returns whether the native reader parsed it.
@discardableResult
private func compare(_ path: String, options: OpenOptions = OpenOptions()) throws -> Bool {
    let library = try HDF5File.open(path, options: options, nativeMetadata: false)
    let native = try HDF5File.open(path, options: options, nativeMetadata: true)
    #expect(library.native == nil)
    guard native.native != nil else { return false }
    let expected = snapshot(library, reference: library)
    let got = snapshot(native, reference: library)
    #expect(expected.count == got.count, "\(path)")
    for (want, have) in zip(expected, got) where want != have {
        Issue.record("\(path): native \(have) != libhdf5 \(want)")
        break
    }
    return true
}

private func hdf5Files(under root: String) -> [String] {
    guard let enumerator = FileManager.default.enumerator(atPath: root) else { return [] }
    var files: [String] = []
    while let relative = enumerator.nextObject() as? String {
        if relative.hasSuffix(".h5") || relative.hasSuffix(".hdf5") { files.append(root + "/" + relative) }
    }
    return files.sorted()
}

@Suite("native HDF5 metadata")
struct NativeMetadataTests {
    /// Mutations of a file image, from a seeded generator: byte flips and overwritten fields,
    /// mostly where the metadata lies (the first few kilobytes), and truncations.
    static func mutations(of image: [UInt8], count: Int, seed: UInt64) -> [[UInt8]] {
        var random = SplitMix64(seed: seed)
        var result: [[UInt8]] = []
        let head = min(image.count, 4096)
        for _ in 0..<count {
            var bytes = image
            switch random.index(below: 4) {
            case 0:
                for _ in 0...random.index(below: 3) {
                    let at = random.index(below: random.index(below: 4) == 0 ? bytes.count : head)
                    bytes[at] ^= UInt8(truncatingIfNeeded: 1 << random.index(below: 8))
                }
            case 1:
                let at = random.index(below: head - 8)
                let value: UInt64 = [UInt64.max, 0, UInt64(bytes.count), 1 << 40, random.next()][random.index(below: 5)]
                let width = [1, 2, 4, 8][random.index(below: 4)]
                for byte in 0..<width { bytes[at + byte] = UInt8(truncatingIfNeeded: value >> UInt64(8 * byte)) }
            case 2:
                bytes = Array(bytes.prefix(max(9, random.index(below: bytes.count))))
            default:
                let at = random.index(below: head)
                bytes[at] = UInt8(truncatingIfNeeded: random.next())
            }
            result.append(bytes)
        }
        return result
    }

    @Test("mutated files never crash or hang the native reader; where it succeeds, libhdf5 agrees or fails")
    func fuzz() throws {
        let dir = try TemporaryDirectory()
        let fixture = dir.path("fuzz.h5")
        do {
            let writer = try HDF5Writer(creating: fixture)
            try writer.write("/g/x", [1, 2, 3], shape: [3])
            try writer.write("/g/c", [1, 2], shape: [2], compact: true)
            try writer.softLink("/g/soft", target: "/g/x")
            try writer.setAttribute("names", .strings(["a", "bb"], .variableUTF8), at: "/g")
            try writer.setAttribute("fixed", .strings(["a", "bb"], .fixed), at: "/g/x")
            try writer.setAttribute("n", .ints([1, 2]), at: "/")
            try writer.setAttribute("f", .double(0.5), at: "/g")
        }
        var bases = [fixture, samplePath("exploding-nan") + "/step_000000.h5"]
        if let keras = corpusFile("keras-legacy/k2.0.0-dense-95pruned-weights.h5") { bases.append(keras) }
        var parsed = 0, agreed = 0, libraryFailed = 0, disagreed: [String] = []
        for (index, base) in bases.enumerated() {
            let image = [UInt8](try Data(contentsOf: URL(fileURLWithPath: base)))
            var compared = 0
            for mutated in Self.mutations(of: image, count: 800, seed: 0x5eed + UInt64(index)) {
                guard let offset = FileProbe.findSignature(in: mutated),
                    (try? NativeMetadata(image: mutated, superblockOffset: offset, limits: ReadLimits())) != nil
                else { continue }
                parsed += 1
                guard compared < 25 else { continue }
                compared += 1
                guard let library = try? HDF5File.open(image: mutated, name: "mutated", nativeMetadata: false) else {
                    libraryFailed += 1
                    continue
                }
                let native = try HDF5File.open(image: mutated, name: "mutated", nativeMetadata: true)
                let expected = snapshot(library, reference: library)
                let got = snapshot(native, reference: library)
                // Where libhdf5 fails and the native reader answers, the file is corrupt in a part
                // libhdf5 checks and this reader does not need: allowed. The native reader never
                // reports an error itself (it hands the call to libhdf5), so errors on either side
                // are libhdf5's; questions only one side asked follow from a list that differs,
                // itself compared. Every question both answered must have the same answer.
                func answers(_ lines: [String]) -> [String: String] {
                    var result: [String: String] = [:]
                    for line in lines {
                        let parts = line.split(separator: "\t", maxSplits: 1).map(String.init)
                        result[parts[0]] = parts.count > 1 ? parts[1] : ""
                    }
                    return result
                }
                func failed(_ answer: String) -> Bool { answer.hasPrefix("error: ") || answer.contains("unreadable") }
                let want = answers(expected)
                let conflicts = answers(got).compactMap { question, answer -> (String, String)? in
                    guard let wanted = want[question], wanted != answer, !failed(wanted), !failed(answer) else { return nil }
                    return ("\(question): \(answer)", wanted)
                }
                if conflicts.isEmpty { agreed += 1 } else { disagreed.append("\(base): \(conflicts[0].1) vs \(conflicts[0].0)") }
            }
        }
        #expect(parsed > 0)
        #expect(agreed > 0)
        #expect(disagreed.isEmpty, "\(disagreed.prefix(3)) (\(parsed) mutations parsed, \(agreed) agreed, libhdf5 refused \(libraryFailed))")
    }

    @Test("every sample checkpoint is described natively, exactly as libhdf5 describes it")
    func samples() throws {
        let files = hdf5Files(under: packageRoot.appendingPathComponent("SampleCheckpoints").path)
        #expect(files.count > 100)
        for path in files {
            #expect(try compare(path), "\(path) was not parsed natively")
            let coverage = nativeCoverage(try HDF5File.open(path, nativeMetadata: true))
            #expect(coverage.misses.isEmpty, "\(path): \(coverage.misses.prefix(3))")
        }
    }

    @Test("the shared corpus: equal wherever the native parse succeeds, and it succeeds on the common writers' files")
    func corpus() throws {
        guard let root = corpusFile("") else { return }
        var parsed: Set<String> = []
        for path in hdf5Files(under: root) {
            guard (try? HDF5File.open(path, nativeMetadata: false)) != nil else { continue }
            if try compare(path) { parsed.insert(String(path.dropFirst(root.count))) }
        }
        // h5py-written Keras 2 full models, Keras 3 weights files and a PyTorch state_dict saved with h5py.
        let mustParse = [
            "/keras-legacy/k2.11.0-attention-newadam.h5", "/keras-legacy/k2.4.0-conv1d-adam.hdf5", "/keras-legacy/k2.8.0-chatbot-sgd.h5",
            "/keras-legacy/k2.3.1-adam-checkpoint.hdf5", "/keras-legacy/k1.2.2-tf-lstm-rmsprop.h5",
            "/keras3/space-invaders-dense-bn.weights.h5", "/keras3/gru-congestion.weights.h5", "/torch-h5/mcnn-shtechA-statedict.h5",
        ]
        for name in mustParse {
            #expect(parsed.contains(name), "\(name) was not parsed natively")
            if let path = corpusFile(String(name.dropFirst())), parsed.contains(name) {
                let coverage = nativeCoverage(try HDF5File.open(path, nativeMetadata: true))
                #expect(coverage.misses.isEmpty, "\(name): \(coverage.misses.prefix(3))")
            }
        }
    }

    @Test("files written by the test writer: every type, attribute, link kind and layout")
    func fixtures() throws {
        let dir = try TemporaryDirectory()
        let other = dir.path("other.h5")
        do {
            let target = try HDF5Writer(creating: other)
            try target.write("secret", [1, 2, 3], shape: [3])
        }
        try Data(repeating: 7, count: 16).write(to: URL(fileURLWithPath: dir.path("raw.bin")))
        for userBlock in [0, 512] {
            let path = dir.path("fixture-\(userBlock).h5")
            do {
                let writer = try HDF5Writer(creating: path, userBlock: userBlock)
                let types: [HDF5Writer.StoredType] = [
                    .float16, .float32, .float64, .float32BigEndian, .float64BigEndian, .bfloat16Opaque, .int8, .uint8, .int16, .int32,
                    .int64, .uint64, .bool,
                ]
                // Groups of the test writer hold links in their headers (UTF-8 names): up to 8 before dense storage.
                for (index, type) in types.enumerated() {
                    try writer.write("/types/\(index < 7 ? "a" : "b")/t\(index)", [0, 1, 2, 3, 4, 5], shape: [2, 3], as: type)
                }
                try writer.write("/misc/scalar", [3.5], shape: [])
                try writer.write("/compact", [1, 2, 3], shape: [3], compact: true)
                try writer.write("/chunked", Array(repeating: 1, count: 64), shape: [8, 8], chunks: [4, 4], gzip: 4, shuffle: true)
                try writer.createEmpty("/empty", shape: [4, 4])
                try writer.writeExternal("/external_storage", rawFile: dir.path("raw.bin"), count: 4)
                for index in [10, 2, 1] { try writer.write("/layers/dense/vars/\(index)", [1, 2], shape: [2]) }
                try writer.softLink("/soft", target: "/layers/dense/vars/1")
                try writer.hardLink("/layers/dense/loop", target: "/layers")
                try writer.hardLink("/misc/second_name", target: "/misc/scalar")
                try writer.setAttribute("step", .int(1200), at: "/")
                try writer.setAttribute("loss", .double(0.6931), at: "/")
                try writer.setAttribute("nan", .doubles([.nan, .infinity, -0.0]), at: "/")
                try writer.setAttribute("flag", .bool(true), at: "/")
                try writer.setAttribute("shape", .ints([3, -4]), at: "/")
                try writer.setAttribute("framework", .string("pytorch", .variableUTF8), at: "/")
                try writer.setAttribute("backend", .string("tensorflow", .variableASCII), at: "/")
                try writer.setAttribute("blank", .string("", .variableUTF8), at: "/")
                try writer.setAttribute("layer_names", .strings(["dense", "dense_1", "é", "pad  "], .fixed), at: "/layers")
                try writer.setAttribute("weight_names0", .strings(["a/kernel:0", "a/bias:0"], .variableUTF8), at: "/layers/dense")
                try writer.setAttribute("weight_names1", .strings(["b/kernel:0"], .fixed), at: "/layers/dense")
                try writer.setAttribute("empty_names", .doubles([]), at: "/layers/dense")
                try writer.setAttribute("unit", .string("m", .fixed), at: "/types/a/t1")
            }
            #expect(try compare(path), "fixture with a \(userBlock)-byte user block was not parsed natively")
            let coverage = nativeCoverage(try HDF5File.open(path, nativeMetadata: true))
            #expect(coverage.misses.isEmpty, "\(coverage.misses)")
        }
        // A group holding an external link is stored as links in its header (no symbol table).
        let linked = dir.path("linked.h5")
        do {
            let writer = try HDF5Writer(creating: linked)
            try writer.write("/g/data", [1, 2], shape: [2])
            try writer.externalLink("/g/ext", file: other, object: "/secret")
            try writer.softLink("/g/soft", target: "/g/data")
            try writer.externalLink("/ext", file: other, object: "/secret")
        }
        try compare(linked)
        // Limits give the same answers: the attribute-size limit natively, a walk deeper than the
        // depth limit through libhdf5 (the native reader leaves such files to it).
        var limits = ReadLimits()
        limits.maxAttributeBytes = 8
        #expect(try compare(dir.path("fixture-0.h5"), options: OpenOptions(limits: limits)))
        limits = ReadLimits()
        limits.maxDepth = 2
        #expect(try !compare(dir.path("fixture-0.h5"), options: OpenOptions(limits: limits)))
        // A memory image is described natively too.
        let image = [UInt8](try Data(contentsOf: URL(fileURLWithPath: dir.path("fixture-0.h5"))))
        let fromImage = try HDF5File.open(image: image, name: "image", nativeMetadata: true)
        #expect(fromImage.native != nil)
        #expect(try fromImage.walk() == (try HDF5File.open(dir.path("fixture-0.h5"), nativeMetadata: false).walk()))
    }

    @Test("names that differ only in their bytes (canonically equivalent) are two objects, natively as in libhdf5")
    func namesCompareByBytes() throws {
        let dir = try TemporaryDirectory()
        let path = dir.path("names.h5")
        let composed = "caf\u{e9}", decomposed = "cafe\u{301}"
        #expect(composed == decomposed)
        do {
            let writer = try HDF5Writer(creating: path)
            try writer.write("/g/" + composed, [1, 2], shape: [2])
            try writer.write("/g/" + decomposed, [1, 2, 3], shape: [3])
            try writer.write("/h/" + composed + "/x", [1], shape: [1])
        }
        #expect(try compare(path))
        let file = try HDF5File.open(path, nativeMetadata: true)
        #expect(file.native != nil)
        #expect(try file.datasetInfo("/g/" + composed).shape == [2])
        #expect(try file.datasetInfo("/g/" + decomposed).shape == [3])
        #expect(try file.datasetInfo("/h/" + composed + "/x").shape == [1])
        #expect(throws: (any Error).self) { try file.datasetInfo("/h/" + decomposed + "/x") }
        #expect(file.exists("/h/" + composed))
        #expect(!file.exists("/h/" + decomposed))
    }

    @Test("groups of the same names in file after file are listed in numeric order, and a changed name is sorted afresh")
    func rememberedLinkOrders() throws {
        let dir = try TemporaryDirectory()
        // The test writer's groups hold up to 8 links in their headers (more go to dense storage, which
        // the native reader leaves to libhdf5): lists of 8 names, remembered, and of 7, sorted each time.
        // The same names, a renamed one, one fewer, names alike but for their bytes, and more lists
        // than are remembered at once.
        let numbers = [100, 0, 20, 1, 11, 2, 10, 3]
        var variants: [[String]] = [numbers.map { "blocks.\($0)" }, numbers.map { "blocks.\($0)" }]
        variants.append(numbers.map { $0 == 11 ? "blocks.12" : "blocks.\($0)" })
        variants.append(numbers.dropLast().map { "blocks.\($0)" })
        variants.append(numbers.map { $0 == 3 ? "blocks.caf\u{e9}" : "blocks.\($0)" })
        variants.append(numbers.map { $0 == 3 ? "blocks.cafe\u{301}" : "blocks.\($0)" })
        for extra in 0..<(LinkOrders.capacity + 2) { variants.append(numbers.map { "layer\($0 * (extra + 2))" }) }
        variants.append(numbers.map { "blocks.\($0)" })
        for (index, names) in variants.enumerated() {
            let path = dir.path("v\(index).h5")
            do {
                let writer = try HDF5Writer(creating: path)
                for name in names { try writer.write("/model/" + name, [1], shape: [1]) }
            }
            let native = try HDF5File.open(path, nativeMetadata: true)
            #expect(native.native != nil)
            let library = try HDF5File.open(path, nativeMetadata: false)
            let expected = try library.walk()
            #expect(try native.walk() == expected)
            #expect(try native.walk() == expected)
            #expect(try native.children(of: "/model") == (try library.children(of: "/model")))
            let listed = expected.filter { $0.depth == 2 }.map(\.name)
            #expect(listed == names.sorted(by: numericAwareLess))
        }
    }

    @Test("GRADSCOPE_HDF5_METADATA=libhdf5 is recognised")
    func environmentSwitch() {
        #expect(NativeMetadata.disabledByEnvironment == (ProcessInfo.processInfo.environment["GRADSCOPE_HDF5_METADATA"]?.lowercased() == "libhdf5"))
    }
}
