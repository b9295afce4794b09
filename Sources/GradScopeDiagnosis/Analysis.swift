import ElementTypes
import Foundation
import GradScopeMeasurement
import GradScopeModel
import GradScopeSources
import GradScopeStatistics
import Synchronization

/// The three analyses behind `inspect`, `diff` and `scan`.
public enum Analysis {
    /// Inspects one checkpoint file: every tensor's statistics and the findings one file can show.
    public static func inspect(
        _ path: String, load: LoadOptions = LoadOptions(), measure: MeasureOptions = MeasureOptions(),
        thresholds: Thresholds = Thresholds(), select: NSRegularExpression? = nil
    ) throws -> InspectReport {
        let checkpoints = try Worker.describe(path, options: load)
        guard let checkpoint = checkpoints.last else { throw CheckpointError(file: path, reason: "no checkpoint in the file") }
        var notes = checkpoint.notes
        if checkpoints.count > 1 {
            notes.append("the file holds \(checkpoints.count) steps; inspecting the last (\(checkpoint.source)); scan reads them all")
        }
        // The whole file is diagnosed; `select` narrows only what the report shows (``Selection``).
        let selected = checkpoint
        let selection = select.map(Selection.init)
        let run = Run(source: path, checkpoints: [selected])
        var measureOptions = measure
        measureOptions.deadActivationFraction = thresholds.deadActivationFraction
        let (measured, measurements) = ScanEngine.measure(run, load: load, options: measureOptions, perUnitEverywhere: true, full: true)
        let detectors = DetectorRegistry.fileDetectors()
        let diagnosis = Diagnoser.diagnose(measurements, thresholds: thresholds, detectors: detectors.diagnosed)
        let record = measurements.records.first
        let failures = Dictionary((record?.failures ?? []).map { ($0.item, $0.reason) }, uniquingKeysWith: { a, _ in a })
        // Layer by layer in depth order; within a layer the weight, then its gradient, then optimizer state.
        let layerIndex = Dictionary(selected.layers.enumerated().map { ($0.element, $0.offset) }, uniquingKeysWith: { a, _ in a })
        let roleIndex: [TensorRole: Int] = [.weight: 0, .gradient: 1, .optimizer: 2, .activation: 3]
        let fileOrder = Dictionary(selected.tensors.enumerated().map { ($0.element.key, $0.offset) }, uniquingKeysWith: { a, _ in a })
        let ordered = selected.tensors.filter { selection?.matches($0.name) ?? true }.sorted { a, b in
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
        // Links between findings are a run's story (scan): one file's findings are listed as they are.
        var findings = Diagnoser.ordered((diagnosis.findings + after.findings).map(\.unlinked))
        if !measurements.stepsKnown {
            // A file that holds no step: its findings are not bound to one (docs/JSON.md: null).
            for index in findings.indices {
                findings[index].firstStep = nil
                findings[index].lastStep = nil
            }
        }
        notChecked.append(contentsOf: after.notChecked)
        var verdict = Diagnoser.verdict(findings, run: measurements, notChecked: notChecked)
        if let selection {
            let (names, layers) = Selection.names(measurements)
            let all = findings.count
            findings = findings.filter { selection.keeps($0, layers: layers) }
            let matched = names.filter(selection.matches).count
            verdict =
                matched == 0
                ? selection.nothingMatches(findings: all) : Diagnoser.verdict(findings, run: measurements, notChecked: notChecked)
            notes.append(selection.note(matched: matched, of: names.count, shownFindings: findings.count, allFindings: all))
        }
        return InspectReport(
            file: path, layout: checkpoint.layout.rawValue, step: checkpoint.metadata.step, loss: checkpoint.metadata.loss,
            lr: checkpoint.metadata.learningRate, framework: checkpoint.metadata.framework,
            optimizer: checkpoint.metadata.optimizer, tensors: tensors, findings: findings,
            notChecked: notChecked, skipped: checkpoint.skipped + (record?.failures ?? []) + measured.skipped, notes: notes,
            verdict: verdict)
    }

    /// What changed between two checkpoints, tensor by tensor.
    ///
    /// Only what two saves of one model allow is judged. The saves are compared oldest first (when B
    /// is older than A the report says so and names B first); per-step rates need two different known
    /// steps; tensors whose shape changed are listed, never measured; and two files that share fewer
    /// than half of their tensors by name and shape are different models, of which nothing is judged.
    /// `select` narrows what is shown, not what is judged (``Selection``).
    public static func diff(
        _ pathA: String, _ pathB: String, load: LoadOptions = LoadOptions(), measure: MeasureOptions = MeasureOptions(),
        thresholds: Thresholds = Thresholds(), select: NSRegularExpression? = nil
    ) throws -> DiffReport {
        guard let loadedA = try Worker.describe(pathA, options: load).last else { throw CheckpointError(file: pathA, reason: "no checkpoint") }
        guard let loadedB = try Worker.describe(pathB, options: load).last else { throw CheckpointError(file: pathB, reason: "no checkpoint") }
        var notes: [String] = []
        var (a, b, nameA, nameB) = (loadedA, loadedB, pathA, pathB)
        if let stepA = a.metadata.step, let stepB = b.metadata.step, stepB < stepA {
            notes.append(
                "B (step \(stepB)) is older than A (step \(stepA)): the changes are measured from the older save to the newer, \(pathB) → \(pathA)")
            (a, b, nameA, nameB) = (loadedB, loadedA, pathB, pathA)
        }
        let stepA = a.metadata.step, stepB = b.metadata.step
        // Per-step rates need two known, different steps; none is made up.
        let stepsApart: Int? = stepA.flatMap { first in stepB.flatMap { $0 > first ? $0 - first : nil } }
        if stepA == nil || stepB == nil {
            notes.append(
                "\(stepA == nil ? nameA : nameB) holds no step number: the steps between the saves are unknown, so no per-step rate is given")
        } else if stepA == stepB {
            notes.append("both files are at step \(stepA ?? 0): no per-step rate is given")
        }
        let keysA = Dictionary(a.tensors.map { ($0.key, $0) }, uniquingKeysWith: { x, _ in x })
        let keysB = Dictionary(b.tensors.map { ($0.key, $0) }, uniquingKeysWith: { x, _ in x })
        let added = b.tensors.filter { keysA[$0.key] == nil }
        let removed = a.tensors.filter { keysB[$0.key] == nil }
        let reshapedKeys = Set(b.tensors.filter { tensor in keysA[tensor.key].map { $0.shape != tensor.shape } ?? false }.map(\.key))
        // Two saves of one model share their parameters, by name and shape; a few may be added or reshaped.
        // Gradients and optimizer state come and go (a save before the first update has none), so the
        // model is told by its weights (by every tensor when a file holds no weight).
        let compared: (TensorRef) -> Bool = { a.tensors(.weight).isEmpty || b.tensors(.weight).isEmpty ? true : $0.role == .weight }
        let shared = b.tensors.filter { compared($0) && keysA[$0.key] != nil && !reshapedKeys.contains($0.key) }.count
        let larger = max(a.tensors.filter(compared).count, b.tensors.filter(compared).count)
        let sameModel = shared > 0 && 2 * shared >= larger
        if b.tensors.filter({ keysA[$0.key] != nil && !reshapedKeys.contains($0.key) }).isEmpty {
            notes.append("the files share no tensor of the same name and shape: they are not two saves of one model, and nothing is judged")
        } else if !sameModel {
            notes.append(
                "only \(shared) of \(larger) weights have the same name and shape in both files: they look like different models, and nothing is judged"
            )
        }
        if !reshapedKeys.isEmpty {
            notes.append("\(reshapedKeys.count) tensor(s) changed shape: they are listed as reshaped and not judged")
        }
        // Reshaped tensors are left out of the measurement: their values cannot be compared.
        var first = a, second = b
        first.tensors = a.tensors.filter { !reshapedKeys.contains($0.key) }
        second.tensors = b.tensors.filter { !reshapedKeys.contains($0.key) }
        first.storage = a.tensors.indices.filter { !reshapedKeys.contains(a.tensors[$0].key) }.map {
            a.storage.indices.contains($0) ? a.storage[$0] : nil
        }
        second.storage = b.tensors.indices.filter { !reshapedKeys.contains(b.tensors[$0].key) }.map {
            b.storage.indices.contains($0) ? b.storage[$0] : nil
        }
        // The measurement orders saves by step: two distinct ones, the older first (unknown or equal steps
        // are numbered 0 and 1 here only, never reported).
        if stepsApart == nil {
            first.metadata.step = 0
            second.metadata.step = 1
        }
        let run = Run(source: nameB, checkpoints: [first, second])
        let (measured, measurements) = ScanEngine.measure(run, load: load, options: measure, full: true)
        var detectors = DetectorRegistry.detectors(for: .pair)
        var notChecked: [NotChecked] = []
        if !sameModel {
            // Only what one file shows on its own stays judged: non-finite values.
            for detector in detectors where detector.kind != .nanInf {
                notChecked.append(NotChecked(kind: detector.kind, reason: "the two files are not saves of one model"))
            }
            detectors = detectors.filter { $0.kind == .nanInf }
        } else if stepsApart == nil {
            notChecked.append(NotChecked(kind: .updateRatio, reason: "needs two saves at different, known steps"))
            detectors = detectors.filter { $0.kind != .updateRatio }
        }
        let diagnosis = Diagnoser.diagnose(measurements, thresholds: thresholds, detectors: detectors)
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
                        perStep: stepsApart.flatMap { apart in drift.relativeChange.map { $0 / Double(apart) } }, status: status))
            }
        }
        drifts.sort { ($0.drift.relativeChange ?? -1) > ($1.drift.relativeChange ?? -1) }
        var findings = diagnosis.findings.map(\.unlinked)
        // In the order the detectors run, as when each says itself why it could not judge.
        let order = DetectorRegistry.detectors(for: .pair).map(\.kind)
        notChecked = (diagnosis.notChecked + notChecked).enumerated().sorted { x, y in
            let rankX = order.firstIndex(of: x.element.kind) ?? order.count, rankY = order.firstIndex(of: y.element.kind) ?? order.count
            return rankX != rankY ? rankX < rankY : x.offset < y.offset
        }.map(\.element)
        var verdict = Diagnoser.verdict(findings, run: measurements, notChecked: notChecked)
        var shownAdded = added, shownRemoved = removed
        var shownReshaped = b.tensors.filter { reshapedKeys.contains($0.key) }
        if let selection = select.map(Selection.init) {
            let (names, layers) = Selection.names(measurements)
            let all = findings.count
            findings = findings.filter { selection.keeps($0, layers: layers) }
            drifts = drifts.filter { selection.matches($0.name) }
            shownAdded = added.filter { selection.matches($0.name) }
            shownRemoved = removed.filter { selection.matches($0.name) }
            shownReshaped = shownReshaped.filter { selection.matches($0.name) }
            let matched = names.filter(selection.matches).count
            verdict =
                matched == 0
                ? selection.nothingMatches(findings: all) : Diagnoser.verdict(findings, run: measurements, notChecked: notChecked)
            notes.append(selection.note(matched: matched, of: names.count, shownFindings: findings.count, allFindings: all))
        }
        if !sameModel && findings.isEmpty && !measurements.records.isEmpty {
            verdict = "Not two saves of one model: nothing compared or judged (see notes)."
        }
        return DiffReport(
            a: nameA, b: nameB, stepA: stepA, stepB: stepB, tensors: sameModel ? drifts : [], added: shownAdded.map(\.label),
            removed: shownRemoved.map(\.label),
            reshaped: shownReshaped.map { "\($0.label): \(formatShape(keysA[$0.key]?.shape ?? [])) -> \(formatShape($0.shape))" },
            findings: findings, notChecked: notChecked, skipped: measured.skipped + measurements.records.flatMap(\.failures),
            notes: notes, verdict: verdict)
    }

    /// The whole run: every step measured, every detector run. Files are read in worker
    /// processes when `isolation` is given, else in this process; the analysis is the same.
    /// `cache`, when given, gives the saves measured before (``SummaryCache``).
    public static func scan(
        _ path: String, isolation: IsolationOptions? = nil, load: LoadOptions = LoadOptions(),
        measure: MeasureOptions = MeasureOptions(), thresholds: Thresholds = Thresholds(),
        select: NSRegularExpression? = nil,
        loadProgress: (@Sendable (Int, Int, Int, Int) -> Void)? = nil,
        measureProgress: (@Sendable (Int, Int) -> Void)? = nil, cache: SummaryCache? = nil
    ) throws -> (ScanReport, RunMeasurements) {
        var measureOptions = measure
        measureOptions.deadActivationFraction = thresholds.deadActivationFraction
        let models = try ScanEngine.scanModels(
            path, isolation: isolation, load: load, measure: measureOptions, select: nil,
            loadProgress: loadProgress, measureProgress: measureProgress, cache: cache)
        return report(models, thresholds: thresholds, select: select)
    }

    /// The scan of a whole run from the summary files of its shards (``ScanEngine/merge(_:deadActivationFraction:)``):
    /// the report a scan of the whole run gives.
    public static func merge(
        _ paths: [String], thresholds: Thresholds = Thresholds(), select: NSRegularExpression? = nil
    ) throws -> (ScanReport, RunMeasurements) {
        let models = try ScanEngine.merge(paths, deadActivationFraction: thresholds.deadActivationFraction)
        return report(models, thresholds: thresholds, select: select)
    }

    /// The diagnosis of `measurements` and, when they do not depend on its findings
    /// (``ScanReport/timelinesNeedFindings(_:)``), the report's timelines, built on another thread
    /// meanwhile on a run large enough to gain by it (``Diagnoser/detectorThreads(_:)``); nil
    /// timelines: the report builds them from the findings. `aside` decides whether the timelines
    /// are built on another thread (nil: by the run's size). Runs with the index of `measurements`
    /// current.
    package static func diagnoseAndDrawTimelines(
        _ measurements: RunMeasurements, thresholds: Thresholds, aside: Bool? = nil
    ) -> (Diagnosis, ScanReport.Timelines?) {
        guard !ScanReport.timelinesNeedFindings(measurements), aside ?? (Diagnoser.detectorThreads(measurements) > 1),
            let index = RunIndex.current
        else {
            return (Diagnoser.diagnose(measurements, thresholds: thresholds), nil)
        }
        let drawn = Mutex<ScanReport.Timelines?>(nil)
        let group = DispatchGroup()
        // On as many threads as the detectors: while they run, the timelines share the cores with
        // them; once they are done, the timelines left take every core, not one.
        let threads = Diagnoser.detectorThreads(measurements)
        DispatchQueue.global().async(group: group) {
            let timelines = RunIndex.$current.withValue(index) { ScanReport.timelines(measurements, findings: [], threads: threads) }
            drawn.withLock { $0 = timelines }
        }
        let diagnosis = Diagnoser.diagnose(measurements, thresholds: thresholds)
        group.wait()
        return (diagnosis, drawn.withLock { $0 })
    }

    /// The report of measured runs: the first diagnosed and shown, the others summarised under `models`.
    package static func report(
        _ models: ScanEngine.Models, thresholds: Thresholds, select: NSRegularExpression?
    ) -> (ScanReport, RunMeasurements) {
        let (run, measurements) = models.runs[0]
        // The whole run is diagnosed; `select` narrows only what the report shows (``Selection``).
        // One index of the measurements serves the detectors and the report.
        var report = RunIndex.with(measurements) {
            let (diagnosis, timelines) = diagnoseAndDrawTimelines(measurements, thresholds: thresholds)
            var report = ScanReport(run: run, measurements: measurements, diagnosis: diagnosis, timelines: timelines)
            if let select { report.show(Selection(select), measurements: measurements) }
            return report
        }
        // Other models in the same folder: each judged on its own, summarised in `models`.
        if models.runs.count > 1 {
            let others = models.runs.dropFirst().map { other -> ScanReport in
                let (otherRun, otherMeasurements) = other
                return RunIndex.with(otherMeasurements) {
                    let diagnosis = Diagnoser.diagnose(otherMeasurements, thresholds: thresholds)
                    var report = ScanReport(run: otherRun, measurements: otherMeasurements, diagnosis: diagnosis)
                    if let select { report.show(Selection(select), measurements: otherMeasurements) }
                    return report
                }
            }
            report.addModels(
                others, weights: models.runs.map { Set($0.0.checkpoints.last?.tensors(.weight).map(\.name) ?? []).count },
                reason: models.reason ?? "most tensor names or shapes differ", sameArchitecture: models.sameArchitecture)
        } else if !models.mixedAt.isEmpty {
            let steps = models.mixedAt.prefix(5).map(String.init).joined(separator: ", ") + (models.mixedAt.count > 5 ? ", …" : "")
            report.verdict =
                "Saves of different runs seem mixed in this folder: every weight matrix jumps to unrelated values at \(models.mixedAt.count == 1 ? "step" : "\(models.mixedAt.count) saves (steps") \(steps)\(models.mixedAt.count == 1 ? "" : ")"), so the findings may mix runs. "
                + report.verdict
            report.notes.insert(
                "every weight matrix jumps to unrelated values (cosine near 0 at a like norm) at steps \(steps): the saves of two or more runs of the same architecture seem interleaved, and cannot be told apart; scan each run's files on their own",
                at: 0)
        }
        return (report, measurements)
    }
}
