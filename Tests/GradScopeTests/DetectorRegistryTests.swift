import ElementTypes
import Foundation
import GradScopeDiagnosis
import GradScopeMeasurement
import GradScopeModel
import GradScopeSources
import GradScopeStatistics
import HDF5
import HDF5Writer
import TestSupport
import Testing

@Suite("Detector registry: which detectors inspect and diff run, and in what order they report")
struct DetectorRegistryTests {
    /// A checkpoint of weights only (no step, no gradient, no optimizer state, no loss) at `path`.
    func writeWeightsOnly(_ path: String, seed: UInt64, nan: Bool = false) throws {
        let w = try HDF5Writer(creating: path)
        var noise = SplitMix64(state: seed)
        var first = noise.normals(64 * 32, std: 0.1)
        if nan { first[3] = .nan }
        try w.write("/fc1.weight", first, shape: [64, 32])
        try w.write("/fc1.bias", noise.normals(64, std: 0.01), shape: [64])
        try w.write("/fc2.weight", noise.normals(16 * 64, std: 0.1), shape: [16, 64])
        try w.write("/fc3.weight", noise.normals(4 * 16, std: 0.1), shape: [4, 16])
    }

    @Test("inspect of a weights-only file: the not-checked kinds and their order")
    func inspectNotCheckedOrder() throws {
        let dir = try TemporaryDirectory()
        try writeWeightsOnly(dir.path("model.h5"), seed: 1)
        let report = try Analysis.inspect(dir.path("model.h5"))
        #expect(report.findings.isEmpty, "\(report.findings.map(\.message))")
        // The detectors that judge one file and lack its data, in the order inspect runs them; then the
        // run-only kinds ("needs several saved steps"); then vanishing-gradient, judged after the others.
        #expect(
            report.notChecked.map(\.kind) == [
                .zeroGradient, .deadUnits, .poorInit, .explodingGradient,
                .frozen, .collapsing, .lossPlateau, .updateRatio, .vanishingGradient,
            ])
        #expect(
            report.notChecked.filter { $0.reason == "needs several saved steps: use gradscope scan on the run" }.map(\.kind)
                == [.frozen, .collapsing, .lossPlateau, .updateRatio])
        #expect(report.verdict == "No problems found in 1 saved step(s); 9 check(s) could not run for lack of data.")

        let poisoned = dir.path("poisoned.h5")
        try writeWeightsOnly(poisoned, seed: 1, nan: true)
        #expect(try Analysis.inspect(poisoned).findings.map(\.kind) == [.nanInf])
    }

    @Test("diff of two weights-only files: the not-checked kinds and their order; no run-only or one-file-only detector runs")
    func diffNotCheckedOrder() throws {
        let dir = try TemporaryDirectory()
        try writeWeightsOnly(dir.path("model_a.h5"), seed: 1)
        try writeWeightsOnly(dir.path("model_b.h5"), seed: 2)
        let report = try Analysis.diff(dir.path("model_a.h5"), dir.path("model_b.h5"))
        #expect(report.notChecked.map(\.kind) == [.updateRatio, .explodingGradient, .zeroGradient])

        // The same file twice: nothing moved, so frozen says why it could not judge, first after nan-inf.
        let same = try Analysis.diff(dir.path("model_a.h5"), dir.path("model_a.h5"))
        #expect(same.notChecked.map(\.kind) == [.frozen, .updateRatio, .explodingGradient, .zeroGradient])

        let poisoned = dir.path("poisoned.h5")
        try writeWeightsOnly(poisoned, seed: 2, nan: true)
        #expect(try Analysis.diff(dir.path("model_a.h5"), poisoned).findings.map(\.kind).first == .nanInf)
    }

    @Test("every kind of finding has exactly one detector, and every detector runs in scan")
    func oneDetectorPerKind() {
        let kinds = allDetectors.map(\.kind)
        #expect(kinds.count == FindingKind.allCases.count)
        #expect(Set(kinds) == Set(FindingKind.allCases))
        #expect(allDetectors.allSatisfy { $0.scope.contains(.run) })
        for kind in FindingKind.allCases { #expect(DetectorRegistry.detector(for: kind)?.kind == kind) }
    }

    @Test("inspect and diff choose their detectors from the registry by scope, in the order they always ran them")
    func selectionByScope() {
        let file = DetectorRegistry.fileDetectors()
        #expect(file.diagnosed.map(\.kind) == [.nanInf, .zeroGradient, .deadUnits, .poorInit, .explodingGradient])
        #expect(file.after.map(\.kind) == [.vanishingGradient])
        #expect(Set((file.diagnosed + file.after).map(\.kind)) == Set(allDetectors.filter { $0.scope.contains(.file) }.map(\.kind)))
        #expect(
            DetectorRegistry.detectors(for: .pair).map(\.kind)
                == [.nanInf, .frozen, .collapsing, .updateRatio, .explodingGradient, .zeroGradient])
        #expect(DetectorRegistry.detectors(for: .run).map(\.kind) == allDetectors.map(\.kind))
        #expect(DetectorRegistry.needingSeveralSaves() == [.frozen, .collapsing, .lossPlateau, .updateRatio])
        // The established order only orders: every kind it names belongs to a detector of that scope.
        for (scope, kinds) in DetectorRegistry.establishedOrder {
            #expect(kinds.allSatisfy { DetectorRegistry.detector(for: $0)?.scope.contains(scope) == true }, "\(scope)")
        }
    }

    /// A detector that finds nothing, for registries made up in tests.
    struct QuietDetector<Kind: KindMarker>: Detector {
        static var kind: FindingKind { Kind.kind }
        let scope: DetectorScope
        let thresholdNames: [String] = []
        func detect(_ run: RunMeasurements, thresholds: Thresholds) -> DetectorOutcome { DetectorOutcome() }
        func phrase(for finding: Finding) -> String { "quiet" }
    }

    /// Picks the kind a ``QuietDetector`` reports.
    protocol KindMarker: Sendable { static var kind: FindingKind { get } }
    enum AsFrozen: KindMarker { static let kind = FindingKind.frozen }
    enum AsPlateau: KindMarker { static let kind = FindingKind.lossPlateau }
    enum AsNanInf: KindMarker { static let kind = FindingKind.nanInf }

    @Test("a detector added to the registry is run by every analysis of its scope, with no other list to edit")
    func newDetectorFollowsItsScope() {
        // Frozen judged from one file: inspect runs it after its diagnosis and no longer lists it as needing several saves.
        let registry: [any Detector] = [
            QuietDetector<AsNanInf>(scope: [.file, .pair, .run]), QuietDetector<AsFrozen>(scope: [.file, .run]),
            QuietDetector<AsPlateau>(scope: [.run]),
        ]
        let file = DetectorRegistry.fileDetectors(in: registry)
        #expect(file.diagnosed.map(\.kind) == [.nanInf])
        #expect(file.after.map(\.kind) == [.frozen])
        #expect(DetectorRegistry.needingSeveralSaves(in: registry) == [.lossPlateau])
        #expect(DetectorRegistry.detectors(for: .pair, in: registry).map(\.kind) == [.nanInf])
        #expect(DetectorRegistry.detectors(for: .run, in: registry).map(\.kind) == [.nanInf, .frozen, .lossPlateau])
    }

    @Test("the verdict names each kind of finding in its detector's words")
    func verdictPhrases() {
        func finding(
            _ kind: FindingKind, severity: Severity = .warning, tensor: String? = "l1.weight", layer: String? = "l1",
            first: Int? = 200, last: Int? = 900, evidence: [String: EvidenceValue] = [:]
        ) -> Finding {
            Finding(
                kind: kind, severity: severity, tensor: tensor, layer: layer, firstStep: first, lastStep: last,
                message: "", evidence: evidence, explanation: "")
        }
        let expected: [(Finding, String)] = [
            (finding(.nanInf), "NaN/Inf from step 200 (first in `l1.weight`)"),
            (finding(.nanInf, tensor: nil, layer: nil, first: nil), "NaN/Inf (first in `the loss`)"),
            (finding(.frozen), "layer `l1` frozen (never changes)"),
            (finding(.frozen, severity: .info, layer: nil), "`l1.weight` not trained (frozen)"),
            (finding(.zeroGradient), "layer `l1` gets zero gradient (dead path)"),
            (finding(.deadUnits, evidence: ["dead_units": 12, "units": 32]), "layer `l1` has 12/32 dead units since step 200"),
            (finding(.deadUnits, first: nil), "layer `l1` has dead units"),
            (finding(.collapsing), "layer `l1` collapsing toward zero output since step 200"),
            (finding(.lossPlateau, tensor: nil, layer: nil, evidence: ["classes": 2]), "loss at ln 2 from step 200 to 900"),
            (finding(.lossPlateau, tensor: nil, layer: nil, evidence: ["classes": 10]), "loss at ln 10 from step 200 to 900"),
            (finding(.lossPlateau, tensor: nil, layer: nil, first: nil, last: nil), "loss at ln K from step 0 to 0"),
            (finding(.vanishingGradient), "gradients vanish toward the input since step 200"),
            (finding(.explodingGradient), "gradients explode at step 200"),
            (finding(.updateRatio, tensor: nil, layer: nil), "the model update ratio out of the healthy band since step 200"),
            (finding(.poorInit), "layer `l1` poorly initialised"),
        ]
        for (finding, phrase) in expected { #expect(Diagnoser.phrase(finding) == phrase) }
        #expect(Set(expected.map(\.0.kind)) == Set(FindingKind.allCases))
    }

    @Test("every kind of finding has exactly one explanation entry")
    func oneExplanationPerKind() {
        let kinds = explanationCatalogue.map { $0.kind }
        #expect(kinds.count == FindingKind.allCases.count)
        #expect(Set(kinds) == Set(FindingKind.allCases))
    }

    @Test("a detector's findings depend on no threshold but those it declares")
    func declaredThresholdsSuffice() throws {
        var fixtures: [(String, SyntheticRun)] = [("healthy", SyntheticRun())]
        var collapsing = SyntheticRun()
        collapsing.weightHook = { layer, save, weights, gradient in (layer == 3 && save > 0 ? weights.map { $0 * 0.4 } : weights, gradient) }
        fixtures.append(("collapsing", collapsing))
        var plateau = SyntheticRun()
        plateau.widths = [16, 32, 32, 1]
        plateau.losses = { index, _ in index < 5 ? 0.6931 + 0.002 * Double(index % 2) : 0.6931 - 0.08 * Double(index - 4) }
        fixtures.append(("plateau", plateau))
        var vanishing = SyntheticRun()
        vanishing.widths = [16, 32, 32, 32, 32, 32, 4]
        vanishing.losses = { _, _ in 1.38 }
        vanishing.weightHook = { layer, _, weights, gradient in (weights, gradient.map { $0 * Foundation.pow(10, Double(layer - 5)) }) }
        fixtures.append(("vanishing", vanishing))
        var exploding = SyntheticRun()
        exploding.weightHook = { _, save, weights, gradient in (weights, save >= 6 ? gradient.map { $0 * 1e5 } : gradient) }
        fixtures.append(("exploding", exploding))
        var largeInit = SyntheticRun()
        largeInit.initScale = { fanIn in 40 * (2.0 / Double(fanIn)).squareRoot() }
        largeInit.frozenLayers = [1]
        fixtures.append(("large init, frozen layer", largeInit))

        for (name, fixture) in fixtures {
            let directory = try TemporaryDirectory()
            try fixture.write(to: directory.url.path)
            let (_, measurements) = try Analysis.scan(directory.url.path)
            for detector in allDetectors {
                let baseline = detector.detect(measurements, thresholds: Thresholds())
                for perturb in [
                    { (d: ThresholdDescriptor, t: Thresholds) in d.isCount ? d.value(in: t) + 1000 : d.value(in: t) * 1000 },
                    { (_: ThresholdDescriptor, _: Thresholds) in 0 },
                ] {
                    var thresholds = Thresholds()
                    for descriptor in Thresholds.table where !detector.thresholdNames.contains(descriptor.name) {
                        // As far as the threshold's range allows.
                        let value = min(max(perturb(descriptor, Thresholds()), descriptor.range.lowerBound), descriptor.range.upperBound)
                        try descriptor.set(value, in: &thresholds)
                    }
                    let outcome = detector.detect(measurements, thresholds: thresholds)
                    #expect(outcome.findings == baseline.findings, "\(detector.kind) on \(name)")
                    #expect(outcome.notChecked == baseline.notChecked, "\(detector.kind) on \(name)")
                }
            }
        }
    }
}
