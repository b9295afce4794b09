import Foundation
import HDF5Writer
import TestSupport
import Testing

@testable import HDF5

@Suite("Bad input gives clear errors")
struct BadInputTests {
    private func reason(_ path: String) -> HDF5Error.Reason? {
        do {
            _ = try HDF5File.open(path)
            return nil
        } catch let error as HDF5Error {
            #expect(error.file == path)
            #expect(!error.message.isEmpty)
            #expect(error.description.hasPrefix(path))
            return error.reason
        } catch {
            return nil
        }
    }

    @Test("missing, empty, directory, text, PNG and zip files")
    func notHDF5() throws {
        let dir = try TemporaryDirectory()
        #expect(reason(dir.path("nope.h5")) == .notFound)
        #expect(reason(dir.url.path) == .isDirectory)
        FileManager.default.createFile(atPath: dir.path("empty.h5"), contents: Data())
        #expect(reason(dir.path("empty.h5")) == .empty)
        FileManager.default.createFile(atPath: dir.path("text.h5"), contents: Data("hello, this is text\n".utf8))
        #expect(reason(dir.path("text.h5")) == .notHDF5)
        FileManager.default.createFile(atPath: dir.path("image.h5"), contents: Data([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0, 0]))
        #expect(reason(dir.path("image.h5")) == .notHDF5)
        FileManager.default.createFile(atPath: dir.path("model.keras"), contents: Data([0x50, 0x4b, 0x03, 0x04] + [UInt8](repeating: 0, count: 40)))
        do {
            _ = try HDF5File.open(dir.path("model.keras"))
            Issue.record("a zip file opened as HDF5")
        } catch let error as HDF5Error {
            #expect(error.reason == .notHDF5)
            #expect(error.message.contains("zip"))
        }
    }

    @Test("a truncated file is reported as truncated, never read as data")
    func truncated() throws {
        let dir = try TemporaryDirectory()
        let path = dir.path("full.h5")
        do {
            let writer = try HDF5Writer(creating: path)
            try writer.write("w", (0..<4096).map(Double.init), shape: [64, 64], as: .float32)
            try writer.setAttribute("step", .int(5), at: "/")
        }
        let data = try Data(contentsOf: URL(fileURLWithPath: path))
        for cut in [8, 100, 1000, data.count / 2, data.count - 10] {
            let cutPath = dir.path("cut-\(cut).h5")
            try data.prefix(cut).write(to: URL(fileURLWithPath: cutPath))
            do {
                let file = try HDF5File.open(cutPath)
                // If the metadata survived, reading the data must still fail clearly.
                #expect(throws: HDF5Error.self) { _ = try file.dataset("/w").read(as: Float.self) }
            } catch let error as HDF5Error {
                #expect([.truncated, .corrupt, .notHDF5].contains(error.reason), "\(cut): \(error)")
            }
        }
    }

    @Test("a dataset created but never written is incomplete")
    func unallocated() throws {
        let dir = try TemporaryDirectory()
        let path = dir.path("half.h5")
        do {
            let writer = try HDF5Writer(creating: path)
            try writer.createEmpty("w", shape: [1000, 1000])
        }
        let file = try HDF5File.open(path)
        let dataset = try file.dataset("/w")
        #expect(!dataset.info.allocated)
        do {
            _ = try dataset.read(as: Float.self)
            Issue.record("read an unwritten dataset")
        } catch let error as HDF5Error {
            #expect(error.reason == .incomplete)
            #expect(error.object == "/w")
        }
    }

    @Test("shape bombs are refused before anything is allocated")
    func shapeBomb() {
        let info = DatasetInfo(
            path: "/bomb", shape: [1 << 20, 1 << 20], isNull: false, type: .float32, byteOrder: .little,
            layout: .chunked, chunkShape: [1024, 1024], filters: [], storageSize: 4096,
            dataOffset: nil, externalFileCount: 0, allocated: true)
        #expect(info.refusal(limits: ReadLimits(), followLinks: false)?.contains("shape bomb") == true)
        let honest = DatasetInfo(
            path: "/ok", shape: [1000, 1000], isNull: false, type: .float32, byteOrder: .little,
            layout: .chunked, chunkShape: [100, 100], filters: [], storageSize: 100_000,
            dataOffset: nil, externalFileCount: 0, allocated: true)
        #expect(honest.refusal(limits: ReadLimits(), followLinks: false) == nil)
    }

    @Test("real broken files from the HDF Group's test suite give errors, not crashes")
    func corpusOddities() throws {
        for name in ["notahdf5file.h5", "fuzz_zero_width_elem_chunked_string.h5", "3790_infinite_loop.h5"] {
            guard let path = corpusFile("hdf5-oddities/" + name) else { continue }
            #expect(reason(path) != nil, "\(name) opened")
        }
        if let path = corpusFile("hdf5-oddities/tlayouto.h5") {
            let file = try HDF5File.open(path)
            let dataset = try file.dataset("/Dataset")
            #expect(throws: HDF5Error.self) { _ = try dataset.read(as: Float.self) }
        }
        if let path = corpusFile("hdf5-oddities/vds-1_vds.h5") {
            let file = try HDF5File.open(path)
            let dataset = try file.dataset("/vds_dset")
            #expect(dataset.info.layout == .virtual)
            #expect(throws: HDF5Error.self) { _ = try dataset.read(as: Float.self) }
        }
        if let path = corpusFile("hdf5-oddities/tudfilter.h5") {
            let file = try HDF5File.open(path)
            let dataset = try file.dataset("/dynlibud")
            do {
                _ = try dataset.read(as: Float.self)
                Issue.record("read through a missing filter")
            } catch let error as HDF5Error {
                #expect(error.reason == .unsupported)
            }
        }
    }
}
