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

/// What real Keras runs showed: mixed precision, recurrent units, several models in one folder,
/// epochs as steps, a first save after training began.
@Suite("Real runs: what Keras files and folders hold in practice")
struct RealRunTests {
    // MARK: mixed precision

    @Test("Keras 3 mixed precision: the inner optimizer's slots are matched, its counter is the step")
    func mixedPrecisionWeights() throws {
        let files = try FileManager.default.contentsOfDirectory(atPath: samplePath("keras-mixed-precision")).sorted()
        #expect(files.count == 5)
        for file in files {
            let checkpoint = try #require(try CheckpointLoader.load(samplePath("keras-mixed-precision") + "/" + file).first)
            let slots = checkpoint.tensors(.optimizer)
            // Two Dense layers, kernel and bias each, momentum and velocity each.
            #expect(slots.count == 8, "\(file): \(slots.map(\.label))")
            #expect(Set(slots.compactMap(\.slotName)) == ["momentum", "velocity"])
            #expect(slots.allSatisfy { $0.path.contains("/optimizer/inner_optimizer/vars/") })
            #expect(checkpoint.metadata.stepSource == .optimizerIterations)
            #expect(file.contains(String(format: "%06d", checkpoint.metadata.step ?? -1)))
            #expect(checkpoint.metadata.optimizer == "adam")
            #expect(!checkpoint.notes.contains { $0.contains("could not be matched") })
            #expect(checkpoint.notes.contains { $0.hasPrefix("mixed precision") })
            // The wrapper's copies of the slots are not analysed twice.
            #expect(checkpoint.tensors(.weight).count == 4)
            #expect(!checkpoint.skipped.contains { $0.reason.contains("matches no weight") })
        }
    }

    @Test("Keras 3 mixed precision run: healthy, nothing unmatched, the moments used")
    func mixedPrecisionScan() throws {
        let report = try Analysis.scan(samplePath("keras-mixed-precision")).0
        #expect(report.warnings.isEmpty, "\(report.warnings.map(\.message))")
        #expect(report.steps == [0, 32, 64, 96, 128])
        #expect(!report.skipped.contains { $0.reason.contains("matches no weight") })
        // With Adam's moments read, the zero-gradient and exploding-gradient rules can look.
        #expect(!report.notChecked.contains { $0.kind == .zeroGradient })
        #expect(!report.notChecked.contains { $0.kind == .explodingGradient })
    }

    @Test("Keras 3 mixed precision, whole-model saves: .keras zip and legacy .h5 read the real optimizer")
    func mixedPrecisionWholeModel() throws {
        for name in ["final.keras", "final.h5"] {
            let path = samplePath("keras-mixed-precision-final") + "/" + name
            let checkpoint = try #require(try CheckpointLoader.load(path).first)
            #expect(checkpoint.tensors(.optimizer).count == 8, "\(name)")
            // The wrapper's own iteration stays 0; the real optimizer's counts the 128 updates.
            #expect(checkpoint.metadata.step == 128, "\(name)")
            #expect(checkpoint.metadata.optimizer?.lowercased() == "adam", "\(name): \(checkpoint.metadata.optimizer ?? "nil")")
        }
    }
}
