import Foundation
import HDF5
import HDF5Writer
import Testing
import ElementTypes
import GradScopeDiagnosis
import GradScopeMeasurement
import GradScopeModel
import GradScopeSources
import GradScopeStatistics
import TestSupport

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
        #expect(report.notChecked.map(\.kind) == [.zeroGradient, .deadUnits, .poorInit, .explodingGradient,
                                                 .frozen, .collapsing, .lossPlateau, .updateRatio, .vanishingGradient])
        #expect(report.notChecked.filter { $0.reason == "needs several saved steps: use gradscope scan on the run" }.map(\.kind)
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
}
