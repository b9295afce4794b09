import ElementTypes
import Foundation
import GradScopeDiagnosis
import GradScopeMeasurement
import GradScopeModel
import GradScopeSources
import GradScopeStatistics

/// Renders a scan as one self-contained HTML page: inline SVG and CSS, no
/// script, nothing fetched from anywhere. It opens with the verdict and the
/// findings (each linked to the chart that shows its evidence), the other models of a
/// folder that holds several (each with its verdict and findings), then the loss
/// and the spread of the saved activations, gradient flow across depth, every
/// tensor over steps with its histogram evolution, and dead units. It lays out what the scan measured and
/// computes nothing of its own; every string from a file is HTML-escaped.
public struct HTMLReportRenderer: ScanReportRenderer, Sendable {
    /// Bounds that keep the page small and quick to open for runs with
    /// hundreds of tensors and steps.
    public struct Limits: Sendable {
        /// Steps shown per chart over time (line points, heat-map rows, grid columns).
        public var maxSteps = 60
        /// Loss points drawn (the loss is one line, so it may have more).
        public var maxLossPoints = 400
        /// Cards for tensors named in findings.
        public var maxFlaggedCards = 40
        /// Cards for the other tensors (collapsed in a details section).
        public var maxHealthyCards = 24
        /// Tensors whose cards carry weight and gradient heat maps.
        public var maxHeatmapTensors = 12
        /// Grey lines of healthy tensors in the overview charts.
        public var maxOverviewLines = 60
        /// Tensors named in findings that get a colour of their own in the overview charts.
        public var maxColouredLines = 20
        /// Findings listed with their explanation and evidence (the rest with their message only).
        public var maxDetailedFindings = 100
        /// Findings shown before the rest are folded into a details section.
        public var maxOpenFindings = 12
        /// Tensors in the gradient-flow bars.
        public var maxFlowGroups = 64
        /// Rows of the dead-unit grid and of the findings timeline.
        public var maxGridRows = 40

        public init() {}
    }

    public var limits: Limits

    public init(limits: Limits = Limits()) {
        self.limits = limits
    }

    /// The whole page for a scan, as one HTML document.
    public func render(_ report: ScanReport) -> String {
        let layout = ReportLayout(report: report, limits: limits)
        var html = "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        html += "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
        html += "<title>gradscope report: \(htmlEscape(report.source))</title>\n<style>\(HTMLReportRenderer.css)</style>\n</head>\n<body>\n<main>\n"
        html += header(report)
        html += verdict(report)
        html += story(report)
        html += findings(layout)
        html += otherModels(report)
        html += lossSection(layout)
        html += activationSection(layout)
        html += gradientFlowSection(layout)
        html += tensorSection(layout)
        html += unitSection(layout)
        html += footer(report)
        html += "</main>\n</body>\n</html>\n"
        return html
    }

    // MARK: - Top of the page

    package func header(_ report: ScanReport) -> String {
        var facts = ["\(report.steps.count) saved step\(report.steps.count == 1 ? "" : "s")"]
        if let first = report.steps.first, let last = report.steps.last { facts.append(first == last ? "step \(first)" : "steps \(first)–\(last)") }
        if let layout = report.layout { facts.append("\(layout) layout") }
        facts.append("\(report.timeline.count) tensor\(report.timeline.count == 1 ? "" : "s")")
        return "<header><div class=\"brand\">gradscope report</div><div class=\"source\"><code>\(htmlEscape(report.source))</code></div>"
            + "<div class=\"facts\">\(htmlEscape(facts.joined(separator: " · ")))</div></header>\n"
    }

    /// The verdict, its glyph and counts over every model's findings (a folder may hold several).
    package func verdict(_ report: ScanReport) -> String {
        let all = report.allFindings
        let worst = all.map(\.severity).max()
        let glyph: String
        switch worst {
        case .error?: glyph = "✕"
        case .warning?: glyph = "!"
        case .info?: glyph = "i"
        case nil: glyph = "✓"
        }
        var counts: [String] = []
        for severity in Severity.allCases.reversed() {
            let count = all.filter { $0.severity == severity }.count
            guard count > 0 else { continue }
            let noun = severity == .info ? "info" : severity.rawValue + (count == 1 ? "" : "s")
            counts.append("<span class=\"chip \(severity.rawValue)\">\(count) \(noun)</span>")
        }
        if all.isEmpty { counts.append("<span class=\"chip ok\">no findings</span>") }
        if !report.notChecked.isEmpty {
            counts.append(
                "<span class=\"chip muted\">\(report.notChecked.count) check\(report.notChecked.count == 1 ? "" : "s") could not run</span>")
        }
        return "<section class=\"verdict \(worst?.rawValue ?? "ok")\"><div class=\"glyph\">\(glyph)</div>"
            + "<div><h1>\(inlineCodeHTML(report.verdict))</h1><div class=\"chips\">\(counts.joined())</div></div></section>\n"
    }

    /// The story: each root cause and the chain of what it caused, as boxes joined by arrows, each
    /// with the step it began at and its severity; nothing when no finding is linked to another.
    package func story(_ report: ScanReport) -> String {
        guard !report.story.isEmpty else { return "" }
        var html = "<section class=\"panel\" id=\"story\"><h2>Story <span class=\"muted\">cause → consequences, in the order they began</span></h2>\n"
        for chain in Story.chains(report.story) {
            html += "<ol class=\"chain\">"
            for index in chain {
                let event = report.story[index]
                let worst = event.findings.compactMap { report.findings.indices.contains($0) ? report.findings[$0].severity : nil }.max()
                let step = event.firstStep.map { "step \($0)" } ?? ""
                let causes = event.causedBy.count > 1 ? " <span class=\"muted\">(from \(event.causedBy.count) causes)</span>" : ""
                html +=
                    "<li class=\"event \(worst?.rawValue ?? "info")\"><span class=\"when\">\(htmlEscape(step))</span>"
                    + "<span class=\"what\">\(inlineCodeHTML(event.summary))\(causes)</span>"
                    + "<span class=\"count\">\(event.findings.count) finding\(event.findings.count == 1 ? "" : "s")</span></li>"
            }
            html += "</ol>\n"
        }
        return html + "</section>\n"
    }

    package func findings(_ layout: ReportLayout) -> String {
        let report = layout.report
        guard !report.findings.isEmpty else { return "" }
        var title = "Findings"
        if let primary = report.models?.first(where: \.primary) {
            title += " <span class=\"muted\">model \(primary.model) of this folder (the newest files; the charts below are of it)</span>"
        }
        var html = "<section class=\"panel\" id=\"findings\"><h2>\(title)</h2>\n"
        html += findingTimeline(report.findings, steps: report.steps, anchor: ReportLayout.findingAnchor)
        html += findingList(report.findings, anchor: ReportLayout.findingAnchor, evidence: layout.evidenceAnchor)
        return html + "</section>\n"
    }

    /// When each finding begins and ends, over `steps` (nothing without steps).
    package func findingTimeline(_ findings: [Finding], steps: [Int], anchor: (Int) -> String) -> String {
        guard !steps.isEmpty else { return "" }
        let rows = findings.prefix(limits.maxGridRows).enumerated().map { index, finding in
            SpanRow(
                label: finding.kind.rawValue + (finding.tensor.map { "  " + $0 } ?? ""), first: finding.firstStep, last: finding.lastStep,
                severity: finding.severity, anchor: anchor(index))
        }
        var html = SpanTimeline(label: "When each finding begins and ends, over the run's steps", steps: steps, rows: rows).render()
        if findings.count > rows.count {
            html += "<p class=\"note\">The first \(rows.count) of \(findings.count) findings are drawn.</p>"
        }
        return html
    }

    /// The findings as a list, each with its message and, folded, its explanation and evidence;
    /// `anchor` names each item, `evidence` the chart that shows it (nil: no chart to link to).
    package func findingList(_ findings: [Finding], anchor: (Int) -> String, evidence: ((Int) -> String)?) -> String {
        var html = "<ol class=\"findings\">\n"
        for (index, finding) in findings.enumerated() {
            if index == limits.maxOpenFindings && findings.count > limits.maxOpenFindings + 2 {
                html += "</ol><details class=\"more\"><summary>\(findings.count - index) more findings</summary><ol class=\"findings\">\n"
            }
            let severity = finding.severity.rawValue
            var steps = ""
            if let first = finding.firstStep {
                let last = finding.lastStep ?? first
                steps = last != first ? "steps \(first)–\(last)" : "step \(first)"
            }
            html += "<li class=\"finding \(severity)\" id=\"\(anchor(index))\">"
            html +=
                evidence.map { "<a class=\"head\" href=\"#\($0(index))\">" } ?? "<div class=\"head\">"
            html += "<span class=\"badge \(severity)\">\(severity.uppercased())</span>"
            html += "<span class=\"kind\">\(htmlEscape(finding.kind.rawValue))</span>"
            if let tensor = finding.tensor { html += "<code class=\"tensor\">\(htmlEscape(tensor))</code>" }
            if let layer = finding.layer, layer != finding.tensor { html += "<span class=\"layer\">layer <code>\(htmlEscape(layer))</code></span>" }
            if !steps.isEmpty { html += "<span class=\"steps\">\(steps)</span>" }
            html += evidence == nil ? "</div>" : "<span class=\"jump\">chart ↓</span></a>"
            html += "<p class=\"message\">\(htmlEscape(finding.message))</p>"
            if index < limits.maxDetailedFindings {
                html += "<details><summary>what it means, what to try, the numbers</summary><p>\(htmlEscape(finding.explanation))</p>"
                html += evidenceTable(finding.evidence) + "</details>"
            }
            html += "</li>\n"
        }
        html += "</ol>"
        if findings.count > limits.maxOpenFindings + 2 { html += "</details>" }
        return html
    }

    /// The other models of a folder that holds several, a section each: its saves and files, its own
    /// verdict and findings (the charts of the page are of the report's own model, so nothing links to one).
    package func otherModels(_ report: ScanReport) -> String {
        var html = ""
        for model in (report.models ?? []).sorted(by: { $0.model < $1.model }) where !model.primary {
            let anchor = { (index: Int) in "model-\(model.model)-finding-\(index)" }
            var facts = ["\(model.steps.count) save\(model.steps.count == 1 ? "" : "s")"]
            if let first = model.steps.first, let last = model.steps.last { facts.append(first == last ? "step \(first)" : "steps \(first)–\(last)") }
            facts.append("\(model.weights) weight tensor\(model.weights == 1 ? "" : "s")")
            let files = model.stepFiles.map { ($0.file as NSString).lastPathComponent }
            if let first = files.first { facts.append(files.count > 1 ? "files \(first) … \(files.last ?? "")" : "file \(first)") }
            let worst = model.findings.map(\.severity).max()
            html += "<section class=\"panel model\" id=\"model-\(model.model)\"><h2>Model \(model.model) of this folder "
            html += "<span class=\"muted\">\(htmlEscape(facts.joined(separator: " · ")))</span></h2>\n"
            html += "<p class=\"model-verdict \(worst?.rawValue ?? "ok")\">\(inlineCodeHTML(model.verdict))</p>\n"
            if model.findings.isEmpty {
                html += "<p class=\"note\">No findings.</p>"
            } else {
                html += findingTimeline(model.findings, steps: model.steps, anchor: anchor)
                html += findingList(model.findings, anchor: anchor, evidence: nil)
            }
            if !model.notChecked.isEmpty {
                html += "<p class=\"note\">Not checked: "
                html += model.notChecked.map { "<b>\(htmlEscape($0.kind.rawValue))</b> (\(htmlEscape($0.reason)))" }.joined(separator: "; ") + "</p>"
            }
            html += "</section>\n"
        }
        return html
    }

    package func evidenceTable(_ evidence: [String: EvidenceValue]) -> String {
        guard !evidence.isEmpty else { return "" }
        let describer = TextRenderer(style: Style(color: false), explain: false)
        let rows = evidence.sorted { $0.key < $1.key }.map { key, value in
            "<tr><th>\(htmlEscape(key))</th><td>\(htmlEscape(describer.describe(value)))</td></tr>"
        }
        return "<table class=\"evidence\">\(rows.joined())</table>"
    }

    // MARK: - Bottom of the page

    package func footer(_ report: ScanReport) -> String {
        var html = ""
        if !report.notChecked.isEmpty {
            html +=
                "<section class=\"panel\" id=\"not-checked\"><h2>Not checked</h2><p class=\"note\">These detectors lacked the data they need, so the report says nothing about them.</p><ul>"
            html += report.notChecked.map { "<li><b>\(htmlEscape($0.kind.rawValue))</b>: \(htmlEscape($0.reason))</li>" }.joined()
            html += "</ul></section>\n"
        }
        if !report.skipped.isEmpty {
            html +=
                "<section class=\"panel\" id=\"skipped\"><details><summary>Skipped: \(report.skipped.count) file(s) or tensor(s) not analysed</summary><ul>"
            html += report.skipped.prefix(200).map { "<li><code>\(htmlEscape($0.item))</code>: \(htmlEscape($0.reason))</li>" }.joined()
            if report.skipped.count > 200 { html += "<li>… and \(report.skipped.count - 200) more</li>" }
            html += "</ul></details></section>\n"
        }
        if !report.notes.isEmpty {
            html += "<section class=\"panel\" id=\"notes\"><details><summary>Notes (\(report.notes.count))</summary><ul>"
            html += report.notes.prefix(100).map { "<li>\(htmlEscape($0))</li>" }.joined()
            html += "</ul></details></section>\n"
        }
        html +=
            "<footer>gradscope \(htmlEscape(GradScopeVersion.string)) · made from <code>\(htmlEscape(report.source))</code> · the same numbers as <code>gradscope scan --format json</code></footer>\n"
        return html
    }

    // MARK: - Style

    package static let css = """
        *{box-sizing:border-box}
        body{margin:0;background:#f3f4f6;color:#222;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif}
        main{max-width:1300px;margin:0 auto;padding:18px 24px 40px}
        code{font:12.5px ui-monospace,SFMono-Regular,Menlo,Consolas,"DejaVu Sans Mono",monospace;background:#eef0f3;padding:1px 4px;border-radius:3px}
        header{display:flex;flex-wrap:wrap;gap:6px 16px;align-items:baseline;margin-bottom:12px}
        .brand{font-weight:700;font-size:15px;color:#555}.facts{color:#777}
        .verdict{display:flex;gap:18px;align-items:center;padding:18px 22px;border-radius:10px;margin-bottom:16px;color:#fff}
        .verdict h1{margin:0 0 8px;font-size:21px;line-height:1.3;font-weight:650}
        .verdict h1 code{font-size:.9em;font-weight:600;background:rgba(255,255,255,.22);color:#fff;padding:0 5px}
        .verdict .glyph{flex:0 0 58px;height:58px;border-radius:50%;background:rgba(255,255,255,.22);font-size:34px;font-weight:800;display:flex;align-items:center;justify-content:center}
        .verdict.error{background:#c62828}.verdict.warning{background:#d97200}.verdict.info{background:#1f6fb5}.verdict.ok{background:#2e7d32}
        .chips{display:flex;flex-wrap:wrap;gap:6px}
        .chip{background:rgba(255,255,255,.92);color:#333;border-radius:12px;padding:1px 10px;font-size:12.5px;font-weight:600}
        ol.chain{list-style:none;margin:6px 0 12px;padding:0;display:flex;flex-wrap:wrap;align-items:stretch;gap:4px}
        ol.chain li.event{display:flex;flex-direction:column;gap:2px;background:#fff;border:1px solid #ddd;border-left:4px solid #1f6fb5;border-radius:6px;padding:6px 10px;max-width:300px}
        ol.chain li.event.error{border-left-color:#c62828}ol.chain li.event.warning{border-left-color:#b35f00}
        ol.chain li.event+li.event::before{content:"→";position:relative;left:-22px;top:18px;width:0;color:#888;font-size:16px}
        ol.chain li.event+li.event{margin-left:18px}
        h2 .muted{color:#888;font-weight:400;font-size:13px}
        ol.chain .when{font-size:12px;color:#666}ol.chain .count{font-size:11.5px;color:#888}
        .chip.error{color:#c62828}.chip.warning{color:#b35f00}.chip.info{color:#1f6fb5}.chip.ok{color:#2e7d32}.chip.muted{color:#666;font-weight:500}
        .model-verdict{font-weight:600;border-left:5px solid #2e7d32;padding:4px 10px;margin:4px 0 10px}
        .model-verdict.error{border-color:#c62828}.model-verdict.warning{border-color:#e07b00}.model-verdict.info{border-color:#1f6fb5}
        .panel{background:#fff;border-radius:10px;padding:14px 18px;margin-bottom:16px;box-shadow:0 1px 3px rgba(0,0,0,.08)}
        h2{margin:0 0 10px;font-size:17px}h3{margin:0 0 8px;font-size:15px}
        .note{color:#666;margin:4px 0 10px}
        ol.findings{list-style:none;margin:10px 0 0;padding:0}
        .finding{border-left:5px solid #999;padding:6px 12px;margin:8px 0;background:#fafafa;border-radius:0 6px 6px 0}
        .finding.error{border-color:#c62828;background:#fdf1f0}.finding.warning{border-color:#e07b00;background:#fff7ec}.finding.info{border-color:#1f6fb5;background:#f0f6fc}
        .finding .head{display:flex;flex-wrap:wrap;gap:6px 10px;align-items:center;color:inherit;text-decoration:none}
        .finding .head:hover .jump{text-decoration:underline}
        .finding .message{margin:4px 0}
        .finding .kind{font-weight:700}.finding .steps{color:#555}.finding .layer{color:#666}
        .finding .jump{margin-left:auto;color:#1f6fb5;font-size:12.5px}
        .finding details{color:#444;font-size:13px}.finding summary{cursor:pointer;color:#666}
        .badge{font-size:11px;font-weight:700;letter-spacing:.04em;color:#fff;border-radius:4px;padding:1px 6px;background:#888}
        .badge.error{background:#c62828}.badge.warning{background:#e07b00}.badge.info{background:#1f6fb5}
        table.evidence{border-collapse:collapse;margin:6px 0;font-size:12.5px}
        table.evidence th{text-align:left;font-weight:500;color:#666;padding:1px 14px 1px 0}table.evidence td{font-family:ui-monospace,Menlo,Consolas,monospace}
        svg.chart{display:block;width:100%;height:auto;font-family:system-ui,-apple-system,"Segoe UI",Roboto,Arial,sans-serif}
        svg.chart a:hover text{text-decoration:underline}
        .row3,.row2{display:grid;gap:14px;align-items:start;margin:6px 0}
        .row3{grid-template-columns:repeat(3,minmax(0,1fr))}.row2{grid-template-columns:repeat(2,minmax(0,1fr))}
        @media (max-width:900px){.row3,.row2{grid-template-columns:minmax(0,1fr)}}
        .legend{display:flex;flex-wrap:wrap;gap:4px 14px;margin:6px 0 2px;font-size:12.5px}
        .legend a{color:inherit;text-decoration:none}.legend a:hover{text-decoration:underline}
        .swatch{display:inline-block;width:14px;height:4px;border-radius:2px;vertical-align:middle;margin-right:5px}
        .card{border:1px solid #e3e3e3;border-left:5px solid #9ccc9c;border-radius:6px;padding:10px 12px;margin:12px 0;background:#fff}
        .card.error{border-left-color:#c62828}.card.warning{border-left-color:#e07b00}.card.info{border-left-color:#1f6fb5}
        .card h3{display:flex;flex-wrap:wrap;gap:6px 10px;align-items:center}.card .meta{color:#777;font-weight:400;font-size:13px}
        .card .back{margin-left:auto;font-size:12.5px;font-weight:400}
        details.healthy>summary,details.more>summary{cursor:pointer;font-weight:600;padding:6px 0}
        table.rest{border-collapse:collapse;font-size:12.5px;margin-top:8px}table.rest td,table.rest th{padding:2px 12px 2px 0;text-align:left}
        footer{color:#888;font-size:12.5px;margin-top:20px}
        a{color:#1f6fb5}
        """
}
