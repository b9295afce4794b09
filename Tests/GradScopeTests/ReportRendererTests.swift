import Foundation
import GradScopeDiagnosis
import GradScopeRendering
import Testing

/// Reports for the renderer tests, decoded from their JSON form so that every
/// field a row shows is chosen here (non-finite numbers are written "inf", "-inf", "nan").
enum RendererFixture {
    static func decode<T: Decodable>(_ type: T.Type, _ json: String) throws -> T {
        let decoder = JSONDecoder()
        decoder.nonConformingFloatDecodingStrategy = .convertFromString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
        return try decoder.decode(type, from: Data(json.utf8))
    }

    /// A two-save scan of one tensor whose name holds a comma and a quote; the first save has no
    /// gradient or update ratio, the second a non-finite norm.
    static func scan() throws -> ScanReport {
        try decode(
            ScanReport.self,
            #"""
            {"source": "runs/a", "verdict": "ok", "steps": [0, 100], "findings": [], "skipped": [], "not_checked": [],
             "notes": [], "loss": [{"step": 0, "loss": 0.7}, {"step": 100, "loss": 0.6}], "activations": [],
             "timeline": [{"name": "enc,\"q\".weight", "layer": "enc", "shape": [2, 3], "points": [
               {"step": 0, "norm": 1.5, "zero_fraction": 0.25, "non_finite": 0},
               {"step": 100, "norm": "inf", "gradient_norm": 0.125, "update_ratio": 0.001, "zero_fraction": 0.5, "non_finite": 3}]}]}
            """#)
    }

    /// One checkpoint of two tensors: a weight with statistics, and an optimizer slot that could not be read.
    static func inspect() throws -> InspectReport {
        try decode(
            InspectReport.self,
            #"""
            {"file": "ckpt.h5", "layout": "native", "verdict": "ok", "findings": [], "not_checked": [], "skipped": [], "notes": [],
             "tensors": [
               {"name": "dense/kernel", "layer": "dense", "role": "weight", "shape": [4, 3], "dtype": "float32", "path": "/w/dense/kernel",
                "stats": {"count": 12, "finite_count": 12, "mean": 0.5, "std": 0.25, "min": -1, "max": 2, "max_abs": 2, "l2_norm": 3.5,
                          "zeros": 1, "nan": 0, "pos_inf": 0, "neg_inf": 0, "p1": -1, "p5": -0.5, "p50": 0.5, "p95": 1.5, "p99": 2,
                          "log2_histogram": {"min_exponent": -2, "counts": [1, 4, 6], "zeros": 1}}},
               {"name": "dense/kernel/m", "layer": "dense", "role": "optimizer", "slot": "m", "shape": [4, 3], "dtype": "float16",
                "path": "/opt/m", "error": "unreadable"}]}
            """#)
    }

    /// Two checkpoints sharing one tensor, with no per-step change (no steps), an undefined cosine and no second norm.
    static func diff() throws -> DiffReport {
        try decode(
            DiffReport.self,
            #"""
            {"a": "a.h5", "b": "b.h5", "added": [], "removed": [], "reshaped": [], "findings": [], "not_checked": [], "skipped": [],
             "verdict": "ok",
             "tensors": [{"name": "conv.weight", "layer": "conv", "role": "weight", "shape": [8, 3, 3, 3], "norm_a": 4, "status": "changed",
                          "drift": {"count": 216, "finite_count": 216, "relative_change": 0.02, "max_abs_delta": 0.5, "cosine_similarity": "nan",
                                    "changed": 216, "changed_fraction": 1, "sign_flips": 7, "non_finite": 0}}]}
            """#)
    }
}

@Suite("Report renderers")
struct ReportRendererTests {
    typealias Fixture = RendererFixture

    @Test("CSV of a scan: one row per tensor and step, the name quoted, missing numbers empty, non-finite ones named")
    func csvScan() throws {
        let lines = CSVRenderer().render(try Fixture.scan()).split(separator: "\n", omittingEmptySubsequences: false)
        #expect(
            lines == [
                "step,tensor,layer,norm,gradient_norm,update_ratio,zero_fraction,non_finite",
                #"0,"enc,""q"".weight",enc,1.5,,,0.25,0"#,
                #"100,"enc,""q"".weight",enc,inf,0.125,0.001,0.5,3"#,
                "",
            ])
    }

    @Test("CSV of a checkpoint: every statistic of a read tensor, empty cells for one that could not be read")
    func csvInspect() throws {
        let lines = CSVRenderer().render(try Fixture.inspect()).split(separator: "\n", omittingEmptySubsequences: false)
        #expect(
            lines == [
                "name,layer,role,slot,shape,dtype,count,mean,std,min,max,max_abs,l2_norm,zeros,nan,pos_inf,neg_inf,p1,p5,p50,p95,p99",
                "dense/kernel,dense,weight,,4x3,float32,12,0.5,0.25,-1.0,2.0,2.0,3.5,1,0,0,0,-1.0,-0.5,0.5,1.5,2.0",
                "dense/kernel/m,dense,optimizer,m,4x3,float16,,,,,,,,,,,,,,,,",
                "",
            ])
        let columns = lines[0].split(separator: ",", omittingEmptySubsequences: false).count
        #expect(lines[1].split(separator: ",", omittingEmptySubsequences: false).count == columns)
        #expect(lines[2].split(separator: ",", omittingEmptySubsequences: false).count == columns)
    }

    @Test("CSV of a diff: one row per common tensor, empty cells for missing numbers, nan for an undefined cosine")
    func csvDiff() throws {
        let lines = CSVRenderer().render(try Fixture.diff()).split(separator: "\n", omittingEmptySubsequences: false)
        #expect(
            lines == [
                "name,layer,role,shape,relative_change,per_step,max_abs_delta,cosine,changed_fraction,sign_flips,norm_a,norm_b,status",
                "conv.weight,conv,weight,8x3x3x3,0.02,,0.5,nan,1.0,7,4.0,,changed",
                "",
            ])
    }

    @Test("CSV fields are quoted only when they must be, quotes doubled; numbers as cells")
    func csvFieldsAndNumbers() {
        #expect(csvField("plain.name") == "plain.name")
        #expect(csvField(#"a,"b""#) == #""a,""b""""#)
        #expect(csvField("two\nlines") == "\"two\nlines\"")
        #expect(csvNumber(nil) == "")
        #expect(csvNumber(0.1) == "0.1")
        #expect(csvNumber(-.infinity) == "-inf")
        #expect(csvNumber(.nan) == "nan")
    }

    @Test("JSON is the contract's encoding plus a newline, non-finite numbers as strings")
    func json() throws {
        let report = try Fixture.scan()
        let text = try JSONRenderer().render(report)
        #expect(text == (try encodeJSON(report)) + "\n")
        let object = try #require(try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any])
        #expect(object["source"] as? String == "runs/a")
        let timeline = try #require(object["timeline"] as? [[String: Any]])
        let points = try #require(timeline.first?["points"] as? [[String: Any]])
        #expect(points.last?["norm"] as? String == "inf")
    }

    @Test("--format lists table, json and csv, in that order")
    func formats() {
        #expect(OutputFormat.allCases.map(\.rawValue) == ["table", "json", "csv"])
        #expect(OutputFormat(rawValue: "html") == nil)
    }

    @Test("the factory gives each format its renderer, the table with the style and explanations asked for")
    func factory() throws {
        let table = renderer(for: .table, style: Style(color: true), explain: true)
        let text = try #require(table as? TextRenderer)
        #expect(text.style.color)
        #expect(text.explain)
        let plain = try #require(renderer(for: .table, style: Style(color: false), explain: false) as? TextRenderer)
        #expect(!plain.style.color)
        #expect(!plain.explain)
        #expect(renderer(for: .json, style: Style(color: true), explain: true) is JSONRenderer)
        #expect(renderer(for: .csv, style: Style(color: true), explain: true) is CSVRenderer)

        let report = try Fixture.inspect()
        let outputs = try OutputFormat.allCases.map { try renderer(for: $0, style: Style(color: false), explain: false).render(report) }
        #expect(outputs[0].hasPrefix("gradscope inspect ckpt.h5  (native layout)\n"))
        #expect(outputs[1].hasPrefix("{\n") && outputs[1].contains(#""file" : "ckpt.h5""#))
        #expect(outputs[2].hasPrefix("name,layer,role,slot,shape,"))
    }

    @Test("the HTML page renders scans through the same protocol")
    func htmlIsAScanRenderer() throws {
        let html: any ScanReportRenderer = HTMLReportRenderer()
        let page = try html.render(try Fixture.scan())
        #expect(page.hasPrefix("<!DOCTYPE html>\n"))
        #expect(page.contains("runs/a"))
        #expect(page.hasSuffix("</html>\n"))
    }
}
