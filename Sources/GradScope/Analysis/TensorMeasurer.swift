import Dispatch
import Foundation
import HDF5

/// How tensors are read for measurement.
public struct MeasureOptions: Sendable {
    /// Elements per block when streaming (4 MB of float32 by default).
    public var blockElements: Int = 1 << 20
    /// Threads used on memory-mapped tensors.
    public var threads: Int = max(1, ProcessInfo.processInfo.activeProcessorCount)
    public var histogramBins: Int = 32
    /// A unit of an activation is inactive when zero for at least this fraction of the batch.
    public var deadActivationFraction: Double = 0.99

    public init() {}
}

/// Reads tensors and computes their statistics (and their drift against an
/// earlier save) in one streamed pass each: contiguous float32/float64 data is
/// mapped from the file and split across threads; everything else is read
/// through libhdf5 in bounded blocks. Memory stays at a few blocks whatever
/// the tensor's size.
public enum TensorMeasurer {
    /// Most units given per-unit statistics: 2^20 units take 16 MB per
    /// accumulator; beyond that (a vocabulary-sized embedding, a corrupt shape)
    /// per-unit norms are not kept, so memory stays bounded.
    static let maxUnits = 1 << 20

    static func unitLayout(for tensor: TensorRef) -> UnitLayout {
        let layout = UnitLayout.forShape(tensor.shape, unitAxis: tensor.unitAxis)
        guard let units = layout.unitCount, units <= maxUnits else { return .none }
        return layout
    }

    /// The statistics of one tensor.
    /// `perUnit` asks for per-unit norms and zero counts (the default); without them the pass is cheaper.
    public static func stats(of tensor: TensorRef, in checkpoint: Checkpoint, options: MeasureOptions = MeasureOptions(),
                             perUnit: Bool = true) throws -> TensorStats {
        let dataset = try checkpoint.dataset(for: tensor)
        try dataset.checkReadable()
        let layout = perUnit ? unitLayout(for: tensor) : .none
        if let mapped = dataset.mapped() {
            if let floats = mapped.floats {
                return parallelStats(count: floats.count, layout: layout, options: options) { range, accumulator in
                    accumulator.add(UnsafeBufferPointer(rebasing: floats[range]), at: range.lowerBound)
                    mapped.release(elements: range)
                }
            }
            if let doubles = mapped.doubles {
                return parallelStats(count: doubles.count, layout: layout, options: options) { range, accumulator in
                    accumulator.add(UnsafeBufferPointer(rebasing: doubles[range]), at: range.lowerBound)
                    mapped.release(elements: range)
                }
            }
        }
        var accumulator = StatsAccumulator(layout: layout, histogramBins: options.histogramBins)
        if dataset.info.type.needsDouble {
            try dataset.stream(as: Double.self, blockElements: options.blockElements) { block, offset in
                accumulator.add(block, at: offset)
            }
        } else {
            try dataset.stream(as: Float.self, blockElements: options.blockElements) { block, offset in
                accumulator.add(block, at: offset)
            }
        }
        return accumulator.finish()
    }

    /// The statistics of `tensor` and its drift from `previous` (the same
    /// parameter at an earlier save), reading the two side by side.
    /// `perUnitStats` and `perUnitDrift` ask for the per-unit parts of each (both by default).
    public static func statsAndDrift(of tensor: TensorRef, in checkpoint: Checkpoint, previous: TensorRef, in earlier: Checkpoint,
                                     options: MeasureOptions = MeasureOptions(), perUnitStats: Bool = true,
                                     perUnitDrift: Bool = true) throws -> (TensorStats, DriftStats) {
        let current = try checkpoint.dataset(for: tensor)
        let before = try earlier.dataset(for: previous)
        try current.checkReadable()
        try before.checkReadable()
        guard current.info.elementCount == before.info.elementCount, current.info.shape == before.info.shape else {
            throw HDF5Error(file: checkpoint.source, object: tensor.path, reason: .unsupported,
                            message: "shape \(current.info.shape) differs from \(before.info.shape) at the previous save")
        }
        let statsLayout = perUnitStats ? unitLayout(for: tensor) : .none
        let driftLayout = perUnitDrift ? unitLayout(for: tensor) : .none
        if let a = before.mapped(), let b = current.mapped() {
            if let fa = a.floats, let fb = b.floats {
                return parallelBoth(count: fb.count, statsLayout: statsLayout, driftLayout: driftLayout, options: options) { range, stats, drift in
                    let pa = UnsafeBufferPointer(rebasing: fa[range]), pb = UnsafeBufferPointer(rebasing: fb[range])
                    stats.add(pb, at: range.lowerBound)
                    drift.add(pa, pb, at: range.lowerBound)
                    a.release(elements: range)
                    b.release(elements: range)
                }
            }
            if let da = a.doubles, let db = b.doubles {
                return parallelBoth(count: db.count, statsLayout: statsLayout, driftLayout: driftLayout, options: options) { range, stats, drift in
                    let pa = UnsafeBufferPointer(rebasing: da[range]), pb = UnsafeBufferPointer(rebasing: db[range])
                    stats.add(pb, at: range.lowerBound)
                    drift.add(pa, pb, at: range.lowerBound)
                    a.release(elements: range)
                    b.release(elements: range)
                }
            }
        }
        var stats = StatsAccumulator(layout: statsLayout, histogramBins: options.histogramBins)
        var drift = DriftAccumulator(layout: driftLayout)
        let blocks = current.blocks(blockElements: options.blockElements)
        let capacity = blocks.map(\.count).max() ?? 0
        if current.info.type.needsDouble || before.info.type.needsDouble {
            var bufferA = [Double](repeating: 0, count: capacity), bufferB = [Double](repeating: 0, count: capacity)
            for block in blocks {
                try bufferA.withUnsafeMutableBufferPointer { try before.read(block, into: $0) }
                try bufferB.withUnsafeMutableBufferPointer { try current.read(block, into: $0) }
                bufferA.withUnsafeBufferPointer { pa in
                    bufferB.withUnsafeBufferPointer { pb in
                        let a = UnsafeBufferPointer(rebasing: pa[0..<block.count]), b = UnsafeBufferPointer(rebasing: pb[0..<block.count])
                        stats.add(b, at: block.offset)
                        drift.add(a, b, at: block.offset)
                    }
                }
            }
        } else {
            var bufferA = [Float](repeating: 0, count: capacity), bufferB = [Float](repeating: 0, count: capacity)
            for block in blocks {
                try bufferA.withUnsafeMutableBufferPointer { try before.read(block, into: $0) }
                try bufferB.withUnsafeMutableBufferPointer { try current.read(block, into: $0) }
                bufferA.withUnsafeBufferPointer { pa in
                    bufferB.withUnsafeBufferPointer { pb in
                        let a = UnsafeBufferPointer(rebasing: pa[0..<block.count]), b = UnsafeBufferPointer(rebasing: pb[0..<block.count])
                        stats.add(b, at: block.offset)
                        drift.add(a, b, at: block.offset)
                    }
                }
            }
        }
        return (stats.finish(), drift.finish())
    }

    /// Splits `0..<count` into contiguous ranges, one accumulator per range,
    /// processed on up to `options.threads` threads, merged in order.
    static func parallelStats(count: Int, layout: UnitLayout, options: MeasureOptions,
                              body: (Range<Int>, inout StatsAccumulator) -> Void) -> TensorStats {
        let ranges = split(count: count, options: options)
        var parts = [StatsAccumulator](repeating: StatsAccumulator(layout: layout, histogramBins: options.histogramBins), count: ranges.count)
        parts.withUnsafeMutableBufferPointer { buffer in
            parallelFor(ranges.count) { index in
                for range in ranges[index] { body(range, &buffer[index]) }
            }
        }
        var total = parts[0]
        for part in parts.dropFirst() { total.merge(part) }
        return total.finish()
    }

    static func parallelBoth(count: Int, statsLayout: UnitLayout, driftLayout: UnitLayout, options: MeasureOptions,
                             body: (Range<Int>, inout StatsAccumulator, inout DriftAccumulator) -> Void) -> (TensorStats, DriftStats) {
        let ranges = split(count: count, options: options)
        var stats = [StatsAccumulator](repeating: StatsAccumulator(layout: statsLayout, histogramBins: options.histogramBins), count: ranges.count)
        var drifts = [DriftAccumulator](repeating: DriftAccumulator(layout: driftLayout), count: ranges.count)
        stats.withUnsafeMutableBufferPointer { statsBuffer in
            drifts.withUnsafeMutableBufferPointer { driftBuffer in
                parallelFor(ranges.count) { index in
                    for range in ranges[index] { body(range, &statsBuffer[index], &driftBuffer[index]) }
                }
            }
        }
        var totalStats = stats[0], totalDrift = drifts[0]
        for part in stats.dropFirst() { totalStats.merge(part) }
        for part in drifts.dropFirst() { totalDrift.merge(part) }
        return (totalStats.finish(), totalDrift.finish())
    }

    /// Work for each thread: a contiguous share of the elements, itself cut
    /// into blocks so each pass over a block stays in cache.
    static func split(count: Int, options: MeasureOptions) -> [[Range<Int>]] {
        let block = max(options.blockElements / 4, 4096)
        let threads = count >= 4 * block ? max(1, min(options.threads, 64)) : 1
        let share = (count + threads - 1) / threads
        return (0..<threads).map { thread in
            let start = thread * share, end = min(count, start + share)
            guard start < end else { return [] }
            return stride(from: start, to: end, by: block).map { $0..<min(end, $0 + block) }
        }.filter { !$0.isEmpty }.ifEmpty([[0..<0]])
    }
}

/// Runs `body(0..<n)` on Dispatch's worker threads and waits for all of them.
/// Each index must touch only its own data.
func parallelFor(_ n: Int, _ body: (Int) -> Void) {
    if n <= 1 {
        if n == 1 { body(0) }
        return
    }
    withoutActuallyEscaping(body) { escapable in
        let box = UncheckedSendable(escapable)
        DispatchQueue.concurrentPerform(iterations: n) { box.value($0) }
    }
}

/// Carries a value across threads where the caller guarantees exclusive access.
struct UncheckedSendable<T>: @unchecked Sendable {
    let value: T
    init(_ value: T) { self.value = value }
}

extension Array {
    func ifEmpty(_ replacement: [Element]) -> [Element] { isEmpty ? replacement : self }
}
