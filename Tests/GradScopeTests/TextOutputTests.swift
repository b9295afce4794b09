import Foundation
import GradScopeDiagnosis
import GradScopeModel
import GradScopeRendering
import GradScopeSources
import HDF5
import HDF5Writer
import TestSupport
import Testing

/// What the text output shows people: names from files escaped, lines that fit
/// the terminal, sparkline glyphs that mean one thing each, and long lists that
/// say how long they are.
@Suite("Text output for people")
struct TextOutputTests {
    /// A dataset name holding an escape sequence that would clear the screen and a newline.
    static let hostileName = "dense\u{1B}[2J\u{1B}]0;owned\u{07}\nx.weight"
    /// The same name as printed.
    static let hostileShown = "dense\\e[2J\\e]0;owned\\x07\\nx.weight"

    /// A checkpoint of two tensors, the first with a hostile name and a NaN, and a hostile root attribute.
    static func writeHostile(_ path: String, step: Int, seed: UInt64) throws {
        var noise = SplitMix64(seed: seed)
        let w = try HDF5Writer(creating: path)
        defer { w.close() }
        var values = noise.normals(8 * 4, std: 0.3)
        values[5] = .nan
        try w.write("/" + hostileName, values, shape: [8, 4])
        try w.write("/plain.weight", noise.normals(4 * 4, std: 0.3), shape: [4, 4])
        try w.setAttribute("step", .int(Int64(step)), at: "/")
        try w.setAttribute("title\u{1B}[31m", .string("red\u{1B}[0m\nsecond line", .variableUTF8), at: "/")
    }

    /// No raw control character but the line breaks; the hostile name shown escaped.
    static func expectEscaped(_ text: String, _ what: String, sourceLocation: SourceLocation = #_sourceLocation) {
        let raw = text.unicodeScalars.filter { $0 != "\n" && needsTerminalEscape($0) }
        #expect(raw.isEmpty, "\(what) prints raw control characters \(raw.map { String($0.value, radix: 16) })", sourceLocation: sourceLocation)
        #expect(text.contains(hostileShown), "\(what) does not show the name escaped:\n\(text)", sourceLocation: sourceLocation)
    }

    @Test("control characters in names from files are shown escaped in scan, inspect, diff and ls")
    func hostileNamesEscaped() throws {
        let dir = try TemporaryDirectory()
        let run = dir.path("run")
        try FileManager.default.createDirectory(atPath: run, withIntermediateDirectories: true)
        for (index, step) in [0, 100, 200].enumerated() {
            try Self.writeHostile(run + "/step_\(step).h5", step: step, seed: UInt64(index + 1))
        }
        let first = run + "/step_0.h5", second = run + "/step_100.h5"
        for color in [false, true] {
            let text = TextRenderer(style: Style(color: color), explain: true)
            let inspect = text.render(try Analysis.inspect(first))
            #expect(inspect.contains("nan-inf"), "the NaN is found, so its message names the tensor")
            if !color { Self.expectEscaped(inspect, "inspect") }
            #expect(!inspect.contains("\u{1B}[2J") && !inspect.contains("\u{07}"))
            let diff = text.render(try Analysis.diff(first, second))
            if !color { Self.expectEscaped(diff, "diff") }
            #expect(!diff.contains("\u{1B}[2J"))
            let scan = text.render(try Analysis.scan(run).0)
            if !color { Self.expectEscaped(scan, "scan") }
            #expect(!scan.contains("\u{1B}[2J") && !scan.contains("\u{1B}]0;"))
        }
        let listing = try FileListing(file: try HDF5File.open(first), withAttributes: true).renderText(showAttributes: true)
        Self.expectEscaped(listing, "ls --attrs")
        #expect(listing.contains(#"@title\e[31m = "red\e[0m\nsecond line""#), "\(listing)")
    }

    @Test("terminalSafe escapes C0 and C1 controls, DEL and invisible reordering characters, and keeps other text")
    func escaping() {
        #expect(terminalSafe("a\u{1B}[31mb\n\r\t") == "a\\e[31mb\\n\\r\\t")
        #expect(terminalSafe("\u{00}\u{07}\u{7F}\u{9B}") == "\\x00\\x07\\x7f\\x9b")
        #expect(terminalSafe("abc\u{202E}fed") == "abc\\u{202e}fed")
        #expect(terminalSafe("emb.0.weight ‖W‖ é ▁█ \\n") == "emb.0.weight ‖W‖ é ▁█ \\n")
    }

    @Test("the width is the terminal's, else COLUMNS, else 80 on a terminal; unlimited for a pipe without COLUMNS")
    func widthChoice() {
        #expect(outputWidth(isTerminal: true, terminalColumns: 132, columnsVariable: "90") == 132)
        #expect(outputWidth(isTerminal: true, terminalColumns: nil, columnsVariable: "90") == 90)
        #expect(outputWidth(isTerminal: true, terminalColumns: 0, columnsVariable: nil) == 80)
        #expect(outputWidth(isTerminal: true, terminalColumns: nil, columnsVariable: "wide") == 80)
        #expect(outputWidth(isTerminal: false, terminalColumns: nil, columnsVariable: nil) == nil)
        #expect(outputWidth(isTerminal: false, terminalColumns: nil, columnsVariable: "100") == 100)
        #expect(outputWidth(isTerminal: false, terminalColumns: nil, columnsVariable: "-3") == nil)
    }

    @Test("wrapping breaks at spaces with a hanging indent and never inside a word")
    func wrapping() {
        let text = "WARNING dead-units [steps 250–600]  18 of 24 units (75%) of 2.weight are dead: they get exactly zero gradient"
        let lines = wrapHanging(text, width: 40, indent: 8)
        #expect(lines.count > 1)
        #expect(lines.allSatisfy { $0.count <= 40 })
        #expect(lines.dropFirst().allSatisfy { $0.hasPrefix("        ") && !$0.hasPrefix("         ") })
        #expect(collapsed(lines.joined(separator: "\n")) == collapsed(text))
        #expect(
            wrapHanging("tiny a-very-long-word-that-cannot-fit-anywhere end", width: 10, indent: 2) == [
                "tiny", "  a-very-long-word-that-cannot-fit-anywhere", "  end",
            ])
        #expect(wrapHanging("  indented note that wraps", width: 12, indent: 4) == ["  indented", "    note", "    that", "    wraps"])
        #expect(wrapHanging(text, width: nil, indent: 8) == [text])
    }

    /// `text` with every run of spaces and line breaks made one space.
    func collapsed(_ text: String) -> String {
        text.split(whereSeparator: { $0 == " " || $0 == "\n" }).joined(separator: " ")
    }

    @Test("a sample scan fits 80 and 120 columns: no line longer, no word split, the tensors all listed", arguments: [80, 120])
    func scanFitsWidth(width: Int) throws {
        for run in ["ctr-plateau", "dead-relu", "healthy"] {
            let report = try Analysis.scan(samplePath(run)).0
            for explain in [false, true] {
                for color in [false, true] {
                    let text = TextRenderer(style: Style(color: color), explain: explain, width: width).render(report)
                    let lines = text.split(separator: "\n", omittingEmptySubsequences: false)
                    let long = lines.filter { visibleLength(String($0)) > width }
                    #expect(long.isEmpty, "\(run) at \(width): \(long)")
                    guard !color else { continue }
                    let words = collapsed(text)
                    for finding in report.findings {
                        #expect(words.contains(collapsed(finding.message)), "\(run): \(finding.message) is split or lost")
                        if explain { #expect(words.contains(collapsed(finding.explanation))) }
                    }
                    #expect(words.contains(collapsed(report.verdict)))
                    for tensor in report.timeline { #expect(lines.contains { $0.hasPrefix(tensor.name + " ") }) }
                }
            }
            let unlimited = TextRenderer(style: Style(color: false), explain: false).render(report)
            #expect(unlimited.split(separator: "\n").contains { $0.count > 100 }, "without a width, one line per record")
            #expect(unlimited == TextRenderer(style: Style(color: false), explain: false, width: nil).render(report))
        }
    }

    @Test("the scan table drops shape and update/step first, then shortens the sparklines, then drops more")
    func scanDropOrder() throws {
        let report = try Analysis.scan(samplePath("dead-relu")).0
        func table(_ width: Int) throws -> (header: [Substring], row: [Substring]) {
            let lines = TextRenderer(style: Style(color: false), explain: false, width: width).render(report).split(separator: "\n")
            let header = try #require(lines.firstIndex { $0.hasPrefix("tensor") })
            return (lines[header].split(separator: " "), lines[header + 1].split(separator: " "))
        }
        // 101 columns in full; the 13 saves keep 13 glyphs while dropping shape and update/step is enough.
        let at80 = try table(80)
        #expect(at80.header == ["tensor", "‖W‖", "first→last", "norm", "‖g‖", "last", "grad", "ratio"])
        #expect(at80.row[2].count == 13)
        let at70 = try table(70)
        #expect(at70.header == ["tensor", "‖W‖", "first→last", "norm", "‖g‖", "last", "grad", "ratio"])
        #expect(at70.row[2].count == 8)
        #expect(try table(40).header == ["tensor", "norm", "grad", "ratio"])
        #expect(try table(30).header == ["tensor", "norm", "grad"])
        let wide = TextRenderer(style: Style(color: false), explain: false, width: 200).render(report)
        #expect(wide == TextRenderer(style: Style(color: false), explain: false).render(report), "a wide terminal changes nothing")
    }

    @Test("inspect and diff tables fit 80 columns")
    func inspectAndDiffFit() throws {
        let a = samplePath("dead-relu/step_000300.h5"), b = samplePath("dead-relu/step_000600.h5")
        let text = TextRenderer(style: Style(color: false), explain: true, width: 80)
        for output in [text.render(try Analysis.inspect(a)), text.render(try Analysis.diff(a, b))] {
            let long = output.split(separator: "\n").filter { $0.count > 80 }
            #expect(long.isEmpty, "\(long)")
        }
    }

    @Test("sparklines: zero, NaN or Inf, and missing each have their own glyph, with a legend under the scan table")
    func sparklineGlyphs() throws {
        #expect(sparkline([0, 0, 0]) == "000")
        #expect(sparkline([.nan, .infinity, nil]) == "!!·")
        #expect(sparkline([0, nil, .nan, 1, 10]) == "0·!▁█")
        let text = TextRenderer(style: Style(color: false), explain: false).render(try RendererFixture.scan())
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false)
        let legend = try #require(lines.firstIndex { $0.hasPrefix("sparklines:") })
        #expect(lines[legend - 1].hasPrefix("enc,\"q\".weight"), "the legend is right under the table")
        #expect(lines[legend].contains("0 zero") && lines[legend].contains("! NaN or Inf") && lines[legend].contains("· missing"))
    }

    @Test("many notes and skipped files say how many more there are; a run whose files were mostly skipped says so under the verdict")
    func longRuns() throws {
        var report = try RendererFixture.scan()
        report.notes = (1...398).map { "note \($0)" }
        report.skipped = (1...2587).map { SkippedItem(item: "runs/a/copy_\($0).h5", kind: .superseded, reason: "duplicate step 0") }
        report.skipped.append(SkippedItem(item: "runs/a/bad.h5", kind: .unreadable, reason: "truncated"))
        let lines = TextRenderer(style: Style(color: false), explain: false).render(report).split(separator: "\n").map(String.init)
        #expect(lines.contains("  … and 386 more (--format json lists them all)"))
        #expect(lines.contains("  … and 2,568 more (--format json lists them all)"))
        #expect(lines.contains("Skipped 2588 file(s):"))
        #expect(lines[1] == "ok")
        #expect(
            lines[2]
                == "Most files were skipped: 2,588 skipped (2,587 superseded by another file (a duplicate step, another layout), 1 unreadable), 2 steps used; the list is below."
        )
        #expect(groupedCount(2_600) == "2,600" && groupedCount(999) == "999" && groupedCount(1_234_567) == "1,234,567")

        report.skipped = [SkippedItem(item: "runs/a/copy.h5", kind: .superseded, reason: "duplicate step 0")]
        let few = TextRenderer(style: Style(color: false), explain: false).render(report)
        #expect(!few.contains("Most files were skipped"), "one skipped file of three is no headline")
    }

    @Test("CSV carries the findings or the loss when asked; the timeline stays the default")
    func csvTables() throws {
        var report = try RendererFixture.scan()
        report.findings = [
            Finding(
                kind: .deadUnits, severity: .warning, tensor: "enc,\"q\".weight", layer: "enc", firstStep: 100, lastStep: 100,
                message: "3 of 4 units are dead, since step 100.", evidence: [:], explanation: ""),
            Finding(
                kind: .lossPlateau, severity: .error, tensor: nil, layer: nil, firstStep: nil, lastStep: nil, message: "Flat.",
                evidence: [:], explanation: ""),
        ]
        #expect(
            CSVRenderer(table: .findings).render(report)
                == "kind,severity,tensor,layer,first_step,last_step,message\n"
                + "dead-units,warning,\"enc,\"\"q\"\".weight\",enc,100,100,\"3 of 4 units are dead, since step 100.\"\n"
                + "loss-plateau,error,,,,,Flat.\n")
        #expect(CSVRenderer(table: .loss).render(report) == "step,loss,lr\n0,0.7,\n100,0.6,\n")
        #expect(CSVRenderer(table: .timeline).render(report) == CSVRenderer().render(report))
        #expect(CSVRenderer().render(report).hasPrefix("step,tensor,layer,norm,"))

        var inspect = try RendererFixture.inspect()
        #expect(CSVRenderer(table: .loss).render(inspect) == "step,loss,lr\n", "no step, no row")
        inspect.step = 40
        inspect.loss = 0.25
        #expect(CSVRenderer(table: .loss).render(inspect) == "step,loss,lr\n40,0.25,\n")
        inspect.findings = report.findings
        #expect(CSVRenderer(table: .findings).render(inspect) == CSVRenderer(table: .findings).render(report))
        #expect(CSVRenderer(table: .tensors).render(inspect).hasPrefix("name,layer,role,slot,"))
        var diff = try RendererFixture.diff()
        diff.findings = report.findings
        #expect(CSVRenderer(table: .findings).render(diff) == CSVRenderer(table: .findings).render(report))
        #expect(CSVRenderer().render(diff).hasPrefix("name,layer,role,shape,relative_change,"))
    }

    /// Runs the built binary with `arguments`, COLUMNS as given (unset when nil).
    func gradscope(_ arguments: [String], columns: String? = nil) throws -> (status: Int32, stdout: String, stderr: String) {
        let binary = try #require(GradScopeBinary.path, "\(GradScopeBinary.notFoundMessage)")
        let output = try GradScopeBinary.run(binary, arguments, environment: columns.map { ["COLUMNS": $0] } ?? [:])
        return (output.status, output.stdout, output.stderr)
    }

    @Test("scan --format csv --csv-table findings|loss prints those tables; --csv-table needs csv and a table the command has")
    func csvTableOption() throws {
        let run = samplePath("dead-relu")
        let findings = try gradscope(["scan", run, "--format", "csv", "--csv-table", "findings"])
        let rows = findings.stdout.split(separator: "\n")
        #expect(rows.first == "kind,severity,tensor,layer,first_step,last_step,message")
        #expect(rows.count == 4, "\(findings.stdout)")
        #expect(rows.contains { $0.hasPrefix("dead-units,warning,2.weight,2,250,600,") })
        let loss = try gradscope(["scan", run, "--format", "csv", "--csv-table", "loss"])
        #expect(loss.stdout.split(separator: "\n").count == 14)
        #expect(loss.stdout.hasPrefix("step,loss,lr\n0,1.42"))
        let timeline = try gradscope(["scan", run, "--format", "csv"])
        #expect(timeline.stdout == (try gradscope(["scan", run, "--format", "csv", "--csv-table", "timeline"])).stdout)
        #expect(timeline.stdout.hasPrefix("step,tensor,layer,"))

        let file = samplePath("dead-relu/step_000600.h5")
        let inspect = try gradscope(["inspect", file, "--format", "csv", "--csv-table", "loss"])
        #expect(inspect.status == 0 && inspect.stdout.hasPrefix("step,loss,lr\n600,"), "\(inspect.stdout)")
        for refused in [
            ["scan", run, "--csv-table", "findings"], ["diff", file, file, "--format", "csv", "--csv-table", "loss"],
            ["scan", run, "--format", "csv", "--csv-table", "tensors"],
        ] {
            let output = try gradscope(refused)
            #expect(output.status == 2, "\(refused)")
            #expect(output.stdout.isEmpty && output.stderr.contains("--csv-table"), "\(refused): \(output.stderr)")
        }
        let help = try gradscope(["scan", "--help"])
        #expect(help.stdout.contains("--csv-table") && help.stdout.contains("first_step"))
    }

    @Test("through a pipe, COLUMNS sets the width; without it lines are not limited")
    func columnsThroughAPipe() throws {
        let run = samplePath("dead-relu")
        for width in [80, 120] {
            let output = try gradscope(["scan", run, "--explain"], columns: String(width))
            #expect(output.status == 0)
            let long = output.stdout.split(separator: "\n").filter { $0.count > width }
            #expect(long.isEmpty, "COLUMNS=\(width): \(long)")
        }
        let unlimited = try gradscope(["scan", run])
        #expect(unlimited.stdout.split(separator: "\n").contains { $0.count > 120 })
        let inspect = try gradscope(["inspect", samplePath("dead-relu/step_000600.h5")], columns: "80")
        #expect(inspect.stdout.split(separator: "\n").allSatisfy { $0.count <= 80 }, "\(inspect.stdout)")
    }
}
