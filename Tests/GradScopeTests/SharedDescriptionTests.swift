import ElementTypes
import Foundation
import GradScopeMeasurement
import GradScopeModel
import GradScopeSources
import GradScopeStatistics
import Testing

#if canImport(Glibc)
import TestSupport
#endif

@Suite("What the saves of one model share while they are measured")
struct SharedDescriptionTests {
    @Test("a save's table takes the save before's layout when it describes it, and is the table it would build")
    func sharedLayout() throws {
        let run = try RunLoader.load(samplePath("exploding-nan"))
        let open = try run.checkpoints.map { try Worker.reopen($0, options: LoadOptions()) }
        try #require(open.count >= 3)
        // Saves 1 and 2 hold the same tensors (save 0, before the first update, has no optimizer state).
        let (first, _) = RunMeasurer.measureStep(
            open[1], previous: open[0], index: 1, wantUnits: false, gradientNames: [], options: MeasureOptions())
        let (second, _) = RunMeasurer.measureStep(
            open[2], previous: open[1], index: 2, wantUnits: false, gradientNames: [], options: MeasureOptions())
        let measurements = second.tensors.values
        let layout = first.tensors.layout
        let describes = layout.describes(measurements)
        #expect(describes)
        let shared = MeasurementTable(measurements, sharing: layout)
        #expect(shared.layout === layout)
        let own = MeasurementTable(measurements)
        #expect(own.layout !== layout && own.layout.descriptors == shared.layout.descriptors)
        #expect(try WorkerMessagesTests.json(shared) == (try WorkerMessagesTests.json(own)))
        // Any field of any tensor that differs: a layout of its own.
        var renamed = measurements
        renamed[renamed.count - 1].path += "x"
        var regated = measurements
        regated[0].gates = 3
        for other in [renamed, regated, Array(measurements.dropLast())] {
            let differs = !layout.describes(other)
            #expect(differs)
            let table = MeasurementTable(other, sharing: layout)
            #expect(table.layout !== layout)
            #expect(table.layout.descriptors == other.map(TensorDescriptor.init))
        }
    }

    @Test("steps that share one described tensor list are chosen and planned as steps with copies of it")
    func sharedTensorLists() throws {
        let dir = try TemporaryDirectory()
        try SeriesMeasurerTests.writeMixedRun(dir, steps: 6)
        let shared = try RunLoader.load(dir.url.path).checkpoints.map(SeriesMeasurer.Step.init)
        // A step whose list differs: its partners and duplicates are its own.
        var changed = shared
        changed[3].tensors = changed[3].tensors.map { tensor in
            var renamed = tensor
            if tensor.role == .weight { renamed.name += ".renamed" }
            return renamed
        }
        // The same tensors, each step's list a copy of its own.
        func copied(_ steps: [SeriesMeasurer.Step]) -> [SeriesMeasurer.Step] {
            steps.map { step in
                var copy = step
                copy.tensors = step.tensors.map { $0 }
                return copy
            }
        }
        func entries(_ windows: [SeriesMeasurer.Window]) -> [[[Int]]] {
            windows.map { $0.entries.map { [$0.step, $0.tensor, $0.partner ?? -1] } }
        }
        for steps in [shared, changed] {
            let base = copied(steps)
            let selected = SeriesMeasurer.eligible(steps)
            #expect(selected == SeriesMeasurer.eligible(base))
            let plan = SeriesMeasurer.plan(steps, selected: selected, options: MeasureOptions(), gradientNames: [], perUnitEverywhere: false)
            let expected = SeriesMeasurer.plan(base, selected: selected, options: MeasureOptions(), gradientNames: [], perUnitEverywhere: false)
            #expect(entries(plan) == entries(expected))
        }
        // A key held twice at step 2 (a gradient named as another): neither is chosen there, nor, when
        // the key is a weight's, its partner at the step after; shared lists or copies alike.
        var repeated = shared
        let gradients = repeated[2].tensors.indices.filter { repeated[2].tensors[$0].role == .gradient }
        let weights = repeated[2].tensors.indices.filter { repeated[2].tensors[$0].role == .weight }
        try #require(gradients.count >= 2 && weights.count >= 2)
        repeated[2].tensors[gradients[1]].name = repeated[2].tensors[gradients[0]].name
        repeated[2].tensors[weights[1]].name = repeated[2].tensors[weights[0]].name
        let chosen = SeriesMeasurer.eligible(repeated)
        #expect(chosen == SeriesMeasurer.eligible(copied(repeated)))
        #expect(!chosen[2].contains(gradients[0]) && !chosen[2].contains(gradients[1]))
        #expect(!chosen[2].contains(weights[0]) && !chosen[2].contains(weights[1]))
        let weightAfter = try #require(repeated[3].tensors.firstIndex { $0.key == repeated[2].tensors[weights[0]].key })
        #expect(!chosen[3].contains(weightAfter), "its partner is one of two")
        #expect(chosen[4].contains(weightAfter))
        let repeatedPlan = SeriesMeasurer.plan(repeated, selected: chosen, options: MeasureOptions(), gradientNames: [], perUnitEverywhere: false)
        #expect(
            entries(repeatedPlan)
                == entries(
                    SeriesMeasurer.plan(copied(repeated), selected: chosen, options: MeasureOptions(), gradientNames: [], perUnitEverywhere: false)))
        // The renamed weights have no partner at the step after them, nor at their own step.
        let selected = SeriesMeasurer.eligible(changed)
        let plan = SeriesMeasurer.plan(changed, selected: selected, options: MeasureOptions(), gradientNames: [], perUnitEverywhere: false)
        let entries = plan.flatMap(\.entries)
        #expect(entries.contains { $0.step == 4 && changed[4].tensors[$0.tensor].role == .weight })
        #expect(!entries.contains { ($0.step == 3 || $0.step == 4) && $0.partner != nil })
        #expect(entries.contains { $0.step == 5 && $0.partner != nil })
    }

    /// RunJumps' rule as it read the measurements before it read the tables' numbers in place.
    static func unrelatedByMeasurements(_ record: StepRecord, after before: StepRecord) -> Bool {
        var matrices = 0
        for measurement in record.compactOrdered where measurement.role == .weight && measurement.shape.count >= 2 {
            guard measurement.stats.count >= RunJumps.minimumElements, let earlier = before.tensors.compact(measurement.key),
                earlier.shape == measurement.shape, let a = earlier.stats.l2Norm, let b = measurement.stats.l2Norm,
                let relative = measurement.drift?.relativeChange, a > 0, b > 0, a.isFinite, b.isFinite, relative.isFinite
            else { continue }
            matrices += 1
            let d = relative * a
            let cosine = (a * a + b * b - d * d) / (2 * a * b)
            if abs(cosine) >= 3 / Double(measurement.stats.count).squareRoot() || max(a, b) / min(a, b) > 2 { return false }
        }
        return matrices >= 2
    }

    @Test("the jump between two saves is judged from the tables' numbers as from their measurements, at every detail")
    func jumpsFromTableNumbers() throws {
        let open = try RunLoader.load(samplePath("exploding-nan")).checkpoints.prefix(1).map { try Worker.reopen($0, options: LoadOptions()) }
        let (base, _) = RunMeasurer.measureStep(open[0], previous: nil, index: 0, wantUnits: false, gradientNames: [], options: MeasureOptions())
        var random = SplitMix64(seed: 3)
        func pick<T>(_ values: [T]) -> T { values[random.index(below: values.count)] }
        func record(_ seed: Int) -> StepRecord {
            var measurements: [TensorMeasurement] = []
            for _ in 0..<(3 + random.index(below: 4)) {
                var m = RealRunTests.measurement(pick(["a", "b", "c", "d", "a"]), pick([[16, 16], [16, 16], [8], [4, 4]]))
                m.role = pick([.weight, .weight, .weight, .gradient])
                m.key = m.role == .weight ? .weight(m.name) : .gradient(m.name)
                m.stats.count = m.shape.reduce(1, *)
                m.stats.l2Norm = pick([1.0, 1.5, 0.9, 3.0, 0, .nan, .infinity, nil])
                if random.index(below: 4) > 0 {
                    m.drift = DriftStats(
                        count: m.stats.count, finiteCount: m.stats.count, deltaNorm: nil, normA: nil, normB: nil,
                        relativeChange: pick([1.4, 1.41, 0.01, 2.0, .nan, nil]), maxAbsDelta: nil, cosineSimilarity: nil, changed: 1,
                        changedFraction: nil, signFlips: 0, nonFinite: 0, unitRelativeChange: nil, unitChanged: nil)
                }
                measurements.append(m)
            }
            let table = MeasurementTable(measurements).keeping(pick([.compact, .histogram, .full]))
            var record = base
            record.step = seed
            record.tensors = table
            return record
        }
        var jumps = 0
        for seed in 0..<3000 {
            let before = record(seed)
            // The same tensors as the save before (one layout), or others.
            var after = random.index(below: 2) == 0 ? record(seed + 1) : before
            if random.index(below: 2) == 0 {
                after.tensors = MeasurementTable(
                    after.tensors.values.map { m in
                        var moved = m
                        moved.stats.l2Norm = pick([1.0, 1.2, 2.5, nil])
                        return moved
                    }, sharing: before.tensors.layout)
            }
            let expected = Self.unrelatedByMeasurements(after, after: before)
            #expect(RunJumps.unrelated(after, after: before) == expected, "\(seed)")
            if expected { jumps += 1 }
        }
        #expect(jumps > 0 && jumps < 3000)
    }
}
