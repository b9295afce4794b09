import Foundation
import GradScope
import TestSupport
import Testing

/// Shards and merging (docs/STATISTICS.md, "Shards and merging"): a run scanned in N shards and
/// merged gives the JSON a scan of the whole run gives, byte for byte; what cannot be merged is
/// refused with one line naming the file.
@Suite("Shards and merging")
struct ShardMergeTests {
    static let sampleRuns = [
        "ctr-plateau", "dead-middle", "dead-relu", "explode-then-dead", "exploding-nan", "frozen-layer", "healthy", "keras-legacy-h5",
        "keras-mixed-precision", "keras-mixed-precision-final", "keras-weights-h5", "tf-keras-legacy-h5", "trainer-high-lr",
        "vanishing-sigmoid", "weight-decay-collapse",
    ]

    /// The scan's JSON, in this process.
    static func localJSON(_ path: String) throws -> String {
        try JSONRenderer().render(try Analysis.scan(path).0)
    }

    /// The run scanned in `count` shards into `directory`, the summary files' paths.
    static func shards(_ path: String, count: Int, in directory: TemporaryDirectory, prefix: String = "s") throws -> [String] {
        try (0..<count).map { index in
            let output = directory.path("\(prefix)\(count)-\(index).gssum")
            try ScanEngine.scanShard(path, shard: ShardSpec(index: index, count: count), output: output)
            return output
        }
    }

    static func mergedJSON(_ files: [String]) throws -> String {
        try JSONRenderer().render(try Analysis.merge(files).0)
    }

    @Test("every sample run scanned whole and in 1, 2, 3 and 7 shards gives the same JSON", arguments: sampleRuns)
    func sampleRunMerges(run: String) throws {
        let local = try Self.localJSON(samplePath(run))
        let directory = try TemporaryDirectory()
        for count in [1, 2, 3, 7] {
            // Given in reverse: the order of the files does not matter.
            let merged = try Self.mergedJSON(try Self.shards(samplePath(run), count: count, in: directory).reversed())
            #expect(merged == local, "\(run) in \(count) shards")
        }
    }

    @Test("a restart of the same architecture, split at the jump, and two models in one folder: merged as scanned")
    func splitsAndModels() throws {
        let restart = try TemporaryDirectory()
        var first = SyntheticRun()
        first.steps = Array(stride(from: 0, through: 500, by: 100))
        try first.write(to: restart.url.path)
        var second = SyntheticRun()
        second.seed = 99
        second.steps = Array(stride(from: 600, through: 1100, by: 100))
        try second.write(to: restart.url.path)

        let models = try TemporaryDirectory()
        var small = SyntheticRun()
        small.steps = [0, 100, 200, 300]
        try small.write(to: models.url.path)
        var wide = SyntheticRun()
        wide.widths = [8, 64, 64, 2]
        wide.layerName = { "wide\($0)" }
        wide.steps = [400, 500, 600]
        try wide.write(to: models.url.path)

        for directory in [restart, models] {
            let (report, _) = try Analysis.scan(directory.url.path)
            #expect(report.models?.count == 2, "the fixture is split")
            let local = try JSONRenderer().render(report)
            let scratch = try TemporaryDirectory()
            for count in [2, 3, 7] {
                #expect(try Self.mergedJSON(try Self.shards(directory.url.path, count: count, in: scratch)) == local, "\(count) shards")
            }
        }
    }

    @Test("a file that cannot be read is listed as skipped by the merge exactly as by the scan")
    func unreadableFile() throws {
        let directory = try TemporaryDirectory()
        for name in try FileManager.default.contentsOfDirectory(atPath: samplePath("healthy")) {
            try FileManager.default.copyItem(atPath: samplePath("healthy") + "/" + name, toPath: directory.path(name))
        }
        // Cut to its first kilobyte: its header promises bytes that are not there.
        let broken = directory.path("step_000360.h5")
        let bytes = try Data(contentsOf: URL(fileURLWithPath: broken))
        try bytes.prefix(1024).write(to: URL(fileURLWithPath: broken))
        let (report, _) = try Analysis.scan(directory.url.path)
        #expect(report.skipped.contains { $0.item == broken }, "\(report.skipped)")
        let local = try JSONRenderer().render(report)
        let scratch = try TemporaryDirectory()
        for count in [2, 3] {
            #expect(try Self.mergedJSON(try Self.shards(directory.url.path, count: count, in: scratch)) == local)
        }
    }

    @Test("the shard rule: every save in exactly one shard, sizes within one")
    func shardRule() {
        for total in [0, 1, 5, 13, 200] {
            for count in [1, 2, 3, 7, 16] {
                let ranges = (0..<count).map { ShardSpec(index: $0, count: count).range(of: total) }
                #expect(ranges.flatMap { Array($0) } == Array(0..<total))
                let sizes = ranges.map(\.count)
                #expect((sizes.max() ?? 0) - (sizes.min() ?? 0) <= 1)
            }
        }
        #expect(ShardSpec(parsing: "2/7") == ShardSpec(index: 2, count: 7))
        for bad in ["7/7", "-1/3", "1", "1/0", "a/b", "1/2/3", ""] { #expect(ShardSpec(parsing: bad) == nil, "\(bad)") }
    }

    @Test("shards of one run reached by other spellings of its path are one run; a single-file run too")
    func runIdentity() throws {
        let directory = try TemporaryDirectory()
        let run = samplePath("healthy")
        let link = directory.path("link")
        try FileManager.default.createSymbolicLink(atPath: link, withDestinationPath: run)
        let first = directory.path("a.gssum"), second = directory.path("b.gssum")
        try ScanEngine.scanShard(run, shard: ShardSpec(index: 0, count: 2), output: first)
        try ScanEngine.scanShard(link + "/", shard: ShardSpec(index: 1, count: 2), output: second)
        #expect(try ScanEngine.merge([first, second]).runs[0].1.records.count == 13)
        // One file: its name is the run's.
        let file = run + "/step_000060.h5"
        let copy = directory.path("copy.h5")
        try FileManager.default.copyItem(atPath: file, toPath: copy)
        let one = directory.path("one.gssum"), other = directory.path("other.gssum")
        try ScanEngine.scanShard(file, shard: ShardSpec(index: 0, count: 1), output: one)
        try ScanEngine.scanShard(copy, shard: ShardSpec(index: 0, count: 1), output: other)
        #expect(
            try ScanSummaryFile.Reader(path: one).header.runDigest == (try ScanSummaryFile.Reader(path: other).header.runDigest))
        #expect(try Self.mergedJSON([one]) == (try Self.localJSON(file)))
    }

    /// The one-line error merging `files` gives.
    static func mergeError(_ files: [String]) -> String? {
        do {
            _ = try ScanEngine.merge(files)
            return nil
        } catch {
            return "\(error)"
        }
    }

    @Test("missing, repeated, foreign, other-version, cut and corrupt summaries: one error each, naming the file")
    func mergeErrors() throws {
        let directory = try TemporaryDirectory()
        let three = try Self.shards(samplePath("healthy"), count: 3, in: directory)
        let other = try Self.shards(samplePath("dead-relu"), count: 3, in: directory, prefix: "other")

        let missing = try #require(Self.mergeError([three[0], three[2]]))
        #expect(missing.contains("missing shard 1/3") && missing.hasPrefix(samplePath("healthy")), "\(missing)")
        let none = try #require(Self.mergeError([three[1]]))
        #expect(none.contains("missing shards 0/3, 2/3"), "\(none)")

        let repeated = try #require(Self.mergeError([three[0], three[1], three[1], three[2]]))
        #expect(repeated.hasPrefix(three[1] + ": shard 1/3 again"), "\(repeated)")

        let foreign = try #require(Self.mergeError([three[0], other[1], three[2]]))
        #expect(foreign.hasPrefix(other[1] + ": a shard of another run"), "\(foreign)")

        let two = try Self.shards(samplePath("healthy"), count: 2, in: directory)
        let counts = try #require(Self.mergeError([three[0], two[1]]))
        #expect(counts.hasPrefix(two[1] + ": shard 1/2, but"), "\(counts)")

        var bytes = try Data(contentsOf: URL(fileURLWithPath: three[1]))
        let version = directory.path("version.gssum")
        var future = bytes
        future[ScanSummaryFile.magic.count] = UInt8(truncatingIfNeeded: ScanSummaryFile.formatVersion + 1)
        try future.write(to: URL(fileURLWithPath: version))
        let versionError = try #require(Self.mergeError([three[0], version, three[2]]))
        #expect(versionError.hasPrefix(version + ": a scan summary of format version \(ScanSummaryFile.formatVersion + 1)"), "\(versionError)")

        let hdf5 = samplePath("healthy") + "/step_000060.h5"
        let notSummary = try #require(Self.mergeError([three[0], hdf5, three[2]]))
        #expect(notSummary == hdf5 + ": not a gradscope scan summary", "\(notSummary)")

        for cut in [7, 30, bytes.count / 2, bytes.count - 1] {
            let path = directory.path("cut-\(cut).gssum")
            try bytes.prefix(cut).write(to: URL(fileURLWithPath: path))
            let error = try #require(Self.mergeError([three[0], path, three[2]]))
            #expect(error.hasPrefix(path + ": a cut scan summary") || error.hasPrefix(path + ": a corrupt scan summary"), "\(error)")
        }
        let corrupt = directory.path("corrupt.gssum")
        bytes[bytes.count / 2] ^= 0xFF
        try bytes.write(to: URL(fileURLWithPath: corrupt))
        let corruptError = try #require(Self.mergeError([three[0], corrupt, three[2]]))
        #expect(corruptError.hasPrefix(corrupt + ": a corrupt scan summary"), "\(corruptError)")

        let absent = directory.path("absent.gssum")
        let absentError = try #require(Self.mergeError([three[0], absent, three[2]]))
        #expect(absentError.hasPrefix(absent + ": cannot read the summary"), "\(absentError)")

        // Measured with another dead-activation fraction than the merge's thresholds.
        #expect(throws: ScanSummaryError.self) { try ScanEngine.merge(three, deadActivationFraction: 0.5) }
    }

    @Test("a summary is written whole or not at all: an unfinished one leaves the old file and no temporary file")
    func atomicWrite() throws {
        let directory = try TemporaryDirectory()
        let output = directory.path("run.gssum")
        try ScanEngine.scanShard(samplePath("healthy"), shard: ShardSpec(index: 0, count: 2), output: output)
        let before = try Data(contentsOf: URL(fileURLWithPath: output))
        // A writer that never finishes (a shard killed mid-way): the file in place is untouched.
        do {
            let header = try ScanSummaryFile.Reader(path: output).header
            let writer = try ScanSummaryFile.Writer(path: output, header: header)
            #expect(try FileManager.default.contentsOfDirectory(atPath: directory.url.path).count == 2, "the temporary file beside it")
            _ = writer
        }
        #expect(try Data(contentsOf: URL(fileURLWithPath: output)) == before)
        #expect(try FileManager.default.contentsOfDirectory(atPath: directory.url.path) == ["run.gssum"])
        // A run that cannot be read writes nothing.
        let nothing = directory.path("nothing.gssum")
        #expect(throws: (any Error).self) {
            try ScanEngine.scanShard(directory.path("no-such-run"), shard: ShardSpec(index: 0, count: 1), output: nothing)
        }
        #expect(!FileManager.default.fileExists(atPath: nothing))
        #expect(ScanSummaryFile.isSummary(output) && !ScanSummaryFile.isSummary(samplePath("healthy") + "/step_000060.h5"))
    }

    @Test("the commands: scan --shard I/N --summary, merge --format json, report of summaries, the default name and where it may go")
    func commands() throws {
        let binary = try #require(GradScopeBinary.path, "\(GradScopeBinary.notFoundMessage)")
        let directory = try TemporaryDirectory()
        let run = samplePath("exploding-nan")
        let local = try GradScopeBinary.run(binary, ["scan", run, "--format", "json"])
        #expect(local.status == 1, "\(local.stderr)")
        var files: [String] = []
        for index in 0..<3 {
            let file = directory.path("part\(index).gssum")
            let shard = try GradScopeBinary.run(binary, ["scan", run, "--shard", "\(index)/3", "--summary", file])
            #expect(shard.status == 0 && shard.stdout.isEmpty, "\(shard.stderr)")
            #expect(shard.stderr.contains("wrote \(file) (shard \(index)/3"), "\(shard.stderr)")
            files.append(file)
        }
        let merged = try GradScopeBinary.run(binary, ["merge"] + files + ["--format", "json"])
        #expect(merged.status == 1, "\(merged.stderr)")
        #expect(merged.stdout == local.stdout)
        let html = directory.path("report.html")
        let report = try GradScopeBinary.run(binary, ["report"] + files + ["-o", html, "--quiet"])
        #expect(report.status == 1 && FileManager.default.fileExists(atPath: html), "\(report.stderr)")
        let missing = try GradScopeBinary.run(binary, ["merge", files[0], files[2]])
        #expect(missing.status == 2 && missing.stderr == "gradscope: \(run): missing shard 1/3 (2 of 3 given)\n", "\(missing.stderr)")
        #expect(try GradScopeBinary.run(binary, ["scan", run, "--shard", "3/3"]).status == 2)

        // The default name lands in the current directory, never inside the run's.
        let copy = directory.path("copy")
        try FileManager.default.copyItem(atPath: run, toPath: copy)
        let inside = try GradScopeBinary.run(
            "/bin/sh", ["-c", "cd \"$0\" && exec \"$1\" scan . --shard 0/2 --quiet", copy, binary])
        #expect(inside.status == 2 && inside.stderr.contains("inside the run's directory"), "\(inside.stderr)")
        let outside = try GradScopeBinary.run(
            "/bin/sh", ["-c", "cd \"$0\" && exec \"$1\" scan copy --shard 1/2 --quiet", directory.url.path, binary])
        #expect(outside.status == 0, "\(outside.stderr)")
        #expect(ScanSummaryFile.isSummary(directory.path("copy.shard-1-of-2.gssum")))
        // Asked for by name, a summary may go into the run's directory.
        let named = try GradScopeBinary.run(binary, ["scan", copy, "--summary", copy + "/whole.gssum", "--quiet"])
        #expect(named.status == 0 && ScanSummaryFile.isSummary(copy + "/whole.gssum"), "\(named.stderr)")
    }
}
