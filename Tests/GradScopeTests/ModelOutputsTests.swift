import Foundation
import GradScopeDiagnosis
import GradScopeRendering
import TestSupport
import Testing

/// A folder holding the saves of two different models: every output shows both models' findings,
/// the CSV findings table and the HTML report as well as the JSON and the text.
@Suite("Several models in one folder, in every output")
struct ModelOutputsTests {
    /// `frozen-layer` (model 1, older files: `net.2` frozen) beside `dead-relu` (model 2, the newest
    /// files: dead units in layer `2`, the loss at ln 4); both save steps 0..600.
    static func twoModels() throws -> (ScanReport, TemporaryDirectory) {
        let directory = try TemporaryDirectory()
        try RealRunTests.copySamples([("frozen-layer", "a_"), ("dead-relu", "b_")], to: directory.url.path)
        let later = Date().addingTimeInterval(60)
        for name in try FileManager.default.contentsOfDirectory(atPath: directory.url.path) where name.hasPrefix("b_") {
            try FileManager.default.setAttributes([.modificationDate: later], ofItemAtPath: directory.path(name))
        }
        return (try Analysis.scan(directory.url.path).0, directory)
    }

    /// Splits a CSV line into its fields (RFC 4180 quoting).
    static func fields(_ line: Substring) -> [String] {
        var fields: [String] = [], field = "", quoted = false
        var characters = Array(line)[...]
        while let character = characters.popFirst() {
            if quoted {
                if character == "\"" {
                    if characters.first == "\"" {
                        field.append("\"")
                        characters.removeFirst()
                    } else {
                        quoted = false
                    }
                } else {
                    field.append(character)
                }
            } else if character == "\"" {
                quoted = true
            } else if character == "," {
                fields.append(field)
                field = ""
            } else {
                field.append(character)
            }
        }
        return fields + [field]
    }

    @Test("CSV findings table: every model's findings, a last column `model` with the model's number")
    func csvFindings() throws {
        let (report, _) = try Self.twoModels()
        let models = try #require(report.models)
        #expect(models.count == 2)
        let frozenModel = try #require(models.first { $0.findings.contains { $0.kind == .frozen } })
        let deadModel = try #require(models.first { $0.primary })
        #expect(!frozenModel.primary)
        let csv = CSVRenderer(table: .findings).render(report)
        let lines = csv.split(separator: "\n")
        #expect(lines.first == "kind,severity,tensor,layer,first_step,last_step,message,model")
        let rows = lines.dropFirst().map(Self.fields)
        #expect(rows.allSatisfy { $0.count == 8 }, "\(rows.filter { $0.count != 8 })")
        #expect(rows.count == report.allFindings.count)
        // Model by model, in their order.
        #expect(rows.map { $0[7] } == rows.map { $0[7] }.sorted())
        #expect(rows.contains { $0[0] == "frozen" && $0[3] == "net.2" && $0[7] == String(frozenModel.model) })
        #expect(rows.contains { $0[0] == "dead-units" && $0[3] == "2" && $0[7] == String(deadModel.model) })
        #expect(!rows.contains { $0[0] == "frozen" && $0[7] == String(deadModel.model) })
        for model in models {
            #expect(rows.filter { $0[7] == String(model.model) }.count == model.findings.count)
        }

        // A run of one model keeps the table it always had.
        let single = CSVRenderer(table: .findings).render(try Analysis.scan(samplePath("frozen-layer")).0)
        #expect(single.split(separator: "\n").first == "kind,severity,tensor,layer,first_step,last_step,message")
    }

    @Test("HTML report: a section for the other model with its verdict and findings; the verdict counts both")
    func htmlSections() throws {
        let (report, _) = try Self.twoModels()
        let models = try #require(report.models)
        let other = try #require(models.first { !$0.primary })
        let primary = try #require(models.first { $0.primary })
        let html = HTMLReportRenderer().render(report)
        #expect(html.contains("<section class=\"panel model\" id=\"model-\(other.model)\">"))
        #expect(!html.contains("id=\"model-\(primary.model)\""), "the report's own model is the page itself")
        #expect(html.contains("Model \(other.model) of this folder"))
        #expect(html.contains("model \(primary.model) of this folder (the newest files"))
        // The other model's verdict and each of its findings, rendered as the report's own are.
        let section = try #require(html.range(of: "id=\"model-\(other.model)\"")).lowerBound
        let tail = String(html[section...])
        let end = try #require(tail.range(of: "</section>")).lowerBound
        let body = String(tail[..<end])
        #expect(body.contains(inlineCodeHTML(other.verdict)))
        for (index, finding) in other.findings.enumerated() {
            #expect(body.contains("id=\"model-\(other.model)-finding-\(index)\""))
            #expect(body.contains(htmlEscape(finding.message)))
            #expect(body.contains(htmlEscape(finding.explanation)))
        }
        #expect(other.findings.contains { $0.kind == .frozen })
        #expect(body.contains("<span class=\"kind\">frozen</span>"))
        #expect(!body.contains("chart ↓"), "no chart of the other model to link to")
        // The page's own findings are still there, linked to their charts.
        for finding in report.findings { #expect(html.contains(htmlEscape(finding.message))) }
        #expect(html.contains("chart ↓"))
        // The verdict counts every model's warnings.
        let warnings = report.allFindings.filter { $0.severity == .warning }.count
        #expect(report.findings.filter { $0.severity == .warning }.count < warnings)
        #expect(html.contains("<span class=\"chip warning\">\(warnings) warnings</span>"))
        // A run of one model has no such section.
        let single = HTMLReportRenderer().render(try Analysis.scan(samplePath("frozen-layer")).0)
        #expect(!single.contains("class=\"panel model\""))
    }

    @Test("gradscope scan --csv-table findings and gradscope report on a folder of two models")
    func commandLine() throws {
        let binary = try #require(GradScopeBinary.path, "\(GradScopeBinary.notFoundMessage)")
        let (report, directory) = try Self.twoModels()
        let csv = try GradScopeBinary.run(binary, ["scan", directory.url.path, "--format", "csv", "--csv-table", "findings"])
        let lines = csv.stdout.split(separator: "\n")
        #expect(lines.first?.hasSuffix(",message,model") == true, "\(csv.stderr)")
        #expect(lines.count - 1 == report.allFindings.count)
        let output = try TemporaryDirectory()
        let page = output.path("report.html")
        let run = try GradScopeBinary.run(binary, ["report", directory.url.path, "-o", page, "--quiet"])
        #expect(run.stderr.isEmpty || run.status <= 1, "\(run.stderr)")
        let html = try String(contentsOfFile: page, encoding: .utf8)
        let other = try #require(report.models?.first { !$0.primary })
        #expect(html.contains("id=\"model-\(other.model)\""))
        #expect(html.contains("<span class=\"kind\">frozen</span>") && html.contains("<span class=\"kind\">dead-units</span>"))
    }
}
