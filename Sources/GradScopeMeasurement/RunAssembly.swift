import Foundation
import GradScopeModel
import GradScopeSources

/// What measuring one save gave: its summary, or why it was left out of the run.
package enum SaveOutcome: Sendable, Codable {
    case measured(SaveSummary)
    case skipped(SkippedItem)
}

/// Puts one model's measured saves together into the run and its measurements, save by save in
/// the run's order, whoever measured them: the local scan feeds it as it measures, a merge feeds
/// it the saves read back from shards' summary files. Both go through this one type, so that a
/// merge gives what the local scan gives by construction.
///
/// What a save keeps is decided here from its index among the described saves: every save's
/// compact numbers, and the log2 histograms of ``StepSampling``'s saves of the described run
/// (a save arrives with its histograms; the others drop them here).
///
/// A run where every weight matrix jumps to unrelated values once (``RunJumps``) is split into two
/// runs at the jump (``finish(splitting:)``): each part is assembled from the same saves, the later
/// part's first save without its drift (it has no save before it in its own run), so nothing is
/// read twice. To do that in one pass, the dead-unit windows are also kept as they stood before the
/// first jump and from it on, until a second jump makes a split impossible.
package struct RunAssembly {
    /// The described run: its source, notes, skipped files and training log (its checkpoints are
    /// not used: the kept ones come with the saves).
    private var run: Run
    private let sampled: Set<Int>
    private let full: Bool
    private var records: [StepRecord] = []
    private var kept: [Checkpoint] = []
    private var skipped: [SkippedItem]
    private var windows = UnitWindowBuilder()
    private var layout: TableLayout?
    /// Positions in `records` of the saves whose weights are unrelated to the save before's.
    private var jumps: [Int] = []
    /// The windows of the saves before the first jump, and of the saves from it on (nil once a
    /// second jump rules a split out).
    private var beforeJump: UnitWindowBuilder?
    private var sinceJump: UnitWindowBuilder?

    /// `run` as described, of `count` saves (its checkpoints' count when not given; the checkpoints
    /// themselves are not kept), `full` keeping every save's full statistics.
    package init(run: Run, count: Int? = nil, full: Bool = false) {
        let count = count ?? run.checkpoints.count
        var described = run
        described.checkpoints = []
        described.otherModels = []
        self.run = described
        self.sampled = Set(StepSampling.indices(count: count))
        self.full = full
        self.skipped = run.skipped
    }

    /// Adds the save at `index` among the described saves (saves come in order).
    package mutating func add(_ outcome: SaveOutcome, index: Int) {
        switch outcome {
        case .skipped(let item):
            skipped.append(item)
        case .measured(let summary):
            var record = summary.record
            let detail: MeasurementDetail = full ? .full : sampled.contains(index) ? .histogram : .compact
            record.tensors = record.tensors.keeping(detail, sharing: layout)
            layout = record.tensors.layout
            var checkpoint = summary.checkpoint
            if !full { checkpoint.storage = [] }
            if let last = records.last, RunJumps.unrelated(record, after: last) {
                jumps.append(records.count)
                if jumps.count == 1 {
                    beforeJump = windows
                    var since = UnitWindowBuilder()
                    since.add(Self.withoutMovement(summary.units), step: record.step)
                    sinceJump = since
                } else {
                    beforeJump = nil
                    sinceJump = nil
                }
            } else if jumps.count == 1 {
                sinceJump?.add(summary.units, step: record.step)
            }
            windows.add(summary.units, step: record.step)
            records.append(record)
            kept.append(checkpoint)
        }
    }

    /// The run as kept (its checkpoints the measured saves, its skipped items those of describing,
    /// then those of measuring in the saves' order) and its measurements.
    package consuming func finish() -> (Run, RunMeasurements) {
        var keptRun = Run(source: run.source, checkpoints: kept, skipped: skipped, notes: run.notes)
        keptRun.trainingLog = run.trainingLog
        return (keptRun, RunMeasurer.assemble(run: keptRun, records: records, unitWindows: windows.windows))
    }

    /// What ``finish(splitting:)`` found.
    package struct Parts {
        /// One run, or the two runs of a split, the later first.
        package var runs: [(Run, RunMeasurements)]
        /// The step where the later run begins, when split.
        package var splitAt: Int?
        /// The steps of every jump, when there are jumps but no split.
        package var mixedAt: [Int] = []
    }

    /// The run, or, when every weight matrix jumps to unrelated values exactly once and each side
    /// holds at least two saves, the two runs (the later first), each judged on its own; with
    /// other jumps, their steps in ``Parts/mixedAt``.
    package consuming func finish(splitting: Bool) -> Parts {
        guard splitting, !jumps.isEmpty else { return Parts(runs: [finish()]) }
        let at = jumps[0]
        guard jumps.count == 1, at >= 2, records.count - at >= 2, let before = beforeJump, let since = sinceJump else {
            let steps = jumps.map { records[$0].step }
            return Parts(runs: [finish()], mixedAt: steps)
        }
        let step = records[at].step, previousStep = records[at - 1].step
        var first = Run(source: run.source, checkpoints: Array(kept[..<at]))
        var second = Run(source: run.source, checkpoints: Array(kept[at...]), skipped: skipped, notes: run.notes)
        first.trainingLog = run.trainingLog?.filter { $0.step <= previousStep }
        second.trainingLog = run.trainingLog?.filter { $0.step > previousStep }
        let note =
            "every weight matrix jumps to unrelated values between step \(previousStep) and step \(step) (cosine near 0 at a like norm): a new run of the same architecture begins there; each run is judged on its own"
        first.notes.insert(note, at: 0)
        second.notes.insert(note, at: 0)
        var later = Array(records[at...])
        later[0].tensors = later[0].tensors.withoutDrift()
        let earlier = Array(records[..<at])
        // The later run is the one shown (its files are the newer ones, or it came last).
        return Parts(
            runs: [
                (second, RunMeasurer.assemble(run: second, records: later, unitWindows: since.windows)),
                (first, RunMeasurer.assemble(run: first, records: earlier, unitWindows: before.windows)),
            ], splitAt: step)
    }

    /// A save's liveness as its own run's first save gives it: no save before, so no movement; a
    /// weight whose movement was its evidence keeps only its input units, when it has them.
    static func withoutMovement(_ units: [UnitSnapshot]) -> [UnitSnapshot] {
        units.compactMap { snapshot in
            guard snapshot.source == .movement else { return snapshot }
            guard let inputs = snapshot.inputsAlive, !inputs.isEmpty else { return nil }
            return UnitSnapshot(key: snapshot.key, name: snapshot.name, layer: snapshot.layer, source: .inputs, alive: inputs)
        }
    }
}
