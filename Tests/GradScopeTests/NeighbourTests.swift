import Foundation
import GradScopeDiagnosis
import GradScopeMeasurement
import GradScopeModel
import GradScopeStatistics
import TestSupport
import Testing

/// Dead units and zero-output layers read from the next layer's weight gradient or second moment,
/// along the simple chain only.
@Suite("Evidence from neighbours: the layer before zero input columns")
struct NeighbourTests {
    /// A hook zeroing input columns `columns` of layer `target`'s [32 x 32] gradient at every save.
    func zeroColumns(_ columns: Range<Int>, ofLayer target: Int) -> (Int, Int, [Double], [Double]) -> ([Double], [Double]) {
        { layer, _, weights, gradient in
            guard layer == target else { return (weights, gradient) }
            var g = gradient
            for unit in 0..<32 { for column in columns { g[unit * 32 + column] = 0 } }
            return (weights, g)
        }
    }

    @Test("zero input columns of the next layer's gradient are dead units of the layer before")
    func deadUnitsFromColumns() throws {
        var run = SyntheticRun()
        run.weightHook = zeroColumns(0..<10, ofLayer: 2)
        let (report, _) = try run.scan()
        let dead = report.findings(.deadUnits)
        #expect(dead.count == 1)
        let finding = try #require(dead.first)
        #expect(finding.layer == "l1")
        #expect(finding.tensor == "l1.weight")
        #expect(finding.evidence["dead_units"] == .int(10))
        #expect(finding.evidence["units"] == .int(32))
        #expect(finding.evidence["evidence"] == .string("next-layer-gradient"))
        #expect(finding.evidence["next_kernel"] == .string("l2.weight"))
        #expect(finding.severity == .warning)
        #expect(finding.firstStep == 100)
        #expect(finding.message.contains("input columns"))
        // Nothing about l2 itself: its gradient is alive.
        #expect(report.findings(.zeroGradient).isEmpty)
    }

    @Test("a layer with a live bias and dead weights: the layer before outputs zero for every input")
    func liveBiasDeadWeights() throws {
        var run = SyntheticRun()
        run.weightHook = zeroColumns(0..<32, ofLayer: 2)
        let (report, _) = try run.scan()
        let zero = report.findings(.collapsing).filter { $0.evidence["zero_output"] == .bool(true) }
        #expect(zero.count == 1)
        #expect(zero.first?.layer == "l1")
        #expect(zero.first?.firstStep == 100)
        #expect(zero.first?.message.contains("outputs zero for every input") == true)
        #expect(report.verdict.contains("layer `l1` outputs zero for every input"))
        // The next layer's all-zero weight gradient is still reported, and no dead units are counted.
        #expect(report.findings(.zeroGradient).map(\.tensor) == ["l2.weight"])
        #expect(report.findings(.deadUnits).isEmpty)
        // Its bias gradient zero too: no gradient reaches the next layer at all, nothing is said of the layer before.
        run.zeroBiasGradients = [2]
        let (dead, _) = try run.scan()
        #expect(dead.findings(.collapsing).isEmpty)
        #expect(Set(dead.findings(.zeroGradient).compactMap(\.tensor)) == ["l2.weight", "l2.bias"])
    }

    @Test("a residual block breaks the chain: zero columns across blocks say nothing of the block before")
    func residualBlock() throws {
        var run = SyntheticRun()
        run.layerName = { ["stem", "blocks.0.fc", "blocks.1.fc", "head"][$0] }
        run.weightHook = zeroColumns(0..<10, ofLayer: 2)
        #expect(try run.scan().0.findings(.deadUnits).isEmpty)
        run.weightHook = zeroColumns(0..<32, ofLayer: 2)
        let (report, _) = try run.scan()
        #expect(report.findings(.collapsing).isEmpty)
        #expect(report.findings(.zeroGradient).map(\.tensor) == ["blocks.1.fc.weight"])
        // Within one block the chain holds.
        #expect(LayerChain.parent("blocks.0.fc1") == LayerChain.parent("blocks.0.fc2"))
        #expect(LayerChain.breaks("encoder.attn.q_proj") && LayerChain.breaks("lstm_1") && LayerChain.breaks("bn1"))
        #expect(!LayerChain.breaks("dense_1") && !LayerChain.breaks("net.2"))
    }

    @Test("without gradients, Adam's second moment exactly zero in some input columns shows the same dead units")
    func fromSecondMoments() throws {
        var run = SyntheticRun()
        run.saveGradients = false
        run.saveSecondMoments = true
        run.weightHook = zeroColumns(0..<12, ofLayer: 2)
        let (report, _) = try run.scan()
        let dead = try #require(report.findings(.deadUnits).first { $0.layer == "l1" })
        #expect(dead.evidence["dead_units"] == .int(12))
        #expect(dead.evidence["evidence"] == .string("next-layer-second-moment"))
        #expect(dead.message.contains("exp_avg_sq"))
        // And a healthy run with second moments: nothing.
        var healthy = SyntheticRun()
        healthy.saveGradients = false
        healthy.saveSecondMoments = true
        #expect(try healthy.scan().0.warnings.isEmpty)
    }

    @Test("input units of PyTorch and Keras kernels and convolutions")
    func inputMaps() {
        #expect(InputUnitMap.forKernel(shape: [8, 5], unitAxis: 0) == InputUnitMap(units: 5, stride: 1))
        #expect(InputUnitMap.forKernel(shape: [8, 5, 3, 3], unitAxis: 0) == InputUnitMap(units: 5, stride: 9))
        #expect(InputUnitMap.forKernel(shape: [5, 8], unitAxis: 1) == InputUnitMap(units: 5, stride: 8))
        #expect(InputUnitMap.forKernel(shape: [3, 3, 5, 8], unitAxis: 3) == InputUnitMap(units: 5, stride: 8))
        #expect(InputUnitMap.forKernel(shape: [5], unitAxis: 0) == nil)
        // A [2, 3, 2] kernel (PyTorch conv1d, 2 outputs, 3 inputs, width 2) whose input 1 is zero everywhere.
        let values: [Float] = [1, 2, 0, 0, 3, 4, 5, 6, 0, 0, 7, 0]
        var zeros = [Int](repeating: 0, count: 3)
        let map = InputUnitMap(units: 3, stride: 2)
        values.withUnsafeBufferPointer { p in
            zeros.withUnsafeMutableBufferPointer { z in
                // In two blocks, as the readers give them.
                map.countZeros(p.baseAddress!, count: 5, offset: 0, into: z.baseAddress!)
                map.countZeros(p.baseAddress! + 5, count: 7, offset: 5, into: z.baseAddress!)
            }
        }
        #expect(zeros == [0, 4, 1])
    }

    @Test("dead-middle (real training): layer 2 outputs zero for every input, read from 4.weight")
    func deadMiddleSample() throws {
        let report = try Analysis.scan(samplePath("dead-middle")).0
        let zero = try #require(report.findings(.collapsing).first { $0.evidence["zero_output"] == .bool(true) })
        #expect(zero.layer == "2")
        #expect(zero.evidence["next_kernel"] == .string("4.weight"))
        #expect(zero.firstStep == 20)
        #expect(Set(report.findings(.zeroGradient).compactMap(\.tensor)) == ["0.weight", "0.bias", "2.weight", "2.bias", "4.weight"])
        #expect(report.findings(.lossPlateau).first?.evidence["classes"] == .int(2))
    }

    @Test("explode-then-dead (real training): the explosion at step 60, layer 2 silent and two layers without gradient from step 100")
    func explodeThenDeadSample() throws {
        let report = try Analysis.scan(samplePath("explode-then-dead")).0
        #expect(report.findings(.explodingGradient).first?.firstStep == 60)
        let zero = try #require(report.findings(.collapsing).first { $0.evidence["zero_output"] == .bool(true) })
        #expect(zero.layer == "2")
        #expect(zero.firstStep == 100)
        #expect(zero.evidence["last_output_step"] == .int(80))
        let zeroGradients = report.findings(.zeroGradient)
        #expect(Set(zeroGradients.compactMap(\.tensor)) == ["0.weight", "0.bias", "2.weight", "2.bias", "4.weight"])
        #expect(zeroGradients.allSatisfy { $0.firstStep == 100 && $0.evidence["last_nonzero_step"] == .int(80) })
        #expect(report.findings(.lossPlateau).first?.firstStep == 100)
    }
}
