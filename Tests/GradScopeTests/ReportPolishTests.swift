import Foundation
import GradScopeDiagnosis
import GradScopeModel
import TestSupport
import Testing

@testable import GradScopeRendering

/// The finish of what a person reads: the HTML page's banner, legend and axis labels, the root
/// help, and evidence that says only what it measured.
@Suite("Report polish: banner, legend, axis labels, help, evidence")
struct ReportPolishTests {
    /// One `<text>` element of an SVG chart.
    struct Label {
        var x: Double
        var y: Double
        var size: Double
        var anchor: String
        var fill: String
        var text: String
        var rotated: Bool
    }

    /// The text labels of each `<svg>` on the page, chart by chart.
    static func labels(_ html: String) -> [[Label]] {
        let svgs = html.components(separatedBy: "<svg ").dropFirst().map { $0.components(separatedBy: "</svg>")[0] }
        let pattern = try! NSRegularExpression(pattern: #"<text ([^>]*)>([^<]*)"#)
        func attribute(_ name: String, _ attributes: String) -> String? {
            guard let range = attributes.range(of: " \(name)=\"") ?? (attributes.hasPrefix("\(name)=\"") ? attributes.range(of: "\(name)=\"") : nil)
            else { return nil }
            return String(attributes[range.upperBound...].prefix { $0 != "\"" })
        }
        return svgs.map { svg in
            let text = svg as NSString
            return pattern.matches(in: svg, range: NSRange(location: 0, length: text.length)).map { match in
                let attributes = text.substring(with: match.range(at: 1))
                return Label(
                    x: Double(attribute("x", attributes) ?? "0") ?? 0, y: Double(attribute("y", attributes) ?? "0") ?? 0,
                    size: Double(attribute("font-size", attributes) ?? "11") ?? 11, anchor: attribute("text-anchor", attributes) ?? "start",
                    fill: attribute("fill", attributes) ?? "", text: text.substring(with: match.range(at: 2)),
                    rotated: attributes.contains("transform="))
            }
        }
    }

    /// The horizontal extent of a label, estimated from its length (0.6 em per character).
    static func extent(_ label: Label) -> ClosedRange<Double> {
        let width = Double(label.text.count) * label.size * 0.6
        switch label.anchor {
        case "middle": return (label.x - width / 2)...(label.x + width / 2)
        case "end": return (label.x - width)...label.x
        default: return label.x...(label.x + width)
        }
    }

    static func report(_ sample: String) throws -> (ScanReport, String) {
        let report = try HTMLReportFixture.scan(sample)
        return (report, HTMLReportRenderer().render(report))
    }

    @Test("the banner sets names in backticks as code: no raw backtick reaches the page's verdict")
    func bannerCode() throws {
        var (report, _) = try Self.report("frozen-layer")
        report.verdict = "1 problem: layer `net<2>` frozen (never changes); a stray ` tick."
        let html = HTMLReportRenderer().render(report)
        let banner = try #require(
            html.components(separatedBy: "<section class=\"verdict").dropFirst().first?.components(separatedBy: "</section>").first)
        #expect(!banner.contains("`"), "\(banner)")
        #expect(banner.contains("layer <code>net&lt;2&gt;</code> frozen"))
        for sample in ["frozen-layer", "dead-relu", "tf-keras-legacy-h5"] {
            let (real, page) = try Self.report(sample)
            #expect(real.verdict.contains("`"), "the sample's verdict names a layer")
            let verdict = try #require(page.components(separatedBy: "<h1>").dropFirst().first?.components(separatedBy: "</h1>").first)
            #expect(!verdict.contains("`") && verdict.contains("<code>"), "\(sample): \(verdict)")
        }
    }

    @Test("the tensor charts have a legend line, also for a healthy run where every line is grey")
    func legend() throws {
        let (_, healthy) = try Self.report("healthy")
        let legend = try #require(
            healthy.components(separatedBy: "<div class=\"legend\" id=\"tensor-legend\">").dropFirst().first?.components(separatedBy: "</div>").first,
            "no legend under the tensor charts")
        #expect(legend.contains("not named in any finding"))
        #expect(legend.contains("healthy update ratio"))
        let (_, frozen) = try Self.report("frozen-layer")
        let flagged = try #require(frozen.components(separatedBy: "id=\"tensor-legend\">").dropFirst().first?.components(separatedBy: "</div>").first)
        #expect(flagged.contains("net.2.weight") && flagged.contains("not named in any finding"))
    }

    @Test("one step axis writes its labels in one form: never 111k beside 103020")
    func stepAxisLabels() throws {
        #expect(stepLabels([103_020, 111_000, 120_000]) == ["103020", "111000", "120000"])
        #expect(stepLabels([0, 5000, 10_000, 15_000]) == ["0", "5k", "10k", "15k"])
        #expect(stepLabels([0, 500_000, 1_000_000, 1_500_000]) == ["0", "0.5M", "1M", "1.5M"])
        #expect(stepLabels([0, 50, 100]) == ["0", "50", "100"])
        // A histogram whose rows are saved steps, some round and some not.
        // Every other row is labelled (rows of 14 px): 103020, 111000 and the last, 119000.
        let rows = [103_020, 105_000, 111_000, 119_000].map { step in
            HistogramRow(step: step, minExponent: -4, counts: [1, 2, 3], zeroFraction: 0.1, nonFinite: 0)
        }
        let svg = HistogramHeatmap(label: "h", title: "weights", rows: rows, exponents: -10...4, scale: Palette.blues, zeroColumn: true).render()
        let texts = Self.labels(svg).flatMap { $0 }.map(\.text)
        #expect(texts.contains("103020") && texts.contains("111000") && texts.contains("119000"), "\(texts)")
        #expect(!texts.contains { $0.hasSuffix("k") }, "\(texts)")
    }

    @Test("axis labels never run into each other, and tick labels are dark and at least 12 px")
    func labelsApart() throws {
        for sample in ["ctr-plateau", "exploding-nan", "dead-relu"] {
            let (_, html) = try Self.report(sample)
            for (index, chart) in Self.labels(html).enumerated() {
                let flat = chart.filter { !$0.rotated && !$0.text.isEmpty }
                for (i, a) in flat.enumerated() {
                    for b in flat[(i + 1)...] where abs(a.y - b.y) < min(a.size, b.size) * 0.8 {
                        let ea = Self.extent(a), eb = Self.extent(b)
                        #expect(!ea.overlaps(eb), "\(sample) chart \(index): \"\(a.text)\" runs into \"\(b.text)\"")
                    }
                }
                // Tick labels (numbers and powers on an axis) are not pale or small.
                for label in flat where label.text.range(of: #"^[0-9.]+[kM]?$|^[0-9]+[⁻⁰¹²³⁴⁵⁶⁷⁸⁹]+$"#, options: .regularExpression) != nil {
                    #expect(!["#888", "#999", "#aaa"].contains(label.fill), "\(sample): \(label.text) in \(label.fill)")
                }
            }
            #expect(html.contains("font-size=\"\(svgNumber(ChartText.tickSize))\" fill=\"\(ChartText.tickColor)\""))
            #expect(ChartText.tickSize >= 12)
        }
        // The zero column's "0" and the first power of two stay apart ("02⁻¹⁰").
        let rows = (0..<5).map { HistogramRow(step: $0 * 100, minExponent: -40, counts: [5, 5, 5], zeroFraction: 0.2, nonFinite: 1) }
        for (width, exponents) in [(300.0, -40...4), (408, -40...4), (600, -40...8), (408, -10...4)] {
            let svg = HistogramHeatmap(
                label: "h", title: "t", rows: rows, exponents: exponents, scale: Palette.blues, zeroColumn: true, nonFiniteColumn: true, width: width
            ).render()
            let chart = try #require(Self.labels(svg).first)
            let zero = try #require(chart.first { $0.text == "0" && $0.anchor == "middle" })
            for label in chart where label.text.hasPrefix("2") && abs(label.y - zero.y) < 1 {
                #expect(!Self.extent(label).overlaps(Self.extent(zero)), "width \(width), \(exponents): \(label.text) runs into 0")
            }
        }
    }

    @Test("the root help keeps each line of 'Start here' whole in 80 columns")
    func rootHelp() throws {
        let help = try CommandLineTests().run(["--help"], environment: ["COLUMNS": "80"])
        let lines = help.stdout.components(separatedBy: "\n")
        let start = try #require(lines.firstIndex(of: "Start here:"))
        let block = lines[(start + 1)...].prefix { !$0.isEmpty }
        #expect(block.count == 4)
        for line in block { #expect(line.hasPrefix("  gradscope "), "wrapped: \(line)") }
        #expect(help.stdout.contains("--explain"))
    }

    @Test("exploding-gradient evidence names no growth and no null when there was no earlier save to grow from")
    func explodingEvidence() throws {
        let report = try HTMLReportFixture.scan("exploding-nan")
        let exploding = try #require(report.findings.first { $0.kind == .explodingGradient })
        #expect(!exploding.evidence.values.contains(.null), "\(exploding.evidence)")
        #expect(exploding.evidence["growth"] == nil && exploding.evidence["median_recent_total_gradient_norm"] == nil)
        #expect(exploding.evidence["gradient_to_weight_ratio"] != nil)
        // With earlier saves, the growth and its baseline are there.
        var run = SyntheticRun()
        run.weightHook = { _, save, weights, gradient in (weights, save >= 6 ? gradient.map { $0 * 1e5 } : gradient) }
        let (synthetic, _) = try run.scan()
        let jump = try #require(synthetic.findings(.explodingGradient).first)
        guard case .double(let growth)? = jump.evidence["growth"] else {
            Issue.record("no growth in \(jump.evidence)")
            return
        }
        #expect(growth >= 10)
        #expect(jump.evidence["median_recent_total_gradient_norm"] != nil && !jump.evidence.values.contains(.null))
    }
}
