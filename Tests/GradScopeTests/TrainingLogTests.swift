import Foundation
import GradScopeDiagnosis
import GradScopeModel
import GradScopeRendering
import GradScopeSources
import TestSupport
import Testing

/// A Trainer run's training log (`log_history`: every logging step's loss, learning rate and gradient
/// norm) carried to the report, its charts and the rules.
@Suite("Training logs")
struct TrainingLogTests {
    @Test("every logging step of the last save's trainer_state.json is the run's training log, in the report and its JSON")
    func logReachesTheReport() throws {
        let dir = try TemporaryDirectory()
        try TrainerFolderTests.outputDirectory(dir) { step in 0.5 + Double(step) / 1000 }
        let run = try RunLoader.load(dir.url.path)
        #expect(run.trainingLog?.map(\.step) == [5, 10, 15, 20, 25, 30])
        let (report, _) = try Analysis.scan(dir.url.path)
        let log = try #require(report.trainingLog)
        #expect(log.map(\.step) == [5, 10, 15, 20, 25, 30])
        #expect(log.map(\.loss) == [0.505, 0.51, 0.515, 0.52, 0.525, 0.53])
        #expect(log.allSatisfy { $0.gradNorm == 0.5 && abs(($0.lr ?? 0) - (0.01 - Double($0.step) * 1e-4)) < 1e-12 })
        // The per-save series is as it was: one point per save.
        #expect(report.loss.map(\.step) == [10, 20, 30])
        let json = try JSONRenderer().render(report)
        #expect(json.contains("\"training_log\""))
        #expect(json.contains("\"grad_norm\""))
        let decoded = try JSONDecoder().decode(ScanReport.self, from: Data(json.utf8))
        #expect(decoded.trainingLog == report.trainingLog)
    }

    @Test("a run without a training log has no training_log in its JSON")
    func noLogNoField() throws {
        let (report, _) = try Analysis.scan(samplePath("healthy"))
        #expect(report.trainingLog == nil)
        #expect(!(try JSONRenderer().render(report)).contains("training_log"))
        let html = HTMLReportRenderer().render(report)
        #expect(!html.contains("logged-gradient-norm"))
        #expect(!html.contains("logged loss"))
    }

    @Test("the loss-plateau rule reads the logged losses when they are denser than the saves")
    func plateauFromLog() throws {
        let dir = try TemporaryDirectory()
        // At ln 2 from the second logging step on; the first (step 5) is far above it.
        try TrainerFolderTests.outputDirectory(dir) { step in step == 5 ? 1.2 : 0.6931 }
        let (report, _) = try Analysis.scan(dir.url.path)
        let plateau = try #require(report.findings.first { $0.kind == .lossPlateau })
        #expect(plateau.firstStep == 10)
        #expect(plateau.lastStep == 30)
        #expect(plateau.severity == .error)
        #expect(plateau.evidence["logged_steps"] == .int(5))
        #expect(plateau.evidence["saves"] == .int(3))
        #expect(plateau.evidence["loss_source"] == .string("training log"))
        #expect(plateau.message.contains("5 logged losses, 3 saves"))
        #expect(plateau.explanation.contains("For 5 consecutive logging steps"))
        // The weights' evidence is still taken over the saves within it.
        #expect(plateau.evidence["output_bias"] == .string("head.bias"))
    }

    @Test("a logged gradient norm 10x the median of those before it is an exploding gradient at its logging step")
    func explodingFromLog() throws {
        let dir = try TemporaryDirectory()
        try TrainerFolderTests.outputDirectory(dir, losses: { step in 1.5 - Double(step) / 100 }, gradNorms: { step in step == 25 ? 6 : 0.5 })
        let (report, _) = try Analysis.scan(dir.url.path)
        let exploding = try #require(report.findings.first { $0.kind == .explodingGradient })
        #expect(exploding.firstStep == 25)
        #expect(exploding.severity == .warning)
        #expect(exploding.tensor == nil)
        #expect(exploding.evidence["total_gradient_norm"] == .number(6))
        #expect(exploding.evidence["median_recent_total_gradient_norm"] == .number(0.5))
        #expect(exploding.evidence["growth"] == .number(12))
        #expect(exploding.evidence["source"] == .string("training log"))
        #expect(report.verdict.contains("step 25"))
        // The report draws the logged norm, the spike's step marked.
        let html = HTMLReportRenderer().render(report)
        #expect(html.contains("logged-gradient-norm"))
        #expect(html.contains("gradients explode at step 25"))
        #expect(html.contains("logged loss"))
    }

    @Test("a smaller jump, a jump before three norms were logged, and non-finite logged norms are not an explosion")
    func noExplosionFromLog() throws {
        for norms in [{ (step: Int) in step == 25 ? 4.9 : 0.5 }, { step in step == 15 ? 50 : 0.5 }, { step in step == 25 ? .infinity : 0.5 }] {
            let dir = try TemporaryDirectory()
            try TrainerFolderTests.outputDirectory(dir, losses: { step in 1.5 - Double(step) / 100 }, gradNorms: norms)
            let (report, _) = try Analysis.scan(dir.url.path)
            #expect(!report.findings.contains { $0.kind == .explodingGradient })
            #expect(!report.notChecked.contains { $0.kind == .explodingGradient })
        }
    }

    @Test("a NaN loss logged after the spike makes it an error that lasts to that step")
    func explodingThenNaN() throws {
        let dir = try TemporaryDirectory()
        try TrainerFolderTests.outputDirectory(
            dir, losses: { step in step == 30 ? .nan : 1.5 - Double(step) / 100 }, gradNorms: { step in step == 20 ? 60 : 0.5 })
        let (report, _) = try Analysis.scan(dir.url.path)
        let exploding = try #require(report.findings.first { $0.kind == .explodingGradient })
        #expect(exploding.firstStep == 20)
        #expect(exploding.lastStep == 30)
        #expect(exploding.severity == .error)
    }
}
