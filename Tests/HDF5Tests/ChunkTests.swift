import Foundation
import HDF5Writer
import TestSupport
import Testing

@testable import HDF5

/// Reads every chunk of `chunks` with a decoder and assembles the whole dataset, row-major.
func assembleAll<T>(_ chunks: DeflatedChunks, as _: T.Type) throws -> [T] {
    let count = chunks.grid.shape.reduce(1, *)
    let buffer = UnsafeMutableBufferPointer<T>.allocate(capacity: count)
    defer { buffer.deallocate() }
    let decoder = try ChunkDecoder(chunks)
    for chunk in 0..<chunks.grid.count {
        let decoded = try decoder.decode(chunk)
        try chunks.copy(chunk, from: decoded, into: UnsafeMutableRawPointer(buffer.baseAddress!), blockOffset: 0, blockCount: count)
    }
    return Array(buffer)
}

@Suite("Chunks of gzip-compressed datasets, read without libhdf5")
struct ChunkTests {
    @Test("chunks are listed with their offsets, and the filter pipeline in order with its parameters")
    func listing() throws {
        let dir = try TemporaryDirectory()
        let path = dir.path("chunks.h5")
        var rng = SplitMix64(state: 11)
        let values = (0..<(300 * 200)).map { _ in rng.normal() }
        do {
            let writer = try HDF5Writer(creating: path)
            try writer.write("plain", values, shape: [300, 200], as: .float32, chunks: [64, 48], gzip: 4)
            try writer.write("shuffled", values, shape: [300, 200], as: .float64, chunks: [64, 48], gzip: 4, shuffle: true)
            try writer.write("checked", values, shape: [300, 200], as: .float32, chunks: [64, 48], gzip: 4, fletcher32: true)
        }
        let file = try HDF5File.open(path)
        let plain = try file.dataset("/plain")
        #expect(try plain.filterPipeline().map(\.id) == [1])
        let shuffled = try file.dataset("/shuffled")
        let pipeline = try shuffled.filterPipeline()
        #expect(pipeline.map(\.id) == [2, 1])
        #expect(pipeline.first?.parameters.first == 8)
        #expect(try file.dataset("/checked").filterPipeline().map(\.id) == [1, 3])
        #expect(try plain.storedChunkCount() == 25)
        let records = try plain.chunks()
        #expect(records.count == 25)
        #expect(records.first?.offset == [0, 0])
        #expect(records[1].offset == [0, 48])
        #expect(records.last?.offset == [256, 192])
        #expect(records.allSatisfy { $0.filterMask == 0 && $0.size > 0 && $0.address + $0.size <= file.size })
        #expect(Set(records.map(\.address)).count == 25)
        #expect(try plain.chunk(at: [64, 96])?.offset == [64, 96])
        #expect(throws: HDF5Error.self) { try plain.chunk(at: [1]) }
        #expect(throws: HDF5Error.self) { try plain.chunks(limit: 10) }
    }

    @Test("decoded chunks equal libhdf5's read: float32 and float64, both byte orders, shuffle, edge chunks, user block")
    func decodedEqualsLibrary() throws {
        let dir = try TemporaryDirectory()
        var rng = SplitMix64(state: 12)
        let values = (0..<(37 * 53 * 3)).map { index in index % 17 == 0 ? 0 : rng.normal() * 3 }
        let types: [(String, HDF5Writer.StoredType)] = [
            ("f32", .float32), ("f64", .float64), ("f32be", .float32BigEndian), ("f64be", .float64BigEndian),
        ]
        for userBlock in [0, 512] {
            let path = dir.path("decode-\(userBlock).h5")
            do {
                let writer = try HDF5Writer(creating: path, userBlock: userBlock)
                for (name, type) in types {
                    try writer.write(name, values, shape: [37, 53, 3], as: type, chunks: [8, 10, 2], gzip: 4)
                    try writer.write(name + "-shuffle", values, shape: [37, 159], as: type, chunks: [5, 16], gzip: 1, shuffle: true)
                    try writer.write(name + "-1d", values, shape: [values.count], as: type, chunks: [1000], gzip: 9)
                }
            }
            let file = try HDF5File.open(path)
            for (name, type) in types {
                for suffix in ["", "-shuffle", "-1d"] {
                    let dataset = try file.dataset("/" + name + suffix)
                    let chunks = try #require(dataset.deflatedChunks(), "\(name)\(suffix): \(dataset.deflatedChunksRefusal ?? "")")
                    #expect(chunks.shuffled == (suffix == "-shuffle"))
                    #expect(chunks.swapsBytes == (type == .float32BigEndian || type == .float64BigEndian))
                    if chunks.elementSize == 4 {
                        #expect(try assembleAll(chunks, as: Float.self) == (try dataset.read(as: Float.self)), "\(name)\(suffix)")
                    } else {
                        #expect(try assembleAll(chunks, as: Double.self) == values, "\(name)\(suffix)")
                    }
                }
            }
        }
    }

    @Test("anything but float32/float64 behind deflate or shuffle+deflate, with every chunk written, is left to libhdf5")
    func refusals() throws {
        let dir = try TemporaryDirectory()
        let path = dir.path("refused.h5")
        let values = (0..<400).map { Double($0 % 7) }
        do {
            let writer = try HDF5Writer(creating: path)
            try writer.write("fletcher", values, shape: [20, 20], as: .float32, chunks: [5, 5], gzip: 4, fletcher32: true)
            try writer.write("shuffleOnly", values, shape: [20, 20], as: .float32, chunks: [5, 5], shuffle: true)
            try writer.write("uncompressed", values, shape: [20, 20], as: .float32, chunks: [5, 5])
            try writer.write("ints", values, shape: [20, 20], as: .int32, chunks: [5, 5], gzip: 4)
            try writer.write("halves", values, shape: [20, 20], as: .float16, chunks: [5, 5], gzip: 4)
            try writer.write("partial", values, shape: [20, 20], as: .float32, chunks: [5, 5], gzip: 4, writtenRows: 10)
            try writer.write("contiguous", values, shape: [20, 20], as: .float32)
            try writer.write("good", values, shape: [20, 20], as: .float32, chunks: [5, 5], gzip: 4)
            // One chunk of 4.2 million float32 (16.8 MB): over the cap, libhdf5 reads it.
            try writer.write("huge", [Double](repeating: 0, count: 4_200_000), shape: [4_200_000], as: .float32, chunks: [4_200_000], gzip: 1)
        }
        let file = try HDF5File.open(path)
        for name in ["fletcher", "shuffleOnly", "uncompressed", "ints", "halves", "partial", "contiguous", "huge"] {
            let dataset = try file.dataset("/" + name)
            #expect(dataset.deflatedChunks() == nil, "\(name)")
            #expect(dataset.deflatedChunksRefusal != nil, "\(name)")
        }
        #expect(try file.dataset("/partial").deflatedChunksRefusal?.contains("allocated") == true)
        #expect(try file.dataset("/fletcher").deflatedChunksRefusal?.contains("fletcher32") == true)
        #expect(try file.dataset("/huge").deflatedChunksRefusal?.contains("larger than") == true)
        #expect(try file.dataset("/good").deflatedChunks() != nil)
        // A file held in memory has no descriptor to read chunks from.
        let image = try HDF5File.open(image: [UInt8](Data(contentsOf: URL(fileURLWithPath: path))), name: "image.h5")
        #expect(try image.dataset("/good").deflatedChunks() == nil)
    }

    @Test("a corrupt chunk is an error naming the dataset and the chunk, never a crash or a wrong value")
    func corruptChunks() throws {
        let dir = try TemporaryDirectory()
        let path = dir.path("good.h5")
        var rng = SplitMix64(state: 13)
        let values = (0..<(60 * 40)).map { _ in rng.normal() }
        do {
            let writer = try HDF5Writer(creating: path)
            try writer.write("w", values, shape: [60, 40], as: .float32, chunks: [20, 20], gzip: 4)
        }
        let original = try [UInt8](Data(contentsOf: URL(fileURLWithPath: path)))
        let target = try #require(try HDF5File.open(path).dataset("/w").chunk(at: [20, 20]))
        let chunkBytes = 20 * 20 * 4

        func corrupted(_ name: String, _ edit: (inout [UInt8]) -> Void) throws -> DeflatedChunks {
            var bytes = original
            edit(&bytes)
            let copy = dir.path(name)
            try Data(bytes).write(to: URL(fileURLWithPath: copy))
            return try #require(try HDF5File.open(copy).dataset("/w").deflatedChunks())
        }
        func expectCorrupt(_ chunks: DeflatedChunks, _ words: String) {
            let decoder = try? ChunkDecoder(chunks)
            let index = 1 * 2 + 1
            #expect(throws: (any Error).self) { try decoder?.decode(index) }
            do {
                _ = try decoder?.decode(index)
            } catch let error as HDF5Error {
                #expect(error.reason == .corrupt)
                #expect(error.object == "/w")
                #expect(error.message.contains("[20, 20]"), "\(error.message)")
                #expect(error.message.contains(words), "\(error.message)")
            } catch {
                Issue.record("unexpected error \(error)")
            }
            // The other chunks still read.
            #expect((try? decoder?.decode(0)) != nil)
        }
        // Flipped bytes in the middle of the deflate stream.
        expectCorrupt(
            try corrupted("flipped.h5") { bytes in
                for offset in stride(from: target.address + 8, to: target.address + target.size - 8, by: 7) { bytes[offset] ^= 0x5a }
            }, "corrupt")
        // A valid stream of too few bytes (the rest of the stored bytes left as they were).
        expectCorrupt(
            try corrupted("short.h5") { bytes in
                let stream = HDF5Writer.zlibCompress([UInt8](repeating: 0, count: chunkBytes / 2))
                bytes.replaceSubrange(target.address..<(target.address + stream.count), with: stream)
            }, "inflates to 800 bytes")
        // A valid stream of too many bytes.
        expectCorrupt(
            try corrupted("long.h5") { bytes in
                let stream = HDF5Writer.zlibCompress([UInt8](repeating: 0, count: chunkBytes * 3))
                bytes.replaceSubrange(target.address..<(target.address + stream.count), with: stream)
            }, "more than")
        // The checksum at the end of the zlib stream.
        expectCorrupt(
            try corrupted("checksum.h5") { bytes in bytes[target.address + target.size - 1] ^= 0xff }, "checksum")
    }
}
