import Foundation
import GradScopeDiagnosis
import GradScopeModel
import GradScopeRendering
import HDF5Writer
import TestSupport
import Testing

/// A JSON value as the contract's checker reads it: integers kept apart from other numbers.
enum JSONValue: Decodable, Equatable {
    case null
    case bool(Bool)
    case integer(Int)
    case number(Double)
    case string(String)
    case array([JSONValue])
    case object([String: JSONValue])

    init(from decoder: Decoder) throws {
        let container = try decoder.singleValueContainer()
        if container.decodeNil() {
            self = .null
        } else if let value = try? container.decode(Bool.self) {
            self = .bool(value)
        } else if let value = try? container.decode(Int.self) {
            self = .integer(value)
        } else if let value = try? container.decode(Double.self) {
            self = .number(value)
        } else if let value = try? container.decode(String.self) {
            self = .string(value)
        } else if let value = try? container.decode([JSONValue].self) {
            self = .array(value)
        } else {
            self = .object(try container.decode([String: JSONValue].self))
        }
    }

    /// Parses one JSON document.
    static func parse(_ text: String) throws -> JSONValue {
        try JSONDecoder().decode(JSONValue.self, from: Data(text.utf8))
    }

    var object: [String: JSONValue]? { if case .object(let value) = self { return value } else { return nil } }
    var array: [JSONValue]? { if case .array(let value) = self { return value } else { return nil } }
    var string: String? { if case .string(let value) = self { return value } else { return nil } }
}

/// The field tables of docs/JSON.md: one table per object, read as the contract.
struct JSONContract {
    /// One row of an object's table.
    struct Field {
        var name: String
        var type: String
        /// False when the table says `never`: the field is always present and not null.
        var nullable: Bool
    }

    /// Fields by object name, in table order.
    var objects: [String: [Field]] = [:]
    /// The whole text, for the prose checks.
    var text: String

    static let path = packageRoot.appendingPathComponent("docs").appendingPathComponent("JSON.md")

    static func load() throws -> JSONContract {
        try JSONContract(text: String(contentsOf: path, encoding: .utf8))
    }

    init(text: String) {
        self.text = text
        var current: String?
        for line in text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init) {
            if line.hasPrefix("### Object `") {
                current = line.dropFirst("### Object `".count).split(separator: "`").first.map(String.init)
                if let current { objects[current] = [] }
                continue
            }
            if line.hasPrefix("## ") || line.hasPrefix("### ") { current = nil }
            guard let object = current, line.hasPrefix("| `") else { continue }
            let cells = Self.cells(line)
            guard cells.count >= 3 else { continue }
            let name = cells[0].trimmingCharacters(in: CharacterSet(charactersIn: "`"))
            objects[object, default: []].append(Field(name: name, type: cells[1], nullable: cells[2] != "never"))
        }
    }

    /// The cells of a Markdown table row, split at unescaped bars.
    static func cells(_ line: String) -> [String] {
        var cells: [String] = []
        var cell = ""
        var previous: Character = " "
        for character in line.dropFirst() {
            if character == "|" && previous != "\\" {
                cells.append(cell.trimmingCharacters(in: .whitespaces))
                cell = ""
            } else {
                cell.append(character)
            }
            previous = character
        }
        return cells
    }

    /// Every difference between `value` and the object `name` of the contract, as readable lines;
    /// `seen` collects the objects met.
    func problems(_ value: JSONValue, object name: String, at path: String, seen: inout Set<String>) -> [String] {
        guard let fields = objects[name] else { return ["\(path): no table for object \(name) in docs/JSON.md"] }
        guard let members = value.object else { return ["\(path): expected an object \(name)"] }
        seen.insert(name)
        var problems: [String] = []
        let documented = Set(fields.map(\.name))
        for key in members.keys.sorted() where !documented.contains(key) {
            problems.append("\(path).\(key): not documented in the table of \(name)")
        }
        for field in fields {
            let member = members[field.name] ?? .null
            if member == .null {
                if !field.nullable { problems.append("\(path).\(field.name): missing or null, but its table says never") }
                continue
            }
            problems += self.problems(member, type: field.type, at: path + "." + field.name, seen: &seen)
        }
        return problems
    }

    /// Every difference between `value` and a type of the contract.
    func problems(_ value: JSONValue, type: String, at path: String, seen: inout Set<String>) -> [String] {
        if type.hasPrefix("array of ") {
            guard let elements = value.array else { return ["\(path): expected an array (\(type))"] }
            var element = String(type.dropFirst("array of ".count))
            let nullable = element.hasPrefix("nullable ")
            if nullable { element = String(element.dropFirst("nullable ".count)) }
            var problems: [String] = []
            for (index, item) in elements.enumerated() {
                if item == .null {
                    if !nullable { problems.append("\(path)[\(index)]: null in an array of \(element)") }
                    continue
                }
                problems += self.problems(item, type: element, at: "\(path)[\(index)]", seen: &seen)
            }
            return problems
        }
        switch (type, value) {
        case ("string", .string), ("integer", .integer), ("number", .integer), ("number", .number), ("boolean", .bool):
            return []
        case ("number", .string(let text)):
            return NonFiniteJSON.all.contains(text) ? [] : ["\(path): the string \"\(text)\" where a number belongs"]
        case ("any", .array), ("any", .object):
            return ["\(path): a nested value where a scalar belongs"]
        case ("any", _):
            return []
        case ("map", .object(let members)):
            // Evidence: numbers (non-finite as the three strings), strings, booleans, null, or arrays of those.
            return members.keys.sorted().flatMap { key -> [String] in
                let item = members[key] ?? .null
                if let list = item.array { return list.flatMap { problems($0, type: "any", at: "\(path).\(key)[]", seen: &seen) } }
                return problems(item, type: "any", at: "\(path).\(key)", seen: &seen)
            }
        default:
            if objects[type] != nil { return problems(value, object: type, at: path, seen: &seen) }
            return ["\(path): \(value) is not of type \(type)"]
        }
    }
}

@Suite("The JSON contract of docs/JSON.md", .serialized)
struct JSONContractTests {
    let cli = CommandLineTests()

    /// The JSON a command prints, checked to exit as expected.
    func output(_ arguments: [String], sourceLocation: SourceLocation = #_sourceLocation) throws -> JSONValue {
        let result = try cli.run(arguments + ["--format", "json"], sourceLocation: sourceLocation)
        #expect(result.status == 0 || result.status == 1, "\(arguments): \(result.stderr)", sourceLocation: sourceLocation)
        return try JSONValue.parse(result.stdout)
    }

    @Test("docs/JSON.md has a field table for every object of the output, and the tables use only the contract's types")
    func tablesAreComplete() throws {
        let contract = try JSONContract.load()
        for name in [
            "ScanReport", "LossPoint", "TensorTimeline", "TimelinePoint", "Finding", "NotChecked", "SkippedItem", "InspectReport",
            "InspectedTensor", "TensorStats", "LinearHistogram", "Log2Histogram", "DiffReport", "TensorDrift", "DriftStats", "Listing",
            "ListedObject", "ListedAttribute", "StoryEvent", "LogPoint",
        ] {
            #expect(!(contract.objects[name] ?? []).isEmpty, "no table for \(name)")
        }
        let scalars: Set<String> = ["string", "integer", "number", "boolean", "map", "any"]
        for (object, fields) in contract.objects {
            for field in fields {
                var type = field.type
                if type.hasPrefix("array of ") { type = String(type.dropFirst("array of ".count)) }
                if type.hasPrefix("nullable ") { type = String(type.dropFirst("nullable ".count)) }
                #expect(scalars.contains(type) || contract.objects[type] != nil, "\(object).\(field.name): unknown type \(field.type)")
            }
        }
        // The finding kinds and skip kinds the code knows are all named in the document.
        for kind in FindingKind.allCases { #expect(contract.text.contains("`\(kind.rawValue)`"), "finding kind \(kind.rawValue)") }
        for kind in SkipKind.allCases { #expect(contract.text.contains("`\(kind.rawValue)`"), "skip kind \(kind.rawValue)") }
    }

    @Test("the JSON of scan, inspect, diff and ls on the samples has exactly the fields docs/JSON.md lists, with their types")
    func realOutputMatchesTheContract() throws {
        let contract = try JSONContract.load()
        var seen = Set<String>()
        var problems: [String] = []
        for sample in [
            "healthy", "exploding-nan", "frozen-layer", "dead-relu", "ctr-plateau", "keras-weights-h5", "tf-keras-legacy-h5",
            "vanishing-sigmoid", "explode-then-dead", "trainer-high-lr",
        ] {
            let scan = try output(["scan", samplePath(sample), "--quiet"])
            problems += contract.problems(scan, object: "ScanReport", at: "scan \(sample)", seen: &seen)
        }
        // A folder of two models (ModelReport).
        let twoModels = try TemporaryDirectory()
        for (run, prefix) in [("keras-weights-h5", "a_"), ("keras-mixed-precision", "b_")] {
            for name in try FileManager.default.contentsOfDirectory(atPath: samplePath(run)) {
                try FileManager.default.copyItem(atPath: samplePath(run) + "/" + name, toPath: twoModels.path(prefix + name))
            }
        }
        let folder = try output(["scan", twoModels.url.path, "--quiet"])
        problems += contract.problems(folder, object: "ScanReport", at: "scan of two models", seen: &seen)
        for file in ["exploding-nan/step_000008.h5", "dead-relu/step_000200.h5", "keras-weights-h5/step_000000.weights.h5"] {
            let inspect = try output(["inspect", samplePath(file), "--quiet"])
            problems += contract.problems(inspect, object: "InspectReport", at: "inspect \(file)", seen: &seen)
        }
        let diff = try output(["diff", samplePath("frozen-layer/step_000000.h5"), samplePath("frozen-layer/step_000050.h5"), "--quiet"])
        problems += contract.problems(diff, object: "DiffReport", at: "diff", seen: &seen)
        for file in ["tf-keras-legacy-h5/step_000000.h5", "keras-weights-h5/step_000000.weights.h5", "trainer-high-lr/checkpoint-60"] {
            for attributes in [true, false] {
                let list = try output(["ls", samplePath(file)] + (attributes ? ["--attrs"] : []))
                problems += contract.problems(list, object: "Listing", at: "ls \(file)", seen: &seen)
            }
        }
        // One line per field and kind of problem, not one per array element.
        var distinct: [String] = []
        for problem in problems {
            let general = problem.replacingOccurrences(of: #"\[\d+\]"#, with: "[]", options: .regularExpression)
            if !distinct.contains(general) { distinct.append(general) }
        }
        let count = distinct.count
        #expect(count == 0, "\(distinct.prefix(40).joined(separator: "\n"))")
        // Every table was met in real output: none describes an object that no longer exists.
        #expect(seen == Set(contract.objects.keys), "never met: \(Set(contract.objects.keys).subtracting(seen).sorted())")
    }

    @Test("the checker catches an undocumented field, a missing required field, a wrong type and a stray string in a number")
    func checkerCatchesDrift() throws {
        let contract = try JSONContract.load()
        var seen = Set<String>()
        let good = try JSONValue.parse(#"{"kind": "frozen", "reason": "no drift"}"#)
        #expect(contract.problems(good, object: "NotChecked", at: "x", seen: &seen).isEmpty)
        let extra = try JSONValue.parse(#"{"kind": "frozen", "reason": "r", "new_field": 1}"#)
        #expect(contract.problems(extra, object: "NotChecked", at: "x", seen: &seen).count == 1)
        let missing = try JSONValue.parse(#"{"kind": "frozen"}"#)
        #expect(contract.problems(missing, object: "NotChecked", at: "x", seen: &seen).count == 1)
        let wrongType = try JSONValue.parse(#"{"step": "3", "loss": 1.5}"#)
        #expect(contract.problems(wrongType, object: "LossPoint", at: "x", seen: &seen).count == 1)
        let nonFinite = try JSONValue.parse(#"{"step": 3, "loss": "nan", "lr": "-inf"}"#)
        #expect(contract.problems(nonFinite, object: "LossPoint", at: "x", seen: &seen).isEmpty)
        let stray = try JSONValue.parse(#"{"step": 3, "loss": "NaN"}"#)
        #expect(contract.problems(stray, object: "LossPoint", at: "x", seen: &seen).count == 1)
    }

    @Test("a non-finite number is written as \"nan\", \"inf\" or \"-inf\" wherever it stands, as docs/JSON.md documents")
    func nonFiniteNumbersHaveOneRepresentation() throws {
        let contract = try JSONContract.load()
        let section = try #require(contract.text.range(of: "## Non-finite numbers"), "docs/JSON.md has no section on non-finite numbers")
        let body = contract.text[section.upperBound...].prefix(1500)
        for word in ["`\"nan\"`", "`\"inf\"`", "`\"-inf\"`"] { #expect(body.contains(word), "the section names \(word)") }
        // The same three strings in the loss, in evidence, and in any array of numbers.
        let loss = try encodeJSON([LossPoint(step: 1, loss: .nan, lr: .infinity), LossPoint(step: 2, loss: -.infinity, lr: 0.1)])
        #expect(loss.contains(#""loss" : "nan""#) && loss.contains(#""lr" : "inf""#) && loss.contains(#""loss" : "-inf""#))
        let evidence = try encodeJSON(["a": EvidenceValue.double(.nan), "b": .double(.infinity), "c": .list([.double(-.infinity)])])
        #expect(evidence.contains(#""a" : "nan""#) && evidence.contains(#""b" : "inf""#) && evidence.contains(#""-inf""#))
        // In real output: exploding-nan's loss turns NaN; every loss is a number or one of the three strings.
        let scan = try output(["scan", samplePath("exploding-nan"), "--quiet"])
        let losses = try #require(scan.object?["loss"]?.array).compactMap { $0.object?["loss"] }
        let strings = losses.compactMap(\.string)
        #expect(strings.contains("nan"))
        #expect(strings.allSatisfy { NonFiniteJSON.all.contains($0) })
    }

    @Test("ls --format json gives the tree: groups, datasets with shape, dtype, layout and size, links, and attributes with --attrs")
    func listingAsJSON() throws {
        let dir = try TemporaryDirectory()
        let path = dir.path("tree.h5")
        let writer = try HDF5Writer(creating: path)
        _ = try writer.createGroup("/weights")
        try writer.write("/weights/dense", [1, 2, 3, 4, 5, 6], shape: [2, 3], as: .float32)
        try writer.write("/weights/packed", (0..<64).map(Double.init), shape: [8, 8], as: .float64, chunks: [4, 4], gzip: 4)
        try writer.softLink("/weights/alias", target: "/weights/dense")
        try writer.externalLink("/elsewhere", file: "other.h5", object: "/x")
        try writer.setAttribute("step", .int(40), at: "/")
        try writer.setAttribute("names", .strings(["a", "b"], .variableUTF8), at: "/weights")
        writer.close()

        let plain = try output(["ls", path])
        let root = try #require(plain.object)
        #expect(root["file"] == .string(path))
        #expect(root["groups"] == .integer(1) && root["datasets"] == .integer(2))
        #expect(root["attributes"] == .null, "no attributes without --attrs")
        let objects = try #require(root["objects"]?.array).compactMap(\.object)
        let byPath = Dictionary(objects.map { ($0["path"]?.string ?? "", $0) }, uniquingKeysWith: { a, _ in a })
        let dense = try #require(byPath["/weights/dense"])
        #expect(dense["kind"] == .string("dataset") && dense["depth"] == .integer(2))
        #expect(dense["shape"] == .array([.integer(2), .integer(3)]) && dense["dtype"] == .string("float32"))
        #expect(dense["layout"] == .string("contiguous") && dense["size"] == .integer(24))
        let packed = try #require(byPath["/weights/packed"])
        #expect(packed["layout"] == .string("chunked") && packed["chunk_shape"] == .array([.integer(4), .integer(4)]))
        #expect(packed["filters"]?.array?.contains(.string("deflate")) == true)
        #expect(byPath["/weights"]?["kind"] == .string("group"))
        #expect(byPath["/weights/alias"]?["kind"] == .string("soft-link") && byPath["/weights/alias"]?["target"] == .string("/weights/dense"))
        #expect(byPath["/elsewhere"]?["kind"] == .string("external-link") && byPath["/elsewhere"]?["target"] == .string("other.h5:/x"))

        let withAttributes = try #require(try output(["ls", "--attrs", path]).object)
        let rootAttributes = try #require(withAttributes["attributes"]?.array).compactMap(\.object)
        #expect(
            rootAttributes.contains { $0["name"] == .string("step") && $0["type"] == .string("integer") && $0["values"] == .array([.integer(40)]) })
        let weights = try #require(withAttributes["objects"]?.array?.compactMap(\.object).first { $0["path"] == .string("/weights") })
        let names = try #require(weights["attributes"]?.array?.first?.object)
        #expect(names["type"] == .string("string") && names["values"] == .array([.string("a"), .string("b")]))

        // ls has no CSV form: asking for it is a usage error.
        let csv = try cli.run(["ls", path, "--format", "csv"])
        #expect(csv.status == 2 && csv.stdout.isEmpty)
    }

    @Test("the README and every --format help text point to docs/JSON.md, not to a DESIGN.md the repository does not hold")
    func documentsAreCitedWhereTheyAre() throws {
        let readme = try String(contentsOf: packageRoot.appendingPathComponent("README.md"), encoding: .utf8)
        #expect(readme.contains("docs/JSON.md"))
        #expect(!readme.contains("DESIGN.md"))
        for command in ["scan", "inspect", "diff", "ls"] {
            let help = try cli.run([command, "--help"], environment: ["COLUMNS": "400"])
            #expect(help.stdout.contains("docs/JSON.md"), "\(command) --help")
            #expect(!help.stdout.contains("DESIGN.md"), "\(command) --help")
        }
    }
}

/// Values of every shape the reports use, for the contract's writer to match Foundation's.
private struct JSONSample: Encodable {
    var numbers: [String: Double]
    var floats: [Float]
    var integers: [Int64]
    var unsigned: [UInt8]
    var empty: [Int] = []
    var emptyObject: [String: Int] = [:]
    var nested: [[Int]]
    var text: String
    var missing: Int?
    var present: Int?
    var flag: Bool
    var many: [String: Int]
    var optionals: [Double?]

    enum CodingKeys: String, CodingKey {
        case numbers, floats, integers, unsigned, empty, nested, text, missing, present, flag, many, optionals
        case emptyObject = "empty_object"
        case repeated
    }

    func encode(to encoder: Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(numbers, forKey: .numbers)
        try container.encode(floats, forKey: .floats)
        try container.encode(integers, forKey: .integers)
        try container.encode(unsigned, forKey: .unsigned)
        try container.encode(empty, forKey: .empty)
        try container.encode(emptyObject, forKey: .emptyObject)
        try container.encode(nested, forKey: .nested)
        try container.encode(text, forKey: .text)
        try container.encodeIfPresent(missing, forKey: .missing)
        try container.encodeIfPresent(present, forKey: .present)
        try container.encode(flag, forKey: .flag)
        try container.encode(many, forKey: .many)
        try container.encode(optionals, forKey: .optionals)
        // A key written twice keeps its last value.
        try container.encode(1, forKey: .repeated)
        try container.encode("last", forKey: .repeated)
    }
}

@Suite("The JSON writer")
struct JSONWriterTests {
    static func foundation<T: Encodable>(_ value: T) throws -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        encoder.nonConformingFloatEncodingStrategy = .convertToString(
            positiveInfinity: NonFiniteJSON.positiveInfinity, negativeInfinity: NonFiniteJSON.negativeInfinity, nan: NonFiniteJSON.nan)
        return String(decoding: try encoder.encode(value), as: UTF8.self)
    }

    @Test("writes the bytes Foundation's encoder writes: numbers, escapes, key order, empty containers, repeated keys")
    func sameBytesAsFoundation() throws {
        var text = ""
        for code in 0..<0x80 { text.unicodeScalars.append(Unicode.Scalar(UInt8(code))) }
        text += "é\u{2028}\u{7f}😀e\u{301}/"
        let numbers: [String: Double] = [
            "b": 1, "a": 0.1, "B": .nan, "é": -.infinity, "_": 1e-7, "aa": 1e22, "ab": 123_456_789_012.5, "ac": -0.0, "ad": 5e-324,
            "ae": .greatestFiniteMagnitude, "af": 100, "ag": 1e16, "ah": 1e15, "ai": .infinity, "aj": 0.000123, "ak": -2.5e-300,
            "Z": 9_007_199_254_740_993, "a b": 1.0 / 3, "a\"b": 2,
        ]
        var many: [String: Int] = [:]
        for index in 0..<40 { many["key\(index * 7 % 40)"] = index }
        let sample = JSONSample(
            numbers: numbers, floats: [3.4e38, 1e-45, .infinity, -.nan, 16_777_216, 0.3, -0.0], integers: [.min, .max, 0, -1],
            unsigned: [0, 255], nested: [[], [1], [2, 3]], text: text, missing: nil, present: 4, flag: false, many: many,
            optionals: [nil, 1.5, nil])
        #expect(try PrettyJSON.encode(sample) == (try Self.foundation(sample)))
        #expect(try encodeJSON(sample) == (try Self.foundation(sample)))
        for scalar in ["top", "", "\\"] { #expect(try PrettyJSON.encode(scalar) == (try Self.foundation(scalar))) }
        #expect(try PrettyJSON.encode([[String: [Int]]]()) == (try Self.foundation([[String: [Int]]]())))
        #expect(try PrettyJSON.encode([String: [Int]]()) == (try Self.foundation([String: [Int]]())))
        #expect(try PrettyJSON.encode([1: "a", 10: "b", 2: "c"]) == (try Self.foundation([1: "a", 10: "b", 2: "c"])))
    }

    @Test("timelines write themselves (PrettyJSONDirect) with the bytes their Encodable conformance gives")
    func timelinesWriteTheirEncodableBytes() throws {
        // Every optional field present (non-finite numbers, an empty array, a negative zero), then none.
        let text = """
            [{"name": "blocks.0.\\"w\\"\\n", "layer": "blocks.0", "shape": [4, 2], "units": 4, "points": [
              {"step": 300, "norm": 8.05, "gradient_norm": 0.0333, "gradient_ratio": "inf", "update_ratio": 1e-7,
               "update_per_save": -0.0, "zero_fraction": 0, "non_finite": 3, "log2_min": -15, "log2_counts": [1, 0, 112233],
               "gradient_log2_min": 2, "gradient_log2_counts": [], "gradient_zero_fraction": "nan", "gradient_non_finite": 0,
               "dead_units": 7},
              {"step": -1, "non_finite": 0}]},
             {"name": "b", "layer": "", "shape": [], "points": []}]
            """
        let decoder = JSONDecoder()
        decoder.nonConformingFloatDecodingStrategy = .convertFromString(
            positiveInfinity: NonFiniteJSON.positiveInfinity, negativeInfinity: NonFiniteJSON.negativeInfinity, nan: NonFiniteJSON.nan)
        let timelines = try decoder.decode([TensorTimeline].self, from: Data(text.utf8))
        #expect(timelines.count == 2 && timelines[0].points.count == 2 && timelines[0].points[0].deadUnits == 7)
        #expect(timelines[0].points[0].gradientZeroFraction?.isNaN == true && timelines[1].units == nil)
        let full = timelines[0].points[0], sparse = timelines[0].points[1]
        #expect(try PrettyJSON.encode(timelines) == (try Self.foundation(timelines)))
        #expect(try PrettyJSON.encode(["timeline": timelines]) == (try Self.foundation(["timeline": timelines])))
        #expect(try PrettyJSON.encode([full, sparse]) == (try Self.foundation([full, sparse])))
        // The direct path is the one taken.
        #expect((timelines[0] as Any) is any PrettyJSONDirect)
        #expect((full as Any) is any PrettyJSONDirect)
    }

    @Test("leaves dates, data and URLs to Foundation, which writes them its own way")
    func foreignTypesFallBack() throws {
        let date = ["when": Date(timeIntervalSince1970: 1_700_000_000)]
        #expect(throws: PrettyJSON.Unsupported.self) { try PrettyJSON.encode(date) }
        #expect(try encodeJSON(date) == (try Self.foundation(date)))
        let url = [URL(fileURLWithPath: "/tmp/a b")]
        #expect(try encodeJSON(url) == (try Self.foundation(url)))
        let data = ["bytes": Data([1, 2, 3])]
        #expect(try encodeJSON(data) == (try Self.foundation(data)))
    }
}
