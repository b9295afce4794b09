import ElementTypes
import Foundation
import GradScopeDiagnosis
import GradScopeMeasurement
import GradScopeModel
import GradScopeRendering
import GradScopeSources
import GradScopeStatistics
import HDF5
import TestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Damaged and foreign inputs, the way they turn up in a directory of
/// checkpoints from crashed jobs, colleagues and the internet: files cut off
/// at many offsets, files with bytes flipped, empty, text, image and zip files,
/// a sub-directory, an unreadable file and a symbolic-link loop. gradscope must
/// never crash or hang on them, must account for every file (analysed or
/// skipped with a reason), must still analyse the good files next to them, and
/// must never write to any input.
///
/// The command-line tests run the binary built next to the tests, or the one
/// named by `GRADSCOPE_BINARY` (see `GradScopeBinary`), and fail, saying where
/// they looked, when it is absent.
@Suite("Corrupt, truncated and foreign inputs", .serialized)
struct CorruptionTests {
    // MARK: - The commands

    @Test("scan of a directory of damaged files next to good ones: no crash, every file accounted for, inputs untouched")
    func scanDamagedDirectory() throws {
        let directory = try TemporaryDirectory()
        let good = try CorruptionFixtures.writeGoodFiles(into: directory)
        let damaged = try CorruptionFixtures.writeVariants(of: CorruptionFixtures.scanSources(), into: directory)
        var foreign = try CorruptionFixtures.writeForeignEntries(into: directory)
        let before = try FileSnapshot.take(directory.url.path)
        foreign.makeUnreadable()
        defer { foreign.restorePermissions() }

        // --timeout 5: a file on which libhdf5 loops costs 5 s, not the default 120.
        let result = try CorruptionBinary.run(["scan", directory.url.path, "--format", "json", "--quiet", "--timeout", "5"], timeout: 120)
        try #require(!result.timedOut, "scan did not finish within 120 s: \(result.stderr.suffix(2000))")
        #expect(!result.crashed, "scan died of signal \(result.status): \(result.stderr.suffix(2000))")
        #expect([0, 1, 2].contains(result.status), "exit status \(result.status): \(result.stderr.suffix(2000))")
        let report = try #require(
            try? JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any],
            "stdout is not a JSON object: \(result.stdout.prefix(500))")
        let steps = try #require(report["steps"] as? [Int], "no steps array")
        let skippedObjects = try #require(report["skipped"] as? [[String: Any]], "no skipped array")

        // Skipped files (not objects inside a file, which are `file:/object`), by name.
        var skipped: [String: String] = [:]
        for entry in skippedObjects {
            let item = entry["item"] as? String ?? ""
            let reason = entry["reason"] as? String ?? ""
            #expect(!item.isEmpty && !reason.trimmingCharacters(in: .whitespaces).isEmpty, "skipped entry without item or reason: \(entry)")
            guard !item.contains(":/") else { continue }
            skipped[(item as NSString).lastPathComponent] = reason
        }

        for (name, step) in good {
            #expect(steps.contains(step), "good file \(name) (step \(step)) missing from steps \(steps)")
            #expect(skipped[name] == nil, "good file \(name) skipped: \(skipped[name] ?? "")")
        }
        for name in foreign.mustBeSkipped {
            #expect(skipped[name] != nil, "\(name) not listed in skipped")
        }
        #expect(!steps.contains(CorruptionFixtures.stepInSubdirectory), "a file inside a sub-directory was read")

        // Every entry is either skipped with a reason or analysed; an analysed
        // file gives exactly one step (a second file with the same step is
        // skipped as a duplicate), so the analysed files and the steps match
        // one to one: no file vanished without a word.
        // Saves of another model in the folder (a damaged file of another run) are judged on their own,
        // listed under `models`.
        let otherModels = (report["models"] as? [[String: Any]] ?? []).filter { ($0["primary"] as? Bool) == false }
        let otherSteps = otherModels.map { ($0["steps"] as? [Int] ?? []).count }.reduce(0, +)
        let entries = try FileManager.default.contentsOfDirectory(atPath: directory.url.path)
        let analysed = entries.filter { skipped[$0] == nil }
        #expect(
            analysed.count == steps.count + otherSteps,
            "\(analysed.count) entries not listed in skipped, but \(steps.count) + \(otherSteps) steps: \(analysed.sorted().prefix(40))")
        #expect(entries.count >= good.count + damaged.count + foreign.entries.count)

        foreign.restorePermissions()
        let after = try FileSnapshot.take(directory.url.path)
        #expect(before.changes(comparedTo: after).isEmpty, "inputs changed: \(before.changes(comparedTo: after))")
    }

    @Test("inspect on each damaged file: exit 0, 1 or 2, and on 2 one line on stderr naming the file")
    func inspectDamagedFiles() throws {
        let directory = try TemporaryDirectory()
        let damaged = try CorruptionFixtures.writeVariants(of: CorruptionFixtures.inspectSources(), into: directory)
        let foreign = try CorruptionFixtures.writeForeignFiles(into: directory)
        let paths = (damaged + foreign).map { directory.path($0) }
        // GRADSCOPE_TIMEOUT=5: a file on which libhdf5 loops costs 5 s, not the default 600.
        let results = try CorruptionBinary.runEach(paths, environment: ["GRADSCOPE_TIMEOUT": "5"]) { ["inspect", $0, "--format", "json"] }
        var readable = 0, unreadable = 0
        for (path, result) in zip(paths, results) {
            let name = (path as NSString).lastPathComponent
            guard !result.timedOut else {
                Issue.record("inspect \(name) did not finish within 30 s")
                continue
            }
            #expect(!result.crashed, "inspect \(name) died of signal \(result.status): \(result.stderr.suffix(1500))")
            #expect([0, 1, 2].contains(result.status), "inspect \(name): exit status \(result.status)")
            if result.status == 2 {
                unreadable += 1
                let lines = result.stderr.split(separator: "\n", omittingEmptySubsequences: true)
                #expect(lines.count == 1, "inspect \(name): \(lines.count) lines on stderr: \(result.stderr.prefix(800))")
                #expect(lines.first?.contains(name) == true, "inspect \(name): stderr does not name the file: \(result.stderr.prefix(400))")
            } else if result.status == 0 || result.status == 1 {
                readable += 1
                #expect(
                    (try? JSONSerialization.jsonObject(with: Data(result.stdout.utf8))) is [String: Any],
                    "inspect \(name): exit \(result.status) but stdout is not a JSON object")
            }
        }
        // Cut-off files cannot be read; some flipped bytes land in the data and leave a valid file.
        #expect(unreadable > 0 && readable > 0, "readable \(readable), unreadable \(unreadable)")
    }

    @Test("scan never changes its inputs: a sample run copied to a temporary directory")
    func scanLeavesCopiedRunUnchanged() throws {
        let directory = try TemporaryDirectory()
        for run in ["healthy", "keras-legacy-h5"] {
            let target = directory.url.appendingPathComponent(run)
            try FileManager.default.copyItem(at: URL(fileURLWithPath: samplePath(run)), to: target)
        }
        let runs = ["healthy", "keras-legacy-h5"]
        let before = try runs.map { try FileSnapshot.take(directory.path($0)) }
        for run in runs {
            let result = try CorruptionBinary.run(["scan", directory.path(run), "--format", "json", "--quiet"], timeout: 120)
            #expect(
                !result.timedOut && !result.crashed && [0, 1].contains(result.status), "scan \(run): \(result.status) \(result.stderr.suffix(800))")
        }
        for (run, snapshot) in zip(runs, before) {
            let after = try FileSnapshot.take(directory.path(run))
            #expect(snapshot.files.count >= 10)
            #expect(snapshot.changes(comparedTo: after).isEmpty, "\(run) changed: \(snapshot.changes(comparedTo: after))")
        }
    }

    @Test("scan never changes its inputs: the bundled samples read in place")
    func scanLeavesSamplesUnchanged() throws {
        let runs = ["healthy", "exploding-nan", "keras-weights-h5"]
        let before = try runs.map { try FileSnapshot.take(samplePath($0)) }
        for run in runs {
            let result = try CorruptionBinary.run(["scan", samplePath(run), "--format", "json", "--quiet"], timeout: 120)
            #expect(
                !result.timedOut && !result.crashed && [0, 1].contains(result.status), "scan \(run): \(result.status) \(result.stderr.suffix(800))")
        }
        for (run, snapshot) in zip(runs, before) {
            let after = try FileSnapshot.take(samplePath(run))
            #expect(!snapshot.files.isEmpty)
            #expect(snapshot.changes(comparedTo: after).isEmpty, "\(run) changed: \(snapshot.changes(comparedTo: after))")
        }
    }

    // MARK: - In process

    /// Only cut-off copies of the samples. With bytes flipped, libhdf5 1.10.8
    /// itself crashes or loops on some of these very files (in H5HG_read under
    /// H5Aread of a string attribute, in H5A__close under H5Aopen_by_idx), and
    /// the corpus holds files known to do the same: only a separate process
    /// survives those, and the command-line tests above cover them.
    @Test("cut-off sample images read in process: typed errors or checkpoints, never a crash")
    func truncatedImagesInProcess() throws {
        var options = MeasureOptions()
        options.threads = 1
        var loaded = 0, refused = 0
        for source in CorruptionFixtures.sampleSources(nativeFlips: 0, otherFlips: 0) {
            let original = try CorruptionFixtures.bytes(source.path)
            // Names that exist nowhere on disk: libhdf5's in-memory driver opens the name as a path.
            let whole = try CheckpointLoader.load(image: original, name: "memory/" + (source.path as NSString).lastPathComponent)
            #expect(whole.first?.tensors.isEmpty == false, "\(source.path) does not load from memory")
            for variant in CorruptionFixtures.variants(of: original, source: source) {
                let name = "memory/" + variant.name
                if let file = try? HDF5File.open(image: variant.bytes, name: name) {
                    _ = try? file.walk()
                }
                do {
                    let checkpoints = try CheckpointLoader.open(image: variant.bytes, name: name)
                    loaded += 1
                    for checkpoint in checkpoints {
                        for tensor in checkpoint.checkpoint.tensors.prefix(4) {
                            do {
                                _ = try TensorMeasurer.stats(of: tensor, in: checkpoint, options: options)
                            } catch is HDF5Error {
                            } catch {
                                Issue.record("\(variant.name) \(tensor.path): untyped error \(error)")
                            }
                        }
                    }
                } catch is HDF5Error {
                    refused += 1
                } catch is CheckpointError {
                    refused += 1
                } catch {
                    Issue.record("\(variant.name): untyped error \(type(of: error)): \(error)")
                }
            }
        }
        // The superblock records the file's length: a cut-off image is refused, never read as if whole.
        #expect(loaded == 0 && refused > 0, "loaded \(loaded), refused \(refused)")
    }
}

// MARK: - Damaged files

/// Deterministic random numbers (SplitMix64): the same damage on every run.
private struct SplitMix64 {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    mutating func below(_ bound: Int) -> Int { Int(next() % UInt64(bound)) }
}

/// A file whose damaged variants are tested.
private struct DamageSource {
    /// Prefix of the variants' names.
    var label: String
    var path: String
    /// How many byte-flip variants to make.
    var flips: Int
}

private struct DamagedFile {
    var name: String
    var bytes: [UInt8]
}

private enum CorruptionFixtures {
    /// The good files of the scan directory: (name, step). Named to sort
    /// first, so a damaged copy that still reads with the same step is the
    /// one reported as the duplicate.
    static let goodFiles = [
        ("000-good-step_000000.h5", "step_000000.h5", 0),
        ("000-good-step_000060.h5", "step_000060.h5", 60),
        ("000-good-step_000120.h5", "step_000120.h5", 120),
    ]
    /// The step of the file put in a sub-directory (which must not be read).
    static let stepInSubdirectory = 240

    /// One file from each of several sample runs: native contiguous, native
    /// gzip-chunked with NaN, Keras 3 `.weights.h5`, legacy Keras `.h5`.
    static func sampleSources(nativeFlips: Int = 20, otherFlips: Int = 20) -> [DamageSource] {
        [
            DamageSource(label: "healthy", path: samplePath("healthy") + "/step_000360.h5", flips: nativeFlips),
            DamageSource(label: "nan", path: samplePath("exploding-nan") + "/step_000008.h5", flips: nativeFlips),
            DamageSource(label: "k3", path: samplePath("keras-weights-h5") + "/step_000128.weights.h5", flips: otherFlips),
            DamageSource(label: "kleg", path: samplePath("keras-legacy-h5") + "/step_000128.h5", flips: otherFlips),
        ]
    }

    /// Real files from other people's repositories, read in place, when the
    /// corpus is present. Flipped copy 6 of the `.keras` file makes libhdf5
    /// loop forever (in H5HG_read, reading a string attribute): it is in the
    /// set when `flips` > 6.
    static func corpusSources(flips: Int) -> [DamageSource] {
        [
            ("k231", "keras-legacy/k2.3.1-adam-checkpoint.hdf5"),
            ("k2110", "keras-legacy/k2.11.0-attention-newadam.h5"),
            ("qkeras", "keras3/qkeras-v3-3layer.keras"),
        ].compactMap { label, relative in
            corpusFile(relative).map { DamageSource(label: label, path: $0, flips: flips) }
        }
    }

    /// For the directory scan, fewer flipped copies of the non-native files:
    /// a run keeps its most common layout, and the good files (native) must
    /// stay the majority for their steps to be analysed. The corpus files get
    /// 7 flipped copies, so the looping one is in: scan must give up on it
    /// (`--timeout`) and go on.
    static func scanSources() -> [DamageSource] {
        sampleSources(nativeFlips: 20, otherFlips: 8) + corpusSources(flips: 7)
    }

    /// For inspect, every copy: the looping one must end in exit code 2
    /// after GRADSCOPE_TIMEOUT seconds.
    static func inspectSources() -> [DamageSource] {
        sampleSources() + corpusSources(flips: 10) + pytorchSources(flips: 10)
    }

    /// Files the real safetensors and torch.save wrote (the Trainer sample's weights and AdamW state).
    static func pytorchSources(flips: Int) -> [DamageSource] {
        [
            DamageSource(label: "st", path: samplePath("trainer-high-lr") + "/checkpoint-120/model.safetensors", flips: flips),
            DamageSource(label: "pt", path: samplePath("trainer-high-lr") + "/checkpoint-120/optimizer.pt", flips: flips),
        ]
    }

    static func bytes(_ path: String) throws -> [UInt8] {
        [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
    }

    /// Cut-off copies (the first 8, 512 and 2048 bytes, and 10 lengths spread
    /// over the file) and copies with 1 to 16 bytes changed (even variants
    /// anywhere, odd ones in the first 4 KiB, where the metadata usually is).
    static func variants(of bytes: [UInt8], source: DamageSource) -> [DamagedFile] {
        let fileName = (source.path as NSString).lastPathComponent
        let suffix = fileName.hasSuffix(".weights.h5") ? ".weights.h5" : "." + (fileName as NSString).pathExtension
        let stem = String(fileName.dropLast(suffix.count))
        var result: [DamagedFile] = []
        var lengths = Set([8, 512, 2048])
        for k in 1...10 { lengths.insert(bytes.count * k / 11) }
        for length in lengths.sorted() where length > 0 && length < bytes.count {
            result.append(DamagedFile(name: "\(source.label)-\(stem)-cut\(length)\(suffix)", bytes: Array(bytes.prefix(length))))
        }
        var random = SplitMix64(state: UInt64(truncatingIfNeeded: fnv1a(source.label)))
        for index in 0..<source.flips {
            var copy = bytes
            let window = index.isMultiple(of: 2) ? bytes.count : min(bytes.count, 4096)
            for _ in 0...random.below(16) {
                let position = random.below(window)
                let mask = UInt8(1 + random.below(255))
                copy[position] ^= mask
            }
            result.append(DamagedFile(name: "\(source.label)-\(stem)-flip\(index)\(suffix)", bytes: copy))
        }
        return result
    }

    static func fnv1a(_ text: String) -> UInt64 {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in text.utf8 { hash = (hash ^ UInt64(byte)) &* 0x100_0000_01b3 }
        return hash
    }

    /// Writes every variant of every source; returns the names.
    static func writeVariants(of sources: [DamageSource], into directory: TemporaryDirectory) throws -> [String] {
        var names: [String] = []
        for source in sources {
            for variant in variants(of: try bytes(source.path), source: source) {
                try Data(variant.bytes).write(to: URL(fileURLWithPath: directory.path(variant.name)))
                names.append(variant.name)
            }
        }
        return names
    }

    static func writeGoodFiles(into directory: TemporaryDirectory) throws -> [(String, Int)] {
        try goodFiles.map { name, sample, step in
            try FileManager.default.copyItem(atPath: samplePath("healthy") + "/" + sample, toPath: directory.path(name))
            return (name, step)
        }
    }

    /// Files that are not checkpoints at all: empty, text, a PNG header, a zip header.
    static func writeForeignFiles(into directory: TemporaryDirectory) throws -> [String] {
        let png: [UInt8] = [
            0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0, 0, 0, 0x0d, 0x49, 0x48, 0x44, 0x52,
            0, 0, 0, 1, 0, 0, 0, 1, 8, 6, 0, 0, 0, 0x1f, 0x15, 0xc4, 0x89,
        ]
        let zip: [UInt8] = [0x50, 0x4b, 0x03, 0x04, 0x14, 0, 0, 0, 0, 0] + [UInt8](repeating: 0, count: 20)
        let files: [(String, [UInt8])] = [
            ("foreign-empty.h5", []),
            ("foreign-text.h5", Array("step,loss\n0,0.6931\n100,0.6931\n".utf8)),
            ("foreign-png-header.h5", png),
            ("foreign-zip-header.keras", zip),
            ("foreign-zip-header.h5", zip),
        ]
        for (name, bytes) in files {
            try Data(bytes).write(to: URL(fileURLWithPath: directory.path(name)))
        }
        return files.map(\.0)
    }

    struct ForeignEntries {
        var entries: [String]
        /// Entries that cannot be analysed whoever runs the test.
        var mustBeSkipped: [String]
        var unreadableName: String
        var unreadablePath: String

        /// chmod 000. As root that does not stop reading: then the file is simply analysed.
        mutating func makeUnreadable() {
            chmod(unreadablePath, 0)
            let descriptor = open(unreadablePath, O_RDONLY)
            if descriptor >= 0 {
                close(descriptor)
            } else {
                mustBeSkipped.append(unreadableName)
            }
        }

        func restorePermissions() { chmod(unreadablePath, 0o644) }
    }

    /// The foreign files plus a sub-directory holding a good file, a file to
    /// make unreadable (a good one) and a symbolic-link loop.
    static func writeForeignEntries(into directory: TemporaryDirectory) throws -> ForeignEntries {
        var entries = try writeForeignFiles(into: directory)
        var mustBeSkipped = entries
        let fm = FileManager.default
        try fm.createDirectory(atPath: directory.path("foreign-subdirectory"), withIntermediateDirectories: false)
        try fm.copyItem(atPath: samplePath("healthy") + "/step_000240.h5", toPath: directory.path("foreign-subdirectory/step_000240.h5"))
        try fm.createSymbolicLink(atPath: directory.path("foreign-loop-a.h5"), withDestinationPath: "foreign-loop-b.h5")
        try fm.createSymbolicLink(atPath: directory.path("foreign-loop-b.h5"), withDestinationPath: "foreign-loop-a.h5")
        let unreadable = "foreign-unreadable-step_000180.h5"
        try fm.copyItem(atPath: samplePath("healthy") + "/step_000180.h5", toPath: directory.path(unreadable))
        entries += ["foreign-subdirectory", "foreign-loop-a.h5", "foreign-loop-b.h5", unreadable]
        mustBeSkipped += ["foreign-subdirectory", "foreign-loop-a.h5", "foreign-loop-b.h5"]
        return ForeignEntries(
            entries: entries, mustBeSkipped: mustBeSkipped, unreadableName: unreadable,
            unreadablePath: directory.path(unreadable))
    }
}

// MARK: - Inputs before and after

/// The bytes and modification time of every regular file in a directory (one level).
private struct FileSnapshot {
    struct State: Equatable {
        var bytes: Data
        var modified: timespec

        static func == (a: State, b: State) -> Bool {
            a.bytes == b.bytes && a.modified.tv_sec == b.modified.tv_sec && a.modified.tv_nsec == b.modified.tv_nsec
        }
    }

    var files: [String: State]

    static func take(_ directory: String) throws -> FileSnapshot {
        var files: [String: State] = [:]
        for name in try FileManager.default.contentsOfDirectory(atPath: directory) {
            let path = (directory as NSString).appendingPathComponent(name)
            var info = stat()
            guard lstat(path, &info) == 0, (info.st_mode & S_IFMT) == S_IFREG,
                let bytes = FileManager.default.contents(atPath: path)
            else { continue }
            files[name] = State(bytes: bytes, modified: info.st_mtim)
        }
        return FileSnapshot(files: files)
    }

    /// Names of files whose bytes or modification time differ, or that appeared or vanished.
    func changes(comparedTo other: FileSnapshot) -> [String] {
        Set(files.keys).union(other.files.keys).filter { files[$0] != other.files[$0] }.sorted()
    }
}

// MARK: - Running the binary

private typealias ProcessResult = CommandOutput

private enum CorruptionBinary {
    /// The binary built next to the tests, or `GRADSCOPE_BINARY`.
    static func path(sourceLocation: SourceLocation = #_sourceLocation) throws -> String {
        try #require(GradScopeBinary.path, "\(GradScopeBinary.notFoundMessage)", sourceLocation: sourceLocation)
    }

    /// Runs the binary with its output going to files (no pipe to fill up),
    /// killing it after `timeout` seconds.
    static func run(
        _ arguments: [String], environment extra: [String: String] = [:], timeout: TimeInterval,
        sourceLocation: SourceLocation = #_sourceLocation
    ) throws -> ProcessResult {
        try GradScopeBinary.run(try path(sourceLocation: sourceLocation), arguments, environment: extra, limit: timeout)
    }

    /// Runs the binary once per input, a few at a time.
    static func runEach(
        _ inputs: [String], environment: [String: String] = [:], timeout: TimeInterval = 30,
        sourceLocation: SourceLocation = #_sourceLocation,
        arguments: (String) -> [String]
    ) throws -> [ProcessResult] {
        _ = try path(sourceLocation: sourceLocation)
        let failed = ProcessResult(status: -1, stdout: "", stderr: "could not start", crashed: false, timedOut: false)
        let results = ResultSlots(count: inputs.count, initial: failed)
        let workers = max(2, min(4, ProcessInfo.processInfo.activeProcessorCount))
        let argumentLists = inputs.map(arguments)
        DispatchQueue.concurrentPerform(iterations: workers) { worker in
            for index in stride(from: worker, to: inputs.count, by: workers) {
                if let result = try? run(argumentLists[index], environment: environment, timeout: timeout) {
                    results.set(index, result)
                }
            }
        }
        return results.values
    }
}

/// Results written from several threads, one slot each.
private final class ResultSlots: @unchecked Sendable {
    private var slots: [ProcessResult]
    private let lock = NSLock()

    init(count: Int, initial: ProcessResult) { slots = Array(repeating: initial, count: count) }

    func set(_ index: Int, _ value: ProcessResult) {
        lock.lock()
        slots[index] = value
        lock.unlock()
    }

    var values: [ProcessResult] {
        lock.lock()
        defer { lock.unlock() }
        return slots
    }
}
