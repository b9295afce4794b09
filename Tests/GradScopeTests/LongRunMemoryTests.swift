import ElementTypes
import Foundation
import GradScopeDiagnosis
import GradScopeMeasurement
import GradScopeModel
import GradScopeRendering
import GradScopeSources
import GradScopeStatistics
import TestSupport
import Testing

/// What keeps a long scan's memory flat: shared descriptions, packed tables, storage let go once
/// measured, a bounded index and a streamed report. Each must leave the results as they were.
@Suite("Long runs in bounded memory")
struct LongRunMemoryTests {
    static func tensor(_ name: String, shape: [Int] = [4, 3]) -> TensorRef {
        TensorRef(name: name, layer: "l", role: .weight, shape: shape, dtype: .float32, unitAxis: 0, path: "/w/\(name)")
    }

    static func checkpoint(_ tensors: [TensorRef], layers: [String] = ["l"], step: Int) -> Checkpoint {
        Checkpoint(
            source: "s\(step).h5", layout: .generic, metadata: StepMetadata(step: step), tensors: tensors, layers: layers)
    }

    static func sameBuffer<T>(_ a: [T], _ b: [T]) -> Bool {
        a.withUnsafeBufferPointer { x in b.withUnsafeBufferPointer { y in x.baseAddress == y.baseAddress } }
    }

    @Test("equal descriptions of saves share one copy; different ones stay apart and keep their values")
    func interning() {
        var interner = DescriptionInterner()
        let first = [Self.tensor("a"), Self.tensor("b")]
        var one = Self.checkpoint(first, step: 1)
        // Built afresh, as a decoder would build them: equal, but not the same buffer.
        var two = Self.checkpoint([Self.tensor("a"), Self.tensor("b")], step: 2)
        var other = Self.checkpoint([Self.tensor("a"), Self.tensor("b", shape: [4, 5])], layers: ["l", "m"], step: 3)
        #expect(!Self.sameBuffer(one.tensors, two.tensors))
        interner.intern(&one)
        interner.intern(&two)
        interner.intern(&other)
        #expect(Self.sameBuffer(one.tensors, two.tensors) && Self.sameBuffer(one.layers, two.layers))
        #expect(!Self.sameBuffer(one.tensors, other.tensors) && other.tensors[1].shape == [4, 5] && other.layers == ["l", "m"])
        #expect(one.tensors == first && two.metadata.step == 2 && two.source == "s2.h5")
        // After four other models, the first is no longer remembered: still equal, a copy of its own.
        for width in 6..<10 {
            var filler = Self.checkpoint([Self.tensor("a", shape: [width])], step: width)
            interner.intern(&filler)
        }
        var again = Self.checkpoint([Self.tensor("a"), Self.tensor("b")], step: 4)
        interner.intern(&again)
        #expect(again.tensors == first && !Self.sameBuffer(again.tensors, one.tensors))
    }

    static func stats(count: Int, zeros: Int, nan: Int, log2: Log2Histogram) -> TensorStats {
        TensorStats(
            count: count, finiteCount: count - nan, mean: 0.25, std: 2, min: -3, max: 4, maxAbs: 4, l2Norm: 7, zeros: zeros, nan: nan,
            posInf: 0, negInf: 0, p1: nil, p5: nil, p50: nil, p95: nil, p99: nil, histogram: nil, log2Histogram: log2,
            unitNorms: nil, unitZeroCount: nil)
    }

    @Test("log2 histograms and counts kept packed read back exactly: wide counts, empty histograms, extreme exponents")
    func packedTable() {
        let huge = 6_000_000_000
        let histograms = [
            Log2Histogram(minExponent: -3, counts: [5, 0, huge, 7], zeros: 2),
            Log2Histogram(minExponent: 0, counts: [], zeros: 12),
            Log2Histogram(minExponent: -1074, counts: [1], zeros: 0),
            Log2Histogram(minExponent: 40_000, counts: [3, 4], zeros: huge),
            Log2Histogram(minExponent: 1023, counts: [UInt32.max == 0 ? 0 : Int(UInt32.max)], zeros: 1),
        ]
        let measurements = histograms.enumerated().map { index, histogram in
            // Only the third tensor has NaN: that count field is kept, and reads 0 for the others.
            TensorMeasurement(
                key: .weight("t\(index)"), name: "t\(index)", layer: "l", role: .weight, shape: [huge], dtype: "float32",
                path: "/t\(index)", stats: Self.stats(count: huge, zeros: histogram.zeros, nan: index == 2 ? 9 : 0, log2: histogram))
        }
        for detail in [MeasurementDetail.compact, .histogram, .full] {
            let table = MeasurementTable(measurements, detail: detail)
            #expect(table.detail == detail && table.count == measurements.count)
            for (index, original) in measurements.enumerated() {
                let back = table.measurement(at: index)
                #expect(back.stats.count == huge && back.stats.zeros == original.stats.zeros && back.stats.nan == original.stats.nan)
                #expect(back.stats.finiteCount == original.stats.finiteCount && back.stats.posInf == 0)
                if detail == .compact {
                    #expect(back.stats.log2Histogram.counts.isEmpty && back.stats.log2Histogram.zeros == original.stats.zeros)
                } else {
                    #expect(back.stats.log2Histogram == original.stats.log2Histogram)
                }
            }
            // Thinned from full, as a scan keeps a sampled save.
            if detail == .full {
                let thinned = table.keeping(.histogram)
                #expect(thinned.detail == .histogram)
                #expect(thinned.values.map(\.stats.log2Histogram) == histograms)
                #expect(thinned.keeping(.compact).values.allSatisfy { $0.stats.log2Histogram.counts.isEmpty })
            }
        }
    }

    @Test("a scan that lets each save's storage go once measured measures what a scan keeping all of it does")
    func storageLetGo() throws {
        let dir = try TemporaryDirectory()
        var fixture = SyntheticRun()
        fixture.steps = Array(stride(from: 0, through: 2400, by: 100))  // more saves than one measuring range
        fixture.frozenLayers = [2]
        try fixture.write(to: dir.url.path)
        let run = try RunLoader.load(dir.url.path)
        #expect(run.checkpoints.allSatisfy { $0.storage.contains { $0 != nil } }, "the fixture's tensors are read directly")
        let (keptFull, full) = ScanEngine.measure(run, full: true)
        let (keptLean, lean) = ScanEngine.measure(run)
        #expect(keptFull.checkpoints.allSatisfy { $0.storage.contains { $0 != nil } })
        #expect(keptLean.checkpoints.allSatisfy { $0.storage.isEmpty })
        #expect(lean.records.count == 25 && lean.records.map(\.step) == full.records.map(\.step))
        for (a, b) in zip(full.records, lean.records) {
            #expect(a.order == b.order && b.tensors.detail < .full)
            for (x, y) in zip(a.ordered, b.ordered) {
                #expect(x.stats.mean == y.stats.mean && x.stats.std == y.stats.std && x.stats.l2Norm == y.stats.l2Norm)
                #expect(x.stats.zeros == y.stats.zeros && x.stats.count == y.stats.count)
                #expect(x.drift?.relativeChange == y.drift?.relativeChange && x.drift?.changed == y.drift?.changed)
                #expect(x.zeroUnits == y.zeroUnits && x.unitCount == y.unitCount)
            }
        }
        #expect(lean.unitWindows.map(\.lastAlive) == full.unitWindows.map(\.lastAlive))
        let findings = { (m: RunMeasurements) in Diagnoser.diagnose(m).findings.map { "\($0.kind) \($0.tensor ?? "") \($0.firstStep ?? -1)" } }
        #expect(findings(lean) == findings(full) && findings(lean).contains { $0.hasPrefix("frozen") })
    }

    @Test("the run handed to measuring is the only holder of its saves' storage, so letting it go frees it")
    func takenRunHoldsStorageAlone() {
        var table: DeflatedChunkTable? = DeflatedChunkTable(
            shape: [4, 3], chunkShape: [4, 3], shuffled: false, swapsBytes: false, addresses: [64], sizes: [48])
        weak let watched = table
        var checkpoint = Self.checkpoint([Self.tensor("w")], step: 1)
        checkpoint.storage = [DirectStorage(offset: 0, count: 12, type: .float32, chunks: table)]
        table = nil
        var loaded = Run(source: "run", checkpoints: [checkpoint], skipped: [], notes: [])
        checkpoint.storage = []
        var taken = ScanEngine.taking(&loaded)
        #expect(loaded.checkpoints.isEmpty && taken.checkpoints.count == 1)
        #expect(watched != nil, "the taken run still holds the storage")
        taken.checkpoints[0].storage = []
        #expect(watched == nil, "nothing else held the storage")
    }

    @Test("the run index keeps at most its budget of measurements built, and answers past it as the run does")
    func indexBudget() throws {
        let directory = try TemporaryDirectory()
        try SyntheticRun().write(to: directory.url.path)
        let (_, run) = try Analysis.scan(directory.url.path)
        let keys = run.weightKeys + run.keys(role: .gradient)
        let saves = run.records.count
        #expect(keys.count > 3 && saves == 11)
        // The index's series leave the log2 histograms empty (RunIndex).
        RunIndex.with(run, budget: 2 * saves + 1) {
            let index = try? #require(RunIndex.current)
            for _ in 0..<2 {
                for key in keys {
                    let (a, b) = (run.indexedSeries(key), run.series(key, log2: false))
                    #expect(a.map(\.step) == b.map(\.step) && a.map(\.measurement.stats) == b.map(\.measurement.stats))
                }
            }
            #expect(index?.cachedPoints == 2 * saves, "two whole series fit the budget, a third does not")
        }
    }

    @Test("the scan's JSON, streamed in pieces, is the contract's encoding byte for byte")
    func streamedJSON() throws {
        // A timeline of 300 tensors x 40 saves: a few megabytes, so several pieces.
        var entries: [String] = []
        for t in 0..<300 {
            let points = (0..<40).map { s in
                #"{"step": \#(s * 10), "norm": \#(Double(t) + Double(s) / 7), "gradient_norm": \#(s == 3 ? "\"nan\"" : "0.5"), "zero_fraction": 0, "non_finite": 0}"#
            }
            entries.append(
                #"{"name": "block.\#(t).w\"eight", "layer": "block.\#(t)", "shape": [\#(t), 3], "points": [\#(points.joined(separator: ","))]}"#)
        }
        let text = #"""
            {"source": "runs/long", "verdict": "ok", "steps": [0, 10], "findings": [], "skipped": [], "not_checked": [],
             "notes": ["one\nnote"], "loss": [{"step": 0, "loss": 0.7}], "activations": [], "timeline": [\#(entries.joined(separator: ","))]}
            """#
        let report = try RendererFixture.decode(ScanReport.self, text)
        var pieces: [Int] = []
        var streamed: [UInt8] = []
        try JSONRenderer().write(report) { bytes in
            pieces.append(bytes.count)
            streamed.append(contentsOf: bytes)
        }
        let whole = try JSONRenderer().render(report)
        #expect(String(decoding: streamed, as: UTF8.self) == whole)
        #expect(pieces.count > 2, "written as it is encoded, not whole at the end")
        #expect(pieces.dropLast().allSatisfy { $0 >= 1 << 20 && $0 < (1 << 20) + 64 * 1024 })
    }

    @Test("unit windows: the last save each unit was alive, and each window's own saves, whether present at every save or not")
    func unitWindows() {
        var builder = UnitWindowBuilder()
        func snapshot(_ name: String, _ alive: [Bool], inputs: [Bool]? = nil) -> UnitSnapshot {
            UnitSnapshot(key: .gradient(name), name: name, layer: name, source: .gradient, alive: alive, inputsAlive: inputs)
        }
        // `a` is in every save, `b` misses the save at step 20, `c` appears at step 20.
        builder.add([snapshot("a", [true, false], inputs: [false, true, true]), snapshot("b", [true, true])], step: 10)
        builder.add([snapshot("a", [false, false], inputs: [false, false, true]), snapshot("c", [false])], step: 20)
        builder.add([snapshot("a", [true, false], inputs: [false, false, false]), snapshot("b", [false, true]), snapshot("c", [true])], step: 30)
        builder.add(
            [snapshot("a", [false, false], inputs: [false, false, false]), snapshot("b", [false, false]), snapshot("c", [false])], step: 40)
        let windows = builder.windows
        #expect(windows.map(\.name) == ["a", "a", "b", "c"] && windows.map(\.source) == [.gradient, .inputs, .gradient, .gradient])
        #expect(windows[0].steps == [10, 20, 30, 40] && windows[0].lastAlive == [2, -1])
        #expect(windows[1].steps == [10, 20, 30, 40] && windows[1].lastAlive == [-1, 0, 1])
        #expect(windows[2].steps == [10, 30, 40] && windows[2].lastAlive == [0, 1], "b's saves are its own: 20 is not one")
        #expect(windows[3].steps == [20, 30, 40] && windows[3].lastAlive == [1] && windows[3].saves == 3)
    }

    #if canImport(Glibc)
    // On the main thread, whose blocks come from glibc's main heap, the one a gradscope process has
    // (``StatsAccumulator/prepareAllocator()``) and the one the free memory is counted in.
    @Test("a long-lived worker hands free memory back only when the heap holds more than it keeps between files")
    @MainActor
    func freeMemoryHandedBackAboveThreshold() {
        // 48 MiB in blocks of 64 KiB (heap blocks, below glibc's mapping threshold), freed under the
        // block allocated after them, still in use, so that the heap's top cannot shrink by itself.
        var blocks = (0..<769).map { _ -> UnsafeMutableRawPointer in
            let block = malloc(64 << 10)!
            memset(block, 1, 64 << 10)
            return block
        }
        let pin = blocks.removeLast()
        defer { free(pin) }
        for block in blocks { free(block) }
        #expect(!StatsAccumulator.releaseFreeMemory(above: Int.max), "nothing holds that much free memory")
        #expect(StatsAccumulator.releaseFreeMemory(above: 32 << 20), "48 MiB free is above 32 MiB")
        #expect(StatsAccumulator.keptFreeMemory == 16 << 20)
    }
    #endif
}
