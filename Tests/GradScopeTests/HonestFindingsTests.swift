import Foundation
import GradScopeDiagnosis
import GradScopeMeasurement
import GradScopeModel
import GradScopeSources
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
}
