import Foundation
import GradScopeDiagnosis
import GradScopeMeasurement
import GradScopeModel
import TestSupport
import Testing

/// Deaths after step 0: what becomes exactly zero at some save and stays so is found with its onset;
/// what is zero at one save and alive later is not. Numbers are said in words where a side is zero.
@Suite("Onsets: gradients, movement and units that die mid-run")
struct OnsetTests {
    /// A hook zeroing the whole gradient of `target` at the saves `saves` picks.
    func zeroGradient(ofLayer target: Int, at saves: @escaping @Sendable (Int) -> Bool) -> (Int, Int, [Double], [Double]) -> ([Double], [Double]) {
        { layer, save, weights, gradient in
            (weights, layer == target && saves(save) ? [Double](repeating: 0, count: gradient.count) : gradient)
        }
    }

    @Test("a gradient that becomes zero at step 500 and stays zero is found, dated, with the save before it")
    func zeroGradientSince() throws {
        var run = SyntheticRun()
        run.weightHook = zeroGradient(ofLayer: 2, at: { $0 >= 5 })
        let (report, _) = try run.scan()
        let found = report.findings(.zeroGradient)
        #expect(found.map(\.tensor) == ["l2.weight"])
        let finding = try #require(found.first)
        #expect(finding.firstStep == 500)
        #expect(finding.lastStep == 1000)
        #expect(finding.evidence["last_nonzero_step"] == .int(400))
        #expect(finding.evidence["saves"] == .int(6))
        #expect(finding.message.contains("receives no gradient since step 500"))
        #expect(report.verdict.contains("since step 500"))
    }

    @Test("zero at one save and alive later, or zero at the last save only, is not a finding")
    func zeroOnceIsNotDead() throws {
        var once = SyntheticRun()
        once.weightHook = zeroGradient(ofLayer: 2, at: { $0 == 5 })
        #expect(try once.scan().0.findings(.zeroGradient).isEmpty)
        var last = SyntheticRun()
        last.weightHook = zeroGradient(ofLayer: 2, at: { $0 == 10 })
        #expect(try last.scan().0.findings(.zeroGradient).isEmpty)
        // Two saves at the end do show it stopped.
        var two = SyntheticRun()
        two.weightHook = zeroGradient(ofLayer: 2, at: { $0 >= 9 })
        #expect(try two.scan().0.findings(.zeroGradient).first?.firstStep == 900)
    }

    @Test("units that die mid-run are each dated at the save after which they never got a gradient again")
    func unitDeathsDated() throws {
        var run = SyntheticRun()
        run.weightHook = { layer, save, weights, gradient in
            guard layer == 1 else { return (weights, gradient) }
            var g = gradient
            // Rows 0-3 die after step 100, rows 4-7 after step 500; row 10 is silent at steps 200-600, then recovers.
            for unit in 0..<32 where (unit < 4 && save >= 2) || (unit >= 4 && unit < 8 && save >= 6) || (unit == 10 && (2...6).contains(save)) {
                for column in 0..<32 { g[unit * 32 + column] = 0 }
            }
            return (weights, g)
        }
        let (report, _) = try run.scan()
        let dead = try #require(report.findings(.deadUnits).first { $0.tensor == "l1.weight" })
        #expect(dead.evidence["dead_units"] == .int(8))
        #expect(dead.evidence["death_steps"] == .list([.int(100), .int(500)]))
        #expect(dead.evidence["death_units"] == .list([.int(4), .int(4)]))
        #expect(dead.evidence["never_alive"] == .int(0))
        #expect(dead.firstStep == 200)
        #expect(dead.message.contains("at every save since dying after steps 100 and 500, to step 1000"))
    }

    @Test("one dead unit from the first save: dated from the first save, no death list")
    func oneDeadUnit() throws {
        var run = SyntheticRun()
        run.weightHook = { layer, _, weights, gradient in
            guard layer == 1 else { return (weights, gradient) }
            var g = gradient
            for column in 0..<32 { g[column] = 0 }
            return (weights, g)
        }
        let (report, _) = try run.scan()
        // One unit of 32 is 3%, below the 5% of dead_units_info_fraction: nothing reported.
        #expect(report.findings(.deadUnits).isEmpty)
        var thresholds = Thresholds()
        thresholds.deadUnitsInfoFraction = 0.01
        let (low, _) = try run.scan(thresholds)
        let dead = try #require(low.findings(.deadUnits).first)
        #expect(dead.evidence["dead_units"] == .int(1))
        #expect(dead.evidence["death_steps"] == nil)
        #expect(dead.firstStep == 100)
        #expect(dead.message.hasSuffix("from step 100 to 1000."))
    }

    @Test("a weight that stops changing mid-run while the rest trains is found, dated at its last move")
    func movementStops() throws {
        final class Held: @unchecked Sendable { var weights: [Double] = [] }
        let held = Held()
        var run = SyntheticRun()
        run.saveGradients = false
        run.weightHook = { layer, save, weights, gradient in
            guard layer == 3 else { return (weights, gradient) }
            if save == 6 { held.weights = weights }
            return (save > 6 ? held.weights : weights, gradient)
        }
        let (report, _) = try run.scan()
        let stopped = report.findings(.frozen).filter { $0.tensor == "l3.weight" }
        #expect(stopped.count == 1)
        #expect(stopped.first?.firstStep == 700)
        #expect(stopped.first?.evidence["last_moved_step"] == .int(600))
        #expect(stopped.first?.message.contains("stopped changing after step 600") == true)
        #expect(report.verdict.contains("stopped changing since step 700"))
        // Unchanged at one save between moving ones: not a stop.
        var once = SyntheticRun()
        once.saveGradients = false
        once.weightHook = { layer, save, weights, gradient in
            guard layer == 3 else { return (weights, gradient) }
            if save == 5 { held.weights = weights }
            return (save == 6 ? held.weights : weights, gradient)
        }
        #expect(try once.scan().0.findings(.frozen).isEmpty)
    }

    @Test("vanishing gradients with early layers at exactly zero say so in words, never inf orders of magnitude")
    func vanishingToZero() throws {
        var run = SyntheticRun()
        run.losses = { _, _ in 1.386 }
        run.weightHook = zeroGradient(ofLayer: 0, at: { _ in true })
        let (report, _) = try run.scan()
        let vanishing = try #require(report.findings(.vanishingGradient).first)
        #expect(vanishing.message.contains("the early layers get no gradient at all"))
        for finding in report.findings {
            for text in [finding.message, finding.explanation] {
                #expect(!text.contains("inf ") && !text.contains("nan") && !text.contains("NaN"), "\(text)")
            }
        }
    }
}
