import Foundation
import GradScopeDiagnosis
import GradScopeMeasurement
import GradScopeModel
import GradScopeSources
import HDF5Writer
import TestSupport
import Testing

/// What gradscope concludes must follow from what was saved: NaN is not zero, a filter
/// changes the view and not the diagnosis, a diff judges only what two saves of one model
/// allow, and a finding is worded for the saves it rests on.
@Suite("Honest findings: only what the saves show")
struct HonestFindingsTests {
    @Test("a tensor full of Inf or NaN has no zero units: inspect of exploding-nan at step 8")
    func nonFiniteUnitsAreNotZero() throws {
        let report = try Analysis.inspect(samplePath("exploding-nan") + "/step_000008.h5")
        let nonFinite = report.tensors.filter { tensor in
            guard let stats = tensor.stats else { return false }
            return stats.finiteCount == 0 && stats.count > 0
        }
        #expect(!nonFinite.isEmpty, "the sample holds no tensor without a finite value")
        for tensor in nonFinite {
            #expect((tensor.deadUnits ?? 0) == 0, "\(tensor.name) (\(tensor.role)): \(tensor.deadUnits ?? -1) zero units")
        }
        #expect(!report.findings.contains { $0.kind == .deadUnits })
    }

    @Test("diff --select reports the same steps as diff without it")
    func diffSelectKeepsTheSteps() throws {
        let a = samplePath("healthy") + "/step_000060.h5", b = samplePath("healthy") + "/step_000120.h5"
        let whole = try Analysis.diff(a, b)
        let selected = try Analysis.diff(a, b, select: try NSRegularExpression(pattern: "0\\.weight"))
        #expect(whole.stepA == 60 && whole.stepB == 120)
        #expect(selected.stepA == whole.stepA && selected.stepB == whole.stepB)
        #expect(!selected.tensors.isEmpty && selected.tensors.allSatisfy { $0.name.contains("0.weight") })
    }

    @Test("--select narrows the view of scan, not its diagnosis: frozen-layer, vanishing-sigmoid, a pattern that matches nothing")
    func selectChangesTheViewOnly() throws {
        let frozen = try Analysis.scan(samplePath("frozen-layer"), select: try NSRegularExpression(pattern: "net.2.weight")).0
        #expect(frozen.findings.contains { $0.kind == .frozen && $0.tensor == "net.2.weight" })
        #expect(frozen.findings.allSatisfy { $0.tensor.map { $0.contains("net.2.weight") } ?? true })
        #expect(frozen.timeline.map(\.name) == ["net.2.weight"])
        #expect(frozen.verdict.contains("frozen"))
        #expect(frozen.notes.contains { $0.contains("--select") })

        let whole = try Analysis.scan(samplePath("vanishing-sigmoid")).0
        let vanishing = try Analysis.scan(samplePath("vanishing-sigmoid"), select: try NSRegularExpression(pattern: "layers\\.0")).0
        #expect(whole.findings.contains { $0.kind == .vanishingGradient })
        #expect(vanishing.findings.contains { $0.kind == .vanishingGradient })
        #expect(vanishing.notChecked.map(\.kind) == whole.notChecked.map(\.kind))

        let none = try Analysis.scan(samplePath("healthy"), select: try NSRegularExpression(pattern: "nomatch")).0
        let reference = try Analysis.scan(samplePath("healthy")).0
        #expect(none.verdict.contains("No tensor matches"))
        #expect(none.timeline.isEmpty)
        #expect(none.notChecked.map(\.reason) == reference.notChecked.map(\.reason))
        #expect(!none.notChecked.contains { $0.reason.contains("no gradients were saved") })
        #expect(none.notes.contains { $0.contains("matches none") })
    }

    @Test("--select narrows the view of inspect, not its diagnosis")
    func inspectSelectChangesTheViewOnly() throws {
        let file = samplePath("exploding-nan") + "/step_000008.h5"
        let whole = try Analysis.inspect(file)
        let selected = try Analysis.inspect(file, select: try NSRegularExpression(pattern: "nomatch"))
        #expect(selected.tensors.isEmpty)
        #expect(selected.notChecked.map(\.reason) == whole.notChecked.map(\.reason))
        #expect(selected.verdict.contains("No tensor matches"))
    }

    /// Writes one native save at `step` holding `tensors` (name, shape, standard deviation) as weights.
    func writeSave(_ path: String, step: Int?, seed: UInt64, tensors: [(String, [Int], Double)]) throws {
        let writer = try HDF5Writer(creating: path)
        var noise = SplitMix64(state: seed)
        try writer.setAttribute("format", .string("gradscope/1", .variableUTF8), at: "/")
        if let step { try writer.setAttribute("step", .int(Int64(step)), at: "/") }
        try writer.setAttribute("framework", .string("pytorch", .variableUTF8), at: "/")
        for (name, shape, std) in tensors {
            try writer.write("/weights/\(name)", noise.normals(shape.reduce(1, *), std: std), shape: shape)
        }
        writer.close()
    }

    @Test("diff with B older than A: said, and measured from the older save; no per-step rate made up for equal steps")
    func diffInStepOrder() throws {
        let healthy = samplePath("healthy")
        let backwards = try Analysis.diff(healthy + "/step_000600.h5", healthy + "/step_000060.h5")
        #expect(backwards.stepA == 60 && backwards.stepB == 600)
        #expect(backwards.notes.contains { $0.contains("older than A") })
        #expect(!backwards.findings.contains { $0.kind == .updateRatio }, "\(backwards.findings.map(\.message))")
        let forwards = try Analysis.diff(healthy + "/step_000060.h5", healthy + "/step_000600.h5")
        #expect(backwards.findings.map(\.kind) == forwards.findings.map(\.kind))

        let same = try Analysis.diff(healthy + "/step_000060.h5", healthy + "/step_000060.h5")
        #expect(same.stepA == 60 && same.stepB == 60)
        #expect(same.tensors.allSatisfy { $0.perStep == nil })
        #expect(same.notChecked.contains { $0.kind == .updateRatio })

        let dir = try TemporaryDirectory()
        let model: [(String, [Int], Double)] = [("fc1.weight", [64, 32], 0.1), ("fc2.weight", [16, 64], 0.1), ("fc3.weight", [4, 16], 0.1)]
        try writeSave(dir.path("a.h5"), step: nil, seed: 1, tensors: model)
        try writeSave(dir.path("b.h5"), step: nil, seed: 2, tensors: model)
        let unknown = try Analysis.diff(dir.path("a.h5"), dir.path("b.h5"))
        #expect(unknown.stepA == nil && unknown.stepB == nil)
        #expect(unknown.tensors.allSatisfy { $0.perStep == nil })
    }

    @Test("diff of two different models judges nothing; a reshaped tensor is listed, never judged")
    func diffOfDifferentModels() throws {
        let dir = try TemporaryDirectory()
        let model: [(String, [Int], Double)] = [
            ("fc1.weight", [64, 32], 0.1), ("fc1.bias", [64], 0.01), ("fc2.weight", [16, 64], 0.1), ("fc3.weight", [4, 16], 0.1),
        ]
        try writeSave(dir.path("a.h5"), step: 100, seed: 1, tensors: model)
        // Another model: same names, most shapes different, and far larger updates than a step allows.
        try writeSave(
            dir.path("wider.h5"), step: 101, seed: 2,
            tensors: [("fc1.weight", [128, 32], 1), ("fc1.bias", [128], 1), ("fc2.weight", [16, 128], 1), ("fc3.weight", [4, 16], 1)])
        let wider = try Analysis.diff(dir.path("a.h5"), dir.path("wider.h5"))
        #expect(wider.findings.isEmpty, "\(wider.findings.map(\.message))")
        #expect(wider.notes.contains { $0.contains("different models") })
        try writeSave(dir.path("other.h5"), step: 101, seed: 3, tensors: [("enc.weight", [8, 8], 1), ("dec.weight", [8, 8], 1)])
        let other = try Analysis.diff(dir.path("a.h5"), dir.path("other.h5"))
        #expect(other.findings.isEmpty && other.tensors.isEmpty)
        #expect(other.notes.contains { $0.contains("share no tensor") })

        // fc1.weight transposed and a thousand times smaller: a reshaped tensor, not a collapse.
        try writeSave(
            dir.path("b.h5"), step: 200, seed: 4,
            tensors: [("fc1.weight", [32, 64], 1e-4), ("fc1.bias", [64], 0.01), ("fc2.weight", [16, 64], 0.1), ("fc3.weight", [4, 16], 0.1)])
        let reshaped = try Analysis.diff(dir.path("a.h5"), dir.path("b.h5"))
        #expect(reshaped.reshaped.count == 1)
        #expect(!reshaped.findings.contains { $0.tensor == "fc1.weight" }, "\(reshaped.findings.map(\.message))")
        #expect(!reshaped.tensors.contains { $0.name == "fc1.weight" })

        // The first save of a run holds weights only, a later one gradients and optimizer state too:
        // one model, judged (its frozen layer is found).
        let first = try Analysis.diff(samplePath("frozen-layer/step_000000.h5"), samplePath("frozen-layer/step_000050.h5"))
        #expect(!first.notes.contains { $0.contains("different models") || $0.contains("share no tensor") }, "\(first.notes)")
        #expect(first.tensors.count >= 6 && first.findings.contains { $0.kind == .frozen }, "\(first.findings.map(\.message))")
    }

    @Test("inspect of one save words its findings for one save: no range of steps, no dead units under No problems")
    func oneSaveWording() throws {
        let report = try Analysis.inspect(samplePath("dead-relu") + "/step_000300.h5")
        let dead = report.findings.filter { $0.kind == .deadUnits }
        #expect(!dead.isEmpty)
        for finding in dead {
            #expect(!finding.message.contains("from step"), "\(finding.message)")
            #expect(!finding.message.contains("are dead"), "\(finding.message)")
            #expect(!finding.explanation.contains("steps 300–300"), "\(finding.explanation)")
        }
        if report.verdict.hasPrefix("No problems found") {
            #expect(!report.verdict.contains("dead units"), "\(report.verdict)")
        }
    }

    @Test("dead-relu: a layer's zero gradients and the dead ReLU after it are one layer, counted once in the verdict")
    func activationBelongsToItsLayer() throws {
        let report = try Analysis.scan(samplePath("dead-relu")).0
        let dead = report.findings.filter { $0.kind == .deadUnits }
        #expect(dead.contains { $0.tensor == "hidden2" })
        #expect(Set(dead.compactMap(\.layer)) == ["2"], "\(dead.map { ($0.tensor ?? "", $0.layer ?? "") })")
        #expect(!report.verdict.contains("layer `3`"), "\(report.verdict)")
        #expect(report.verdict.hasPrefix("2 problems"), "\(report.verdict)")
    }

    @Test(
        "findings are ordered by onset, NaN/Inf first at its step, then by severity",
        arguments: [
            "tf-keras-legacy-h5", "exploding-nan", "dead-relu", "ctr-plateau", "vanishing-sigmoid", "weight-decay-collapse",
        ])
    func findingsInOrderOfOnset(run: String) throws {
        let findings = try Analysis.scan(samplePath(run)).0.findings
        for (a, b) in zip(findings, findings.dropFirst()) {
            let stepA = a.firstStep ?? Int.max, stepB = b.firstStep ?? Int.max
            #expect(stepA <= stepB, "\(a.kind) at \(stepA) listed before \(b.kind) at \(stepB)")
            if stepA == stepB {
                #expect(!(b.kind == .nanInf && a.kind != .nanInf), "\(a.kind) before nan-inf at step \(stepA)")
                if (a.kind == .nanInf) == (b.kind == .nanInf) { #expect(a.severity >= b.severity) }
            }
        }
    }

    @Test("a plateau's evidence is taken over the plateau and names the saved learning rate: ctr-plateau's warm-up, dead-relu's jump")
    func plateauEvidenceUsesWhatWasSaved() throws {
        let ctr = try #require(try Analysis.scan(samplePath("ctr-plateau")).0.findings.first { $0.kind == .lossPlateau })
        #expect(ctr.evidence["logits_std"] == nil)
        if case .int(let saves)? = ctr.evidence["logits_saves"] { #expect(saves >= 3) } else { Issue.record("no logits_saves") }
        if case .double(let low)? = ctr.evidence["logits_std_min"], case .double(let high)? = ctr.evidence["logits_std_max"] {
            #expect(low < high)
        } else {
            Issue.record("no logits spread over the plateau: \(ctr.evidence)")
        }
        if case .double(let lr)? = ctr.evidence["lr_min"] { #expect(lr < 1e-7) } else { Issue.record("no lr_min") }
        #expect(ctr.explanation.contains("warm-up"))
        #expect(!ctr.explanation.contains("the logits logits"))

        let relu = try #require(try Analysis.scan(samplePath("dead-relu")).0.findings.first { $0.kind == .lossPlateau })
        #expect(relu.evidence["lr_spike"] == .double(0.2))
        #expect(relu.evidence["lr_spike_step"] == .int(200))
        #expect(relu.explanation.contains("0.2 at step 200"))
        #expect(!relu.explanation.contains("learning rate too small"), "\(relu.explanation)")
        let dead = try #require(try Analysis.scan(samplePath("dead-relu")).0.findings.first { $0.tensor == "2.weight" })
        #expect(dead.evidence["lr_spike"] == .double(0.2))
        #expect(dead.explanation.contains("0.2 at step 200"))
    }
}
