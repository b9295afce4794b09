import ElementTypes
import Foundation
import GradScopeMeasurement
import GradScopeModel
import GradScopeSources
import GradScopeStatistics

/// The three analyses behind `inspect`, `diff` and `scan`.
public enum Analysis {
    /// Inspects one checkpoint file: every tensor's statistics and the findings one file can show.
    public static func inspect(
        _ path: String, load: LoadOptions = LoadOptions(), measure: MeasureOptions = MeasureOptions(),
        thresholds: Thresholds = Thresholds(), select: NSRegularExpression? = nil
    ) throws -> InspectReport {
        let checkpoints = try CheckpointLoader.load(path, options: load)
        guard let checkpoint = checkpoints.last else { throw CheckpointError(file: path, reason: "no checkpoint in the file") }
        var notes = checkpoint.notes
        if checkpoints.count > 1 {
            notes.append("the file holds \(checkpoints.count) steps; inspecting the last (\(checkpoint.source)); scan reads them all")
        }
        let selected = checkpoint.selecting(select)
        let run = Run(source: path, checkpoints: [selected])
        var measureOptions = measure
        measureOptions.deadActivationFraction = thresholds.deadActivationFraction
        let (measured, measurements) = ScanEngine.measure(run, load: load, options: measureOptions, perUnitEverywhere: true)
        let detectors = DetectorRegistry.fileDetectors()
        let diagnosis = Diagnoser.diagnose(measurements, thresholds: thresholds, detectors: detectors.diagnosed)
        let record = measurements.records.first
        let failures = Dictionary((record?.failures ?? []).map { ($0.item, $0.reason) }, uniquingKeysWith: { a, _ in a })
        // Layer by layer in depth order; within a layer the weight, then its gradient, then optimizer state.
        let layerIndex = Dictionary(selected.layers.enumerated().map { ($0.element, $0.offset) }, uniquingKeysWith: { a, _ in a })
        let roleIndex: [TensorRole: Int] = [.weight: 0, .gradient: 1, .optimizer: 2, .activation: 3]
        let fileOrder = Dictionary(selected.tensors.enumerated().map { ($0.element.key, $0.offset) }, uniquingKeysWith: { a, _ in a })
        let ordered = selected.tensors.sorted { a, b in
            let activationA = a.role == .activation, activationB = b.role == .activation
            if activationA != activationB { return !activationA }
            let la = layerIndex[a.layer] ?? Int.max, lb = layerIndex[b.layer] ?? Int.max
            if la != lb { return la < lb }
            if a.name != b.name {
                if a.shape.count != b.shape.count { return a.shape.count > b.shape.count }
                return (fileOrder[a.key] ?? 0) < (fileOrder[b.key] ?? 0)
            }
            if a.role != b.role { return (roleIndex[a.role] ?? 9) < (roleIndex[b.role] ?? 9) }
            return (fileOrder[a.key] ?? 0) < (fileOrder[b.key] ?? 0)
        }
        let tensors = ordered.map { tensor -> InspectedTensor in
            let measurement = record?.tensors[tensor.key]
            return InspectedTensor(
                name: tensor.name, layer: tensor.layer, role: tensor.role, slot: tensor.slotName, shape: tensor.shape,
                dtype: tensor.dtype.description, path: tensor.path, unitAxis: tensor.unitAxis, trainable: tensor.trainable,
                stats: measurement?.stats, deadUnits: tensor.role == .activation ? measurement?.inactiveUnits : measurement?.zeroUnits,
                error: measurement == nil ? failures[selected.source + ":" + tensor.path] ?? "not read" : nil)
        }
        var notChecked = diagnosis.notChecked
        for kind in DetectorRegistry.needingSeveralSaves() {
            notChecked.append(NotChecked(kind: kind, reason: DetectorRegistry.severalSavesReason))
        }
        let after = Diagnoser.detect(measurements, thresholds: thresholds, detectors: detectors.after)
        var findings = diagnosis.findings
        findings.append(contentsOf: after.findings)
        if !measurements.stepsKnown {
            // A file that holds no step: its findings are not bound to one (DESIGN.md: null).
            for index in findings.indices {
                findings[index].firstStep = nil
                findings[index].lastStep = nil
            }
        }
        notChecked.append(contentsOf: after.notChecked)
        return InspectReport(
            file: path, layout: checkpoint.layout.rawValue, step: checkpoint.metadata.step, loss: checkpoint.metadata.loss,
            lr: checkpoint.metadata.learningRate, framework: checkpoint.metadata.framework,
            optimizer: checkpoint.metadata.optimizer, tensors: tensors, findings: findings,
            notChecked: notChecked, skipped: checkpoint.skipped + (record?.failures ?? []) + measured.skipped, notes: notes,
            verdict: Diagnoser.verdict(findings, run: measurements, notChecked: notChecked))
    }

    /// What changed between two checkpoints, tensor by tensor.
    public static func diff(
        _ pathA: String, _ pathB: String, load: LoadOptions = LoadOptions(), measure: MeasureOptions = MeasureOptions(),
        thresholds: Thresholds = Thresholds(), select: NSRegularExpression? = nil
    ) throws -> DiffReport {
        guard let a = try CheckpointLoader.load(pathA, options: load).last else { throw CheckpointError(file: pathA, reason: "no checkpoint") }
        guard let b = try CheckpointLoader.load(pathB, options: load).last else { throw CheckpointError(file: pathB, reason: "no checkpoint") }
        var first = a.selecting(select), second = b.selecting(select)
        if first.metadata.step == nil { first.metadata.step = 0 }
        if second.metadata.step == nil || second.metadata.step == first.metadata.step {
            second.metadata.step = (first.metadata.step ?? 0) + 1
        }
        let keysA = Dictionary(first.tensors.map { ($0.key, $0) }, uniquingKeysWith: { x, _ in x })
        let keysB = Dictionary(second.tensors.map { ($0.key, $0) }, uniquingKeysWith: { x, _ in x })
        let added = second.tensors.filter { keysA[$0.key] == nil }.map(\.label)
        let removed = first.tensors.filter { keysB[$0.key] == nil }.map(\.label)
        let reshaped = second.tensors.filter { tensor in keysA[tensor.key].map { $0.shape != tensor.shape } ?? false }
            .map { "\($0.label): \(formatShape(keysA[$0.key]?.shape ?? [])) -> \(formatShape($0.shape))" }
        let run = Run(source: pathB, checkpoints: [first, second])
        let (measured, measurements) = ScanEngine.measure(run, load: load, options: measure)
        let diagnosis = Diagnoser.diagnose(measurements, thresholds: thresholds, detectors: DetectorRegistry.detectors(for: .pair))
        let steps = max((second.metadata.step ?? 1) - (first.metadata.step ?? 0), 1)
        var drifts: [TensorDrift] = []
        if let record = measurements.records.last {
            for key in record.order {
                guard let measurement = record.tensors[key], let drift = measurement.drift else { continue }
                var status = "changed"
                if drift.changed == 0 { status = "frozen" }
                if let normA = drift.normA, let normB = drift.normB, normB > 0, normA / normB >= thresholds.collapseFactor { status = "collapsing" }
                if drift.nonFinite > 0 { status = "non-finite" }
                drifts.append(
                    TensorDrift(
                        name: measurement.name, layer: measurement.layer, role: measurement.role, shape: measurement.shape,
                        normA: drift.normA, normB: drift.normB, drift: drift,
                        perStep: drift.relativeChange.map { $0 / Double(steps) }, status: status))
            }
        }
        drifts.sort { ($0.drift.relativeChange ?? -1) > ($1.drift.relativeChange ?? -1) }
        return DiffReport(
            a: pathA, b: pathB, stepA: first.metadata.step, stepB: second.metadata.step, tensors: drifts, added: added,
            removed: removed, reshaped: reshaped, findings: diagnosis.findings, notChecked: diagnosis.notChecked,
            skipped: measured.skipped + measurements.records.flatMap(\.failures), verdict: diagnosis.verdict)
    }

    /// The whole run: every step measured, every detector run. Files are read in worker
    /// processes when `isolation` is given, else in this process; the analysis is the same.
    public static func scan(
        _ path: String, isolation: IsolationOptions? = nil, load: LoadOptions = LoadOptions(),
        measure: MeasureOptions = MeasureOptions(), thresholds: Thresholds = Thresholds(),
        select: NSRegularExpression? = nil,
        loadProgress: (@Sendable (Int, Int, Int, Int) -> Void)? = nil,
        measureProgress: (@Sendable (Int, Int) -> Void)? = nil
    ) throws -> (ScanReport, RunMeasurements) {
        var measureOptions = measure
        measureOptions.deadActivationFraction = thresholds.deadActivationFraction
        let (run, measurements) = try ScanEngine.scan(
            path, isolation: isolation, load: load, measure: measureOptions, select: select,
            loadProgress: loadProgress, measureProgress: measureProgress)
        let diagnosis = Diagnoser.diagnose(measurements, thresholds: thresholds)
        return (ScanReport(run: run, measurements: measurements, diagnosis: diagnosis), measurements)
    }

    /// The whole run with every file read in isolated worker processes.
    public static func scanIsolated(
        _ path: String, isolation: IsolationOptions, load: LoadOptions = LoadOptions(),
        measure: MeasureOptions = MeasureOptions(), thresholds: Thresholds = Thresholds(),
        select: NSRegularExpression? = nil,
        loadProgress: (@Sendable (Int, Int, Int, Int) -> Void)? = nil,
        measureProgress: (@Sendable (Int, Int) -> Void)? = nil
    ) throws -> (ScanReport, RunMeasurements) {
        try scan(
            path, isolation: isolation, load: load, measure: measure, thresholds: thresholds, select: select,
            loadProgress: loadProgress, measureProgress: measureProgress)
    }
}
