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

/// The run-wide direct path (one tensor across all steps, every block read
/// once) must give what measuring each step on its own gives.
@Suite("Measuring a tensor across all steps at once")
struct SeriesMeasurerTests {
    /// A native run that exercises every case of the plan: more steps than a
    /// window holds, a tensor split into shares, float64, a gzip-chunked tensor, a shape change, a tensor missing from one step,
    /// and gradients with dead rows.
    static func writeMixedRun(_ dir: TemporaryDirectory, steps: Int = 20) throws {
        var noise = SplitMix64(state: 11)
        var big = noise.normals(600 * 500, std: 0.05)
        var double = noise.normals(50 * 40, std: 1.0)
        var chunked = noise.normals(100 * 30, std: 0.1)
        for index in 0..<steps {
            let w = try HDF5Writer(creating: dir.path(String(format: "step_%04d.h5", index * 10)))
            try w.setAttribute("format", .string("gradscope/1", .variableUTF8), at: "/")
            try w.setAttribute("step", .int(Int64(index * 10)), at: "/")
            try w.setAttribute("loss", .double(1.0 / Double(index + 1)), at: "/")
            if index > 0 {
                for i in stride(from: 0, to: big.count, by: 3) { big[i] += noise.normal() * 1e-3 }
                for i in double.indices { double[i] += noise.normal() * 1e-6 }
                for i in stride(from: 0, to: chunked.count, by: 2) { chunked[i] *= 0.99 }
            }
            try w.write("/weights/big", big, shape: [600, 500], as: .float32)
            try w.write("/weights/d64", double, shape: [50, 40], as: .float64)
            try w.write("/weights/gz", chunked, shape: [100, 30], as: .float32, chunks: [25, 30], gzip: 1)
            let rows = index < 9 ? 10 : 12
            try w.write("/weights/grow", (0..<(rows * 8)).map { Double($0 % 7) * 0.1 + Double(index) * 1e-3 }, shape: [rows, 8])
            if index != 7 {
                try w.write("/weights/gone", (0..<64).map { Double($0) * 0.01 + Double(index) }, shape: [64])
            }
            var gradient = noise.normals(600 * 500, std: 1e-3)
            for row in 0..<600 where row % 5 == 0 { for c in 0..<500 { gradient[row * 500 + c] = 0 } }
            try w.write("/gradients/big", gradient, shape: [600, 500], as: .float32)
            try w.write("/gradients/d64", noise.normals(50 * 40, std: 1e-4), shape: [50, 40], as: .float64)
        }
    }

    static func options() -> MeasureOptions {
        var options = MeasureOptions()
        options.threads = 2
        return options
    }

    @Test("the plan: windows of at most 16 steps, split at a shape change, shares for a large tensor, gzip in one job a window")
    func plan() throws {
        let dir = try TemporaryDirectory()
        try Self.writeMixedRun(dir)
        let run = try RunLoader.load(dir.url.path)
        let steps = run.checkpoints.map(SeriesMeasurer.Step.init)
        let selected = SeriesMeasurer.eligible(steps)
        for (index, checkpoint) in run.checkpoints.enumerated() {
            let names = Set(selected[index].map { checkpoint.tensors[$0].path })
            #expect(names.contains("/weights/big") && names.contains("/weights/d64") && names.contains("/gradients/big"))
            #expect(names.contains("/weights/gz"), "gzip-compressed chunks are read run-wide too")
        }
        let windows = SeriesMeasurer.plan(
            steps, selected: selected, options: Self.options(), gradientNames: ["big", "d64"],
            perUnitEverywhere: false
        ).sorted { $0.entries[0].step < $1.entries[0].step }
        let big = windows.filter { steps[$0.entries[0].step].tensors[$0.entries[0].tensor].path == "/weights/big" }
        #expect(big.map(\.entries.count) == [16, 4])
        #expect(big.allSatisfy { $0.shares.count == 2 })
        #expect(big[1].entries.first?.partner != nil, "the second window's first step still measures drift")
        let grow = windows.filter { steps[$0.entries[0].step].tensors[$0.entries[0].tensor].path == "/weights/grow" }
        #expect(grow.map(\.entries.count) == [9, 11])
        #expect(grow[1].entries.first?.partner == nil, "no drift across a shape change")
        let gz = windows.filter { steps[$0.entries[0].step].tensors[$0.entries[0].tensor].path == "/weights/gz" }
        #expect(gz.map(\.entries.count) == [16, 4] && gz.allSatisfy { $0.chunked && $0.shares.count == 1 })
        #expect(!big.contains { $0.chunked })
        let gone = windows.filter { steps[$0.entries[0].step].tensors[$0.entries[0].tensor].path == "/weights/gone" }
        #expect(gone.flatMap(\.entries).first { $0.step == 8 }?.partner == nil, "no drift from a step that lacks the tensor")
    }

    @Test("the run-wide path gives the step-by-step path's statistics, drift and unit evidence")
    func agreesWithStepByStep() throws {
        let dir = try TemporaryDirectory()
        try Self.writeMixedRun(dir)
        let run = try RunLoader.load(dir.url.path)
        let options = Self.options()
        let measured = RunMeasurer.measure(run, options: options, full: true)
        let gradientNames = Set(run.checkpoints.flatMap { $0.tensors(.gradient).map(\.name) })
        let start = RunMeasurer.windowStart(count: run.checkpoints.count)
        var referenceUnits: [TensorKey: [Bool]] = [:]
        #expect(measured.records.count == 20)
        let opened = try run.checkpoints.map { try Worker.reopen($0, options: LoadOptions()) }
        for (index, checkpoint) in opened.enumerated() {
            let (reference, units) = RunMeasurer.measureStep(
                checkpoint, previous: index > 0 ? opened[index - 1] : nil, index: index,
                wantUnits: index >= start, gradientNames: gradientNames, options: options)
            for unit in units {
                let before: [Bool] = referenceUnits[unit.key] ?? [Bool](repeating: false, count: unit.alive.count)
                referenceUnits[unit.key] = zip(before, unit.alive).map { $0 || $1 }
            }
            let record = measured.records[index]
            #expect(record.order == reference.order)
            #expect(record.failures.isEmpty && reference.failures.isEmpty)
            for key in reference.order {
                let a = try #require(record.tensors[key]), b = try #require(reference.tensors[key])
                #expect(a.stats.count == b.stats.count && a.stats.zeros == b.stats.zeros, "\(key) at \(index)")
                #expect(a.stats.min == b.stats.min && a.stats.max == b.stats.max)
                #expect(a.stats.p1 == b.stats.p1 && a.stats.p50 == b.stats.p50 && a.stats.p99 == b.stats.p99, "\(key) at \(index)")
                #expect(a.stats.histogram == b.stats.histogram && a.stats.log2Histogram == b.stats.log2Histogram)
                #expect(
                    close(a.stats.mean, b.stats.mean) && close(a.stats.std, b.stats.std) && close(a.stats.l2Norm, b.stats.l2Norm),
                    "\(key) at \(index)")
                #expect(a.zeroUnits == b.zeroUnits && a.unitCount == b.unitCount)
                #expect((a.drift == nil) == (b.drift == nil), "\(key) at \(index)")
                if let x = a.drift, let y = b.drift {
                    #expect(x.changed == y.changed && x.signFlips == y.signFlips, "\(key) at \(index)")
                    #expect(close(x.relativeChange, y.relativeChange) && close(x.normA, y.normA) && close(x.normB, y.normB), "\(key) at \(index)")
                }
            }
        }
        // Gradient rows that are always zero are the dead units, found the same way.
        let window = try #require(measured.unitWindows.first { $0.key == .gradient("big") })
        #expect(window.deadCount == 120)
        #expect(window.everAlive == referenceUnits[.gradient("big")])
        // Drift where it applies: not at the first step, a shape change, or after a gap.
        #expect(measured.records[0].weight("big")?.drift == nil)
        #expect(measured.records[16].weight("big")?.drift != nil)
        #expect(measured.records[9].weight("grow")?.drift == nil && measured.records[10].weight("grow")?.drift != nil)
        #expect(measured.records[7].weight("gone") == nil && measured.records[8].weight("gone")?.drift == nil)
        #expect(measured.records[19].weight("gz")?.drift != nil)
    }

    @Test("a scan that keeps no full statistics skips the quantiles and linear histograms and keeps the same table")
    func leanFinishKeepsTheSameTable() throws {
        let dir = try TemporaryDirectory()
        try Self.writeMixedRun(dir)
        let run = try RunLoader.load(dir.url.path)
        let full = RunMeasurer.measure(run, options: Self.options(), full: true)
        let lean = RunMeasurer.measure(run, options: Self.options(), full: false)
        #expect(full.records.count == 20 && lean.records.count == 20)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        for (a, b) in zip(full.records, lean.records) {
            #expect(b.tensors.detail < .full)
            let kept = a.tensors.keeping(b.tensors.detail)
            #expect(try encoder.encode(kept) == encoder.encode(b.tensors), "step \(a.step)")
            #expect(a.tensors.detail == .full && a.weight("big")?.stats.p50 != nil)
        }
    }

    @Test("a key held twice (one copy contiguous, one chunked) is measured as the step-by-step path measures it")
    func duplicateKeys() throws {
        let dir = try TemporaryDirectory()
        var noise = SplitMix64(state: 3)
        for index in 0..<3 {
            let w = try HDF5Writer(creating: dir.path("ckpt_\(index).h5"))
            try w.setAttribute("step", .int(Int64(index)), at: "/")
            // A hand-written state_dict with the same parameter under two paths.
            try w.write("/fc.weight", noise.normals(64 * 32, std: 0.1 * Double(index + 1)), shape: [64, 32])
            _ = try w.createGroup("/model")
            try w.write("/model/fc.weight", noise.normals(64 * 32, std: 10), shape: [64, 32], chunks: [16, 32], gzip: 1)
            try w.write("/head.weight", noise.normals(10 * 64, std: 0.1), shape: [10, 64])
        }
        let run = try RunLoader.load(dir.url.path)
        let keys = run.checkpoints[0].tensors.map(\.key)
        let twice = try #require(keys.first { key in keys.filter { $0 == key }.count == 2 }, "the layout names both copies alike: \(keys)")
        let steps = run.checkpoints.map(SeriesMeasurer.Step.init)
        let selected = SeriesMeasurer.eligible(steps)
        #expect(selected.allSatisfy { chosen in !chosen.contains { steps[0].tensors[$0].key == twice } })
        #expect(
            selected.allSatisfy { chosen in chosen.contains { steps[0].tensors[$0].name == "head" || steps[0].tensors[$0].path == "/head.weight" } })
        try assertAgreesWithStepByStep(run)
    }

    /// Compares `RunMeasurer.measure` with `measureStep` on every step of `run`.
    func assertAgreesWithStepByStep(_ run: Run) throws {
        let options = Self.options()
        let measured = RunMeasurer.measure(run, options: options, full: true)
        let gradientNames = Set(run.checkpoints.flatMap { $0.tensors(.gradient).map(\.name) })
        let start = RunMeasurer.windowStart(count: run.checkpoints.count)
        let opened = try run.checkpoints.map { try Worker.reopen($0, options: LoadOptions()) }
        for (index, checkpoint) in opened.enumerated() {
            let (reference, _) = RunMeasurer.measureStep(
                checkpoint, previous: index > 0 ? opened[index - 1] : nil, index: index,
                wantUnits: index >= start, gradientNames: gradientNames, options: options)
            let record = measured.records[index]
            #expect(record.order == reference.order, "step \(index)")
            #expect(record.failures.map(\.item) == reference.failures.map(\.item))
            for key in Set(reference.order) {
                let a = try #require(record.tensors[key]), b = try #require(reference.tensors[key])
                #expect(close(a.stats.l2Norm, b.stats.l2Norm) && a.stats.count == b.stats.count, "\(key) at \(index)")
                #expect(close(a.drift?.relativeChange, b.drift?.relativeChange) && a.drift?.changed == b.drift?.changed, "\(key) at \(index)")
            }
        }
    }

    @Test("progress is told in order, one call at a time, and ends at the step count")
    func progress() throws {
        let dir = try TemporaryDirectory()
        try Self.writeMixedRun(dir, steps: 5)
        let run = try RunLoader.load(dir.url.path)
        let steps = run.checkpoints.map(SeriesMeasurer.Step.init)
        let calls = Calls()
        _ = SeriesMeasurer.measure(
            steps, selected: SeriesMeasurer.eligible(steps), options: Self.options(), gradientNames: [],
            perUnitEverywhere: false, unitWindowStart: 2
        ) { done, total in calls.add(done, total) }
        let seen = calls.values
        #expect(!seen.isEmpty && seen.last! == [5, 5])
        #expect(zip(seen, seen.dropFirst()).allSatisfy { $0[0] <= $1[0] } && seen.allSatisfy { $0[1] == 5 && $0[0] <= 5 })
        #expect(calls.overlapped == false)
    }

    /// Records progress calls and whether two ever ran at once.
    final class Calls: @unchecked Sendable {
        private let lock = NSLock()
        private var inside = 0
        private(set) var overlapped = false
        private var list: [[Int]] = []
        func add(_ done: Int, _ total: Int) {
            lock.lock()
            inside += 1
            if inside > 1 { overlapped = true }
            lock.unlock()
            usleep(100)
            lock.lock()
            list.append([done, total])
            inside -= 1
            lock.unlock()
        }
        var values: [[Int]] {
            lock.lock()
            defer { lock.unlock() }
            return list
        }
    }

    @Test("a long run of a weight with a million units keeps no per-unit data per step")
    func perUnitDataNotKept() throws {
        let dir = try TemporaryDirectory()
        var noise = SplitMix64(state: 9)
        var values = noise.normals(1 << 20, std: 0.1)
        for index in 0..<6 {
            let w = try HDF5Writer(creating: dir.path(String(format: "step_%02d.h5", index)))
            try w.setAttribute("format", .string("gradscope/1", .variableUTF8), at: "/")
            try w.setAttribute("step", .int(Int64(index)), at: "/")
            for i in stride(from: index, to: values.count, by: 7) { values[i] += 1e-3 }
            try w.write("/weights/w", values, shape: [1 << 20, 1])
        }
        let run = try RunLoader.load(dir.url.path)
        let steps = run.checkpoints.map(SeriesMeasurer.Step.init)
        let result = SeriesMeasurer.measure(
            steps, selected: SeriesMeasurer.eligible(steps), options: Self.options(), gradientNames: [],
            perUnitEverywhere: false, unitWindowStart: 3)
        for (index, outcomes) in result.outcomes.enumerated() {
            let measurement = try #require(outcomes.compactMap { $0 }.first?.measurement)
            // Per-unit drift was measured (no gradients saved) and summarised, then dropped.
            #expect(measurement.stats.unitNorms == nil && measurement.drift?.unitChanged == nil && measurement.drift?.unitRelativeChange == nil)
            let snapshot = outcomes.compactMap { $0 }.first?.snapshot
            #expect((snapshot != nil) == (index >= 3), "snapshots only in the dead-unit window")
            if index >= 3 { #expect(snapshot?.alive.count == 1 << 20) }
        }
    }

    @Test("a block that cannot be read fails that tensor at that step; the next step keeps its statistics")
    func unreadableBlock() throws {
        let dir = try TemporaryDirectory()
        try Self.writeMixedRun(dir, steps: 3)
        let run = try RunLoader.load(dir.url.path)
        var steps = run.checkpoints.map(SeriesMeasurer.Step.init)
        let t = try #require(steps[1].tensors.firstIndex { $0.path == "/weights/big" })
        // Storage that claims more than the file holds: the read runs off its end.
        let size = steps[1].size
        steps[1].storage[t]?.offset = size - 1000
        let selected = SeriesMeasurer.eligible(steps)
        let result = SeriesMeasurer.measure(
            steps, selected: selected, options: Self.options(), gradientNames: [], perUnitEverywhere: false,
            unitWindowStart: 1)
        #expect(result.stepErrors.isEmpty)
        let failed = try #require(result.outcomes[1][t])
        #expect(failed.measurement == nil && failed.error?.contains("truncated") == true)
        let t2 = try #require(steps[2].tensors.firstIndex { $0.path == "/weights/big" })
        let next = try #require(result.outcomes[2][t2])
        #expect(next.measurement?.stats.count == 300_000 && next.measurement?.drift == nil && next.error == nil)
        let t0 = try #require(steps[0].tensors.firstIndex { $0.path == "/weights/big" })
        #expect(result.outcomes[0][t0]?.measurement?.stats.count == 300_000)
    }

    @Test("a step's measurement table: lookups in order, each detail keeps exactly what it says, and coding as a keyed object")
    func measurementTable() throws {
        let dir = try TemporaryDirectory()
        try Self.writeMixedRun(dir, steps: 2)
        let record = RunMeasurer.measure(try RunLoader.load(dir.url.path), full: true).records[1]
        let table = record.tensors
        #expect(table.detail == .full && table.count == record.order.count && table.keys == record.order)
        let big = try #require(table[.weight("big")])
        #expect(big.stats.p50 != nil && big.drift?.normA != nil, "full detail keeps quantiles and the whole drift")
        for detail in [MeasurementDetail.compact, .histogram] {
            let kept = table.keeping(detail)
            #expect(kept.detail == detail && kept.keys == table.keys)
            for (full, compact) in zip(table.values, kept.values) {
                #expect(compact.key == full.key && compact.name == full.name && compact.shape == full.shape && compact.path == full.path)
                let (a, b) = (full.stats, compact.stats)
                #expect(a.count == b.count && a.finiteCount == b.finiteCount && a.zeros == b.zeros && a.nan == b.nan)
                #expect(a.posInf == b.posInf && a.negInf == b.negInf)
                #expect(a.mean == b.mean && a.std == b.std && a.min == b.min && a.max == b.max && a.l2Norm == b.l2Norm)
                #expect(a.maxAbs == b.maxAbs, "max |x| is max(|min|, |max|) exactly")
                #expect(b.p50 == nil && b.histogram == nil)
                #expect((b.log2Histogram == a.log2Histogram) == (detail == .histogram) || a.log2Histogram.counts.isEmpty)
                #expect(full.drift?.relativeChange == compact.drift?.relativeChange && full.drift?.changed == compact.drift?.changed)
                #expect((full.drift == nil) == (compact.drift == nil) && compact.drift?.normA == nil)
                #expect(full.zeroUnits == compact.zeroUnits && full.unitCount == compact.unitCount && full.inactiveUnits == compact.inactiveUnits)
            }
        }
        // Saves of one model share one layout.
        let other = table.keeping(.compact)
        let shared = table.keeping(.compact, sharing: other.layout)
        #expect(shared.layout === other.layout)
        // Binary (between processes) and JSON round trips keep every entry under its key, and the detail.
        let binary = try WorkerCoding.decode(MeasurementTable.self, from: try WorkerCoding.encode(record.tensors))
        #expect(binary.keys.sorted() == record.order.sorted() && binary.detail == .full)
        #expect(binary[.gradient("big")]?.stats.zeros == record.tensors[.gradient("big")]?.stats.zeros)
        let compact = try WorkerCoding.decode(MeasurementTable.self, from: try WorkerCoding.encode(table.keeping(.compact)))
        #expect(compact.detail == .compact && compact[.weight("big")]?.stats.mean == big.stats.mean)
        let json = try JSONSerialization.jsonObject(with: try JSONEncoder().encode(record.tensors)) as? [String: Any]
        #expect(Set(json?.keys.map { $0 } ?? []) == Set(record.order.map(\.description)))
    }

    @Test("counts past 32 bits survive the compact table")
    func wideCounts() {
        let huge = 5_000_000_000
        let stats = TensorStats(
            count: huge, finiteCount: huge - 3, mean: 0.5, std: 1, min: -2, max: 3, maxAbs: 3, l2Norm: 10, zeros: huge / 2,
            nan: 3, posInf: 0, negInf: 0, p1: nil, p5: nil, p50: nil, p95: nil, p99: nil, histogram: nil,
            log2Histogram: Log2Histogram(minExponent: 0, counts: [], zeros: huge / 2), unitNorms: nil, unitZeroCount: nil)
        let measurement = TensorMeasurement(
            key: .weight("w"), name: "w", layer: "l", role: .weight, shape: [huge], dtype: "float32", path: "/w", stats: stats)
        let back = MeasurementTable([measurement], detail: .compact)[.weight("w")]
        #expect(back?.stats.count == huge && back?.stats.zeros == huge / 2 && back?.stats.finiteCount == huge - 3)
        #expect(back?.stats.maxAbs == 3 && back?.drift == nil && back?.zeroUnits == nil)
    }

    func close(_ a: Double?, _ b: Double?) -> Bool {
        guard let a, let b else { return a == nil && b == nil }
        return abs(a - b) <= 1e-12 * max(abs(a), abs(b), 1e-300)
    }
}
