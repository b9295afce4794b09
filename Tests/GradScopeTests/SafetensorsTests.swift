import ElementTypes
import Foundation
import GradScopeDiagnosis
import GradScopeMeasurement
import GradScopeModel
import GradScopeSources
import GradScopeStatistics
import HDF5
import HDF5Writer
import TestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Writes safetensors files for tests: a JSON header (padded to 8 bytes, as the library does)
/// and the tensors' little-endian bytes one after the other.
enum SafetensorsWriter {
    /// One tensor: its name, dtype, shape and stored bytes.
    struct Tensor {
        var name: String
        var dtype: String
        var shape: [Int]
        var bytes: [UInt8]
    }

    static func f32(_ name: String, _ values: [Float], shape: [Int]) -> Tensor {
        Tensor(name: name, dtype: "F32", shape: shape, bytes: values.flatMap { le($0.bitPattern) })
    }
    static func f64(_ name: String, _ values: [Double], shape: [Int]) -> Tensor {
        Tensor(name: name, dtype: "F64", shape: shape, bytes: values.flatMap { le($0.bitPattern) })
    }
    static func f16(_ name: String, _ values: [Float], shape: [Int]) -> Tensor {
        Tensor(name: name, dtype: "F16", shape: shape, bytes: values.flatMap { le(Float16($0).bitPattern) })
    }
    /// bfloat16: the top half of each float32 (values chosen to be exact).
    static func bf16(_ name: String, _ values: [Float], shape: [Int]) -> Tensor {
        Tensor(name: name, dtype: "BF16", shape: shape, bytes: values.flatMap { le(UInt16($0.bitPattern >> 16)) })
    }
    static func i64(_ name: String, _ values: [Int64], shape: [Int]) -> Tensor {
        Tensor(name: name, dtype: "I64", shape: shape, bytes: values.flatMap { le(UInt64(bitPattern: $0)) })
    }

    static func le<T: FixedWidthInteger>(_ value: T) -> [UInt8] { withUnsafeBytes(of: value.littleEndian) { Array($0) } }

    /// The file's bytes: header length, header, data.
    static func file(_ tensors: [Tensor], metadata: [String: String] = [:]) -> [UInt8] {
        var entries: [String] = []
        if !metadata.isEmpty {
            let pairs = metadata.sorted { $0.key < $1.key }.map { "\"\($0.key)\":\"\($0.value)\"" }
            entries.append("\"__metadata__\":{" + pairs.joined(separator: ",") + "}")
        }
        var offset = 0
        var data: [UInt8] = []
        for tensor in tensors {
            let shape = tensor.shape.map(String.init).joined(separator: ",")
            entries.append(
                "\"\(tensor.name)\":{\"dtype\":\"\(tensor.dtype)\",\"shape\":[\(shape)],\"data_offsets\":[\(offset),\(offset + tensor.bytes.count)]}")
            offset += tensor.bytes.count
            data += tensor.bytes
        }
        return raw(header: "{" + entries.joined(separator: ",") + "}", data: data)
    }

    /// A file with `header` as given (padded with spaces to a multiple of 8) and `data` after it.
    static func raw(header: String, data: [UInt8], length: UInt64? = nil) -> [UInt8] {
        var text = Array(header.utf8)
        while text.count % 8 != 0 { text.append(UInt8(ascii: " ")) }
        return le(length ?? UInt64(text.count)) + text + data
    }

    static func write(_ bytes: [UInt8], to path: String) throws {
        try Data(bytes).write(to: URL(fileURLWithPath: path))
    }
}

@Suite("safetensors")
struct SafetensorsTests {
    /// Float32 weights of a small MLP, l0 [8, 4], l1 [8, 8], l2 [2, 8], with biases.
    static func mlp(seed: UInt64) -> [(String, [Float], [Int])] {
        var noise = SplitMix64(seed: seed)
        return [("l0", 4, 8), ("l1", 8, 8), ("l2", 8, 2)].flatMap { name, fanIn, fanOut in
            [
                ("\(name).weight", noise.normals(fanIn * fanOut, std: 0.3).map(Float.init), [fanOut, fanIn]),
                ("\(name).bias", noise.normals(fanOut, std: 0.01).map(Float.init), [fanOut]),
            ]
        }
    }

    @Test("inspect reads F32, F64, F16 and BF16 tensors with the statistics of their values; I64 is read but not analysed")
    func dtypes() throws {
        let dir = try TemporaryDirectory()
        let path = dir.path("model.safetensors")
        let f32: [Float] = [0.5, -1.25, 2, 3.5, -0.75, 0.125]
        let f64: [Double] = [1e-3, -2.5e-3, 4e-3]
        let f16: [Float] = [0.5, -0.25, 1.5, 2]
        let bf16: [Float] = [1, -2, 0.5, 0.375]
        let ids: [Int64] = [0, 1, 2, 3, -9_000_000_000]
        try SafetensorsWriter.write(
            SafetensorsWriter.file(
                [
                    SafetensorsWriter.f32("fc1.weight", f32, shape: [3, 2]),
                    SafetensorsWriter.f64("fc1.bias", f64, shape: [3]),
                    SafetensorsWriter.f16("fc2.weight", f16, shape: [2, 2]),
                    SafetensorsWriter.bf16("norm.weight", bf16, shape: [4]),
                    SafetensorsWriter.i64("position_ids", ids, shape: [1, 5]),
                ], metadata: ["format": "pt", "global_step": "1200"]),
            to: path)

        let report = try Analysis.inspect(path)
        #expect(report.layout == "safetensors")
        #expect(report.step == 1200)
        #expect(report.framework == "safetensors")
        let expected: [String: [Double]] = [
            "fc1.weight": f32.map(Double.init), "fc1.bias": f64, "fc2.weight": f16.map(Double.init), "norm.weight": bf16.map(Double.init),
        ]
        #expect(Set(report.tensors.map(\.name)) == Set(expected.keys))
        for tensor in report.tensors {
            let values = try #require(expected[tensor.name])
            let stats = try #require(tensor.stats, "\(tensor.name)")
            let mean = values.reduce(0, +) / Double(values.count)
            #expect(stats.count == values.count)
            #expect(abs((stats.mean ?? .nan) - mean) <= 1e-12 * max(1, abs(mean)), "\(tensor.name)")
            #expect(stats.min == values.min(), "\(tensor.name)")
            #expect(stats.max == values.max(), "\(tensor.name)")
            let norm = values.reduce(0) { $0 + $1 * $1 }.squareRoot()
            #expect(abs((stats.l2Norm ?? .nan) - norm) <= 1e-12 * norm, "\(tensor.name)")
        }
        let fc1 = try #require(report.tensors.first { $0.name == "fc1.weight" })
        #expect(fc1.unitAxis == 0 && fc1.layer == "fc1" && fc1.role == .weight && fc1.dtype == "float32")
        #expect(report.skipped.contains { $0.item.hasSuffix(":position_ids") && $0.reason.contains("int64") })

        // F32 and F64 lie where the scan engine reads them by offset; F16 does not.
        let opened = try #require(try CheckpointLoader.open(path).first)
        let storage = Dictionary(zip(opened.checkpoint.tensors.map(\.name), opened.checkpoint.storage), uniquingKeysWith: { a, _ in a })
        let direct = try #require(storage["fc1.weight"] ?? nil)
        #expect(direct.type == .float32 && direct.count == 6)
        #expect(try #require(storage["fc1.bias"] ?? nil).type == .float64)
        #expect((storage["fc2.weight"] ?? nil) == nil)
        let fileBytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: path)))
        let first = fileBytes[direct.offset..<(direct.offset + 4)].withUnsafeBytes { $0.loadUnaligned(as: Float.self) }
        #expect(first == f32[0])

        // Integers are read and converted too (here int64 beyond float32's exact range).
        let idsRef = TensorRef(
            name: "position_ids", layer: "", role: .weight, shape: [1, 5], dtype: .integer(bits: 64, signed: true), unitAxis: nil,
            path: "position_ids")
        var read: [Double] = []
        try opened.data(for: idsRef).stream(as: Double.self, blockElements: 2) { block, _ in read += block }
        #expect(read == ids.map(Double.init))
    }

    @Test("F8_E4M3 and F8_E5M2 are converted; dtypes gradscope does not convert are skipped with the reason")
    func float8AndUnsupported() throws {
        let dir = try TemporaryDirectory()
        let path = dir.path("f8.safetensors")
        // E4M3: 0x38 = 1.0, 0xC0 = -2.0, 0x01 = 2^-9 (subnormal); E5M2: 0x3C = 1.0, 0xC2 = -3.0.
        try SafetensorsWriter.write(
            SafetensorsWriter.file([
                .init(name: "a.weight", dtype: "F8_E4M3", shape: [3], bytes: [0x38, 0xC0, 0x01]),
                .init(name: "b.weight", dtype: "F8_E5M2", shape: [2], bytes: [0x3C, 0xC2]),
                .init(name: "c.weight", dtype: "F4", shape: [4], bytes: [0x12, 0x34]),
            ]), to: path)
        let report = try Analysis.inspect(path)
        let a = try #require(report.tensors.first { $0.name == "a.weight" }?.stats)
        #expect(a.min == -2 && a.max == 1)
        #expect(abs((a.mean ?? 0) - (1 - 2 + 1.0 / 512) / 3) < 1e-12)
        let b = try #require(report.tensors.first { $0.name == "b.weight" }?.stats)
        #expect(b.min == -3 && b.max == 1)
        let skipped = try #require(report.skipped.first { $0.item.hasSuffix(":c.weight") })
        #expect(skipped.reason == "unsupported dtype F4" && skipped.kind == .notAnalysed)
    }

    @Test("a run of step_N.safetensors files: the frozen tensor is found at its name, from the first save")
    func frozenRun() throws {
        let dir = try TemporaryDirectory()
        var weights = Self.mlp(seed: 7)
        var noise = SplitMix64(seed: 99)
        for step in [100, 200, 300, 400] {
            try SafetensorsWriter.write(
                SafetensorsWriter.file(weights.map { SafetensorsWriter.f32($0.0, $0.1, shape: $0.2) }),
                to: dir.path("step_\(step).safetensors"))
            for index in weights.indices where weights[index].0 != "l1.weight" {
                weights[index].1 = weights[index].1.map { $0 + Float(noise.normal() * 3e-3) }
            }
        }
        let (report, _) = try Analysis.scan(dir.url.path)
        let frozen = report.findings.filter { $0.kind == .frozen }
        #expect(frozen.map(\.tensor) == ["l1.weight"])
        #expect(frozen.first?.firstStep == 100)
        #expect(report.layout == "safetensors")
        #expect(report.steps == [100, 200, 300, 400])
    }

    @Test("a sharded save with model.safetensors.index.json is one step, from every shard")
    func sharded() throws {
        let dir = try TemporaryDirectory()
        let weights = Self.mlp(seed: 3)
        let first = Array(weights.prefix(3)), second = Array(weights.dropFirst(3))
        try SafetensorsWriter.write(
            SafetensorsWriter.file(first.map { SafetensorsWriter.f32($0.0, $0.1, shape: $0.2) }), to: dir.path("model-00001-of-00002.safetensors"))
        try SafetensorsWriter.write(
            SafetensorsWriter.file(second.map { SafetensorsWriter.f32($0.0, $0.1, shape: $0.2) }), to: dir.path("model-00002-of-00002.safetensors"))
        var map: [String: String] = [:]
        for tensor in first { map[tensor.0] = "model-00001-of-00002.safetensors" }
        for tensor in second { map[tensor.0] = "model-00002-of-00002.safetensors" }
        let index = try JSONSerialization.data(withJSONObject: ["metadata": ["total_size": 1], "weight_map": map])
        try index.write(to: URL(fileURLWithPath: dir.path("model.safetensors.index.json")))

        let report = try Analysis.inspect(dir.path("model.safetensors.index.json"))
        #expect(report.layout == "safetensors")
        #expect(Set(report.tensors.map(\.name)) == Set(weights.map(\.0)))
        for tensor in report.tensors {
            let values = try #require(weights.first { $0.0 == tensor.name }?.1)
            #expect(tensor.stats?.max == Double(values.max()!), "\(tensor.name)")
        }
        #expect(report.notes.contains { $0.contains("2 shard file(s) read as one step") })

        // In a directory, the index stands for its shards: one save, not two.
        let loaded = try RunLoader.load(dir.url.path)
        #expect(loaded.checkpoints.count == 1)
        #expect(loaded.checkpoints.first?.tensors.count == weights.count)

        // A shard that is a named pipe is refused, not waited on.
        let pipeDir = try TemporaryDirectory()
        try FileManager.default.copyItem(atPath: dir.path("model.safetensors.index.json"), toPath: pipeDir.path("model.safetensors.index.json"))
        try FileManager.default.copyItem(
            atPath: dir.path("model-00001-of-00002.safetensors"), toPath: pipeDir.path("model-00001-of-00002.safetensors"))
        #expect(mkfifo(pipeDir.path("model-00002-of-00002.safetensors"), 0o600) == 0)
        #expect {
            try CheckpointLoader.open(pipeDir.path("model.safetensors.index.json"))
        } throws: { error in
            (error as? CheckpointError).map { $0.file.hasSuffix("model-00002-of-00002.safetensors") && $0.reason.contains("named pipe") } ?? false
        }
    }

    @Test("diff of a safetensors save and an HDF5 save of the same weights finds no difference")
    func diffAgainstHDF5() throws {
        let dir = try TemporaryDirectory()
        let weights = Self.mlp(seed: 11)
        try SafetensorsWriter.write(
            SafetensorsWriter.file(weights.map { SafetensorsWriter.f32($0.0, $0.1, shape: $0.2) }), to: dir.path("model.safetensors"))
        do {
            let writer = try HDF5Writer(creating: dir.path("model.h5"))
            for (name, values, shape) in weights { try writer.write("/" + name, floats: values, shape: shape) }
            writer.close()
        }
        for (a, b) in [("model.safetensors", "model.h5"), ("model.h5", "model.safetensors")] {
            let report = try Analysis.diff(dir.path(a), dir.path(b))
            #expect(report.tensors.count == weights.count)
            #expect(report.added.isEmpty && report.removed.isEmpty && report.reshaped.isEmpty)
            for tensor in report.tensors {
                #expect(tensor.drift.relativeChange == 0, "\(tensor.name)")
                #expect(tensor.drift.changed == 0, "\(tensor.name)")
            }
            #expect(report.findings.isEmpty)
        }
    }

    /// Hostile or broken files, each with the words its refusal must contain.
    static func hostileFiles() -> [(String, [UInt8], String)] {
        let good = SafetensorsWriter.f32("w", [1, 2, 3, 4], shape: [2, 2])
        let data = good.bytes
        func header(_ tensors: String) -> String { "{" + tensors + "}" }
        let nested = "{\"a\":" + String(repeating: "[", count: 100_000) + String(repeating: "]", count: 100_000) + "}"
        return [
            ("too-long", SafetensorsWriter.le(UInt64(4096)) + Array("{\"w\":{}}".utf8), "runs past the end of the file"),
            ("zero", SafetensorsWriter.le(UInt64(0)) + [UInt8](repeating: 0x20, count: 16), "too small"),
            ("absurd", SafetensorsWriter.le(UInt64.max) + Array("{}      ".utf8), "runs past the end of the file"),
            ("short", [0x01, 0x02, 0x03], "shorter than the 8-byte header length"),
            ("not-json", SafetensorsWriter.raw(header: "{this is not json", data: data), "not a valid JSON object"),
            ("not-utf8", SafetensorsWriter.le(UInt64(8)) + [0x7B, 0xFF, 0xFE, 0x7D, 0x20, 0x20, 0x20, 0x20], "not valid UTF-8"),
            (
                "outside",
                SafetensorsWriter.raw(header: header("\"w\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[1000,1016]}"), data: data),
                "outside the file"
            ),
            (
                "overlap",
                SafetensorsWriter.raw(
                    header: header(
                        "\"w\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,16]},\"v\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]}"
                    ),
                    data: data),
                "overlap"
            ),
            (
                "wrong-size",
                SafetensorsWriter.raw(header: header("\"w\":{\"dtype\":\"F32\",\"shape\":[3,2],\"data_offsets\":[0,16]}"), data: data), "needs 24"
            ),
            (
                "reversed",
                SafetensorsWriter.raw(header: header("\"w\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[16,0]}"), data: data),
                "do not form a range"
            ),
            (
                "negative",
                SafetensorsWriter.raw(header: header("\"w\":{\"dtype\":\"F32\",\"shape\":[-2,-2],\"data_offsets\":[0,16]}"), data: data),
                "negative dimension"
            ),
            (
                "overflow",
                SafetensorsWriter.raw(
                    header: header("\"w\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,16],\"data_offsets\":[0,16]}"), data: data),
                "overflows"
            ),
            (
                "unknown-dtype",
                SafetensorsWriter.raw(header: header("\"w\":{\"dtype\":\"Q7\",\"shape\":[2,2],\"data_offsets\":[0,16]}"), data: data),
                "unknown dtype Q7"
            ),
            ("nested", SafetensorsWriter.raw(header: nested, data: data), "deeper than 64 levels"),
            ("array", SafetensorsWriter.raw(header: "[1, 2, 3]", data: data), "not a JSON object"),
        ]
    }

    @Test("hostile safetensors files are refused with the reason, never a crash")
    func hostileRefusedInProcess() throws {
        let dir = try TemporaryDirectory()
        for (name, bytes, reason) in Self.hostileFiles() {
            let path = dir.path(name + ".safetensors")
            try SafetensorsWriter.write(bytes, to: path)
            do {
                _ = try CheckpointLoader.open(path)
                Issue.record("\(name) was accepted")
            } catch let error as CheckpointError {
                #expect(error.file == path, "\(name)")
                #expect(error.reason.contains(reason), "\(name): \(error.reason)")
            }
        }
    }

    @Test(
        "thousands of corrupted safetensors files (bytes of the header and its length changed at random, cut off) are refused or read, never a crash")
    func corrupted() throws {
        let dir = try TemporaryDirectory()
        // Written by the real safetensors library (the Trainer sample's weights).
        let original = [UInt8](try Data(contentsOf: URL(fileURLWithPath: samplePath("trainer-high-lr") + "/checkpoint-60/model.safetensors")))
        let headerEnd = 8 + Int(original[0]) + Int(original[1]) << 8
        var options = MeasureOptions()
        options.threads = 1
        var random = SplitMix64(seed: 23)
        var refused = 0, read = 0
        for round in 0..<1500 {
            var bytes = original
            switch round % 3 {
            case 0:
                for _ in 0..<(1 + Int(random.next() % 4)) {
                    bytes[Int(random.next() % UInt64(headerEnd))] = UInt8(truncatingIfNeeded: random.next())
                }
            case 1:
                bytes = Array(bytes.prefix(Int(random.next() % UInt64(bytes.count))))
            default:
                // A digit of the header changed: shapes, offsets and lengths that no longer agree.
                let digits = (8..<headerEnd).filter { bytes[$0] >= UInt8(ascii: "0") && bytes[$0] <= UInt8(ascii: "9") }
                for _ in 0..<(1 + Int(random.next() % 3)) {
                    bytes[digits[Int(random.next() % UInt64(digits.count))]] = UInt8(ascii: "0") + UInt8(random.next() % 10)
                }
            }
            let path = dir.path("m\(round % 8).safetensors")
            try SafetensorsWriter.write(bytes, to: path)
            // Any error is a refusal; a crash would end the test run.
            guard let checkpoints = try? CheckpointLoader.open(path) else {
                refused += 1
                continue
            }
            read += 1
            for checkpoint in checkpoints {
                for tensor in checkpoint.checkpoint.tensors.prefix(4) {
                    _ = try? TensorMeasurer.stats(of: tensor, in: checkpoint, options: options)
                }
            }
            _ = try? FileListing.read(path, withAttributes: true)
        }
        #expect(refused > 1000 && read > 20, "refused \(refused), read \(read)")
    }

    @Test("gradscope inspect refuses each hostile safetensors file with one line naming it, exit 2")
    func hostileRefusedByCommand() throws {
        let binary = try #require(GradScopeBinary.path, "\(GradScopeBinary.notFoundMessage)")
        let dir = try TemporaryDirectory()
        for (name, bytes, reason) in Self.hostileFiles() {
            let path = dir.path(name + ".safetensors")
            try SafetensorsWriter.write(bytes, to: path)
            let output = try GradScopeBinary.run(binary, ["inspect", path])
            let stderr = output.stderr
            #expect(!output.crashed && output.status == 2, "\(name)")
            let lines = stderr.split(separator: "\n")
            #expect(lines.count == 1, "\(name): \(stderr)")
            #expect(stderr.contains(path) && stderr.contains(reason), "\(name): \(stderr)")
        }
    }

    @Test("gradscope ls lists a safetensors file's tensors with shape, dtype and size, as text and as JSON")
    func listing() throws {
        let binary = try #require(GradScopeBinary.path, "\(GradScopeBinary.notFoundMessage)")
        let dir = try TemporaryDirectory()
        let path = dir.path("model.safetensors")
        try SafetensorsWriter.write(
            SafetensorsWriter.file(
                [
                    SafetensorsWriter.f32("fc1.weight", [1, 2, 3, 4, 5, 6], shape: [3, 2]),
                    SafetensorsWriter.bf16("fc1.bias", [1, 2, 3], shape: [3]),
                ], metadata: ["format": "pt"]), to: path)
        func run(_ arguments: [String]) throws -> (Int32, String) {
            let output = try GradScopeBinary.run(binary, arguments)
            return (output.status, output.stdout)
        }
        let size = try #require(try FileManager.default.attributesOfItem(atPath: path)[.size] as? Int)
        let (status, text) = try run(["ls", path, "--attrs"])
        #expect(status == 0)
        let lines = text.split(separator: "\n").map { $0.split(separator: " ", omittingEmptySubsequences: true).joined(separator: " ") }
        #expect(lines.first?.hasSuffix("(safetensors, \(formatBytes(size)), 2 tensors)") == true, "\(text)")
        #expect(lines.contains("@format = \"pt\""), "\(text)")
        #expect(lines.contains("fc1.weight [3, 2] float32 24 B contiguous"), "\(text)")
        #expect(lines.contains("fc1.bias [3] bfloat16 6 B contiguous"), "\(text)")
        let (jsonStatus, json) = try run(["ls", path, "--format", "json"])
        #expect(jsonStatus == 0)
        let object = try #require(try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any])
        #expect(object["datasets"] as? Int == 2)
        let objects = try #require(object["objects"] as? [[String: Any]])
        #expect(objects.map { $0["name"] as? String } == ["fc1.weight", "fc1.bias"])
        #expect(objects.first?["dtype"] as? String == "float32" && objects.first?["size"] as? Int == 24)
    }

    @Test("--layout does not offer safetensors: it forces HDF5 layouts only")
    func layoutOptionRefusesSafetensors() throws {
        let binary = try #require(GradScopeBinary.path, "\(GradScopeBinary.notFoundMessage)")
        let output = try GradScopeBinary.run(binary, ["inspect", "--layout", "safetensors", "x.h5"])
        let stderr = output.stderr
        #expect(output.status == 2)
        #expect(stderr.contains("'safetensors' is invalid") && stderr.contains("'generic'"), "\(stderr)")
    }

    @Test("a file with a safetensors header is recognised whatever its name; an HDF5 file is not taken for one")
    func recognition() throws {
        let dir = try TemporaryDirectory()
        let path = dir.path("weights.bin")
        try SafetensorsWriter.write(SafetensorsWriter.file([SafetensorsWriter.f32("fc.weight", [1, 2, 3, 4], shape: [2, 2])]), to: path)
        #expect(try Analysis.inspect(path).layout == "safetensors")
        let h5 = dir.path("model.h5")
        do {
            let writer = try HDF5Writer(creating: h5)
            try writer.write("/fc.weight", floats: [1, 2, 3, 4], shape: [2, 2])
            writer.close()
        }
        #expect(try Analysis.inspect(h5).layout == "generic")
    }
}
