import ElementTypes
import Foundation
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

/// Contiguous tensors are measured in place in their files' mappings (``StoredFile``), with
/// `pread` kept as the fallback: both must measure the same, and a file cut short while it is
/// mapped must fail its tensors cleanly, never kill the process with SIGBUS.
@Suite("Reading contiguous tensors in place from a file's mapping")
struct MappedReadTests {
    /// Every step's records, as JSON (non-finite numbers as strings), for an exact comparison.
    static func encoded(_ measured: RunMeasurements) throws -> [String] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        encoder.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
        return try measured.records.map { String(decoding: try encoder.encode($0), as: UTF8.self) }
    }

    static func measure(_ run: Run, inPlace: Bool) -> RunMeasurements {
        var options = MeasureOptions()
        options.threads = 2
        options.readInPlace = inPlace
        return RunMeasurer.measure(run, options: options, full: true)
    }

    @Test("in place and with pread, a mixed run and every sample run measure the same, to the bit")
    func bothPathsAgree() throws {
        let dir = try TemporaryDirectory()
        try SeriesMeasurerTests.writeMixedRun(dir)
        var runs = [try RunLoader.load(dir.url.path)]
        for name in ["healthy", "dead-relu", "exploding-nan", "frozen-layer", "vanishing-sigmoid", "weight-decay-collapse", "keras-weights-h5"] {
            runs.append(try RunLoader.load(samplePath(name)))
        }
        var tensorsCompared = 0
        for run in runs {
            let mapped = Self.measure(run, inPlace: true), copied = Self.measure(run, inPlace: false)
            let a = try Self.encoded(mapped), b = try Self.encoded(copied)
            #expect(a.count == run.checkpoints.count && a == b, "\(run.checkpoints.first?.file ?? "")")
            tensorsCompared += mapped.records.reduce(0) { $0 + $1.tensors.count }
            #expect(mapped.records.allSatisfy { $0.failures.isEmpty })
        }
        #expect(tensorsCompared > 1000)
    }

    /// A run of three saves, each one contiguous float32 weight of `count` elements.
    static func writeRun(_ dir: TemporaryDirectory, count: Int) throws {
        var noise = SplitMix64(state: 5)
        for index in 0..<3 {
            let w = try HDF5Writer(creating: dir.path(String(format: "step_%04d.h5", index)))
            try w.setAttribute("format", .string("gradscope/1", .variableUTF8), at: "/")
            try w.setAttribute("step", .int(Int64(index)), at: "/")
            try w.write("/weights/w", noise.normals(count, std: 0.1).map { $0 + 1 }, shape: [count / 512, 512], as: .float32)
        }
    }

    @Test("a mapped file cut short before its elements are read: zeros, never a SIGBUS, and the file reported changed")
    func truncatedStoredFile() throws {
        let dir = try TemporaryDirectory()
        try Self.writeRun(dir, count: 1 << 20)
        let run = try RunLoader.load(dir.url.path)
        let steps = run.checkpoints.map(SeriesMeasurer.Step.init)
        let t = try #require(steps[0].tensors.firstIndex { $0.path == "/weights/w" })
        let storage = try #require(steps[0].storage[t])
        let file = try StoredFile(steps[0].file, expecting: FileStamp(size: steps[0].size, mtime: steps[0].mtime), mapping: true)
        #expect(file.isMapped)
        let buffer = UnsafeMutableBufferPointer<Float>.allocate(capacity: 1 << 16)
        defer { buffer.deallocate() }
        // Intact: the elements come from the mapping, not the buffer, and are the file's.
        let first = try file.elements(storage, range: 0..<(1 << 16), buffer: buffer, object: "/weights/w")
        #expect(first.baseAddress != UnsafePointer(buffer.baseAddress))
        #expect(first.reduce(0, +) > 30_000)
        try file.checkIntact()
        // A trainer rewriting the file in place truncates it: its pages past the end are gone.
        #expect(truncate(steps[0].file, off_t(storage.offset + 4096)) == 0)
        let last = try file.elements(storage, range: ((1 << 20) - (1 << 16))..<(1 << 20), buffer: buffer, object: "/weights/w")
        #expect(last.reduce(0, +) == 0, "the pages past the end read as zeros")
        #expect {
            try file.checkIntact()
        } throws: { error in
            (error as? CheckpointError)?.reason == StoredFile.changedReason && (error as? CheckpointError)?.file == steps[0].file
        }
        // Without the mapping the same read is a truncation error naming the file.
        let unmapped = try StoredFile(
            steps[1].file, expecting: FileStamp(size: steps[1].size, mtime: steps[1].mtime), mapping: false)
        #expect(!unmapped.isMapped)
        #expect(truncate(steps[1].file, off_t(storage.offset + 4096)) == 0)
        #expect(throws: HDF5Error.self) {
            _ = try unmapped.elements(storage, range: ((1 << 20) - (1 << 16))..<(1 << 20), buffer: buffer, object: "/weights/w")
        }
    }

    @Test("measuring a run whose middle file is cut short while mapped: its tensor fails as changed, the others measure as before")
    func truncatedWhileMeasuring() throws {
        let dir = try TemporaryDirectory()
        try Self.writeRun(dir, count: 1 << 19)
        let run = try RunLoader.load(dir.url.path)
        let steps = run.checkpoints.map(SeriesMeasurer.Step.init)
        var options = MeasureOptions()
        options.threads = 2
        let selected = SeriesMeasurer.eligible(steps)
        let windows = SeriesMeasurer.plan(steps, selected: selected, options: options, gradientNames: [], perUnitEverywhere: false)
        #expect(windows.count == 1 && windows[0].entries.count == 3 && windows[0].shares.count == 2)
        // The untouched run, measured first.
        let reference = SeriesMeasurer.measure(
            steps, selected: selected, options: options, gradientNames: [], perUnitEverywhere: false, unitWindowStart: 0)
        // Every file mapped, then the middle one cut short, then the window measured.
        let files = SeriesMeasurer.StepFiles(steps, uses: windows, mapping: true)
        for s in steps.indices { #expect(try files.file(s).isMapped) }
        let t = try #require(steps[1].tensors.firstIndex { $0.path == "/weights/w" })
        let storage = try #require(steps[1].storage[t])
        #expect(truncate(steps[1].file, off_t(storage.offset + 8192)) == 0)
        let window = windows[0]
        let parts = window.shares.map { share in
            SeriesMeasurer.run(window, share: share, as: Float.self, steps: steps, files: files, options: options)
        }
        for part in parts {
            #expect(part.errors[0] == nil && part.errors[2] == nil)
        }
        #expect(parts.contains { $0.errors[1] == StoredFile.changedReason })
        #expect(parts.allSatisfy { $0.driftLost[2] }, "no drift from the step cut short")
        // What was measured of the intact files is what the untouched run measured.
        let outcomes = SeriesMeasurer.finish(
            parts.dropFirst().reduce(into: parts[0]) { total, other in
                for e in total.stats.indices {
                    total.errors[e] = total.errors[e] ?? other.errors[e]
                    total.driftLost[e] = total.driftLost[e] || other.driftLost[e]
                    total.stats[e].merge(other.stats[e])
                    if let drift = other.drift[e] { total.drift[e]?.merge(drift) }
                }
            }, window: window, steps: steps, gradientNames: [], options: options, unitWindowStart: 0)
        #expect(outcomes[1].measurement == nil && outcomes[1].error == StoredFile.changedReason)
        let before = try #require(reference.outcomes[0][t]?.measurement), after = try #require(outcomes[0].measurement)
        #expect(before.stats.mean == after.stats.mean && before.stats.p50 == after.stats.p50 && before.stats.l2Norm == after.stats.l2Norm)
        let third = try #require(outcomes[2].measurement)
        #expect(third.stats.count == 1 << 19 && third.drift == nil)
        #expect(third.stats.mean == reference.outcomes[2][t]?.measurement?.stats.mean)
        files.closeAll()
    }

    @Test("the step-by-step direct paths: in place and with pread, the same statistics and drift to the bit")
    func tensorMeasurerPathsAgree() throws {
        let dir = try TemporaryDirectory()
        try Self.writeRun(dir, count: 1 << 19)
        let run = try RunLoader.load(dir.url.path)
        let opened = try run.checkpoints.map { try Worker.reopen($0, options: LoadOptions()) }
        let tensor = try #require(run.checkpoints[1].tensors.first { $0.path == "/weights/w" })
        let previous = try #require(run.checkpoints[0].tensors.first { $0.path == "/weights/w" })
        let direct = try #require(try opened[1].data(for: tensor).contiguous())
        #expect(direct.mapped() != nil, "a tensor of 2 MB is mapped")
        var options = MeasureOptions()
        options.threads = 2
        var results: [(TensorStats, TensorStats, DriftStats)] = []
        for inPlace in [true, false] {
            options.readInPlace = inPlace
            let stats = try TensorMeasurer.stats(of: tensor, in: opened[1], options: options)
            let (both, drift) = try TensorMeasurer.statsAndDrift(
                of: tensor, in: opened[1], previous: previous, in: opened[0], options: options)
            results.append((stats, both, drift))
        }
        #expect(results[0].0 == results[1].0 && results[0].1 == results[1].1 && results[0].2 == results[1].2)
        #expect(results[0].0.count == 1 << 19 && results[0].2.changed > 0)
    }

    @Test("a tensor mapped step by step whose file is cut short: the changed error, never a SIGBUS; pread says truncated")
    func tensorMeasurerTruncated() throws {
        let dir = try TemporaryDirectory()
        try Self.writeRun(dir, count: 1 << 19)
        let run = try RunLoader.load(dir.url.path)
        let opened = try run.checkpoints.map { try Worker.reopen($0, options: LoadOptions()) }
        var options = MeasureOptions()
        options.threads = 2
        for (index, inPlace) in [(0, true), (1, false)] {
            let tensor = try #require(run.checkpoints[index].tensors.first { $0.path == "/weights/w" })
            let direct = try #require(try opened[index].data(for: tensor).contiguous())
            // The descriptor is opened (and the file checked) on the first read; then the file shrinks.
            let probe = UnsafeMutableBufferPointer<Float>.allocate(capacity: 16)
            defer { probe.deallocate() }
            try direct.read(0..<16, into: probe)
            let storage = try #require(run.checkpoints[index].storage[run.checkpoints[index].tensors.firstIndex { $0.path == "/weights/w" }!])
            #expect(truncate(run.checkpoints[index].file, off_t(storage.offset + 4096)) == 0)
            options.readInPlace = inPlace
            do {
                _ = try TensorMeasurer.stats(of: tensor, in: opened[index], options: options)
                Issue.record("a tensor of a file cut short was measured")
            } catch {
                let reason = Failures.reason(for: error)
                if inPlace {
                    #expect(reason == StoredFile.changedReason)
                } else {
                    #expect(reason.contains("truncated"))
                }
            }
        }
    }

    /// The resident bytes of the mapping of this process that holds `address`, from /proc/self/smaps.
    static func residentBytes(ofMappingAt address: UnsafeRawPointer) throws -> Int {
        // Read to its end (a file of /proc reports no size, and a read by size would find it empty).
        let handle = try #require(FileHandle(forReadingAtPath: "/proc/self/smaps"))
        defer { try? handle.close() }
        let smaps = String(decoding: try handle.readToEnd() ?? Data(), as: UTF8.self)
        let target = UInt(bitPattern: address)
        var inside = false
        for line in smaps.split(separator: "\n") {
            let fields = line.split(separator: " ", omittingEmptySubsequences: true)
            if let range = fields.first, range.contains("-"), !range.hasSuffix(":") {
                let bounds = range.split(separator: "-").compactMap { UInt($0, radix: 16) }
                inside = bounds.count == 2 && bounds[0] <= target && target < bounds[1]
            } else if inside, fields.first == "Rss:", fields.count >= 2, let kilobytes = Int(fields[1]) {
                return kilobytes * 1024
            }
        }
        throw CheckpointError(file: "/proc/self/smaps", reason: "no mapping holds the address")
    }

    @Test("a tensor let go of in parts leaves no page mapped between the parts, only the partial pages at its ends")
    func releasedInParts() throws {
        let dir = try TemporaryDirectory()
        let path = dir.path("parts.bin")
        let count = 1 << 20, offset = 1000
        var bytes = [UInt8](repeating: 0, count: offset)
        bytes += [Float](repeating: 1.5, count: count).withUnsafeBytes { Array($0) }
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        let (size, mtime) = FileIdentity.of(path)
        let file = try StoredFile(path, expecting: FileStamp(size: size, mtime: mtime), mapping: true)
        #expect(file.isMapped)
        let storage = DirectStorage(offset: offset, count: count, type: .float32)
        let buffer = UnsafeMutableBufferPointer<Float>.allocate(capacity: count)
        defer { buffer.deallocate() }
        let page = 4096
        for continued in [true, false] {
            let elements = try file.elements(storage, range: 0..<count, buffer: buffer, object: "/parts")
            #expect(elements.baseAddress != UnsafePointer(buffer.baseAddress), "taken in place from the mapping")
            var sum: Float = 0
            for index in stride(from: 0, to: count, by: 256) { sum += elements[index] }
            #expect(sum == 1.5 * Float(count / 256))
            let base = UnsafeRawPointer(elements.baseAddress!)
            #expect(try Self.residentBytes(ofMappingAt: base) >= count * 4 - 2 * page)
            // Three parts whose ends fall inside pages: each such page holds the end of one part and the start of the next.
            let cuts = [0, 300_001, 700_003, count]
            var from: Int?
            for part in 0..<3 {
                let returned = file.release(storage, elements: cuts[part]..<cuts[part + 1], from: continued ? from : nil)
                let end = offset + cuts[part + 1] * 4
                #expect(returned == end / page * page)
                from = returned
            }
            // Only the first and last pages at most, which hold bytes before and after the tensor. (A
            // kernel that keeps the page cache in large folios may let go of more than was asked:
            // which pages each part lets go of is checked below, on the arithmetic itself.)
            if continued { #expect(try Self.residentBytes(ofMappingAt: base) <= 2 * page) }
        }
        try file.checkIntact()
        // The parts above, byte by byte: with the end of the part before, the page two parts share goes with the second.
        let first = try #require(StoredFile.releasable(start: 1000, end: 1_201_004, from: nil, page: page))
        #expect(first == 4096..<1_200_128)
        #expect(StoredFile.releasable(start: 1_201_004, end: 2_801_012, from: first.upperBound, page: page) == 1_200_128..<2_797_568)
        #expect(StoredFile.releasable(start: 1_201_004, end: 2_801_012, from: nil, page: page) == 1_204_224..<2_797_568)
        // A part inside one page lets go of nothing; a `from` that is not the end of the part before is ignored.
        #expect(StoredFile.releasable(start: 5000, end: 6000, from: 4096, page: page) == nil)
        #expect(StoredFile.releasable(start: 9000, end: 20_000, from: 4096, page: page) == 12_288..<16_384)
        #expect(StoredFile.releasable(start: 9000, end: 20_000, from: 8193, page: page) == 12_288..<16_384)
        #expect(StoredFile.releasable(start: 8192, end: 20_000, from: 8192, page: page) == 8192..<16_384)
    }

    @Test("a tensor under 1 MiB is copied with pread even from a mapped file: none of its pages is mapped, and it has none to let go of")
    func smallTensorsCopied() throws {
        let dir = try TemporaryDirectory()
        let path = dir.path("small-and-large.bin")
        // A small tensor (just under the bound) at an odd offset, then a large one (just at it).
        let smallCount = StoredFile.inPlaceMinimumBytes / 4 - 1, largeCount = StoredFile.inPlaceMinimumBytes / 4
        let smallOffset = 1000, largeOffset = 1000 + smallCount * 4 + 24
        var bytes = [UInt8](repeating: 7, count: smallOffset)
        bytes += (0..<smallCount).map { Float($0 % 1000) }.withUnsafeBytes { Array($0) }
        bytes += [UInt8](repeating: 7, count: 24)
        bytes += [Float](repeating: -2, count: largeCount).withUnsafeBytes { Array($0) }
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        let (size, mtime) = FileIdentity.of(path)
        let file = try StoredFile(path, expecting: FileStamp(size: size, mtime: mtime), mapping: true)
        #expect(file.isMapped)
        let small = DirectStorage(offset: smallOffset, count: smallCount, type: .float32)
        let large = DirectStorage(offset: largeOffset, count: largeCount, type: .float32)
        #expect(!StoredFile.takesInPlace(small) && StoredFile.takesInPlace(large))
        let buffer = UnsafeMutableBufferPointer<Float>.allocate(capacity: largeCount)
        defer { buffer.deallocate() }
        let copied = try file.elements(small, range: 0..<smallCount, buffer: buffer, object: "/small")
        #expect(copied.baseAddress == UnsafePointer(buffer.baseAddress), "copied into the buffer")
        #expect(copied.count == smallCount && copied[999] == 999 && copied[1000] == 0 && copied[smallCount - 1] == Float((smallCount - 1) % 1000))
        #expect(file.release(small, elements: 0..<smallCount) == nil, "nothing of it was mapped")
        // The large one comes from the mapping, which the small one's read left untouched.
        let inPlace = try file.elements(large, range: 0..<largeCount, buffer: buffer, object: "/large")
        #expect(inPlace.baseAddress != UnsafePointer(buffer.baseAddress), "taken in place")
        #expect(try Self.residentBytes(ofMappingAt: UnsafeRawPointer(inPlace.baseAddress!)) == 0)
        #expect(inPlace[0] == -2 && inPlace[largeCount - 1] == -2)
        #expect(try Self.residentBytes(ofMappingAt: UnsafeRawPointer(inPlace.baseAddress!)) > 0)
        #expect(file.release(large, elements: 0..<largeCount) != nil)
        try file.checkIntact()
    }

    @Test("a run's file whose tensors are all under 1 MiB is not mapped; one with a larger tensor is")
    func filesOfSmallTensorsNotMapped() throws {
        for (count, mapped) in [(1 << 12, false), (1 << 18, true)] {
            let dir = try TemporaryDirectory()
            try Self.writeRun(dir, count: count)
            let run = try RunLoader.load(dir.url.path)
            let steps = run.checkpoints.map(SeriesMeasurer.Step.init)
            var options = MeasureOptions()
            options.threads = 2
            let selected = SeriesMeasurer.eligible(steps)
            #expect(selected.allSatisfy { !$0.isEmpty })
            let windows = SeriesMeasurer.plan(steps, selected: selected, options: options, gradientNames: [], perUnitEverywhere: false)
            let files = SeriesMeasurer.StepFiles(steps, uses: windows, mapping: true)
            for s in steps.indices { #expect(try files.file(s).isMapped == mapped, "\(count) elements") }
            files.closeAll()
            // Measured the same either way.
            let a = try Self.encoded(Self.measure(run, inPlace: true)), b = try Self.encoded(Self.measure(run, inPlace: false))
            #expect(a.count == 3 && a == b)
        }
    }
}
