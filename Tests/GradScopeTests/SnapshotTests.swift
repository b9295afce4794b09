import Foundation
import TestSupport
import Testing

/// Golden outputs of what people read: `scan`'s table and CSV, and `ls`'s tree
/// with and without attributes, from the built binary (see `GradScopeBinary`)
/// on the bundled sample runs. Each case's output is kept in
/// `Snapshots/<case>.txt` next to this file; a change to it fails with the
/// first differing lines.
///
/// Before comparing, the checkout's path becomes `<ROOT>`, and the CSV's
/// numbers of more than 9 significant digits are rounded to 9: the statistics
/// kernels sum in vectors as wide as the CPU allows (SSE2, AVX2 or AVX-512),
/// so the last bits of a norm depend on the machine.
///
/// To record the snapshots after an intended change to the output:
/// `GRADSCOPE_RECORD_SNAPSHOTS=1 swift test --filter SnapshotTests`, then
/// review `git diff Tests/GradScopeTests/Snapshots`.
@Suite("Snapshots of scan's table and CSV and of ls", .serialized)
struct SnapshotTests {
    static let scannedRuns = ["ctr-plateau", "dead-relu", "healthy"]
    static let listedFiles = ["dead-relu/step_000600.h5", "keras-weights-h5/step_000640.weights.h5"]

    @Test("scan prints the loss, the tensor table and the findings as recorded", arguments: scannedRuns)
    func scanTable(run: String) throws {
        try Snapshot.check("scan-\(run)", ["scan", samplePath(run)])
    }

    @Test("scan --format csv prints one row per step and tensor as recorded", arguments: scannedRuns)
    func scanCSV(run: String) throws {
        try Snapshot.check("scan-csv-\(run)", ["scan", samplePath(run), "--format", "csv"], roundingNumbers: true)
    }

    @Test("ls prints a native and a Keras file's tree as recorded", arguments: listedFiles)
    func list(file: String) throws {
        try Snapshot.check("ls-\(file.replacingOccurrences(of: "/", with: "-"))", ["ls", samplePath(file)])
    }

    @Test("ls --attrs adds every attribute, decoded, as recorded", arguments: listedFiles)
    func listAttributes(file: String) throws {
        try Snapshot.check("ls-attrs-\(file.replacingOccurrences(of: "/", with: "-"))", ["ls", "--attrs", samplePath(file)])
    }

    @Test("normalising replaces the checkout's path and rounds only the CSV's numbers")
    func normalising() {
        let root = packageRoot.path
        let csv =
            "step,tensor,layer,norm,gradient_norm,zero_fraction,non_finite\n"
            + "800,0.weight,0,0.043582075192076276,,0.0,0\n"
            + "1600,emb.1.weight,emb.1,1.2e-05,3.094775166123406e-05,0.125,12\n"
        #expect(
            Snapshot.normalise(csv, roundingNumbers: true) == "step,tensor,layer,norm,gradient_norm,zero_fraction,non_finite\n"
                + "800,0.weight,0,0.0435820752,,0.0,0\n"
                + "1600,emb.1.weight,emb.1,1.2e-05,3.09477517e-05,0.125,12\n")
        #expect(
            Snapshot.normalise("gradscope scan \(root)/SampleCheckpoints/healthy  (13 steps)\n  0.0435", roundingNumbers: false)
                == "gradscope scan <ROOT>/SampleCheckpoints/healthy  (13 steps)\n  0.0435")
    }

    @Test("a mismatch is shown as the first differing lines with a little context")
    func difference() {
        let expected = (1...30).map { "line \($0)" }.joined(separator: "\n") + "\n"
        var lines = expected.components(separatedBy: "\n")
        lines[9] = "line ten"
        lines[27] = "LINE 28"
        lines.insert("new line", at: 11)
        let diff = Snapshot.difference(expected: expected, actual: lines.joined(separator: "\n"))
        #expect(
            diff == """
                @@ -8,6 +8,7 @@
                 line 8
                 line 9
                -line 10
                +line ten
                 line 11
                +new line
                 line 12
                 line 13
                (2 more differing lines below)
                """)
        #expect(Snapshot.difference(expected: "a\nb\n", actual: "a\nb") == "@@ -1,3 +1,2 @@\n a\n b\n-")
        #expect(Snapshot.difference(expected: "same\n", actual: "same\n").isEmpty)
    }
}

/// Running the binary and comparing its output with, or recording it as, a snapshot file.
enum Snapshot {
    /// Snapshots/ next to this source file.
    static let directory = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Snapshots")

    /// Set to 1 to write the snapshot files instead of comparing with them.
    static let recordVariable = "GRADSCOPE_RECORD_SNAPSHOTS"

    static var recording: Bool { ProcessInfo.processInfo.environment[recordVariable] == "1" }

    /// Runs gradscope with `arguments`, expects exit status 0 and nothing on
    /// stderr, and compares the normalised stdout with `Snapshots/<name>.txt`
    /// (or writes it there when recording).
    static func check(
        _ name: String, _ arguments: [String], roundingNumbers: Bool = false,
        sourceLocation: SourceLocation = #_sourceLocation
    ) throws {
        let binary = try #require(GradScopeBinary.path, "\(GradScopeBinary.notFoundMessage)", sourceLocation: sourceLocation)
        let output = try run(binary, arguments)
        let command = "gradscope " + arguments.joined(separator: " ")
        try #require(!output.timedOut, "\(command) did not finish within 120 s", sourceLocation: sourceLocation)
        #expect(output.status == 0, "\(command): exit status \(output.status)", sourceLocation: sourceLocation)
        #expect(output.stderr.isEmpty, "\(command): \(output.stderr.prefix(800))", sourceLocation: sourceLocation)
        #expect(!output.stdout.isEmpty, "\(command) printed nothing", sourceLocation: sourceLocation)
        let actual = normalise(output.stdout, roundingNumbers: roundingNumbers)

        let file = directory.appendingPathComponent(name + ".txt")
        let shown = "Tests/GradScopeTests/Snapshots/\(file.lastPathComponent)"
        let recorded = try? String(contentsOf: file, encoding: .utf8)
        if recording {
            guard recorded != actual else {
                print("snapshot \(shown) unchanged")
                return
            }
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
            try Data(actual.utf8).write(to: file)
            print("snapshot \(shown) recorded (\(recordVariable)=1): review it with git diff")
            return
        }
        guard let recorded else {
            Issue.record(
                "no snapshot \(shown) for `\(command)`: record it with \(recordVariable)=1 swift test --filter SnapshotTests",
                sourceLocation: sourceLocation)
            return
        }
        if recorded != actual {
            Issue.record(
                """
                `\(command)` no longer prints \(shown) (- recorded, + now); \
                if the change is intended, record it with \(recordVariable)=1 swift test --filter SnapshotTests
                \(difference(expected: recorded, actual: actual))
                """, sourceLocation: sourceLocation)
        }
    }

    /// The machine-dependent parts made the same everywhere: the checkout's
    /// path becomes `<ROOT>`; with `roundingNumbers`, every comma-separated
    /// field that is a number with more than 9 significant digits is rounded
    /// to 9 (shorter ones, such as `0.0`, are kept as printed).
    static func normalise(_ text: String, roundingNumbers: Bool) -> String {
        var text = text
        let roots = Set([packageRoot.path, packageRoot.resolvingSymlinksInPath().path]).sorted { $0.count > $1.count }
        for root in roots { text = text.replacingOccurrences(of: root, with: "<ROOT>") }
        guard roundingNumbers else { return text }
        return text.components(separatedBy: "\n").map { line in
            line.components(separatedBy: ",").map { field in
                guard let value = Double(field), value.isFinite else { return field }
                let mantissa = field.prefix { $0 != "e" && $0 != "E" }
                let digits = mantissa.filter(\.isNumber).drop { $0 == "0" }
                return digits.count > 9 ? String(format: "%.9g", value) : field
            }.joined(separator: ",")
        }.joined(separator: "\n")
    }

    /// The first hunk of a line diff, in unified style: the first differing
    /// lines with `context` unchanged lines around them, at most `limit`
    /// changed lines, and how many more differ further down.
    static func difference(expected: String, actual: String, context: Int = 2, limit: Int = 12) -> String {
        let edits = lineEdits(expected.components(separatedBy: "\n"), actual.components(separatedBy: "\n"))
        guard let first = edits.firstIndex(where: { $0.mark != " " }) else { return "" }
        let start = max(0, first - context)
        var stop = first, changed = 0, unchanged = 0
        while stop < edits.count {
            if edits[stop].mark == " " {
                unchanged += 1
                if unchanged > 2 * context { break }
            } else {
                unchanged = 0
                changed += 1
                if changed > limit { break }
            }
            stop += 1
        }
        var hunk = Array(edits[start..<stop])
        let trailing = hunk.reversed().prefix { $0.mark == " " }.count
        hunk.removeLast(max(0, trailing - context))
        let oldStart = edits[..<start].filter { $0.mark != "+" }.count + 1, newStart = edits[..<start].filter { $0.mark != "-" }.count + 1
        var lines = ["@@ -\(oldStart),\(hunk.filter { $0.mark != "+" }.count) +\(newStart),\(hunk.filter { $0.mark != "-" }.count) @@"]
        lines += hunk.map { String($0.mark) + $0.line }
        let more = edits[(start + hunk.count)...].filter { $0.mark != " " }.count
        if more > 0 { lines.append("(\(more) more differing line\(more == 1 ? "" : "s") below)") }
        return lines.joined(separator: "\n")
    }

    /// A shortest edit script from `old` to `new`, one line each, marked
    /// " " (in both), "-" (only in old) or "+" (only in new), removals first.
    static func lineEdits(_ old: [String], _ new: [String]) -> [(mark: Character, line: String)] {
        var prefix = 0
        while prefix < min(old.count, new.count), old[prefix] == new[prefix] { prefix += 1 }
        var suffix = 0
        while suffix < min(old.count, new.count) - prefix, old[old.count - 1 - suffix] == new[new.count - 1 - suffix] { suffix += 1 }
        let a = Array(old[prefix..<(old.count - suffix)]), b = Array(new[prefix..<(new.count - suffix)])
        var middle: [(mark: Character, line: String)] = []
        if a.count * b.count > 4_000_000 {
            // Too long to align: all of one side, then all of the other.
            middle = a.map { ("-", $0) } + b.map { ("+", $0) }
        } else {
            // common[i][j]: the length of the longest common subsequence of a[i...] and b[j...].
            var common = [[Int]](repeating: [Int](repeating: 0, count: b.count + 1), count: a.count + 1)
            for i in stride(from: a.count - 1, through: 0, by: -1) {
                for j in stride(from: b.count - 1, through: 0, by: -1) {
                    common[i][j] = a[i] == b[j] ? common[i + 1][j + 1] + 1 : max(common[i + 1][j], common[i][j + 1])
                }
            }
            var i = 0, j = 0
            while i < a.count || j < b.count {
                if i < a.count, j < b.count, a[i] == b[j] {
                    middle.append((" ", a[i]))
                    i += 1
                    j += 1
                } else if i < a.count, j == b.count || common[i + 1][j] >= common[i][j + 1] {
                    middle.append(("-", a[i]))
                    i += 1
                } else {
                    middle.append(("+", b[j]))
                    j += 1
                }
            }
        }
        return old[..<prefix].map { (" ", $0) } + middle + old[(old.count - suffix)...].map { (" ", $0) }
    }

    typealias Output = CommandOutput

    /// Runs the binary with NO_COLOR=1 and none of the caller's GRADSCOPE_
    /// variables nor COLUMNS (output to a file has no width then, as the
    /// snapshots were recorded), its output going to files; killed after 120 s.
    static func run(_ binary: String, _ arguments: [String]) throws -> Output {
        try GradScopeBinary.run(binary, arguments, limit: 120)
    }
}
