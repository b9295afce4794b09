import ElementTypes
import Foundation
import GradScopeDiagnosis
import GradScopeMeasurement
import GradScopeModel
import GradScopeRendering
import GradScopeSources
import GradScopeStatistics
import HDF5
import HDF5Writer
import TestSupport
import Testing

@Suite("Detectors: each finds its pathology and stays quiet on a healthy run")
struct DetectorTests {
    /// A native checkpoint file `step_<step>.h5` in `dir` with its format and step attributes.
    func nativeStep(_ dir: TemporaryDirectory, _ step: Int) throws -> HDF5Writer {
        let w = try HDF5Writer(creating: dir.path("step_\(step).h5"))
        try w.setAttribute("format", .string("gradscope/1", .variableUTF8), at: "/")
        try w.setAttribute("step", .int(Int64(step)), at: "/")
        return w
    }

    /// A SyntheticRun hook giving the first `units` rows of a layer's [32 x 32] gradient exactly zero from a save on.
    func zeroGradientRows(_ units: Int, ofLayer target: Int, fromSave first: Int) -> (Int, Int, [Double], [Double]) -> ([Double], [Double]) {
        { layer, save, weights, gradient in
            guard layer == target, save >= first else { return (weights, gradient) }
            var g = gradient
            for unit in 0..<units { for column in 0..<32 { g[unit * 32 + column] = 0 } }
            return (weights, g)
        }
    }
    @Test("a healthy synthetic run produces no warning or error")
    func healthy() throws {
        let (report, _) = try SyntheticRun().scan()
        #expect(report.warnings.isEmpty, "\(report.warnings.map(\.message))")
        #expect(report.steps == Array(stride(from: 0, through: 1000, by: 100)))
        #expect(report.verdict.hasPrefix("No problems"))
    }

    @Test("frozen: a layer left out of the optimizer, its gradient accumulating")
    func frozen() throws {
        var run = SyntheticRun()
        run.frozenLayers = [1]
        let (report, _) = try run.scan()
        let frozen = report.findings(.frozen)
        // The layer's bias is not updated either (its gradient does not accumulate in this fixture).
        #expect(frozen.map(\.tensor) == ["l1.bias", "l1.weight"])
        let weight = try #require(frozen.first { $0.tensor == "l1.weight" })
        #expect(weight.severity == .warning)
        #expect(weight.message.contains("not in the optimizer"))
        #expect(weight.firstStep == 0)
        #expect(weight.lastStep == 1000)
        // Its accumulated gradient is not an explosion.
        #expect(report.findings(.explodingGradient).isEmpty)
    }

    @Test("zero-gradient: a gradient exactly zero at every save")
    func zeroGradient() throws {
        var run = SyntheticRun()
        run.weightHook = { layer, _, weights, gradient in
            (weights, layer == 2 ? [Double](repeating: 0, count: gradient.count) : gradient)
        }
        let (report, _) = try run.scan()
        let findings = report.findings(.zeroGradient)
        #expect(findings.map(\.tensor) == ["l2.weight"])
        #expect(findings.first?.firstStep == 100)
        let (healthy, _) = try SyntheticRun().scan()
        #expect(healthy.findings(.zeroGradient).isEmpty)
    }

    @Test("dead-units: most rows of a layer get no gradient in the later half")
    func deadUnits() throws {
        var run = SyntheticRun()
        run.weightHook = zeroGradientRows(20, ofLayer: 1, fromSave: 4)
        let (report, _) = try run.scan()
        let dead = report.findings(.deadUnits)
        #expect(dead.count == 1)
        #expect(dead.first?.tensor == "l1.weight")
        #expect(dead.first?.evidence["dead_units"] == .int(20))
        #expect(dead.first?.evidence["units"] == .int(32))
        #expect(dead.first?.severity == .warning)
        #expect(dead.first?.firstStep == 400)

        var few = SyntheticRun()
        few.weightHook = { layer, save, weights, gradient in
            guard layer == 1 else { return (weights, gradient) }
            var g = gradient
            for column in 0..<32 { g[column] = 0 }
            return (weights, g)
        }
        let (fewReport, _) = try few.scan()
        #expect(fewReport.findings(.deadUnits).allSatisfy { $0.severity == .info } || fewReport.findings(.deadUnits).isEmpty)
    }

    @Test("dead-units from movement: without saved gradients, rows of a layer that stop moving in the later half")
    func deadUnitsFromMovement() throws {
        final class Held: @unchecked Sendable { var rows: [Double] = [] }
        let held = Held()
        var run = SyntheticRun()
        run.saveGradients = false
        run.weightHook = { layer, save, weights, gradient in
            guard layer == 1, save >= 3 else { return (weights, gradient) }
            var w = weights
            if save == 3 { held.rows = Array(w[0..<(20 * 32)]) }
            w.replaceSubrange(0..<(20 * 32), with: held.rows)
            return (w, gradient)
        }
        let (report, _) = try run.scan()
        let dead = report.findings(.deadUnits)
        #expect(dead.count == 1)
        #expect(dead.first?.tensor == "l1.weight")
        #expect(dead.first?.evidence["dead_units"] == .int(20))
        #expect(dead.first?.message.contains("never move") == true)
        // A healthy run without gradients: every row moves, nothing is reported.
        var healthy = SyntheticRun()
        healthy.saveGradients = false
        #expect(try healthy.scan().0.findings(.deadUnits).isEmpty)
    }

    @Test("dead-units from activations: ReLU outputs zero for the whole probe batch")
    func deadActivations() throws {
        var run = SyntheticRun()
        run.activations = { _ in
            var values: [Double] = []
            var noise = SplitMix64(state: 9)
            for _ in 0..<64 { for unit in 0..<10 { values.append(unit < 6 ? 0 : abs(noise.normal())) } }
            return ["hidden": (values, [64, 10])]
        }
        let (report, _) = try run.scan()
        let dead = report.findings(.deadUnits).filter { $0.tensor == "hidden" }
        #expect(dead.first?.evidence["dead_units"] == .int(6))
        #expect(dead.first?.evidence["evidence"] == .string("activation"))
    }

    @Test("collapsing: a layer's norm falls by orders of magnitude; mild decay does not count")
    func collapsing() throws {
        var run = SyntheticRun()
        run.weightHook = { layer, save, weights, gradient in
            (layer == 3 && save > 0 ? weights.map { $0 * 0.4 } : weights, gradient)
        }
        let (report, _) = try run.scan()
        let collapsing = report.findings(.collapsing)
        #expect(collapsing.map(\.tensor) == ["l3.weight"])
        #expect(collapsing.first?.firstStep == 100)

        var mild = SyntheticRun()
        mild.weightHook = { _, save, weights, gradient in (save > 0 ? weights.map { $0 * 0.95 } : weights, gradient) }
        let (mildReport, _) = try mild.scan()
        #expect(mildReport.findings(.collapsing).isEmpty)
    }

    @Test("loss-plateau: at ln 2 for a third of the run, then falling")
    func lossPlateau() throws {
        var run = SyntheticRun()
        run.widths = [16, 32, 32, 1]
        run.losses = { index, _ in index < 5 ? 0.6931 + 0.002 * Double(index % 2) : 0.6931 - 0.08 * Double(index - 4) }
        let (report, _) = try run.scan()
        let plateau = report.findings(.lossPlateau)
        #expect(plateau.count == 1)
        #expect(plateau.first?.firstStep == 0)
        #expect(plateau.first?.lastStep == 400)
        #expect(plateau.first?.evidence["classes"] == .int(2))
        #expect(plateau.first?.severity == .warning)
        #expect(report.verdict.contains("ln 2"))
    }

    @Test("loss-plateau: a healthy start at ln K is not a plateau, and ln 10 is found for ten classes")
    func lossPlateauNegativeAndK() throws {
        var healthy = SyntheticRun()
        healthy.widths = [16, 32, 32, 1]
        healthy.losses = { index, _ in index == 0 ? 0.6931 : 0.6931 * Foundation.exp(-0.4 * Double(index)) }
        let (report, _) = try healthy.scan()
        #expect(report.findings(.lossPlateau).isEmpty)

        var tenClasses = SyntheticRun()
        tenClasses.widths = [16, 32, 10]
        tenClasses.losses = { _, _ in Foundation.log(10) + 0.01 }
        let (stuck, _) = try tenClasses.scan()
        #expect(stuck.findings(.lossPlateau).first?.evidence["classes"] == .int(10))
        #expect(stuck.findings(.lossPlateau).first?.severity == .error)
    }

    @Test("vanishing-gradient: early layers' gradients 1e-5 of the late layers'")
    func vanishing() throws {
        var run = SyntheticRun()
        run.widths = [16, 32, 32, 32, 32, 32, 4]
        run.losses = { _, _ in 1.38 }
        run.weightHook = { layer, _, weights, gradient in
            (weights, gradient.map { $0 * Foundation.pow(10, Double(layer - 5)) })
        }
        let (report, _) = try run.scan()
        let vanishing = report.findings(.vanishingGradient)
        #expect(vanishing.count == 1)
        #expect(vanishing.first?.tensor == "l0.weight")
        #expect(vanishing.first?.severity == .warning)
        let (healthy, _) = try SyntheticRun().scan()
        #expect(healthy.findings(.vanishingGradient).isEmpty)
    }

    @Test("exploding-gradient: a hundredfold jump in the gradient norm")
    func exploding() throws {
        var run = SyntheticRun()
        run.weightHook = { _, save, weights, gradient in
            (weights, save >= 6 ? gradient.map { $0 * 1e5 } : gradient)
        }
        let (report, _) = try run.scan()
        let exploding = report.findings(.explodingGradient)
        #expect(exploding.count == 1)
        #expect(exploding.first?.firstStep == 600)
    }

    @Test("update-ratio: weights rewritten by half their norm in one step")
    func updateRatio() throws {
        var run = SyntheticRun()
        run.steps = Array(0...8)
        run.weightHook = { layer, save, weights, gradient in
            guard layer == 2, save == 5 else { return (weights, gradient) }
            var noise = SplitMix64(state: 77)
            return (weights.map { $0 + noise.normal() * 0.5 * Swift.abs($0) + 0.1 * noise.normal() }, gradient)
        }
        let (report, _) = try run.scan()
        let ratio = report.findings(.updateRatio)
        #expect(ratio.map(\.tensor) == ["l2.weight"])
        #expect(ratio.first?.firstStep == 5)
        let (healthy, _) = try SyntheticRun().scan()
        #expect(healthy.findings(.updateRatio).isEmpty)
    }

    @Test("poor-init: far too large a scale, a constant kernel; Kaiming is fine")
    func poorInit() throws {
        var large = SyntheticRun()
        large.initScale = { _ in 5.0 }
        let (report, _) = try large.scan()
        #expect(report.findings(.poorInit).count == 4)
        #expect(report.findings(.poorInit).allSatisfy { $0.message.contains("too large") })

        var constant = SyntheticRun()
        constant.weightHook = { layer, save, weights, gradient in
            (layer == 1 && save == 0 ? [Double](repeating: 0.05, count: weights.count) : weights, gradient)
        }
        let (constantReport, _) = try constant.scan()
        // The random layer after it tells its units apart: a warning, worded so.
        #expect(constantReport.findings(.poorInit).first?.severity == .warning)
        #expect(constantReport.findings(.poorInit).first?.tensor == "l1.weight")
        #expect(constantReport.findings(.poorInit).first?.message.contains("next layer") == true)

        var twoConstant = SyntheticRun()
        twoConstant.weightHook = { layer, save, weights, gradient in
            ((layer == 1 || layer == 2) && save == 0 ? [Double](repeating: 0.05, count: weights.count) : weights, gradient)
        }
        let (twoReport, _) = try twoConstant.scan()
        let severities = Dictionary(twoReport.findings(.poorInit).map { ($0.tensor ?? "", $0.severity) }, uniquingKeysWith: { a, _ in a })
        #expect(severities["l1.weight"] == .error)
        #expect(severities["l2.weight"] == .warning)

        let (healthy, _) = try SyntheticRun().scan()
        #expect(healthy.findings(.poorInit).isEmpty)
    }

    @Test("nan-inf: the first step and tensor holding NaN")
    func nanInf() throws {
        var run = SyntheticRun()
        run.weightHook = { layer, save, weights, gradient in
            var g = gradient, w = weights
            if layer == 3 && save == 6 { g[5] = .nan }
            if save >= 7 { w[0] = .nan }
            return (w, g)
        }
        let (report, _) = try run.scan()
        let nan = report.findings(.nanInf)
        #expect(nan.count == 1)
        #expect(nan.first?.firstStep == 600)
        #expect(nan.first?.tensor == "l3.weight")
        #expect(nan.first?.severity == .error)
        #expect(nan.first?.lastStep == 1000)
    }

    @Test("detectors without their data say so in not_checked")
    func notChecked() throws {
        var run = SyntheticRun()
        run.saveGradients = false
        run.losses = nil
        let (report, _) = try run.scan()
        let kinds = Set(report.notChecked.map(\.kind))
        #expect(kinds.contains(.vanishingGradient))
        #expect(kinds.contains(.explodingGradient))
        #expect(kinds.contains(.lossPlateau))
        #expect(report.notChecked.allSatisfy { !$0.reason.isEmpty })
    }

    @Test("thresholds can be overridden")
    func overrides() throws {
        var run = SyntheticRun()
        run.weightHook = { layer, save, weights, gradient in
            (layer == 3 && save > 0 ? weights.map { $0 * 0.8 } : weights, gradient)
        }
        let (quiet, _) = try run.scan()
        #expect(quiet.findings(.collapsing).isEmpty)
        var thresholds = Thresholds()
        try thresholds.set("collapse_factor", 5)
        let (loud, _) = try run.scan(thresholds)
        #expect(loud.findings(.collapsing).map(\.tensor) == ["l3.weight"])
        #expect(throws: ThresholdError.self) { try thresholds.set("no_such_threshold", 1) }
        let loaded = try Thresholds.load(json: Data(#"{"collapse_factor": 3, "plateau_min_saves": 5}"#.utf8))
        #expect(loaded.collapseFactor == 3)
        #expect(loaded.plateauMinSaves == 5)
    }

    @Test("exploding-gradient from Adam's second moment when no gradients were saved")
    func explodingFromMoments() throws {
        for (velocity, expected) in [(1e6, true), (1e-6, false)] {
            let dir = try TemporaryDirectory()
            do {
                let w = try nativeStep(dir, 100)
                try w.write("/weights/fc.weight", [Double](repeating: 0.05, count: 8), shape: [2, 4])
                try w.write("/optimizer/exp_avg_sq/fc.weight", [Double](repeating: velocity, count: 8), shape: [2, 4])
            }
            let (report, _) = try Analysis.scan(dir.url.path)
            #expect(report.findings(.explodingGradient).isEmpty != expected, "\(velocity)")
            if expected { #expect(report.findings(.explodingGradient).first?.tensor == "fc.weight") }
        }
    }

    @Test("exploding-gradient judges kernels only: a bias near zero with a residual-sized gradient is healthy")
    func explodingIgnoresSmallBiases() throws {
        // An output bias converges to a small offset (here 1e-3) while its minibatch gradient stays at the
        // size of the residual (0.2): ‖g‖/‖b‖ = 200, with every kernel's ratio near 0.01.
        for withGradients in [true, false] {
            let dir = try TemporaryDirectory()
            var noise = SplitMix64(state: 5)
            for step in [100, 200, 300] {
                let w = try nativeStep(dir, step)
                try w.setAttribute("optimizer", .string("Adam", .variableUTF8), at: "/")
                try w.write("/weights/fc.weight", noise.normals(64, std: 0.2), shape: [8, 8])
                try w.write("/weights/fc.bias", [Double](repeating: 1e-3, count: 8), shape: [8])
                if withGradients {
                    try w.write("/gradients/fc.weight", noise.normals(64, std: 0.002), shape: [8, 8])
                    try w.write("/gradients/fc.bias", noise.normals(8, std: 0.2), shape: [8])
                } else {
                    try w.write("/optimizer/exp_avg_sq/fc.weight", [Double](repeating: 4e-6, count: 64), shape: [8, 8])
                    try w.write("/optimizer/exp_avg_sq/fc.bias", [Double](repeating: 0.04, count: 8), shape: [8])
                }
            }
            let (report, _) = try Analysis.scan(dir.url.path)
            #expect(report.findings(.explodingGradient).isEmpty, "\(withGradients): \(report.findings(.explodingGradient).map(\.message))")
        }
    }

    @Test("poor-init: a first save whose step is only its position is not judged as the initialisation")
    func poorInitNeedsAKnownInitialStep() throws {
        // Trained weights far from any initialiser's scale, in files that hold no step.
        for (names, judged) in [
            (["model_a.h5", "model_b.h5"], false), (["epoch_0.h5", "epoch_1.h5"], false),
            (["ckpt_0.h5", "ckpt_1.h5"], true),
        ] {
            let dir = try TemporaryDirectory()
            var noise = SplitMix64(state: 9)
            for name in names {
                let w = try HDF5Writer(creating: dir.path(name))
                try w.write("/fc1.weight", noise.normals(64 * 32, std: 5.0), shape: [64, 32])
                try w.write("/fc2.weight", noise.normals(64 * 4, std: 5.0), shape: [4, 64])
            }
            let (report, _) = try Analysis.scan(dir.url.path)
            #expect(report.findings(.poorInit).isEmpty == !judged, "\(names)")
            if !judged {
                #expect(report.notChecked.contains { $0.kind == .poorInit && $0.reason.contains("not known to be the initialisation") }, "\(names)")
            }
            let inspected = try Analysis.inspect(dir.path(names[0]))
            #expect(inspected.findings.filter { $0.kind == .poorInit }.isEmpty == !judged, "\(names)")
        }
    }

    @Test("zero-gradient from moments in a file that holds no step: judged when other moments show the optimizer ran")
    func zeroMomentsWithoutStep() throws {
        for (otherMoment, expected) in [(0.01, true), (0.0, false)] {
            let dir = try TemporaryDirectory()
            let path = dir.path("model.h5")
            do {
                let w = try HDF5Writer(creating: path)
                var noise = SplitMix64(state: 3)
                try w.write("/model/fc1.weight", noise.normals(32, std: 0.3), shape: [4, 8])
                try w.write("/model/fc2.weight", noise.normals(8, std: 0.3), shape: [2, 4])
                try w.write("/optimizer/exp_avg_sq/fc1.weight", [Double](repeating: otherMoment, count: 32), shape: [4, 8])
                try w.write("/optimizer/exp_avg_sq/fc2.weight", [Double](repeating: 0, count: 8), shape: [2, 4])
            }
            let report = try Analysis.inspect(path)
            let zero = report.findings.filter { $0.kind == .zeroGradient }
            #expect(zero.map(\.tensor) == (expected ? ["fc2.weight"] : []), "\(otherMoment)")
            // The file holds no step: the finding is bound to none, and says so in words.
            #expect(zero.allSatisfy { $0.firstStep == nil && $0.lastStep == nil && $0.message.contains("in this file") })
        }
    }

    @Test("vanishing-gradient estimated from Adam's second moments when no gradients were saved")
    func vanishingFromMoments() throws {
        // Six layers; v (a running average of g²) shrinks by 10x per layer toward the input in the vanishing run.
        for (perLayer, expected) in [(10.0, true), (1.0, false)] {
            let dir = try TemporaryDirectory()
            var noise = SplitMix64(state: 11)
            for (index, step) in [0, 100, 200, 300, 400].enumerated() {
                let w = try nativeStep(dir, step)
                try w.setAttribute("optimizer", .string("Adam", .variableUTF8), at: "/")
                try w.setAttribute("loss", .double(1.0), at: "/")
                for layer in 0..<6 {
                    try w.write("/weights/l\(layer).weight", noise.normals(64, std: 0.2), shape: [8, 8])
                    // Zero-filled at step 0, before the first update.
                    let rms = index == 0 ? 0 : 1e-3 / Foundation.pow(perLayer, Double(5 - layer))
                    try w.write("/optimizer/exp_avg_sq/l\(layer).weight", [Double](repeating: rms * rms, count: 64), shape: [8, 8])
                }
            }
            let (report, _) = try Analysis.scan(dir.url.path)
            let vanishing = report.findings(.vanishingGradient)
            #expect(vanishing.isEmpty != expected, "\(perLayer)")
            if expected {
                #expect(vanishing.first?.tensor == "l0.weight")
                #expect(vanishing.first?.firstStep == 100)
                #expect(vanishing.first?.message.contains("second moments") == true)
            }
            #expect(!report.notChecked.contains { $0.kind == .vanishingGradient })
        }
    }

    @Test(
        "frozen: a stale .grad or a frozen input-side prefix is fine-tuning (info); a frozen middle layer, or one marked out of the optimizer whose gradient still changes, is a warning"
    )
    func frozenCases() throws {
        // Stale gradient: identical at every save while the others change.
        var stale = SyntheticRun()
        final class Held: @unchecked Sendable { var first: [Double] = [] }
        let held = Held()
        stale.weightHook = { layer, save, weights, gradient in
            guard layer == 0 else { return (weights, gradient) }
            if save == 0 { held.first = weights }
            return (held.first, [Double](repeating: 0.01, count: gradient.count))
        }
        let (staleReport, _) = try stale.scan()
        #expect(staleReport.findings(.frozen).first { $0.tensor == "l0.weight" }?.severity == .info)

        // No gradients saved: a frozen first layer is a backbone (info), a frozen middle layer a warning.
        for (frozenLayer, expected) in [(0, Severity.info), (1, Severity.warning)] {
            let dir = try TemporaryDirectory()
            var noise = SplitMix64(state: 13)
            var weights = (0..<3).map { _ in noise.normals(64, std: 0.2) }
            var biases = (0..<3).map { _ in noise.normals(8, std: 0.01) }
            for step in [0, 100, 200, 300, 400] {
                let w = try nativeStep(dir, step)
                for layer in 0..<3 {
                    if step > 0 && layer != frozenLayer {
                        weights[layer] = weights[layer].map { $0 + 1e-3 * noise.normal() }
                        biases[layer] = biases[layer].map { $0 + 1e-3 * noise.normal() }
                    }
                    try w.write("/weights/l\(layer).weight", weights[layer], shape: [8, 8])
                    try w.write("/weights/l\(layer).bias", biases[layer], shape: [8])
                }
            }
            let (report, _) = try Analysis.scan(dir.url.path)
            #expect(report.findings(.frozen).first { $0.tensor == "l\(frozenLayer).weight" }?.severity == expected, "\(frozenLayer)")
        }

        // Marked out of the optimizer (in_optimizer = 0), but its gradient keeps changing: not deliberate.
        var marked = SyntheticRun()
        marked.frozenLayers = [1]
        let (markedReport, _) = try marked.scan()
        #expect(markedReport.findings(.frozen).first { $0.tensor == "l1.weight" }?.severity == .warning)
    }

    @Test("loss-plateau: K guessed from the loss only while its band is unambiguous")
    func plateauGuessCap() throws {
        // No output layer to read K from (a vector-only model), loss flat at 2.81: no "ln 17".
        // A model that never learned starts near ln K and settles on it (1.25, then ln 3): found; a loss that
        // came down from far above (3.9 = ln 49) to near ln 3 converged there: not stuck.
        for (losses, expected) in [
            ([2.81, 2.81, 2.81, 2.81, 2.81], false), ([log(5.0), log(5.0), log(5.0), log(5.0), log(5.0)], true),
            ([1.25, 1.12, 1.10, 1.10, 1.10], true), ([3.9, 1.6, 1.12, 1.11, 1.12], false),
        ] {
            let dir = try TemporaryDirectory()
            for (index, step) in [0, 100, 200, 300, 400].enumerated() {
                let w = try nativeStep(dir, step)
                try w.setAttribute("loss", .double(losses[index]), at: "/")
                try w.write("/weights/scale", [Double](repeating: 1 + Double(step) * 1e-4, count: 4), shape: [4])
            }
            let (report, _) = try Analysis.scan(dir.url.path)
            #expect(report.findings(.lossPlateau).isEmpty != expected, "\(losses)")
        }
    }

    @Test("exploding-gradient: a jump measured against the recent saves, not a history of larger norms early on")
    func explodingAfterFallingNorms() throws {
        // Total gradient norms fall 150x as training converges, stay there, then jump 20x at step 1500.
        let factors: [Double] = [300, 200, 100, 30, 10] + [Double](repeating: 2, count: 10) + [40, 40]
        var run = SyntheticRun()
        run.steps = Array(stride(from: 0, through: 1600, by: 100))
        run.weightHook = { _, save, weights, gradient in (weights, gradient.map { $0 * 2 * factors[save] }) }
        run.saveInitialGradients = true
        let (report, _) = try run.scan()
        let exploding = report.findings(.explodingGradient)
        #expect(exploding.map(\.firstStep) == [1500], "\(exploding.map(\.message))")
    }

    @Test("dead-units: units that die during the later half are found, from the save they died")
    func deadUnitsLateInTheRun() throws {
        // 11 saves, the later half from save 5; 16 of 32 units get no gradient from save 7 on.
        var run = SyntheticRun()
        run.weightHook = zeroGradientRows(16, ofLayer: 1, fromSave: 7)
        let (report, _) = try run.scan()
        let dead = report.findings(.deadUnits)
        #expect(dead.map(\.tensor) == ["l1.weight"])
        #expect(dead.first?.evidence["dead_units"] == .int(16))
        #expect(dead.first?.severity == .warning)
        #expect(dead.first?.firstStep == 700)
        // Dying in the last two saves is too short to tell (fewer than three saves).
        var late = SyntheticRun()
        late.weightHook = zeroGradientRows(16, ofLayer: 1, fromSave: 9)
        let (lateReport, _) = try late.scan()
        #expect(lateReport.findings(.deadUnits).filter { $0.severity >= .warning }.isEmpty)
    }
}
