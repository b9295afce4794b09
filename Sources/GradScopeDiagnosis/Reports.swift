import ElementTypes
import Foundation
import GradScopeMeasurement
import GradScopeModel
import GradScopeSources
import GradScopeStatistics
import HDF5
import Synchronization

/// One point of a tensor's timeline in a scan.
public struct TimelinePoint: Sendable, Codable, Equatable {
    public var step: Int
    public var norm: Double?
    public var gradientNorm: Double?
    /// ‖g‖/‖W‖: the gradient's norm relative to the weights' (nil without a gradient or when ‖W‖ is 0 or not finite).
    public var gradientRatio: Double? = nil
    /// ‖ΔW‖/‖W‖ since the previous save, divided by the steps between them.
    public var updateRatio: Double?
    /// ‖ΔW‖/‖W‖ since the previous save, not divided: the change per save interval (what the table
    /// shows when the step numbers do not count optimizer updates).
    public var updatePerSave: Double? = nil
    public var zeroFraction: Double?
    public var nonFinite: Int
    /// Counts of floor(log2 |x|) from `log2Min` (the log-magnitude histogram).
    public var log2Min: Int?
    public var log2Counts: [Int]?
    public var gradientLog2Min: Int?
    public var gradientLog2Counts: [Int]?
    /// The share of the gradient's elements that are exactly zero (not part of its log2 histogram).
    public var gradientZeroFraction: Double? = nil
    /// NaN and ±Inf elements of the gradient.
    public var gradientNonFinite: Int? = nil
    public var deadUnits: Int?

    package init(
        step: Int, norm: Double?, gradientNorm: Double?, gradientRatio: Double? = nil, updateRatio: Double?, updatePerSave: Double? = nil,
        zeroFraction: Double?, nonFinite: Int, log2Min: Int?, log2Counts: [Int]?, gradientLog2Min: Int?, gradientLog2Counts: [Int]?,
        gradientZeroFraction: Double? = nil, gradientNonFinite: Int? = nil, deadUnits: Int?
    ) {
        self.step = step
        self.norm = norm
        self.gradientNorm = gradientNorm
        self.gradientRatio = gradientRatio
        self.updateRatio = updateRatio
        self.updatePerSave = updatePerSave
        self.zeroFraction = zeroFraction
        self.nonFinite = nonFinite
        self.log2Min = log2Min
        self.log2Counts = log2Counts
        self.gradientLog2Min = gradientLog2Min
        self.gradientLog2Counts = gradientLog2Counts
        self.gradientZeroFraction = gradientZeroFraction
        self.gradientNonFinite = gradientNonFinite
        self.deadUnits = deadUnits
    }

    package enum CodingKeys: String, CodingKey {
        case step, norm
        case gradientNorm = "gradient_norm"
        case gradientRatio = "gradient_ratio"
        case updateRatio = "update_ratio"
        case updatePerSave = "update_per_save"
        case zeroFraction = "zero_fraction"
        case nonFinite = "non_finite"
        case log2Min = "log2_min"
        case log2Counts = "log2_counts"
        case gradientLog2Min = "gradient_log2_min"
        case gradientLog2Counts = "gradient_log2_counts"
        case gradientZeroFraction = "gradient_zero_fraction"
        case gradientNonFinite = "gradient_non_finite"
        case deadUnits = "dead_units"
    }
}

/// The history of one weight tensor over a run.
public struct TensorTimeline: Sendable, Codable, Equatable {
    public var name: String
    public var layer: String
    public var shape: [Int]
    public var units: Int?
    public var points: [TimelinePoint]

    package init(name: String, layer: String, shape: [Int], units: Int?, points: [TimelinePoint]) {
        self.name = name
        self.layer = layer
        self.shape = shape
        self.units = units
        self.points = points
    }
}

/// The loss and learning rate at one save.
public struct LossPoint: Sendable, Codable, Equatable {
    public var step: Int
    public var loss: Double?
    public var lr: Double?

    package init(step: Int, loss: Double? = nil, lr: Double? = nil) {
        self.step = step
        self.loss = loss
        self.lr = lr
    }
}

/// What the training loop logged at one logging step (a Hugging Face Trainer's `log_history`).
public struct LogPoint: Sendable, Codable, Equatable {
    public var step: Int
    public var loss: Double?
    public var lr: Double?
    public var gradNorm: Double?

    package init(step: Int, loss: Double? = nil, lr: Double? = nil, gradNorm: Double? = nil) {
        self.step = step
        self.loss = loss
        self.lr = lr
        self.gradNorm = gradNorm
    }

    package init(_ entry: TrainingLogEntry) {
        self.init(step: entry.step, loss: entry.loss, lr: entry.learningRate, gradNorm: entry.gradNorm)
    }

    package enum CodingKeys: String, CodingKey {
        case step, loss, lr
        case gradNorm = "grad_norm"
    }
}

/// The file a saved step was read from.
public struct StepFile: Sendable, Codable, Equatable {
    public var step: Int
    /// The file (or `file:/group` for a step inside a multi-step file).
    public var file: String
}

/// One model of a folder that holds several, judged on its own.
public struct ModelReport: Sendable, Codable {
    /// 1, 2, ...: the models in the order their first saves come (by step, then file name).
    public var model: Int
    /// Whether it is the model the report's timeline and findings are about (the newest files).
    public var primary: Bool
    public var steps: [Int]
    public var stepFiles: [StepFile]
    /// The number of its weight tensors.
    public var weights: Int
    public var verdict: String
    public var findings: [Finding]
    public var notChecked: [NotChecked]

    package enum CodingKeys: String, CodingKey {
        case model, primary, steps
        case stepFiles = "step_files"
        case weights, verdict, findings
        case notChecked = "not_checked"
    }
}

extension ScanReport {
    /// Adds the other models of the folder, each judged on its own, and says so in the verdict.
    /// `weights`: each model's weight count, this report's first.
    /// `sameArchitecture`: the runs share their tensors' names and shapes (told apart by a jump of their weights).
    package mutating func addModels(
        _ others: [ScanReport], weights: [Int], reason: String = "most tensor names or shapes differ", sameArchitecture: Bool = false
    ) {
        var entries: [(report: ScanReport, primary: Bool, weights: Int)] = [(self, true, weights.first ?? 0)]
        for (index, other) in others.enumerated() {
            entries.append((other, false, weights.indices.contains(index + 1) ? weights[index + 1] : 0))
        }
        // Numbered in the order their first saves come.
        entries.sort { a, b in
            let firstA = a.report.stepFiles?.first, firstB = b.report.stepFiles?.first
            if firstA?.step != firstB?.step { return (firstA?.step ?? 0) < (firstB?.step ?? 0) }
            return numericAwareLess(firstA?.file ?? "", firstB?.file ?? "")
        }
        models = entries.enumerated().map { index, entry in
            ModelReport(
                model: index + 1, primary: entry.primary, steps: entry.report.steps, stepFiles: entry.report.stepFiles ?? [],
                weights: entry.weights, verdict: entry.report.verdict, findings: entry.report.findings, notChecked: entry.report.notChecked)
        }
        skipped += others.flatMap(\.skipped)
        func span(_ model: ModelReport) -> String {
            let saves = "\(model.steps.count) save\(model.steps.count == 1 ? "" : "s")"
            guard let first = model.steps.first, let last = model.steps.last else { return saves }
            return first == last ? "\(saves), step \(first)" : "\(saves), steps \(first)–\(last)"
        }
        let described = (models ?? []).sorted { a, b in a.primary && !b.primary }.map { model in
            "model \(model.model) (\(model.primary ? "newest files, shown below; " : "")\(model.weights) weights, \(span(model))): \(model.verdict)"
        }
        verdict =
            "\(entries.count) different \(sameArchitecture ? "runs" : "models") in one folder (\(reason)), judged separately — "
            + described.joined(separator: " ")
    }
}

/// Everything `gradscope scan` reports; its JSON form is the contract in docs/JSON.md.
public struct ScanReport: Sendable, Codable {
    public var source: String
    public var layout: String?
    public var verdict: String
    public var steps: [Int]
    /// Where the step numbers came from (``StepSource``'s raw value: `attribute`, `optimizer-iterations`,
    /// `file-name`, `group-name`, `epoch`, `position`), for most saves; nil when none had one.
    public var stepSource: String? = nil
    /// Whether the step numbers count optimizer updates (else `update_ratio` is per step number,
    /// e.g. per epoch, and `update_per_save` is the change per save interval).
    /// (Absent in reports written before it existed.)
    public var stepsCountUpdates: Bool? = nil
    /// The file of each saved step, in step order (absent in reports written before it existed).
    public var stepFiles: [StepFile]? = nil
    /// When the folder holds several models: each, judged on its own (the first is this report's
    /// own, whose timeline and findings the report holds); absent for a run of one model.
    public var models: [ModelReport]? = nil

    /// Every finding of the folder: this model's and the other models'.
    public var allFindings: [Finding] { findings + (models ?? []).filter { !$0.primary }.flatMap(\.findings) }
    public var findings: [Finding]
    public var skipped: [SkippedItem]
    public var notChecked: [NotChecked]
    public var notes: [String]
    public var loss: [LossPoint]
    /// Every logging step of the run's training log, when its saves carry one (absent otherwise).
    public var trainingLog: [LogPoint]? = nil
    public var timeline: [TensorTimeline]
    /// Saved activations' spread per step, by name.
    public var activations: [TensorTimeline]
    /// The findings linked cause -> consequences, in the order they began (empty when none is linked).
    public var story: [StoryEvent] = []

    package enum CodingKeys: String, CodingKey {
        case source, layout, verdict, steps
        case stepSource = "step_source"
        case stepsCountUpdates = "steps_count_updates"
        case stepFiles = "step_files"
        case models
        case findings, skipped
        case notChecked = "not_checked"
        case notes, loss
        case trainingLog = "training_log"
        case timeline, activations, story
    }

    /// Reads a report, an earlier one without `story` too (then it has none).
    public init(from decoder: Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        source = try container.decode(String.self, forKey: .source)
        layout = try container.decodeIfPresent(String.self, forKey: .layout)
        verdict = try container.decode(String.self, forKey: .verdict)
        steps = try container.decode([Int].self, forKey: .steps)
        findings = try container.decode([Finding].self, forKey: .findings)
        skipped = try container.decode([SkippedItem].self, forKey: .skipped)
        notChecked = try container.decode([NotChecked].self, forKey: .notChecked)
        notes = try container.decode([String].self, forKey: .notes)
        loss = try container.decode([LossPoint].self, forKey: .loss)
        trainingLog = try container.decodeIfPresent([LogPoint].self, forKey: .trainingLog)
        timeline = try container.decode([TensorTimeline].self, forKey: .timeline)
        activations = try container.decode([TensorTimeline].self, forKey: .activations)
        story = try container.decodeIfPresent([StoryEvent].self, forKey: .story) ?? []
    }

    public init(run: Run, measurements: RunMeasurements, diagnosis: Diagnosis) {
        self.init(run: run, measurements: measurements, diagnosis: diagnosis, timelines: nil)
    }

    /// The report, with its timelines when they were built beforehand (``timelines(_:findings:)``;
    /// nil: built here).
    package init(run: Run, measurements: RunMeasurements, diagnosis: Diagnosis, timelines: Timelines?) {
        source = run.source
        layout = measurements.layout?.rawValue
        verdict = diagnosis.verdict
        steps = measurements.steps
        stepSource = measurements.stepSource?.rawValue
        stepsCountUpdates = measurements.stepsCountUpdates
        stepFiles = measurements.records.map { StepFile(step: $0.step, file: $0.source) }
        findings = diagnosis.findings
        story = Story.events(diagnosis.findings, phrase: Diagnoser.phrase)
        skipped = run.skipped + measurements.records.flatMap(\.failures)
        notChecked = diagnosis.notChecked
        notes = run.notes
        loss = measurements.records.map { LossPoint(step: $0.step, loss: $0.loss, lr: $0.learningRate) }
        trainingLog = measurements.trainingLog?.map(LogPoint.init)
        let built =
            timelines ?? Self.timelines(measurements, findings: diagnosis.findings, threads: Diagnoser.detectorThreads(measurements))
        timeline = built.weights
        activations = built.activations
    }

    /// A report's timelines: the weights', then the saved activations'.
    package typealias Timelines = (weights: [TensorTimeline], activations: [TensorTimeline])

    /// Whether the timelines of `measurements` depend on the findings: in a run longer than
    /// ``StepSampling/limit`` they hold the steps the findings begin and end at.
    package static func timelinesNeedFindings(_ measurements: RunMeasurements) -> Bool {
        measurements.records.count > StepSampling.limit
    }

    /// The timelines of `measurements` (`findings` are read only when ``timelinesNeedFindings(_:)``),
    /// the tensors' timelines built on up to `threads` threads, each taking a run of tensors.
    package static func timelines(_ measurements: RunMeasurements, findings: [Finding], threads: Int = 1) -> Timelines {
        // A long run's timeline holds the saves ``StepSampling`` keeps histograms of, and every step a
        // finding begins or ends at; the findings themselves were judged on every save.
        let records = measurements.records
        let drawn: [Int]
        if timelinesNeedFindings(measurements) {
            let findingSteps = Set(findings.flatMap { [$0.firstStep, $0.lastStep].compactMap { $0 } })
            let sampled = Set(StepSampling.indices(count: records.count))
            drawn = records.indices.filter { sampled.contains($0) || findingSteps.contains(records[$0].step) }
        } else {
            drawn = Array(records.indices)
        }
        // Whether each save is drawn (every one but in a long run).
        let isDrawn: [Bool] = {
            var isDrawn = [Bool](repeating: false, count: records.count)
            for index in drawn { isDrawn[index] = true }
            return isDrawn
        }()
        let timeline = orderedMap(measurements.indexedWeightKeys, threads: threads) { key -> TensorTimeline? in
            records.withUnsafeBufferPointer { records in
                // The gradient's place in each save, looked up with the tensor's, once per table layout.
                var gradientPosition: Int?
                // The step of the last save before the one at hand that holds the tensor (for the update ratio).
                var previous: Int?
                var points: [TimelinePoint] = []
                points.reserveCapacity(drawn.count)
                let last = forEachPosition(of: key, in: records) { index, position, newLayout in
                    if newLayout {
                        let layout = records[index].tensors.layout
                        gradientPosition = layout.index[.gradient(layout.descriptors[position].name)]
                    }
                    let step = records[index].step
                    defer { previous = step }
                    guard isDrawn[index] else { return }
                    // Only the fields a point shows are read out of the table, lent in place (a copy
                    // of it is a retain and release of each of its arrays).
                    points.append(
                        weightPoint(records[index].tensors, position: position, gradientPosition: gradientPosition, step: step, previous: previous))
                }
                guard let last else { return nil }
                // The name, layer and shape of its last save, as that save's measurement gives them.
                let descriptor = records[last.record].tensors.layout.descriptors[last.position]
                return TensorTimeline(
                    name: descriptor.name, layer: descriptor.layer, shape: descriptor.shape,
                    units: descriptor.shape.count >= 2
                        ? TensorNames.units(shape: descriptor.shape, unitAxis: descriptor.unitAxis, gates: descriptor.gates) : nil,
                    points: points)
            }
        }
        let activations = orderedMap(measurements.indexedKeys(role: .activation), threads: threads) { key -> TensorTimeline? in
            records.withUnsafeBufferPointer { records in
                var points: [TimelinePoint] = []
                points.reserveCapacity(drawn.count)
                let last = forEachPosition(of: key, in: records) { index, position, _ in
                    guard isDrawn[index] else { return }
                    let table = records[index].tensors
                    let m = table.point(at: position)
                    let log2 = table.detail >= .histogram ? table.log2Histogram(at: position) : nil
                    points.append(
                        TimelinePoint(
                            step: records[index].step, norm: m.std, gradientNorm: nil, updateRatio: nil,
                            zeroFraction: m.count > 0 ? Double(m.zeros) / Double(m.count) : nil,
                            nonFinite: m.nonFinite, log2Min: log2?.minExponent, log2Counts: log2?.counts,
                            gradientLog2Min: nil, gradientLog2Counts: nil, deadUnits: m.inactiveUnits))
                }
                guard let last else { return nil }
                // The name, layer and shape of its last save, and its unit count there.
                let descriptor = records[last.record].tensors.layout.descriptors[last.position]
                return TensorTimeline(
                    name: descriptor.name, layer: descriptor.layer, shape: descriptor.shape,
                    units: records[last.record].tensors.point(at: last.position).unitCount, points: points)
            }
        }
        return (timeline.compactMap { $0 }, activations.compactMap { $0 })
    }

    /// A weight's timeline point at `step` from its save's table (`previous`: the step of the save before
    /// that holds it, for the update ratio), its gradient's numbers from `gradientPosition` in the same table.
    private static func weightPoint(
        _ table: borrowing MeasurementTable, position: Int, gradientPosition: Int?, step: Int, previous: Int?
    ) -> TimelinePoint {
        let m = table.point(at: position)
        let gradient = gradientPosition.map { table.point(at: $0) }
        var ratio: Double?
        var perSave: Double?
        if let relative = m.relativeChange, let earlier = previous {
            ratio = relative / Double(max(step - earlier, 1))
            perSave = relative
        }
        var gradientRatio: Double?
        if let g = gradient?.l2Norm, let w = m.l2Norm, w > 0, w.isFinite { gradientRatio = g / w }
        let log2Kept = table.detail >= .histogram
        let log2 = log2Kept ? table.log2Histogram(at: position) : nil
        let gradientLog2 = log2Kept ? gradientPosition.map { table.log2Histogram(at: $0) } : nil
        return TimelinePoint(
            step: step, norm: m.l2Norm, gradientNorm: gradient?.l2Norm,
            gradientRatio: gradientRatio, updateRatio: ratio, updatePerSave: perSave,
            zeroFraction: m.count > 0 ? Double(m.zeros) / Double(m.count) : nil,
            nonFinite: m.nonFinite,
            log2Min: log2?.minExponent, log2Counts: log2?.counts,
            gradientLog2Min: gradientLog2?.minExponent, gradientLog2Counts: gradientLog2?.counts,
            gradientZeroFraction: gradient.flatMap { $0.count > 0 ? Double($0.zeros) / Double($0.count) : nil },
            gradientNonFinite: gradient?.nonFinite,
            deadUnits: gradient?.zeroUnits)
    }

    /// Calls `body` with each save of `records` holding `key`, in order: the save's index, the key's
    /// position in its table, and whether that table's layout differs from the save before's. The
    /// position is looked up once per table layout (the saves of one model share one), not by name
    /// at every save, and the tables are read in place (a copy of one is a retain of each of its
    /// arrays). Returns the last save holding `key` and its position there.
    @inline(__always)
    private static func forEachPosition(
        of key: TensorKey, in records: UnsafeBufferPointer<StepRecord>, _ body: (Int, Int, Bool) -> Void
    ) -> (record: Int, position: Int)? {
        var lastLayout: ObjectIdentifier?
        var position: Int?
        var last: (record: Int, position: Int)?
        for index in records.indices {
            let id = ObjectIdentifier(records[index].tensors.layout)
            let newLayout = id != lastLayout
            if newLayout {
                lastLayout = id
                position = records[index].tensors.layout.index[key]
            }
            guard let position else { continue }
            body(index, position, newLayout)
            last = (index, position)
        }
        return last
    }

    /// `transform` of each item, in the items' order, on up to `threads` threads (one: in this one),
    /// each taking one contiguous run of the items.
    package static func orderedMap<Item: Sendable, Value: Sendable>(
        _ items: [Item], threads: Int, _ transform: @Sendable (Item) -> Value
    ) -> [Value] {
        let threads = max(1, min(threads, items.count))
        guard threads > 1 else { return items.map(transform) }
        // Runs of items taken in turn by whichever thread is free, eight a thread: items differ in
        // cost, and a thread may start late (its core busy elsewhere), so halves fixed up front
        // would leave one thread waiting on the other; what is left when one runs out is one run.
        let count = min(items.count, 8 * threads)
        let parts = Mutex([[Value]](repeating: [], count: count))
        let next = Atomic<Int>(0)
        DispatchQueue.concurrentPerform(iterations: threads) { _ in
            while true {
                let part = next.wrappingAdd(1, ordering: .relaxed).oldValue
                guard part < count else { return }
                let start = items.count * part / count, end = items.count * (part + 1) / count
                let values = items[start..<end].map(transform)
                parts.withLock { $0[part] = values }
            }
        }
        return parts.withLock { $0.flatMap { $0 } }
    }
}

/// One tensor as `gradscope inspect` reports it.
public struct InspectedTensor: Sendable, Codable {
    public var name: String
    public var layer: String
    public var role: TensorRole
    public var slot: String?
    public var shape: [Int]
    public var dtype: String
    public var path: String
    public var unitAxis: Int?
    public var trainable: Bool?
    public var stats: TensorStats?
    public var deadUnits: Int?
    public var error: String?

    package enum CodingKeys: String, CodingKey {
        case name, layer, role, slot, shape, dtype, path
        case unitAxis = "unit_axis"
        case trainable, stats
        case deadUnits = "dead_units"
        case error
    }
}

/// Everything `gradscope inspect` reports.
public struct InspectReport: Sendable, Codable {
    public var file: String
    public var layout: String
    public var step: Int?
    public var loss: Double?
    public var lr: Double?
    public var framework: String?
    public var optimizer: String?
    public var tensors: [InspectedTensor]
    public var findings: [Finding]
    public var notChecked: [NotChecked]
    public var skipped: [SkippedItem]
    public var notes: [String]
    public var verdict: String

    package enum CodingKeys: String, CodingKey {
        case file, layout, step, loss, lr, framework, optimizer, tensors, findings
        case notChecked = "not_checked"
        case skipped, notes, verdict
    }
}

/// One tensor's change between two saves, as `gradscope diff` reports it.
public struct TensorDrift: Sendable, Codable {
    public var name: String
    public var layer: String
    public var role: TensorRole
    public var shape: [Int]
    public var normA: Double?
    public var normB: Double?
    public var drift: DriftStats
    /// The relative change divided by the steps between the saves.
    public var perStep: Double?
    public var status: String

    package enum CodingKeys: String, CodingKey {
        case name, layer, role, shape
        case normA = "norm_a"
        case normB = "norm_b"
        case drift
        case perStep = "per_step"
        case status
    }
}

/// Everything `gradscope diff` reports.
public struct DiffReport: Sendable, Codable {
    public var a: String
    public var b: String
    public var stepA: Int?
    public var stepB: Int?
    public var tensors: [TensorDrift]
    public var added: [String]
    public var removed: [String]
    public var reshaped: [String]
    public var findings: [Finding]
    public var notChecked: [NotChecked]
    public var skipped: [SkippedItem]
    /// What the comparison could not do or did differently: B older than A, steps unknown or equal,
    /// different models, reshaped tensors, a selection.
    public var notes: [String] = []
    public var verdict: String

    package enum CodingKeys: String, CodingKey {
        case a, b
        case stepA = "step_a"
        case stepB = "step_b"
        case tensors, added, removed, reshaped, findings
        case notChecked = "not_checked"
        case skipped, notes, verdict
    }
}

extension DiffReport {
    /// Decodes a report; `notes` may be absent (reports written before it existed).
    public init(from decoder: Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        a = try container.decode(String.self, forKey: .a)
        b = try container.decode(String.self, forKey: .b)
        stepA = try container.decodeIfPresent(Int.self, forKey: .stepA)
        stepB = try container.decodeIfPresent(Int.self, forKey: .stepB)
        tensors = try container.decode([TensorDrift].self, forKey: .tensors)
        added = try container.decode([String].self, forKey: .added)
        removed = try container.decode([String].self, forKey: .removed)
        reshaped = try container.decode([String].self, forKey: .reshaped)
        findings = try container.decode([Finding].self, forKey: .findings)
        notChecked = try container.decode([NotChecked].self, forKey: .notChecked)
        skipped = try container.decode([SkippedItem].self, forKey: .skipped)
        notes = try container.decodeIfPresent([String].self, forKey: .notes) ?? []
        verdict = try container.decode(String.self, forKey: .verdict)
    }
}
