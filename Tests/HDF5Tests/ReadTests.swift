import Foundation
import HDF5Writer
import TestSupport
import Testing

@testable import HDF5

@Suite("Reading numeric datasets")
struct ReadTests {
    @Test("every stored numeric type reads back exactly as Float and Double")
    func everyType() throws {
        let dir = try TemporaryDirectory()
        let path = dir.path("types.h5")
        let values: [Double] = [0, 1, -2, 3, 100, -5, 7, 64]
        let cases: [(String, HDF5Writer.StoredType, ElementType)] = [
            ("f16", .float16, .float16), ("bf16", .bfloat16Opaque, .bfloat16), ("f32", .float32, .float32),
            ("f64", .float64, .float64), ("f32be", .float32BigEndian, .float32), ("f64be", .float64BigEndian, .float64),
            ("i8", .int8, .integer(bits: 8, signed: true)), ("i16", .int16, .integer(bits: 16, signed: true)),
            ("i32", .int32, .integer(bits: 32, signed: true)), ("i64", .int64, .integer(bits: 64, signed: true)),
            ("u64", .uint64, .integer(bits: 64, signed: false)),
        ]
        do {
            let writer = try HDF5Writer(creating: path)
            for (name, type, _) in cases {
                let stored = (type == .uint64 || name == "u8") ? values.map { abs($0).rounded(.down) } : values
                try writer.write(name, stored, shape: [2, 4], as: type)
            }
            try writer.write("u8", values.map { abs($0).rounded(.down) }, shape: [8], as: .uint8)
            try writer.write("flags", [1, 0, 1, 1], shape: [4], as: .bool)
            writer.close()
        }
        let file = try HDF5File.open(path)
        for (name, _, expectedType) in cases {
            let dataset = try file.dataset("/" + name)
            #expect(dataset.info.type == expectedType, "\(name)")
            #expect(dataset.info.shape == [2, 4])
            let expected = (name == "u64") ? values.map { abs($0).rounded(.down) } : values
            #expect(try dataset.read(as: Double.self) == expected, "\(name)")
            #expect(try dataset.read(as: Float.self) == expected.map(Float.init), "\(name)")
        }
        #expect(try file.dataset("/f32be").info.byteOrder == .big)
        #expect(try file.dataset("/u8").info.type == .integer(bits: 8, signed: false))
        let flags = try file.dataset("/flags")
        #expect(flags.info.type == .bool)
        #expect(try flags.read(as: Float.self) == [1, 0, 1, 1])
    }

    @Test("float16 keeps infinities, NaN, subnormals and signed zero")
    func float16Specials() throws {
        let dir = try TemporaryDirectory()
        let path = dir.path("f16.h5")
        let values: [Double] = [.infinity, -.infinity, 0, -0.0, 65504, 6.103515625e-05, 5.960464477539063e-08]
        do {
            let writer = try HDF5Writer(creating: path)
            try writer.write("x", values, shape: [values.count], as: .float16)
            try writer.write("n", [.nan], shape: [1], as: .float16)
        }
        let file = try HDF5File.open(path)
        let read = try file.dataset("/x").read(as: Double.self)
        #expect(read == values)
        #expect(read[3].sign == .minus)
        #expect(try file.dataset("/n").read(as: Float.self)[0].isNaN)
    }

    @Test("bfloat16 opaque bytes become the high half of a float32")
    func bfloat16() throws {
        let dir = try TemporaryDirectory()
        let path = dir.path("bf16.h5")
        let values: [Double] = [1, -1.5, 3.140625, 1e-30, -256]
        do {
            let writer = try HDF5Writer(creating: path)
            try writer.write("w", values, shape: [5], as: .bfloat16Opaque)
        }
        let file = try HDF5File.open(path)
        let dataset = try file.dataset("/w")
        #expect(dataset.info.type == .bfloat16)
        let expected = values.map { Float(bitPattern: Float($0).bitPattern & 0xFFFF_0000) }
        #expect(try dataset.read(as: Float.self) == expected)
    }

    @Test("chunked gzip datasets stream in blocks that cover every element once, in order")
    func chunkedStreaming() throws {
        let dir = try TemporaryDirectory()
        let path = dir.path("chunked.h5")
        var rng = SplitMix64(state: 7)
        let shape = [37, 11, 5]
        let values = (0..<(37 * 11 * 5)).map { _ in rng.normal() }
        do {
            let writer = try HDF5Writer(creating: path)
            try writer.write("c", values, shape: shape, as: .float64, chunks: [8, 11, 5], gzip: 4)
            try writer.write("flat", values, shape: shape, as: .float64)
        }
        let file = try HDF5File.open(path)
        let dataset = try file.dataset("/c")
        #expect(dataset.info.layout == .chunked)
        #expect(dataset.info.chunkShape == [8, 11, 5])
        #expect(dataset.info.filters.map(\.name).contains("deflate"))
        for blockElements in [1, 7, 55, 100, 440, 1 << 20] {
            var seen = [Double](repeating: .nan, count: values.count)
            var nextOffset = 0
            var blocks = 0
            try dataset.stream(as: Double.self, blockElements: blockElements) { block, offset in
                #expect(offset == nextOffset)
                for (index, value) in block.enumerated() { seen[offset + index] = value }
                nextOffset += block.count
                blocks += 1
            }
            #expect(nextOffset == values.count)
            #expect(seen == values)
            if blockElements < 440 { #expect(blocks > 1) }
        }
        #expect(try file.dataset("/flat").read(as: Double.self) == values)
    }

    @Test("scalar, zero-size and compact datasets")
    func scalarsAndEmpty() throws {
        let dir = try TemporaryDirectory()
        let path = dir.path("small.h5")
        do {
            let writer = try HDF5Writer(creating: path)
            try writer.write("scalar", [42], shape: [], as: .int64)
            try writer.write("empty", [], shape: [0, 3], as: .float32)
            try writer.write("compact", [1, 2, 3], shape: [3], as: .float32, compact: true)
        }
        let file = try HDF5File.open(path)
        let scalar = try file.dataset("/scalar")
        #expect(scalar.info.shape == [])
        #expect(scalar.info.elementCount == 1)
        #expect(try scalar.read(as: Double.self) == [42])
        let empty = try file.dataset("/empty")
        #expect(empty.info.elementCount == 0)
        #expect(try empty.read(as: Float.self).isEmpty)
        let compact = try file.dataset("/compact")
        #expect(compact.info.layout == .compact)
        #expect(try compact.read(as: Float.self) == [1, 2, 3])
    }

    @Test("direct reads equal the streamed values, also after a user block")
    func directReads() throws {
        let dir = try TemporaryDirectory()
        var rng = SplitMix64(state: 3)
        let values = (0..<1000).map { _ in rng.normal() }
        for userBlock in [0, 512] {
            let path = dir.path("direct-\(userBlock).h5")
            do {
                let writer = try HDF5Writer(creating: path, userBlock: userBlock)
                try writer.write("w32", values, shape: [10, 100], as: .float32)
                try writer.write("w64", values, shape: [1000], as: .float64)
                try writer.write("wbe", values, shape: [1000], as: .float32BigEndian)
                try writer.write("wz", values, shape: [1000], as: .float32, chunks: [100], gzip: 1)
            }
            let file = try HDF5File.open(path)
            #expect(file.superblockOffset == userBlock)
            let w32 = try file.dataset("/w32")
            let direct32 = try #require(w32.direct())
            var floats = [Float](repeating: 0, count: 1000)
            try floats.withUnsafeMutableBufferPointer { try direct32.read(0..<1000, into: $0) }
            #expect(floats == (try w32.read(as: Float.self)))
            // A part in the middle, into a larger buffer.
            var part = [Float](repeating: -1, count: 300)
            try part.withUnsafeMutableBufferPointer { try direct32.read(500..<750, into: $0) }
            #expect(Array(part[0..<250]) == Array(floats[500..<750]) && part[250] == -1)
            let w64 = try file.dataset("/w64")
            let direct64 = try #require(w64.direct())
            var doubles = [Double](repeating: 0, count: 1000)
            try doubles.withUnsafeMutableBufferPointer { try direct64.read(0..<1000, into: $0) }
            #expect(doubles == values)
            // Wrong element type or a range past the end: an error, not a bad read.
            #expect(throws: HDF5Error.self) { try doubles.withUnsafeMutableBufferPointer { try direct32.read(0..<10, into: $0) } }
            #expect(throws: HDF5Error.self) { try floats.withUnsafeMutableBufferPointer { try direct32.read(990..<1001, into: $0) } }
            #expect(try file.dataset("/wbe").direct() == nil)
            #expect(try file.dataset("/wz").direct() == nil)
        }
    }

    @Test("a file cut short after it was opened gives a truncation error on a direct read, not a crash")
    func directReadOfFileCutAfterOpening() throws {
        let dir = try TemporaryDirectory()
        let path = dir.path("cut-later.h5")
        do {
            let writer = try HDF5Writer(creating: path)
            try writer.write("w", (0..<100_000).map(Double.init), shape: [100_000], as: .float32)
        }
        let file = try HDF5File.open(path)
        let direct = try #require(try file.dataset("/w").direct())
        // A training job rewriting the file in place: it is now half as long.
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
        try handle.truncate(atOffset: UInt64(file.size / 2))
        try handle.close()
        var buffer = [Float](repeating: 0, count: 100_000)
        do {
            try buffer.withUnsafeMutableBufferPointer { try direct.read(0..<100_000, into: $0) }
            Issue.record("a read past the new end of the file succeeded")
        } catch let error as HDF5Error {
            #expect(error.file == path && error.object == "/w" && error.reason == .truncated)
            #expect(error.message.contains("truncated"))
        }
    }

    @Test("in-memory images never touch the disk and never alias each other, whatever their names")
    func images() throws {
        let dir = try TemporaryDirectory()
        var bytes: [[UInt8]] = []
        for (index, value) in [1.5, -2.5].enumerated() {
            let path = dir.path("image\(index).h5")
            do {
                let writer = try HDF5Writer(creating: path)
                try writer.write("w", [value, value], shape: [2])
            }
            bytes.append([UInt8](try Data(contentsOf: URL(fileURLWithPath: path))))
        }
        // The name of an existing file, and the same name for both images.
        let name = dir.path("image0.h5")
        let first = try HDF5File.open(image: bytes[0], name: name)
        let second = try HDF5File.open(image: bytes[1], name: name)
        #expect(try first.dataset("/w").read(as: Double.self) == [1.5, 1.5])
        #expect(try second.dataset("/w").read(as: Double.self) == [-2.5, -2.5])
        #expect(first.isMemoryImage)
        let secondW = try second.dataset("/w")
        #expect(secondW.direct() == nil)
        do {
            _ = try HDF5File.open(image: Array(bytes[0].prefix(100)), name: "cut.h5")
            Issue.record("a cut image opened")
        } catch let error as HDF5Error {
            #expect(error.file == "cut.h5")
            #expect(!error.message.contains("/dev/null"))
        }
    }
}
