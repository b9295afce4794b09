import Foundation
import GradScopeDiagnosis
import GradScopeMeasurement
import GradScopeModel
import GradScopeSources
import HDF5Writer
import TestSupport
import Testing

/// A layer whose saved activations are exactly zero in every unit, for every example of the saved
/// batch, is a layer that outputs zero (`collapsing`), not `dead-units` with all its units; some
/// units silent stays `dead-units`.
@Suite("Collapsed layers from saved activations")
struct SilentActivationTests {
    /// A PyTorch Sequential 16-32-32-32-4 (`0`, `2`, `4`, `6`) with the output of ReLU `3` (after
    /// Linear `2`) saved as `hidden2`, 64 probe rows; `silent(save)` says which of its units are zero
    /// on every row at that save (the others are positive on every row).
    static func run(silent: @escaping @Sendable (Int) -> Set<Int>) -> SyntheticRun {
        var run = SyntheticRun()
        run.layerName = { "\($0 * 2)" }
        run.activationModules = ["hidden2": "3"]
        run.activations = { save in
            let dead = silent(save)
            var values: [Double] = []
            for row in 0..<64 { for unit in 0..<32 { values.append(dead.contains(unit) ? 0 : 0.1 + Double((row + unit) % 7)) } }
            return ["hidden2": (values, [64, 32])]
        }
        return run
    }

    static let allUnits = Set(0..<32)

    @Test("every unit zero on every example at every save: collapsing with the activation as evidence, no dead-units")
    func wholeLayerSilent() throws {
        let (report, _) = try Self.run(silent: { _ in Self.allUnits }).scan()
        let collapsing = report.findings(.collapsing)
        #expect(collapsing.count == 1)
        let finding = try #require(collapsing.first)
        #expect(finding.tensor == "hidden2")
        #expect(finding.layer == "2", "attributed to the layer that produces the ReLU's output")
        #expect(finding.severity == .warning)
        #expect(finding.evidence["zero_output"] == .bool(true))
        #expect(finding.evidence["evidence"] == .string("activation"))
        #expect(finding.evidence["activation"] == .string("hidden2"))
        #expect(finding.evidence["units"] == .int(32))
        #expect(finding.evidence["saves"] == .int(11))
        #expect(finding.evidence["activation_values"] == .int(64 * 32))
        #expect(finding.evidence["next_layer"] == .string("4"))
        #expect(finding.evidence["last_output_step"] == nil)
        #expect(finding.firstStep == 0 && finding.lastStep == 1000)
        #expect(finding.message.contains("outputs zero for every input"))
        #expect(finding.message.contains("all 32 units"))
        #expect(!finding.explanation.isEmpty)
        // Not also reported as 32 of 32 dead units.
        #expect(report.findings(.deadUnits).isEmpty, "\(report.findings(.deadUnits).map(\.message))")
        #expect(report.verdict.contains("outputs zero for every input"), "\(report.verdict)")
    }

    @Test("some units silent stays dead-units; all units mostly silent but not exactly zero stays dead-units")
    func someUnitsSilent() throws {
        let (some, _) = try Self.run(silent: { _ in Set(0..<31) }).scan()
        #expect(some.findings(.collapsing).isEmpty)
        let dead = some.findings(.deadUnits).filter { $0.tensor == "hidden2" }
        #expect(dead.count == 1)
        #expect(dead.first?.evidence["dead_units"] == .int(31))
        #expect(dead.first?.evidence["units"] == .int(32))

        // 31 units zero on every row and one nonzero on one row only (63 of 64 rows zero, under the 99% of
        // a dead unit): one nonzero value is an output, so no collapse; 31 dead units.
        var nearly = Self.run(silent: { _ in [] })
        nearly.activations = { _ in
            var values = [Double](repeating: 0, count: 64 * 32)
            values[5] = 0.3
            return ["hidden2": (values, [64, 32])]
        }
        let (nearlyReport, _) = try nearly.scan()
        #expect(nearlyReport.findings(.collapsing).isEmpty, "one nonzero value is an output")
        let nearlyDead = nearlyReport.findings(.deadUnits).filter { $0.tensor == "hidden2" }
        #expect(nearlyDead.first?.evidence["dead_units"] == .int(31))
    }

    @Test("zero from a save on to the end is dated; zero at some saves and alive later is not a collapse")
    func onsetAndRecovery() throws {
        let (late, _) = try Self.run(silent: { save in save >= 7 ? Self.allUnits : [] }).scan()
        // One finding: the spread that fell to zero is the same fact, not said twice.
        #expect(late.findings(.collapsing).count == 1)
        let finding = try #require(late.findings(.collapsing).first)
        #expect(finding.firstStep == 700)
        #expect(finding.evidence["last_output_step"] == .int(600))
        #expect(finding.evidence["saves"] == .int(4))
        #expect(finding.message.contains("since step 700"))

        let (recovered, _) = try Self.run(silent: { save in save < 5 || save == 8 ? Self.allUnits : [] }).scan()
        #expect(recovered.findings(.collapsing).isEmpty)

        // Zero only at the last save: one save does not show that it stays so (the spread that fell to
        // zero there is reported as such, not as a layer that outputs zero).
        let (lastOnly, _) = try Self.run(silent: { save in save == 10 ? Self.allUnits : [] }).scan()
        #expect(!lastOnly.findings(.collapsing).contains { $0.evidence["zero_output"] == .bool(true) })
        #expect(lastOnly.findings(.collapsing).allSatisfy { $0.evidence["measure"] == .string("output spread (std)") })
    }

    @Test("the zero gradients of the layers before and of the next layer's weights are its consequences")
    func linkedConsequences() throws {
        var run = Self.run(silent: { _ in Self.allUnits })
        // Linear 0, 2 and 4 get no gradient; the next layer's bias too, so the next layer's gradient
        // alone would not say that `2` outputs zero: only the activation does.
        run.zeroBiasGradients = [0, 1, 2]
        run.weightHook = { layer, _, weights, gradient in
            (weights, layer <= 2 ? [Double](repeating: 0, count: gradient.count) : gradient)
        }
        let (report, _) = try run.scan()
        let collapse = try #require(report.findings.firstIndex { $0.kind == .collapsing })
        #expect(report.findings[collapse].evidence["evidence"] == .string("activation"))
        let zero = report.findings.enumerated().filter { $0.element.kind == .zeroGradient && $0.element.severity >= .warning }
        #expect(Set(zero.compactMap(\.element.layer)) == ["0", "2", "4"], "\(zero.map(\.element.message))")
        for (_, finding) in zero { #expect(finding.causedBy == [collapse], "\(finding.tensor ?? "")") }
        #expect(report.findings[collapse].causedBy == nil)
        let first = try #require(report.story.first)
        #expect(first.findings == [collapse])
        #expect(report.verdict.contains("outputs zero for every input"))
        let cause = try #require(report.verdict.range(of: "outputs zero"))
        let consequence = try #require(
            report.verdict.range(of: "no gradient", options: .caseInsensitive) ?? report.verdict.range(of: "zero gradient"))
        #expect(cause.lowerBound < consequence.lowerBound, "\(report.verdict)")
    }

    @Test("the next layer and the activation saying the same make one finding with both as evidence")
    func neighbourAndActivationAgree() throws {
        var run = Self.run(silent: { _ in Self.allUnits })
        run.zeroBiasGradients = [0, 1]
        run.weightHook = { layer, _, weights, gradient in
            (weights, layer <= 2 ? [Double](repeating: 0, count: gradient.count) : gradient)
        }
        let (report, _) = try run.scan()
        let collapsing = report.findings(.collapsing)
        #expect(collapsing.count == 1, "\(collapsing.map(\.message))")
        let finding = try #require(collapsing.first)
        #expect(finding.layer == "2")
        #expect(finding.evidence["evidence"] == .string("next-layer-gradient"))
        #expect(finding.evidence["activation"] == .string("hidden2"))
        #expect(finding.evidence["activation_saves"] == .int(11))
        #expect(finding.message.contains("The saved activation hidden2 says the same"))
        #expect(report.findings(.deadUnits).isEmpty)
    }

    @Test("an activation without a place in the layer order is still a collapse, linked to nothing")
    func noPlace() throws {
        var run = Self.run(silent: { _ in Self.allUnits })
        run.activationModules = [:]
        let (report, _) = try run.scan()
        let finding = try #require(report.findings(.collapsing).first)
        #expect(finding.tensor == "hidden2")
        #expect(finding.evidence["next_layer"] == nil)
        #expect(report.findings(.deadUnits).isEmpty)
    }

    @Test("one save: the silent activation is reported as dead-units at that save (one batch is not a collapse)")
    func oneSave() throws {
        var run = Self.run(silent: { _ in Self.allUnits })
        run.steps = [100]
        let (report, _) = try run.scan()
        #expect(report.findings(.collapsing).isEmpty)
        let dead = report.findings(.deadUnits).filter { $0.tensor == "hidden2" }
        #expect(dead.first?.evidence["dead_units"] == .int(32))
        #expect(dead.first?.severity == .info)
    }
}
