import ElementTypes
import Foundation
import GradScopeDiagnosis
import GradScopeMeasurement
import GradScopeModel
import GradScopeRendering
import GradScopeSources
import GradScopeStatistics
import HDF5
import HDF5Writer
import TestSupport
import Testing

/// Helpers of the HTML report tests, kept in one namespace.
enum HTMLReportFixture {
    /// The package root, from this file's path (Tests/GradScopeTests/HTMLReportTests.swift).
    static let root: URL = {
        var url = URL(fileURLWithPath: #filePath)
        for _ in 0..<3 { url.deleteLastPathComponent() }
        return url
    }()

    static func sample(_ run: String) -> String { root.appendingPathComponent("SampleCheckpoints").appendingPathComponent(run).path }

    static func scan(_ run: String) throws -> ScanReport {
        try Analysis.scan(sample(run)).0
    }

    static let hostileName = "<img src=x onerror=alert(1)>"

    /// Writes a four-save native run in `directory`: `ok.weight` trains, the tensor named
    /// `hostileName` never changes while its gradient grows (so `frozen` names it).
    static func writeHostileRun(in directory: String) throws {
        let steps = [0, 100, 200, 300]
        var ok: [Double] = (0..<12).map { Double($0 % 5) * 0.13 - 0.3 }
        let frozen: [Double] = (0..<12).map { Double($0 % 7) * 0.11 - 0.35 }
        for (index, step) in steps.enumerated() {
            let writer = try HDF5Writer(creating: (directory as NSString).appendingPathComponent(String(format: "step_%06d.h5", step)))
            try writer.setAttribute("format", .string("gradscope/1", .variableUTF8), at: "/")
            try writer.setAttribute("step", .int(Int64(step)), at: "/")
            try writer.setAttribute("loss", .double(1.2 - 0.2 * Double(index)), at: "/")
            try writer.setAttribute("framework", .string("pytorch", .variableUTF8), at: "/")
            _ = try writer.createGroup("/weights")
            if index > 0 {
                _ = try writer.createGroup("/gradients")
                ok = ok.enumerated().map { $0.element + 0.01 * Double(($0.offset % 3) - 1) * Double(index) + 0.004 }
            }
            try writer.write("/weights/ok.weight", ok, shape: [4, 3])
            try writer.write("/weights/\(hostileName)", frozen, shape: [4, 3])
            try writer.setAttribute("in_optimizer", .int(1), at: "/weights/ok.weight")
            try writer.setAttribute("in_optimizer", .int(0), at: "/weights/\(hostileName)")
            if index > 0 {
                try writer.write("/gradients/ok.weight", (0..<12).map { 0.02 * Double(($0 + index) % 4) - 0.03 }, shape: [4, 3])
                try writer.write("/gradients/\(hostileName)", (0..<12).map { Double(index) * (0.05 + 0.01 * Double($0)) }, shape: [4, 3])
            }
            writer.close()
        }
    }

    /// The values of every `id="..."` and `href="#..."` in `html`.
    static func anchors(_ html: String) -> (ids: Set<String>, links: Set<String>) {
        (Set(captures(#"id="([^"]+)""#, html)), Set(captures(##"href="#([^"]*)""##, html)))
    }

    static func captures(_ pattern: String, _ text: String) -> [String] {
        guard let regex = try? NSRegularExpression(pattern: pattern) else { return [] }
        return regex.matches(in: text, range: NSRange(text.startIndex..., in: text)).compactMap { match in
            Range(match.range(at: 1), in: text).map { String(text[$0]) }
        }
    }

    static func count(_ needle: String, in text: String) -> Int {
        text.components(separatedBy: needle).count - 1
    }
}

@Suite("HTML report")
struct HTMLReportTests {
    typealias Fixture = HTMLReportFixture

    @Test(
        "a sample run gives a self-contained page: every chart type, no script, nothing fetched",
        arguments: ["ctr-plateau", "dead-relu", "vanishing-sigmoid", "exploding-nan"])
    func structure(run: String) throws {
        let report = try Fixture.scan(run)
        let html = HTMLReportRenderer().render(report)
        #expect(html.hasPrefix("<!DOCTYPE html>"))
        #expect(html.hasSuffix("</html>\n"))
        let lower = html.lowercased()
        #expect(!lower.contains("<script"))
        #expect(!lower.contains(" on") || Fixture.captures(#"<[^>]*\son[a-z]+\s*="#, lower).isEmpty, "no inline event handlers")
        #expect(Fixture.captures(#"(?:src|href)\s*=\s*"([^"]*)""#, lower).allSatisfy { $0.hasPrefix("#") }, "links stay in the page")
        for fetched in ["<link", "<img", "<iframe", "<object", "<embed", "url(", "@import", "http://", "https://"] {
            #expect(!lower.contains(fetched), "\(fetched) in the \(run) report")
        }
        #expect(Fixture.count("<svg", in: html) == Fixture.count("</svg>", in: html))
        for kind in ["findings", "loss", "learning-rate", "gradient-flow", "tensor-overview", "tensor", "histogram", "dead-units", "activations"] {
            #expect(html.contains("class=\"chart chart-\(kind)\""), "no \(kind) chart in the \(run) report")
        }
        #expect(Fixture.count("class=\"chart chart-loss\"", in: html) == 1)
        #expect(Fixture.count("class=\"chart chart-gradient-flow\"", in: html) == 2)
        #expect(Fixture.count("class=\"chart chart-tensor-overview\"", in: html) == 3)
    }

    @Test(
        "every finding is listed with its message and tensor, and links to a chart in the page",
        arguments: ["ctr-plateau", "dead-relu", "weight-decay-collapse", "frozen-layer", "exploding-nan"])
    func findingsLinkToCharts(run: String) throws {
        let report = try Fixture.scan(run)
        try #require(!report.findings.isEmpty)
        let html = HTMLReportRenderer().render(report)
        for (index, finding) in report.findings.enumerated() {
            #expect(html.contains(htmlEscape(finding.message)))
            if let tensor = finding.tensor { #expect(html.contains("<code class=\"tensor\">\(htmlEscape(tensor))</code>")) }
            #expect(html.contains("id=\"finding-\(index)\""))
        }
        let (ids, links) = Fixture.anchors(html)
        #expect(links.count >= 2)
        for link in links { #expect(ids.contains(link), "#\(link) leads nowhere") }
        // The head of each finding points at its evidence chart, not back at the list.
        let targets = Fixture.captures(##"<a class="head" href="#([^"]+)""##, html)
        #expect(targets.count == report.findings.count)
        #expect(targets.allSatisfy { !$0.hasPrefix("finding-") })
    }

    @Test("the loss chart draws ln K from the plateau finding and shades the plateau")
    func lossPlateau() throws {
        for (run, label) in [("ctr-plateau", "ln 2 = 0.693"), ("vanishing-sigmoid", "ln 4 = 1.39")] {
            let report = try Fixture.scan(run)
            let plateau = try #require(report.findings.first { $0.kind == .lossPlateau })
            let first = try #require(plateau.firstStep), last = try #require(plateau.lastStep)
            let html = HTMLReportRenderer().render(report)
            let loss = try #require(Fixture.captures(#"(<svg class="chart chart-loss".*?</svg>)"#, html).first)
            #expect(loss.contains(label), "\(run): no \(label) line")
            #expect(loss.contains("stroke-dasharray"))
            #expect(loss.contains("<title>loss plateau, steps \(first)–\(last)</title>"))
        }
        let healthy = HTMLReportRenderer().render(try Fixture.scan("healthy"))
        let loss = try #require(Fixture.captures(#"(<svg class="chart chart-loss".*?</svg>)"#, healthy).first)
        #expect(!loss.contains("ln "), "no plateau, no ln K line")
    }

    @Test("a healthy run: green verdict, no finding, every tensor collapsed among the healthy ones")
    func healthy() throws {
        let report = try Fixture.scan("healthy")
        try #require(report.findings.isEmpty)
        let html = HTMLReportRenderer().render(report)
        #expect(html.contains("<section class=\"verdict ok\">"))
        #expect(!html.contains("id=\"finding-0\""))
        #expect(!html.contains("class=\"card warning\"") && !html.contains("class=\"card error\""))
        #expect(html.contains("<details class=\"healthy\"><summary>\(report.timeline.count) tensors not named in any finding</summary>"))
    }

    @Test("the dead-unit grid shows each layer's count at each step")
    func deadUnits() throws {
        let report = try Fixture.scan("dead-relu")
        let hidden2 = try #require(report.activations.first { $0.name == "hidden2" })
        let point = try #require(hidden2.points.first { $0.step == 300 })
        let dead = try #require(point.deadUnits)
        #expect(dead >= 18)
        let html = HTMLReportRenderer().render(report)
        let grid = try #require(Fixture.captures(#"(<svg class="chart chart-dead-units".*?</svg>)"#, html).first)
        #expect(grid.contains("<title>step 300: \(dead) of 24 units dead</title>"))
        #expect(grid.contains(">hidden2<"))
        #expect(grid.contains("fill=\"#e07b00\""), "the row named by the warning is marked in the warning's colour")
    }

    @Test("gradient flow: one bar per weight matrix at the first, middle and last step with gradients")
    func gradientFlow() throws {
        let report = try Fixture.scan("vanishing-sigmoid")
        let html = HTMLReportRenderer().render(report)
        let charts = Fixture.captures(#"(<svg class="chart chart-gradient-flow".*?</svg>)"#, html)
        try #require(charts.count == 2)
        let first = try #require(report.timeline.first { $0.name == "layers.0.weight" })
        let point = try #require(first.points.first { $0.gradientNorm != nil })
        #expect(charts[0].contains("<title>layers.0.weight, step \(point.step): \(formatNumber(point.gradientNorm))</title>"))
        #expect(charts[1].contains("<title>layers.0.weight, step \(point.step): \(formatNumber(point.gradientRatio))</title>"))
        #expect(!charts[0].contains("layers.0.bias"), "biases are left out when there are matrices")
        #expect(Fixture.count(">step ", in: charts[0]) == 3)
    }

    @Test("gradient_ratio is ‖g‖/‖W‖ of the same save")
    func gradientRatio() throws {
        let report = try Fixture.scan("vanishing-sigmoid")
        let points = report.timeline.flatMap(\.points).filter { $0.gradientNorm != nil }
        try #require(!points.isEmpty)
        for point in points {
            let g = try #require(point.gradientNorm), w = try #require(point.norm)
            let ratio = try #require(point.gradientRatio)
            #expect(abs(ratio - g / w) <= 1e-12 * max(1, g / w))
        }
        #expect(try encodeJSON(report).contains("\"gradient_ratio\""))
    }

    @Test("a hostile tensor name from a file is escaped everywhere")
    func hostileNameFromFile() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("gradscope-html-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        try Fixture.writeHostileRun(in: directory.path)
        let (report, _) = try Analysis.scan(directory.path)
        try #require(report.timeline.contains { $0.name == Fixture.hostileName })
        try #require(report.findings.contains { $0.tensor == Fixture.hostileName }, "the fixture should make a finding name the tensor")
        let html = HTMLReportRenderer().render(report)
        #expect(!html.contains("<img"))
        #expect(!html.contains("<img src=x"))
        #expect(html.contains("&lt;img src=x onerror=alert(1)&gt;"))
        #expect(Fixture.count("&lt;img src=x onerror=alert(1)&gt;", in: html) >= 4, "named in the finding, the legend, its card and its charts")
    }

    @Test("source, verdict, messages, evidence and notes are escaped too")
    func hostileReportText() throws {
        var report = try Fixture.scan("frozen-layer")
        let attack = "\"'><script>alert(1)</script><svg onload=alert(2)>"
        report.source = attack
        report.verdict = attack
        report.notes = [attack]
        report.skipped = [SkippedItem(item: attack, reason: attack)]
        report.findings[0].message = attack
        report.findings[0].explanation = attack
        report.findings[0].evidence[attack] = .string(attack)
        report.findings[0].layer = attack
        report.activations[0].name = attack
        let html = HTMLReportRenderer().render(report)
        #expect(!html.lowercased().contains("<script"))
        #expect(!html.contains("<svg onload"))
        #expect(!html.contains("'><"))
        #expect(html.contains("&quot;&#39;&gt;&lt;script&gt;alert(1)&lt;/script&gt;"))
    }

    @Test("htmlEscape: the five special characters and control characters")
    func escaping() {
        #expect(htmlEscape("a<b>&\"c'") == "a&lt;b&gt;&amp;&quot;c&#39;")
        #expect(htmlEscape("x\u{0}y\u{1B}z\tq\n") == "x\u{FFFD}y\u{FFFD}z\tq\n")
        #expect(htmlEscape("ünïcödé ‖W‖") == "ünïcödé ‖W‖")
    }

    @Test("step sampling keeps the first, the last and the steps asked for, at most the limit plus those")
    func sampling() {
        let steps = Array(stride(from: 0, to: 5000, by: 10))
        let sampled = ReportLayout.sample(steps, max: 60, keep: [1230, 7])
        #expect(sampled.count <= 61)
        #expect(sampled.count >= 60)
        #expect(sampled.first == 0 && sampled.last == 4990)
        #expect(sampled.contains(1230))
        #expect(!sampled.contains(7), "a step not in the run is not invented")
        #expect(sampled == sampled.sorted())
        #expect(ReportLayout.sample([3, 5, 8], max: 60) == [3, 5, 8])
    }

    @Test("a run with hundreds of tensors and steps still gives a bounded page")
    func largeRun() throws {
        let base = try Fixture.scan("healthy")
        let template = try #require(base.timeline.first { $0.name == "2.weight" })
        let steps = Array(stride(from: 0, to: 400 * 25, by: 25))
        var report = base
        report.steps = steps
        report.loss = steps.map { LossPoint(step: $0, loss: 1.5 / Double(1 + $0 / 1000), lr: 1e-3) }
        report.timeline = (0..<300).map { index in
            var tensor = template
            tensor.name = "block.\(index).weight"
            tensor.layer = "block.\(index)"
            tensor.points = steps.enumerated().map { position, step in
                var point = template.points[position % template.points.count]
                point.step = step
                return point
            }
            return tensor
        }
        report.activations = report.activations.map { activation in
            var copy = activation
            copy.points = steps.enumerated().map { position, step in
                var point = activation.points[position % activation.points.count]
                point.step = step
                return point
            }
            return copy
        }
        report.findings = (0..<50).map { index in
            Finding(
                kind: .deadUnits, severity: index % 5 == 0 ? .error : .warning, tensor: "block.\(index * 6).weight", layer: "block.\(index * 6)",
                firstStep: steps[100 + index], lastStep: steps.last, message: "finding \(index)", evidence: ["units": .int(24)],
                explanation: "why \(index)")
        }
        let limits = HTMLReportRenderer.Limits()
        let start = Date()
        let html = HTMLReportRenderer(limits: limits).render(report)
        let seconds = Date().timeIntervalSince(start)
        #expect(html.utf8.count < 4_000_000, "\(html.utf8.count) bytes")
        #expect(seconds < 30, "\(seconds) s")
        #expect(Fixture.count("class=\"chart chart-histogram\"", in: html) <= 2 * limits.maxHeatmapTensors)
        #expect(Fixture.count("class=\"card ", in: html) == limits.maxFlaggedCards + limits.maxHealthyCards)
        #expect(html.contains("<table class=\"rest\">"), "tensors beyond the cards are listed in a table")
        #expect(html.contains("\(report.findings.count - limits.maxColouredLines) more named in findings"))
        for finding in report.findings.prefix(limits.maxFlaggedCards) { #expect(html.contains(htmlEscape(finding.message))) }
        // No line of the tensor charts has more points than the sampled steps.
        let sampled = ReportLayout.sample(
            steps, max: limits.maxSteps, keep: Set(report.findings.flatMap { [$0.firstStep, $0.lastStep].compactMap { $0 } }.prefix(24)))
        let longest = Fixture.captures(#"<polyline points="([^"]*)""#, html).map { $0.split(separator: " ").count }.max() ?? 0
        #expect(longest <= max(sampled.count, limits.maxLossPoints))
        let flow = try #require(Fixture.captures(#"(<svg class="chart chart-gradient-flow".*?</svg>)"#, html).first)
        let bars = Fixture.captures(#"<title>(block\.\d+\.weight), step "#, flow)
        #expect(bars.count > 0)
        #expect(Set(bars).count <= limits.maxFlowGroups)
        #expect(flow.contains("<title>block.0.weight,"), "tensors named in findings keep their bars")
        let rows = Fixture.captures(#"(<svg class="chart chart-dead-units".*?</svg>)"#, html).first.map { Fixture.count("<title>step ", in: $0) } ?? 0
        #expect(rows <= limits.maxGridRows * sampled.count)
    }
}
