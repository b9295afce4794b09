import ElementTypes
import Foundation
import GradScopeDiagnosis
import GradScopeMeasurement
import GradScopeModel
import GradScopeRendering
import GradScopeSources
import GradScopeStatistics
import TestSupport
import Testing

/// The bundled sample runs were made by real training; each must show its
/// pathology on the right tensor from the right step, and the healthy ones nothing.
@Suite("Sample runs: the pathology that is there, and nothing on healthy runs")
struct SampleRunTests {
    func scan(_ run: String) throws -> ScanReport {
        try Analysis.scan(samplePath(run)).0
    }

    @Test("healthy runs report nothing at warning or above", arguments: ["healthy", "keras-legacy-h5"])
    func healthy(run: String) throws {
        let report = try scan(run)
        #expect(report.warnings.isEmpty, "\(report.warnings.map(\.message))")
        #expect(report.steps.count >= 10)
    }

    @Test("ctr-plateau: the loss at ln 2 from step 0, the embeddings initialised far too small")
    func ctrPlateau() throws {
        let report = try scan("ctr-plateau")
        let plateau = try #require(report.findings(.lossPlateau).first)
        #expect(plateau.firstStep == 0)
        #expect((plateau.lastStep ?? 0) >= 3200)
        #expect(plateau.evidence["classes"] == .int(2))
        #expect(plateau.severity == .warning)
        #expect(report.findings(.poorInit).contains { $0.tensor == "emb.0.weight" })
        #expect(report.verdict.contains("ln 2 from step 0"))
    }

    @Test("frozen-layer: net.2 left out of the optimizer")
    func frozenLayer() throws {
        let report = try scan("frozen-layer")
        #expect(Set(report.findings(.frozen).compactMap(\.layer)) == ["net.2"])
        #expect(report.findings(.frozen).allSatisfy { $0.message.contains("not in the optimizer") })
        #expect(report.findings(.explodingGradient).isEmpty)
        #expect(report.warnings.allSatisfy { $0.kind == .frozen })
    }

    @Test("dead-relu: most units of the second hidden layer die after the learning-rate spike")
    func deadRelu() throws {
        let report = try scan("dead-relu")
        let dead = report.findings(.deadUnits)
        let gradientEvidence = try #require(dead.first { $0.tensor == "2.weight" })
        #expect(gradientEvidence.severity == .warning)
        #expect((gradientEvidence.firstStep ?? 0) >= 200)
        if case .int(let count)? = gradientEvidence.evidence["dead_units"] { #expect(count >= 12) } else { Issue.record("no dead_units") }
        #expect(!dead.contains { $0.tensor == "0.weight" })
    }

    @Test("exploding-nan: gradients explode first, NaN from step 8")
    func explodingNan() throws {
        let report = try scan("exploding-nan")
        let nan = try #require(report.findings(.nanInf).first)
        #expect(nan.firstStep == 8)
        let exploding = try #require(report.findings(.explodingGradient).first)
        #expect((exploding.firstStep ?? 99) <= 6)
        #expect(report.findings.first?.severity == .error)
    }

    @Test("vanishing-sigmoid: gradients vanish toward the input")
    func vanishingSigmoid() throws {
        let report = try scan("vanishing-sigmoid")
        let vanishing = try #require(report.findings(.vanishingGradient).first)
        #expect(vanishing.tensor == "layers.0.weight")
        #expect(vanishing.severity == .warning)
    }

    @Test("weight-decay-collapse: every weight matrix collapses toward zero")
    func weightDecayCollapse() throws {
        let report = try scan("weight-decay-collapse")
        let collapsing = Set(report.findings(.collapsing).compactMap(\.tensor))
        #expect(collapsing.isSuperset(of: ["0.weight", "2.weight", "4.weight"]))
    }

    @Test("keras-weights-h5: the trainable=False layer is noted as not trained, nothing else")
    func kerasWeights() throws {
        let report = try scan("keras-weights-h5")
        #expect(report.layout == "keras3")
        #expect(Set(report.findings(.frozen).compactMap(\.layer)) == ["hidden2"])
        #expect(report.warnings.isEmpty)
    }

    @Test("tf-keras-legacy-h5: NaN from step 8 in a Keras 2 legacy file")
    func tfKerasLegacy() throws {
        guard FileManager.default.fileExists(atPath: samplePath("tf-keras-legacy-h5")) else { return }
        let report = try scan("tf-keras-legacy-h5")
        #expect(report.layout == "keras-legacy")
        #expect(report.findings(.nanInf).first?.firstStep == 8)
    }
}
