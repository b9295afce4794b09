import Foundation
import GradScopeDiagnosis
import GradScopeModel
import GradScopeRendering
import TestSupport
import Testing

/// Findings linked cause -> consequences in the order they began; every symptom stays listed.
@Suite("One story per run: causes, consequences and the headline")
struct StoryTests {
    func finding(
        _ kind: FindingKind, _ layer: String?, _ step: Int, severity: Severity = .warning, evidence: [String: EvidenceValue] = [:]
    ) -> Finding {
        Finding(
            kind: kind, severity: severity, tensor: layer.map { "\($0).weight" }, layer: layer, firstStep: step, lastStep: 300,
            message: "", evidence: evidence, explanation: "")
    }

    @Test("an explosion, then a silent layer, then zero gradients and the loss at ln 2: one chain, root first")
    func chain() {
        let findings = [
            finding(.explodingGradient, "0", 5),
            finding(.updateRatio, "2", 5, evidence: ["per_step_lower_bound": 3.0]),
            finding(.collapsing, "2", 10, evidence: ["zero_output": true, "next_layer": "4", "last_output_step": 5]),
            finding(.zeroGradient, "0", 10, evidence: ["last_nonzero_step": 5]),
            finding(.zeroGradient, "4", 10, evidence: ["last_nonzero_step": 5]),
            finding(.lossPlateau, nil, 20, severity: .error),
        ]
        let linked = Story.link(findings, layers: ["0", "2", "4"])
        #expect(linked[0].causedBy == nil)
        #expect(linked[1].causedBy == [0])
        // The nearest root of what happened at step 5: the explosion, not the update it made.
        #expect(linked[2].causedBy == [0])
        #expect(linked[3].causedBy == [2] && linked[4].causedBy == [2])
        #expect(linked[5].causedBy == [2])
        let events = Story.events(linked, phrase: Diagnoser.phrase)
        #expect(events.map(\.firstStep) == [5, 5, 10, 10, 20])
        #expect(events[3].findings == [3, 4])
        #expect(events[3].summary.hasSuffix(", and layer `4` too"))
        let verdict = Story.verdict(events) ?? ""
        #expect(verdict.hasPrefix("5 problems: gradients explode at step 5 → "))
        #expect(verdict.contains("→ layer `2` outputs zero for every input since step 10 →"))
        #expect(verdict.contains("→ loss at ln") && verdict.hasSuffix("from step 20 to 300."))
    }

    @Test("onset order: nothing is caused by what began after it, and a zero output cannot cause layers after the next")
    func ordering() {
        let findings = [
            finding(.collapsing, "2", 10, evidence: ["zero_output": true, "next_layer": "4", "last_output_step": 5]),
            finding(.explodingGradient, "0", 30),
            finding(.zeroGradient, "6", 10, evidence: ["last_nonzero_step": 5]),
            finding(.deadUnits, "2", 8, evidence: ["death_steps": .list([5])]),
        ]
        let linked = Story.link(findings, layers: ["0", "2", "4", "6"])
        // The explosion at 30 causes nothing at 10; layer 6 lies after layer 4, the next layer.
        #expect(linked.allSatisfy { $0.causedBy == nil })
        #expect(Story.events(linked, phrase: Diagnoser.phrase).isEmpty)
        // A layer silent at every save with gradients was silent from the start: it causes a plateau from step 0.
        let fromStart = Story.link(
            [finding(.lossPlateau, nil, 0), finding(.collapsing, "2", 20, evidence: ["zero_output": true, "next_layer": "4"])],
            layers: ["0", "2", "4"])
        #expect(fromStart[0].causedBy == [1])
        // Notes take no part.
        let notes = Story.link([finding(.poorInit, "0", 0, severity: .info), finding(.lossPlateau, nil, 0)], layers: ["0"])
        #expect(notes.allSatisfy { $0.causedBy == nil })
    }

    @Test("explode-then-dead (real training): the headline names the explosion first; JSON links and text story")
    func sample() throws {
        let (report, _) = try Analysis.scan(samplePath("explode-then-dead"))
        #expect(report.verdict.hasPrefix("5 problems: gradients explode at step 60 → "))
        #expect(report.story.first?.summary == "gradients explode at step 60")
        #expect(report.story.first?.causedBy == [])
        // Every symptom finding stays listed; each consequence names its cause.
        #expect(report.findings.count == 11)
        let zero = report.findings.filter { $0.kind == .zeroGradient }
        let silent = try #require(report.findings.firstIndex { $0.evidence["zero_output"] == .bool(true) })
        #expect(zero.allSatisfy { $0.causedBy == [silent] })
        let json = try JSONRenderer().render(report)
        #expect(json.contains("\"caused_by\""))
        #expect(json.contains("\"story\""))
        let text = TextRenderer(style: Style(color: false), explain: false, width: 200).render(report)
        #expect(text.contains("Story (cause → consequences, in the order they began):"))
        #expect(text.contains("step 100      → layer `0` gets no gradient since step 100 (dead path), and layers `2` and `4` too"))
        let html = HTMLReportRenderer().render(report)
        #expect(html.contains("<ol class=\"chain\">"))
        // --select keeps the links among what it shows.
        let selected = try Analysis.scan(samplePath("explode-then-dead"), select: try NSRegularExpression(pattern: "^0\\.")).0
        #expect(selected.findings.allSatisfy { ($0.causedBy ?? []).allSatisfy { selected.findings.indices.contains($0) } })
    }

    @Test("healthy and unlinked runs keep their headline and have no story")
    func unlinked() throws {
        let healthy = try Analysis.scan(samplePath("healthy")).0
        #expect(healthy.story.isEmpty)
        #expect(try !JSONRenderer().render(healthy).contains("\"caused_by\""))
        let frozen = try Analysis.scan(samplePath("frozen-layer")).0
        #expect(frozen.story.isEmpty)
        #expect(frozen.verdict == "1 problem: layer `net.2` frozen (never changes).")
    }
}
