import Foundation
import GradScopeDiagnosis
import GradScopeModel
import GradScopeSources
import TestSupport
import Testing

/// Writes torch.save archives for tests: a zip of stored entries and a hand-assembled protocol 2
/// pickle, as `torch.save` writes them.
enum TorchArchiveWriter {
    /// One zip entry: its name, bytes and whether it claims to be deflated.
    struct Entry {
        var name: String
        var bytes: [UInt8]
        var method: UInt16 = 0
    }

    static func le16(_ value: Int) -> [UInt8] { [UInt8(value & 0xFF), UInt8(value >> 8 & 0xFF)] }
    static func le32(_ value: Int) -> [UInt8] { le16(value & 0xFFFF) + le16(value >> 16 & 0xFFFF) }

    static func le64(_ value: Int) -> [UInt8] { le32(value & 0xFFFF_FFFF) + le32(value >> 32) }

    /// A zip archive of `entries`, stored, with a central directory; `zip64` writes the zip64 records
    /// (sizes and offsets in the zip64 extra field, the zip64 end record and its locator), as for archives over 4 GB.
    static func zip(_ entries: [Entry], zip64: Bool = false) -> [UInt8] {
        var out: [UInt8] = []
        var central: [UInt8] = []
        for entry in entries {
            let name = Array(entry.name.utf8)
            let offset = out.count
            let head = le16(20) + le16(0) + le16(Int(entry.method)) + le16(0) + le16(0) + le32(0)
            out += le32(0x0403_4b50) + head + le32(entry.bytes.count) + le32(entry.bytes.count) + le16(name.count) + le16(0) + name + entry.bytes
            if zip64 {
                let extra = le16(1) + le16(24) + le64(entry.bytes.count) + le64(entry.bytes.count) + le64(offset)
                central +=
                    le32(0x0201_4b50) + le16(45) + head + le32(0xFFFF_FFFF) + le32(0xFFFF_FFFF) + le16(name.count) + le16(extra.count)
                    + le16(0) + le16(0) + le16(0) + le32(0) + le32(0xFFFF_FFFF) + name + extra
            } else {
                central +=
                    le32(0x0201_4b50) + le16(20) + head + le32(entry.bytes.count) + le32(entry.bytes.count) + le16(name.count) + le16(0)
                    + le16(0) + le16(0) + le16(0) + le32(0) + le32(offset) + name
            }
        }
        let start = out.count
        out += central
        if zip64 {
            let record = out.count
            out +=
                le32(0x0606_4b50) + le64(44) + le16(45) + le16(45) + le32(0) + le32(0) + le64(entries.count) + le64(entries.count)
                + le64(central.count) + le64(start)
            out += le32(0x0706_4b50) + le32(0) + le64(record) + le32(1)
            out += le32(0x0605_4b50) + le16(0) + le16(0) + le16(0xFFFF) + le16(0xFFFF) + le32(0xFFFF_FFFF) + le32(0xFFFF_FFFF) + le16(0)
        } else {
            out += le32(0x0605_4b50) + le16(0) + le16(0) + le16(entries.count) + le16(entries.count) + le32(central.count) + le32(start) + le16(0)
        }
        return out
    }

    /// Protocol 2 pickle pieces.
    enum P {
        static let proto: [UInt8] = [0x80, 0x02]
        static let mark: [UInt8] = [0x28]
        static let tuple: [UInt8] = [0x74]
        static let emptyTuple: [UInt8] = [0x29]
        static let emptyDict: [UInt8] = [0x7D]
        static let emptyList: [UInt8] = [0x5D]
        static let setItems: [UInt8] = [0x75]
        static let appends: [UInt8] = [0x65]
        static let reduce: [UInt8] = [0x52]
        static let stop: [UInt8] = [0x2E]
        static func global(_ module: String, _ name: String) -> [UInt8] { [0x63] + Array("\(module)\n\(name)\n".utf8) }
        static func str(_ text: String) -> [UInt8] { [0x58] + le32(text.utf8.count) + Array(text.utf8) }
        static func int(_ value: Int) -> [UInt8] { [0x4A] + le32(value) }
        static func float(_ value: Double) -> [UInt8] { [0x47] + withUnsafeBytes(of: value.bitPattern.bigEndian) { Array($0) } }
        static func ints(_ values: [Int]) -> [UInt8] { mark + values.flatMap { int($0) } + tuple }
        static let orderedDict: [UInt8] = global("collections", "OrderedDict") + emptyTuple + reduce

        /// `_rebuild_tensor_v2(storage, 0, shape, contiguous strides, False, OrderedDict())`.
        static func tensor(_ storage: String, key: String, numel: Int, shape: [Int], offset: Int = 0) -> [UInt8] {
            var strides: [Int] = []
            var running = 1
            for dimension in shape.reversed() {
                strides.insert(running, at: 0)
                running *= dimension
            }
            let persistent = mark + str("storage") + global("torch", storage) + str(key) + str("cpu") + int(numel) + tuple + [0x51]
            return global("torch._utils", "_rebuild_tensor_v2") + mark + persistent + int(offset) + ints(shape) + ints(strides) + [0x89]
                + orderedDict + tuple + reduce
        }

        /// A dict (OrderedDict when `ordered`) of `items`.
        static func dict(_ items: [(String, [UInt8])], ordered: Bool = true) -> [UInt8] {
            (ordered ? orderedDict : emptyDict) + mark + items.flatMap { str($0.0) + $0.1 } + setItems
        }
    }

    /// A torch.save archive of `pickle` and its storages, under `archive/`.
    static func archive(_ pickle: [UInt8], storages: [(String, [UInt8])], extra: [Entry] = [], zip64: Bool = false) -> [UInt8] {
        zip(
            [Entry(name: "archive/data.pkl", bytes: pickle), Entry(name: "archive/byteorder", bytes: Array("little".utf8))]
                + storages.map { Entry(name: "archive/data/\($0.0)", bytes: $0.1) } + [Entry(name: "archive/version", bytes: Array("3\n".utf8))]
                + extra, zip64: zip64)
    }

    static func bytes(_ values: [Float]) -> [UInt8] { values.flatMap { le32(Int($0.bitPattern)) } }
    static func halves(_ values: [Float]) -> [UInt8] { values.flatMap { le16(Int(Float16($0).bitPattern)) } }
    static func longs(_ values: [Int64]) -> [UInt8] { values.flatMap { v in withUnsafeBytes(of: v.littleEndian) { Array($0) } } }
}

@Suite("torch.save archives")
struct TorchArchiveTests {
    typealias P = TorchArchiveWriter.P
    static let weight: [Float] = [0.5, -1.25, 2, 3.5, -0.75, 0.125]
    static let bias: [Float] = [0.5, -0.25]

    /// A state_dict: fc1.weight float32 [2, 3], fc1.bias float16 [2], position_ids int64 [3].
    static var stateDict: [(String, [UInt8])] {
        [
            ("fc1.weight", P.tensor("FloatStorage", key: "0", numel: 6, shape: [2, 3])),
            ("fc1.bias", P.tensor("HalfStorage", key: "1", numel: 2, shape: [2])),
            ("position_ids", P.tensor("LongStorage", key: "2", numel: 3, shape: [3])),
        ]
    }
    static let storages: [(String, [UInt8])] = [
        ("0", TorchArchiveWriter.bytes(weight)), ("1", TorchArchiveWriter.halves(bias)), ("2", TorchArchiveWriter.longs([0, 1, 2])),
    ]

    static func write(_ bytes: [UInt8], _ dir: TemporaryDirectory, _ name: String) throws -> String {
        let path = dir.path(name)
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        return path
    }

    @Test("inspect reads a bare state_dict: float32 and float16 tensors with the statistics of their values, int64 not analysed")
    func stateDictRead() throws {
        let dir = try TemporaryDirectory()
        let pickle = P.proto + P.dict(Self.stateDict) + P.stop
        let path = try Self.write(TorchArchiveWriter.archive(pickle, storages: Self.storages), dir, "model.pt")
        let report = try Analysis.inspect(path)
        #expect(report.layout == "torch")
        #expect(Set(report.tensors.map(\.name)) == ["fc1.weight", "fc1.bias"])
        for (name, values) in [("fc1.weight", Self.weight), ("fc1.bias", Self.bias)] {
            let stats = try #require(report.tensors.first { $0.name == name }?.stats, "\(name)")
            #expect(stats.count == values.count)
            #expect(stats.min == Double(values.min()!) && stats.max == Double(values.max()!), "\(name)")
            let mean = values.map(Double.init).reduce(0, +) / Double(values.count)
            #expect(abs((stats.mean ?? .nan) - mean) < 1e-12, "\(name)")
        }
        #expect(report.skipped.contains { $0.item.hasSuffix(":position_ids") && $0.reason.contains("int64") })
        // float32 lies where the scan engine reads it by offset.
        let opened = try #require(try CheckpointLoader.open(path).first)
        let storage = Dictionary(zip(opened.checkpoint.tensors.map(\.name), opened.checkpoint.storage), uniquingKeysWith: { a, _ in a })
        let direct = try #require(storage["fc1.weight"] ?? nil)
        let fileBytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: path)))
        #expect(fileBytes[direct.offset..<(direct.offset + 4)].withUnsafeBytes { $0.loadUnaligned(as: Float.self) } == Self.weight[0])
    }

    @Test("a {'model': state_dict, 'epoch', 'step'} dict: weights from 'model', epoch and step as metadata")
    func modelDict() throws {
        let dir = try TemporaryDirectory()
        let pickle = P.proto + P.dict([("model", P.dict(Self.stateDict)), ("epoch", P.int(7)), ("step", P.int(1400))], ordered: false) + P.stop
        let path = try Self.write(TorchArchiveWriter.archive(pickle, storages: Self.storages), dir, "checkpoint.pth")
        let report = try Analysis.inspect(path)
        #expect(report.step == 1400)
        #expect(Set(report.tensors.map(\.name)) == ["fc1.weight", "fc1.bias"])
        let opened = try #require(try CheckpointLoader.open(path).first)
        #expect(opened.checkpoint.metadata.epoch == 7)
    }

    @Test("optimizer.state_dict() in the same file: exp_avg and exp_avg_sq by parameter index are mapped to the parameters' names")
    func optimizerMapped() throws {
        let dir = try TemporaryDirectory()
        let model = P.dict([
            ("fc1.weight", P.tensor("FloatStorage", key: "0", numel: 6, shape: [2, 3])),
            ("fc1.bias", P.tensor("FloatStorage", key: "1", numel: 2, shape: [2])),
        ])
        func state(_ first: String, _ second: String, shape: [Int], numel: Int) -> [UInt8] {
            P.emptyDict + P.mark + P.str("step") + P.float(10) + P.str("exp_avg") + P.tensor("FloatStorage", key: first, numel: numel, shape: shape)
                + P.str("exp_avg_sq") + P.tensor("FloatStorage", key: second, numel: numel, shape: shape) + P.setItems
        }
        let stateDict =
            P.emptyDict + P.mark + P.int(0) + state("2", "3", shape: [2, 3], numel: 6) + P.int(1) + state("4", "5", shape: [2], numel: 2) + P.setItems
        let group =
            P.emptyDict + P.mark + P.str("lr") + P.float(0.001) + P.str("params") + P.emptyList + P.mark + P.int(0) + P.int(1) + P.appends
            + P.setItems
        let optimizer =
            P.emptyDict + P.mark + P.str("state") + stateDict + P.str("param_groups") + P.emptyList + P.mark + group + P.appends + P.setItems
        let pickle = P.proto + P.dict([("model", model), ("optimizer", optimizer), ("epoch", P.int(3))], ordered: false) + P.stop
        let six = TorchArchiveWriter.bytes([0.1, 0.2, 0.3, 0.4, 0.5, 0.6]), two = TorchArchiveWriter.bytes([0.1, 0.2])
        let path = try Self.write(
            TorchArchiveWriter.archive(pickle, storages: [("0", six), ("1", two), ("2", six), ("3", six), ("4", two), ("5", two)]), dir, "ckpt.pt")
        let opened = try #require(try CheckpointLoader.open(path).first)
        let optimizerTensors = opened.checkpoint.tensors.filter { $0.role == .optimizer }
        #expect(
            Set(optimizerTensors.map { "\($0.name):\($0.slotName ?? "")" }) == [
                "fc1.weight:exp_avg", "fc1.weight:exp_avg_sq", "fc1.bias:exp_avg", "fc1.bias:exp_avg_sq",
            ])
        #expect(opened.checkpoint.metadata.learningRate == 0.001)
        #expect(opened.checkpoint.metadata.epoch == 3)
    }

    /// Hostile archives, each with the words its refusal must contain.
    static func hostile() -> [(String, [UInt8], String)] {
        let good = Self.storages
        func archive(_ pickle: [UInt8], storages: [(String, [UInt8])] = good, extra: [TorchArchiveWriter.Entry] = []) -> [UInt8] {
            TorchArchiveWriter.archive(pickle, storages: storages, extra: extra)
        }
        var deep = P.proto + P.emptyDict + P.str("x")
        for _ in 0..<200 { deep += P.emptyList }
        for _ in 0..<199 { deep += [0x61] }
        deep += [0x73] + P.stop
        var deepMarks = P.proto
        for _ in 0..<150 { deepMarks += P.mark }
        // A pair holding the previous value twice, 80 times over: 2^80 references in a few hundred bytes.
        var laughs = P.proto + P.emptyDict + P.str("x") + P.emptyList + [0x71, 0]
        for level in 1...80 { laughs += [0x68, UInt8(level - 1), 0x86, 0x71, UInt8(level)] }
        laughs += [0x73] + P.stop
        let system = P.proto + P.global("os", "system") + P.str("touch /tmp/pwned") + [0x85] + P.reduce + P.stop
        let compressed = TorchArchiveWriter.zip([
            .init(name: "archive/data.pkl", bytes: P.proto + P.dict(Self.stateDict) + P.stop),
            .init(name: "archive/data/0", bytes: good[0].1, method: 8), .init(name: "archive/data/1", bytes: good[1].1),
            .init(name: "archive/data/2", bytes: good[2].1),
        ])
        let pickle = P.proto + P.dict(Self.stateDict) + P.stop
        // The directory record of archive/data/0 pointed at the local header of archive/byteorder:
        // the same bytes under two names.
        var overlapping = TorchArchiveWriter.archive(pickle, storages: good)
        let byteorderLocal = Self.find(Array("archive/byteorder".utf8), in: overlapping, from: 0)! - 30
        let directory = Self.find([0x50, 0x4b, 0x01, 0x02], in: overlapping, from: 0)!
        let dataRecord = Self.find(Array("archive/data/0".utf8), in: overlapping, from: directory)! - 46
        overlapping.replaceSubrange((dataRecord + 42)..<(dataRecord + 46), with: TorchArchiveWriter.le32(byteorderLocal))
        overlapping.replaceSubrange((dataRecord + 20)..<(dataRecord + 28), with: TorchArchiveWriter.le32(6) + TorchArchiveWriter.le32(6))
        let bigEndian = TorchArchiveWriter.zip(
            [.init(name: "archive/data.pkl", bytes: pickle), .init(name: "archive/byteorder", bytes: Array("big".utf8))]
                + good.map { .init(name: "archive/data/\($0.0)", bytes: $0.1) })
        let outside =
            P.proto + P.dict([("fc1.weight", P.tensor("FloatStorage", key: "0", numel: 6, shape: [2, 3], offset: 2))]) + P.stop
        return [
            ("overlapping", overlapping, "overlap"),
            ("big-endian", bigEndian, "big-endian byte order: not supported"),
            ("outside-storage", archive(outside), "lie outside its storage of 6"),
            ("os-system", system, "global os.system is not allowed"),
            ("eval", P.proto + P.global("builtins", "eval") + P.stop, "global builtins.eval is not allowed"),
            (
                "whole-model", P.proto + P.global("__main__", "Net") + P.stop,
                "global __main__.Net is not allowed (only tensors, storages and plain containers are read; a whole model saved with torch.save(model) is not read: save model.state_dict())"
            ),
            (
                "torchscript", archive(pickle, extra: [.init(name: "archive/constants.pkl", bytes: P.proto + P.emptyTuple + P.stop)]),
                "a TorchScript module saved with torch.jit.save"
            ),
            ("reduce-size", P.proto + P.global("torch", "FloatStorage") + P.emptyTuple + P.reduce + P.stop, "REDUCE on torch.FloatStorage"),
            ("unknown-opcode", P.proto + [0x69] + P.stop, "unknown opcode 0x69"),
            ("memo", P.proto + [0x68, 0x05] + P.stop, "memo index 5 out of range"),
            ("underflow", P.proto + [0x86] + P.stop, "stack underflow"),
            ("deep", deep, "nests deeper than 100"),
            ("deep-marks", deepMarks, "nesting deeper than 100"),
            (
                "long-key",
                P.proto + P.dict([(String(repeating: "k", count: 5000), P.tensor("FloatStorage", key: "0", numel: 6, shape: [2, 3]))]) + P.stop,
                "a key of 5000 bytes, over 4096"
            ),
            // A million lists each inside the next, and a million 1-tuples: freeing them must not recurse.
            (
                "million-lists",
                P.proto + P.emptyDict + P.str("x") + [UInt8](repeating: 0x5D, count: 1_000_000) + [UInt8](repeating: 0x61, count: 999_999) + [0x73]
                    + P.stop, "nests deeper than 100"
            ),
            (
                "million-tuples", P.proto + P.emptyDict + P.str("x") + P.emptyList + [UInt8](repeating: 0x85, count: 1_000_000) + [0x73] + P.stop,
                "nests deeper than 100"
            ),
            (
                "million-on-stack", P.proto + [UInt8](repeating: 0x5D, count: 1_000_000) + [UInt8](repeating: 0x61, count: 999_999) + [0x69],
                "unknown opcode"
            ),
            ("shared-bomb", laughs, "refers to more than 1000000 values"),
            ("long-global", P.proto + [0x63] + Array(repeating: UInt8(ascii: "a"), count: 5000) + P.stop, "a GLOBAL without its name"),
            ("missing-storage", archive(pickle, storages: Array(good.prefix(2))), "storage 2 is not in the archive"),
            ("short-storage", archive(pickle, storages: [good[0], ("1", [0, 0]), good[2]]), "shorter than its 2 elements"),
            ("compressed", compressed, "is compressed"),
            ("duplicated", archive(pickle, extra: [.init(name: "archive/data/0", bytes: good[0].1)]), "appears twice"),
            ("climbing", archive(pickle, extra: [.init(name: "archive/../../etc/passwd", bytes: [1])]), "climbs out of the archive"),
        ]
    }

    /// The first index of `needle` in `haystack` at or after `start`.
    static func find(_ needle: [UInt8], in haystack: [UInt8], from start: Int) -> Int? {
        guard haystack.count >= needle.count else { return nil }
        return (start...(haystack.count - needle.count)).first { Array(haystack[$0..<($0 + needle.count)]) == needle }
    }

    @Test("hostile archives are refused with one reason naming the file, and nothing is executed")
    func hostileRefused() throws {
        let dir = try TemporaryDirectory()
        for (name, content, reason) in Self.hostile() {
            let bytes = content.first == 0x50 ? content : TorchArchiveWriter.archive(content, storages: Self.storages)
            let path = try Self.write(bytes, dir, name + ".pt")
            do {
                _ = try CheckpointLoader.open(path)
                Issue.record("\(name) was accepted")
            } catch let error as CheckpointError {
                #expect(error.file == path, "\(name)")
                #expect(error.reason.contains(reason), "\(name): \(error.reason)")
            }
        }
        #expect(!FileManager.default.fileExists(atPath: "/tmp/pwned"))
    }

    @Test("a zip that is not a torch archive is not taken for one; a raw pickle is named as the format before PyTorch 1.6")
    func recognition() throws {
        let dir = try TemporaryDirectory()
        let other = try Self.write(TorchArchiveWriter.zip([.init(name: "config.json", bytes: Array("{}".utf8))]), dir, "x.pt")
        #expect(!TorchArchiveSource().recognises(path: other, head: Array(try Data(contentsOf: URL(fileURLWithPath: other)).prefix(8))))
        let torch = try Self.write(TorchArchiveWriter.archive(P.proto + P.dict(Self.stateDict) + P.stop, storages: Self.storages), dir, "y.bin")
        #expect(TorchArchiveSource().recognises(path: torch, head: Array(try Data(contentsOf: URL(fileURLWithPath: torch)).prefix(8))))
        let words = try #require(Failures.foreignContent(head: [0x80, 0x02, 0x8A, 0x0A]))
        #expect(words.contains("PyTorch checkpoint saved with torch.save") && words.contains("before PyTorch 1.6"))
    }

    /// A float32 state_dict archive of `weights` (name, values, shape), storages keyed 0, 1, ...
    static func archive(_ weights: [(String, [Float], [Int])], extra: [(String, [UInt8])] = []) -> [UInt8] {
        let items = weights.enumerated().map { index, weight in
            (weight.0, P.tensor("FloatStorage", key: String(index), numel: weight.1.count, shape: weight.2))
        }
        let pickle = P.proto + P.dict(items) + P.stop
        return TorchArchiveWriter.archive(pickle, storages: weights.enumerated().map { (String($0.offset), TorchArchiveWriter.bytes($0.element.1)) })
    }

    @Test("a run of step_N.pt archives: the frozen tensor is found at its name, from the first save")
    func frozenRun() throws {
        let dir = try TemporaryDirectory()
        var weights = SafetensorsTests.mlp(seed: 7)
        var noise = SplitMix64(seed: 99)
        for step in [100, 200, 300, 400] {
            _ = try Self.write(Self.archive(weights), dir, "step_\(step).pt")
            for index in weights.indices where weights[index].0 != "l1.weight" {
                weights[index].1 = weights[index].1.map { $0 + Float(noise.normal() * 3e-3) }
            }
        }
        let (report, _) = try Analysis.scan(dir.url.path)
        let frozen = report.findings.filter { $0.kind == .frozen }
        #expect(frozen.map(\.tensor) == ["l1.weight"])
        #expect(frozen.first?.firstStep == 100)
        #expect(report.layout == "torch")
        #expect(report.steps == [100, 200, 300, 400])
    }

    @Test("a Lightning checkpoint: weights from state_dict, Adam's moments from optimizer_states, global_step as the step")
    func lightning() throws {
        let dir = try TemporaryDirectory()
        let model = P.dict([("net.0.weight", P.tensor("FloatStorage", key: "0", numel: 6, shape: [2, 3]))])
        let state =
            P.emptyDict + P.mark + P.str("exp_avg") + P.tensor("FloatStorage", key: "1", numel: 6, shape: [2, 3]) + P.str("exp_avg_sq")
            + P.tensor("FloatStorage", key: "2", numel: 6, shape: [2, 3]) + P.setItems
        let optimizer = P.emptyDict + P.mark + P.str("state") + P.emptyDict + P.mark + P.int(0) + state + P.setItems + P.setItems
        let pickle =
            P.proto
            + P.dict(
                [
                    ("epoch", P.int(2)), ("global_step", P.int(640)), ("pytorch-lightning_version", P.str("2.2.0")), ("state_dict", model),
                    ("optimizer_states", P.emptyList + P.mark + optimizer + P.appends),
                ], ordered: false) + P.stop
        let six = TorchArchiveWriter.bytes([0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
        let path = try Self.write(TorchArchiveWriter.archive(pickle, storages: [("0", six), ("1", six), ("2", six)]), dir, "epoch=2-step=640.ckpt")
        let opened = try #require(try CheckpointLoader.open(path).first)
        #expect(opened.checkpoint.metadata.step == 640)
        #expect(
            Set(opened.checkpoint.tensors.map { "\($0.name):\($0.role):\($0.slotName ?? "")" }) == [
                "net.0.weight:weight:", "net.0.weight:optimizer:exp_avg", "net.0.weight:optimizer:exp_avg_sq",
            ])
        #expect(opened.checkpoint.notes.contains { $0.contains("Lightning") })
    }

    @Test("optimizer state whose shapes match no parameter order is kept under its indices, with a note")
    func optimizerAmbiguous() throws {
        let dir = try TemporaryDirectory()
        let model = P.dict([("fc.weight", P.tensor("FloatStorage", key: "0", numel: 6, shape: [2, 3]))])
        let state = P.emptyDict + P.mark + P.str("exp_avg") + P.tensor("FloatStorage", key: "1", numel: 4, shape: [4]) + P.setItems
        let optimizer = P.emptyDict + P.mark + P.str("state") + P.emptyDict + P.mark + P.int(0) + state + P.setItems + P.setItems
        let pickle = P.proto + P.dict([("model", model), ("optimizer", optimizer)], ordered: false) + P.stop
        let path = try Self.write(
            TorchArchiveWriter.archive(
                pickle, storages: [("0", TorchArchiveWriter.bytes([1, 2, 3, 4, 5, 6])), ("1", TorchArchiveWriter.bytes([1, 2, 3, 4]))]), dir,
            "mismatch.pt")
        let opened = try #require(try CheckpointLoader.open(path).first)
        #expect(opened.checkpoint.notes.contains { $0.contains("could not be matched") })
        #expect(!opened.checkpoint.tensors.contains { $0.role == .optimizer && $0.name == "fc.weight" })
    }

    /// Runs the built binary with `arguments`: exit status, stdout, stderr.
    static func run(_ arguments: [String]) throws -> (Int32, String, String) {
        let binary = try #require(GradScopeBinary.path, "\(GradScopeBinary.notFoundMessage)")
        let output = try GradScopeBinary.run(binary, arguments)
        return (output.status, output.stdout, output.stderr)
    }

    @Test("gradscope inspect refuses each hostile archive with one line naming it, exit 2")
    func hostileByCommand() throws {
        let dir = try TemporaryDirectory()
        for (name, content, reason) in Self.hostile() {
            let bytes = content.first == 0x50 ? content : TorchArchiveWriter.archive(content, storages: Self.storages)
            let path = try Self.write(bytes, dir, name + ".pt")
            let (status, _, stderr) = try Self.run(["inspect", path])
            #expect(status == 2, "\(name)")
            #expect(stderr.split(separator: "\n").count == 1, "\(name): \(stderr)")
            #expect(stderr.contains(path) && stderr.contains(reason), "\(name): \(stderr)")
        }
    }

    @Test("gradscope inspect --format json and ls read a torch archive")
    func commands() throws {
        let dir = try TemporaryDirectory()
        let path = try Self.write(TorchArchiveWriter.archive(P.proto + P.dict(Self.stateDict) + P.stop, storages: Self.storages), dir, "model.bin")
        let (status, json, _) = try Self.run(["inspect", path, "--format", "json"])
        #expect(status == 0)
        let object = try #require(try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any])
        #expect(object["layout"] as? String == "torch")
        let (listStatus, text, _) = try Self.run(["ls", path])
        #expect(listStatus == 0)
        let lines = text.split(separator: "\n").map { $0.split(separator: " ", omittingEmptySubsequences: true).joined(separator: " ") }
        #expect(lines.first?.contains("(torch,") == true, "\(text)")
        #expect(lines.contains("fc1.weight [2, 3] float32 24 B contiguous"), "\(text)")
        #expect(lines.contains("fc1.bias [2] float16 4 B contiguous"), "\(text)")
    }

    @Test("thousands of corrupted archives (bytes of data.pkl and of the zip changed at random) are refused or read, never a crash")
    func corrupted() throws {
        let dir = try TemporaryDirectory()
        let pickle = P.proto + P.dict(Self.stateDict) + P.stop
        var random = SplitMix64(seed: 17)
        var refused = 0
        for round in 0..<1500 {
            var mutatedPickle = pickle
            var bytes: [UInt8]
            if round % 2 == 0 {
                for _ in 0..<(1 + Int(random.next() % 4)) {
                    mutatedPickle[Int(random.next() % UInt64(mutatedPickle.count))] = UInt8(truncatingIfNeeded: random.next())
                }
                bytes = TorchArchiveWriter.archive(mutatedPickle, storages: Self.storages)
            } else {
                bytes = TorchArchiveWriter.archive(pickle, storages: Self.storages)
                for _ in 0..<(1 + Int(random.next() % 4)) {
                    bytes[Int(random.next() % UInt64(bytes.count))] = UInt8(truncatingIfNeeded: random.next())
                }
            }
            let path = try Self.write(bytes, dir, "m\(round % 8).pt")
            // Any error is a refusal; a crash would end the test run.
            if (try? CheckpointLoader.open(path)) == nil { refused += 1 }
        }
        #expect(refused > 100)
    }

    @Test("Adam's state of a 12-parameter model maps by the pickle's order, though torch.save stores the storages sorted by key as text")
    func optimizerOrderOfManyParameters() throws {
        let dir = try TemporaryDirectory()
        // Six layers of one shape: only the order tells which state belongs to which parameter.
        let shapes = (0..<6).flatMap { _ in [[3, 3], [3]] }
        let names = (0..<6).flatMap { ["layers.\($0).weight", "layers.\($0).bias"] }
        var storages: [(String, [UInt8])] = []
        func tensor(_ shape: [Int]) -> [UInt8] {
            let key = String(storages.count), count = shape.reduce(1, *)
            storages.append((key, TorchArchiveWriter.bytes((0..<count).map { Float($0 + storages.count) })))
            return P.tensor("FloatStorage", key: key, numel: count, shape: shape)
        }
        let model = P.dict(zip(names, shapes).map { ($0.0, tensor($0.1)) })
        var state = P.emptyDict + P.mark
        for (index, shape) in shapes.enumerated() {
            state += P.int(index) + P.emptyDict + P.mark + P.str("exp_avg") + tensor(shape) + P.str("exp_avg_sq") + tensor(shape) + P.setItems
        }
        state += P.setItems
        let optimizer = P.emptyDict + P.mark + P.str("state") + state + P.setItems
        let pickle = P.proto + P.dict([("model", model), ("optimizer", optimizer)], ordered: false) + P.stop
        storages.sort { $0.0 < $1.0 }
        let path = try Self.write(TorchArchiveWriter.archive(pickle, storages: storages), dir, "many.pt")
        let opened = try #require(try CheckpointLoader.open(path).first)
        let moments = opened.checkpoint.tensors.filter { $0.role == .optimizer }
        #expect(moments.count == 24)
        for moment in moments {
            // `optimizer/state/<index>/exp_avg`: the index names the parameter.
            let index = try #require(Int(moment.path.split(separator: "/")[2]))
            #expect(moment.name == names[index], "\(moment.path)")
        }
        #expect(opened.checkpoint.notes.contains { $0.contains("matched to the parameters") })
    }

    @Test("diff of a torch.save archive and a safetensors save of the same weights finds no difference, both ways")
    func diffAgainstSafetensors() throws {
        let dir = try TemporaryDirectory()
        let weights = SafetensorsTests.mlp(seed: 11)
        _ = try Self.write(Self.archive(weights), dir, "model.pt")
        try SafetensorsWriter.write(
            SafetensorsWriter.file(weights.map { SafetensorsWriter.f32($0.0, $0.1, shape: $0.2) }), to: dir.path("model.safetensors"))
        for (a, b) in [("model.pt", "model.safetensors"), ("model.safetensors", "model.pt")] {
            let report = try Analysis.diff(dir.path(a), dir.path(b))
            #expect(report.tensors.count == weights.count)
            #expect(report.added.isEmpty && report.removed.isEmpty && report.reshaped.isEmpty)
            for tensor in report.tensors {
                #expect(tensor.drift.changed == 0, "\(tensor.name)")
            }
            #expect(report.findings.isEmpty)
        }
    }

    @Test("a zip64 archive (as torch.save writes models over 4 GB) is read: sizes and offsets from the zip64 records")
    func zip64() throws {
        let dir = try TemporaryDirectory()
        let pickle = P.proto + P.dict(Self.stateDict) + P.stop
        let path = try Self.write(TorchArchiveWriter.archive(pickle, storages: Self.storages, zip64: true), dir, "big.pt")
        let report = try Analysis.inspect(path)
        #expect(report.layout == "torch")
        let weight = try #require(report.tensors.first { $0.name == "fc1.weight" }?.stats)
        #expect(weight.min == -1.25 && weight.max == 3.5 && weight.count == 6)
    }
}
