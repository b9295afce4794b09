import Dispatch
import ElementTypes
import Foundation
import GradScopeModel
import GradScopeSources
import GradScopeStatistics
import HDF5

/// How tensors are read for measurement.
public struct MeasureOptions: Sendable {
    /// Elements per block when streaming (4 MB of float32 by default).
    public var blockElements: Int = 1 << 20
    /// Threads used on tensors read directly from the file (contiguous float32/float64).
    public var threads: Int = max(1, ProcessInfo.processInfo.activeProcessorCount)
    public var histogramBins: Int = 32
    /// A unit of an activation is inactive when zero for at least this fraction of the batch.
    public var deadActivationFraction: Double = 0.99
    /// Contiguous tensors measured run-wide are taken in place from their files' mappings
    /// (``StoredFile``); false reads them with `pread`, as `GRADSCOPE_READ=pread` does.
    public var readInPlace: Bool = StoredFile.mapsByDefault
    /// Drift measured run-wide gives its norms, relative change and changed count only, not its
    /// cosine, largest |Δ| and sign flips (a scan keeps the former alone, ``MeasurementDetail``).
    package var driftNormsOnly = false

    public init() {}
}

/// Reads tensors and computes their statistics (and their drift against an
/// earlier save) in one streamed pass each: contiguous float32/float64 data is
/// taken in place from a mapping of the file (or read with `pread`), 64 Ki elements
/// at a time, split across threads; gzip-compressed chunked float32/float64 data is read and
/// inflated without libhdf5, on every thread (`ChunkedMeasurer`); everything else is read
/// through libhdf5 in bounded blocks. Memory stays at a few blocks whatever
/// the tensor's size.
public enum TensorMeasurer {
    /// Most units given per-unit statistics: 2^20 units take 16 MB per
    /// accumulator; beyond that (a vocabulary-sized embedding, a corrupt shape)
    /// per-unit norms are not kept, so memory stays bounded.
    package static let maxUnits = 1 << 20

    package static func unitLayout(for tensor: TensorRef) -> UnitLayout {
        let layout = UnitLayout.forShape(tensor.shape, unitAxis: tensor.unitAxis, gates: tensor.gates)
        guard let units = layout.unitCount, units <= maxUnits else { return .none }
        return layout
    }

    /// The input units whose exact zeros are counted: those of the gradient of a matrix or kernel,
    /// and of the second moment of its optimizer (Adam's v, exactly zero where every gradient so far
    /// was), where a zero input unit shows an input zero on every example (docs/DETECTORS.md,
    /// "Evidence from neighbours"). Nil for anything else, and beyond ``maxUnits`` input units.
    package static func inputMap(for tensor: TensorRef) -> InputUnitMap? {
        guard tensor.role == .gradient || (tensor.role == .optimizer && tensor.slot == .secondMoment), tensor.shape.count >= 2,
            !TensorNames.isBias(tensor.name), let map = InputUnitMap.forKernel(shape: tensor.shape, unitAxis: tensor.unitAxis),
            map.units >= 1, map.units <= maxUnits
        else { return nil }
        return map
    }

    /// The statistics of one tensor.
    /// `perUnit` asks for per-unit norms and zero counts (the default); without them the pass is cheaper.
    /// The zeros of the input units (``inputMap(for:)``) are counted either way.
    public static func stats(
        of tensor: TensorRef, in checkpoint: OpenCheckpoint, options: MeasureOptions = MeasureOptions(),
        perUnit: Bool = true
    ) throws -> TensorStats {
        let dataset = try checkpoint.data(for: tensor)
        try dataset.checkReadable()
        let layout = perUnit ? unitLayout(for: tensor) : .none
        let inputs = inputMap(for: tensor)
        if let direct = dataset.contiguous() {
            switch direct.type {
            case .float32: return try directStats(direct, as: Float.self, layout: layout, inputs: inputs, options: options)
            default: return try directStats(direct, as: Double.self, layout: layout, inputs: inputs, options: options)
            }
        }
        if let chunks = dataset.deflatedChunks(),
            let stats = try ChunkedMeasurer.stats(of: dataset, chunks: chunks, layout: layout, inputs: inputs, options: options)
        {
            return stats
        }
        return dataset.needsDouble
            ? try streamedStats(dataset, as: Double.self, layout: layout, inputs: inputs, options: options)
            : try streamedStats(dataset, as: Float.self, layout: layout, inputs: inputs, options: options)
    }

    /// Statistics of any dataset read through libhdf5 in blocks, converted to `T`.
    package static func streamedStats<T: MeasuredElement & HDF5Real>(
        _ dataset: any TensorData, as _: T.Type, layout: UnitLayout, inputs: InputUnitMap? = nil,
        options: MeasureOptions
    ) throws -> TensorStats {
        var accumulator = StatsAccumulator(layout: layout, histogramBins: options.histogramBins)
        accumulator.countInputZeros(inputs)
        try dataset.stream(as: T.self, blockElements: options.blockElements) { block, offset in
            T.add(block, at: offset, to: &accumulator)
        }
        return accumulator.finish()
    }

    /// The statistics of `tensor` and its drift from `previous` (the same
    /// parameter at an earlier save), reading the two side by side.
    /// `perUnitStats` and `perUnitDrift` ask for the per-unit parts of each (both by default).
    public static func statsAndDrift(
        of tensor: TensorRef, in checkpoint: OpenCheckpoint, previous: TensorRef, in earlier: OpenCheckpoint,
        options: MeasureOptions = MeasureOptions(), perUnitStats: Bool = true,
        perUnitDrift: Bool = true
    ) throws -> (TensorStats, DriftStats) {
        let current = try checkpoint.data(for: tensor)
        let before = try earlier.data(for: previous)
        try current.checkReadable()
        try before.checkReadable()
        guard current.shape == before.shape else {
            throw CheckpointError(
                file: checkpoint.checkpoint.source,
                reason: "\(tensor.path): shape \(current.shape) differs from \(before.shape) at the previous save")
        }
        let statsLayout = perUnitStats ? unitLayout(for: tensor) : .none
        let driftLayout = perUnitDrift ? unitLayout(for: tensor) : .none
        if let a = before.contiguous(), let b = current.contiguous(), a.type == b.type {
            switch b.type {
            case .float32:
                return try directBoth(a, b, as: Float.self, statsLayout: statsLayout, driftLayout: driftLayout, options: options)
            default:
                return try directBoth(a, b, as: Double.self, statsLayout: statsLayout, driftLayout: driftLayout, options: options)
            }
        }
        if let a = before.deflatedChunks(), let b = current.deflatedChunks(),
            let both = try ChunkedMeasurer.statsAndDrift(
                earlier: a, current: b, of: current, statsLayout: statsLayout, driftLayout: driftLayout, options: options)
        {
            return both
        }
        return current.needsDouble || before.needsDouble
            ? try streamedBoth(before, current, as: Double.self, statsLayout: statsLayout, driftLayout: driftLayout, options: options)
            : try streamedBoth(before, current, as: Float.self, statsLayout: statsLayout, driftLayout: driftLayout, options: options)
    }

    /// Statistics of `current` and its drift from `earlier`, both read through libhdf5 block by block, side by side.
    package static func streamedBoth<T: MeasuredElement & HDF5Real>(
        _ earlier: any TensorData, _ current: any TensorData, as _: T.Type,
        statsLayout: UnitLayout, driftLayout: UnitLayout,
        options: MeasureOptions
    ) throws -> (TensorStats, DriftStats) {
        var stats = StatsAccumulator(layout: statsLayout, histogramBins: options.histogramBins)
        var drift = DriftAccumulator(layout: driftLayout)
        let blocks = current.blocks(blockElements: options.blockElements)
        let capacity = blocks.map(\.count).max() ?? 0
        var bufferA = [T](repeating: .zero, count: capacity), bufferB = [T](repeating: .zero, count: capacity)
        for block in blocks {
            try bufferA.withUnsafeMutableBufferPointer { try earlier.read(block, into: $0) }
            try bufferB.withUnsafeMutableBufferPointer { try current.read(block, into: $0) }
            bufferA.withUnsafeBufferPointer { pa in
                bufferB.withUnsafeBufferPointer { pb in
                    let a = UnsafeBufferPointer(rebasing: pa[0..<block.count]), b = UnsafeBufferPointer(rebasing: pb[0..<block.count])
                    T.add(b, at: block.offset, to: &stats)
                    T.add(a, b, at: block.offset, to: &drift)
                }
            }
        }
        return (stats.finish(), drift.finish())
    }

    /// Elements per direct read: 64 Ki (256 KiB of float32), so a block (two
    /// for drift) stays in the core's cache while the kernels pass over it.
    package static let directBlockElements = 1 << 16

    /// Statistics of a contiguous tensor read directly from the file: the
    /// elements are split into one contiguous share per thread, each taken block by
    /// block in place from the file's mapping (or read into a buffer of its own), and
    /// the shares' accumulators merged in order.
    package static func directStats<T: MeasuredElement>(
        _ tensor: any ContiguousTensor, as _: T.Type, layout: UnitLayout, inputs: InputUnitMap? = nil,
        options: MeasureOptions
    ) throws -> TensorStats {
        let shares = split(count: tensor.count, block: directBlockElements, threads: options.threads)
        var first = StatsAccumulator(layout: layout, histogramBins: options.histogramBins)
        first.countInputZeros(inputs)
        var parts = [StatsAccumulator](repeating: first, count: shares.count)
        // In place in the file's mapping when it can be mapped, else copied into a buffer.
        let mapped = options.readInPlace ? tensor.mapped() : nil
        try parts.withUnsafeMutableBufferPointer { accumulators in
            try inParallel(shares.count) { index in
                let buffer = UnsafeMutableBufferPointer<T>.allocate(capacity: directBlockElements)
                defer { buffer.deallocate() }
                for range in shares[index] {
                    let block = try elements(of: tensor, range, mapped: mapped, buffer: buffer)
                    T.add(block, at: range.lowerBound, to: &accumulators[index])
                }
            }
        }
        // Zeros from a file cut short while mapped are not its values.
        try mapped?.checkIntact()
        var total = parts[0]
        for part in parts.dropFirst() { total.merge(part) }
        return total.finish()
    }

    /// Statistics of `current` and its drift from `earlier`, both read directly, side by side.
    package static func directBoth<T: MeasuredElement>(
        _ earlier: any ContiguousTensor, _ current: any ContiguousTensor, as _: T.Type,
        statsLayout: UnitLayout, driftLayout: UnitLayout,
        options: MeasureOptions
    ) throws -> (TensorStats, DriftStats) {
        let shares = split(count: current.count, block: directBlockElements, threads: options.threads)
        var stats = [StatsAccumulator](repeating: StatsAccumulator(layout: statsLayout, histogramBins: options.histogramBins), count: shares.count)
        var drifts = [DriftAccumulator](repeating: DriftAccumulator(layout: driftLayout), count: shares.count)
        let (mappedA, mappedB) = options.readInPlace ? (earlier.mapped(), current.mapped()) : (nil, nil)
        try stats.withUnsafeMutableBufferPointer { statsParts in
            try drifts.withUnsafeMutableBufferPointer { driftParts in
                try inParallel(shares.count) { index in
                    let a = UnsafeMutableBufferPointer<T>.allocate(capacity: directBlockElements)
                    let b = UnsafeMutableBufferPointer<T>.allocate(capacity: directBlockElements)
                    defer {
                        a.deallocate()
                        b.deallocate()
                    }
                    for range in shares[index] {
                        let pa = try elements(of: earlier, range, mapped: mappedA, buffer: a)
                        let pb = try elements(of: current, range, mapped: mappedB, buffer: b)
                        T.add(pb, at: range.lowerBound, to: &statsParts[index])
                        T.add(pa, pb, at: range.lowerBound, to: &driftParts[index])
                    }
                }
            }
        }
        try mappedA?.checkIntact()
        try mappedB?.checkIntact()
        var totalStats = stats[0], totalDrift = drifts[0]
        for part in stats.dropFirst() { totalStats.merge(part) }
        for part in drifts.dropFirst() { totalDrift.merge(part) }
        return (totalStats.finish(), totalDrift.finish())
    }

    /// Elements `range` of `tensor`: in place in `mapped` when given, else read into `buffer`.
    package static func elements<T>(
        of tensor: any ContiguousTensor, _ range: Range<Int>, mapped: MappedTensor?, buffer: UnsafeMutableBufferPointer<T>
    ) throws -> UnsafeBufferPointer<T> {
        if let block = mapped?.elements(range, as: T.self) { return block }
        try tensor.read(range, into: buffer)
        return UnsafeBufferPointer(rebasing: buffer[0..<range.count])
    }

    /// Work for each thread: a contiguous share of `0..<count`, cut into
    /// blocks of `block` elements. A single share unless there are at least
    /// four blocks' worth of elements.
    package static func split(count: Int, block: Int, threads: Int) -> [[Range<Int>]] {
        let threads = count >= 4 * block ? max(1, min(threads, 64)) : 1
        let share = (count + threads - 1) / threads
        return (0..<threads).map { thread in
            let start = thread * share, end = min(count, start + share)
            guard start < end else { return [] }
            return stride(from: start, to: end, by: block).map { $0..<min(end, $0 + block) }
        }.filter { !$0.isEmpty }.ifEmpty([[0..<0]])
    }

    /// Runs `body(index)` for `0..<n` on Dispatch's threads and waits for all
    /// of them; each index must touch only its own data (elements of buffers,
    /// not of Swift arrays, which are not safe to mutate from several threads).
    /// Rethrows the first error (by index).
    package static func inParallel(_ n: Int, _ body: (Int) throws -> Void) throws {
        if n <= 1 {
            if n == 1 { try body(0) }
            return
        }
        var errors = [Error?](repeating: nil, count: n)
        errors.withUnsafeMutableBufferPointer { slots in
            withoutActuallyEscaping(body) { escapable in
                let box = UncheckedSendable((escapable, slots))
                DispatchQueue.concurrentPerform(iterations: n) { index in
                    do { try box.value.0(index) } catch { box.value.1[index] = error }
                }
            }
        }
        if let error = errors.lazy.compactMap({ $0 }).first { throw error }
    }
}

/// The element types the statistics take directly (`Float` and `Double`):
/// how a block of them is added to each accumulator.
package protocol MeasuredElement {
    static func add(_ block: UnsafeBufferPointer<Self>, at offset: Int, to accumulator: inout StatsAccumulator)
    static func add(_ a: UnsafeBufferPointer<Self>, _ b: UnsafeBufferPointer<Self>, at offset: Int, to accumulator: inout DriftAccumulator)
    /// Both of the above for a block and the block one save earlier (`before`): the same numbers.
    static func add(
        _ block: UnsafeBufferPointer<Self>, before: UnsafeBufferPointer<Self>, at offset: Int, to stats: inout StatsAccumulator,
        drift: inout DriftAccumulator)
}

extension Float: MeasuredElement {
    package static func add(_ block: UnsafeBufferPointer<Float>, at offset: Int, to accumulator: inout StatsAccumulator) {
        accumulator.add(block, at: offset)
    }
    package static func add(_ a: UnsafeBufferPointer<Float>, _ b: UnsafeBufferPointer<Float>, at offset: Int, to accumulator: inout DriftAccumulator)
    {
        accumulator.add(a, b, at: offset)
    }
    package static func add(
        _ block: UnsafeBufferPointer<Float>, before: UnsafeBufferPointer<Float>, at offset: Int, to stats: inout StatsAccumulator,
        drift: inout DriftAccumulator
    ) {
        // One pass over the block for its statistics and its drift where it can.
        stats.add(block, at: offset, before: before, drift: &drift)
    }
}

extension Double: MeasuredElement {
    package static func add(_ block: UnsafeBufferPointer<Double>, at offset: Int, to accumulator: inout StatsAccumulator) {
        accumulator.add(block, at: offset)
    }
    package static func add(
        _ a: UnsafeBufferPointer<Double>, _ b: UnsafeBufferPointer<Double>, at offset: Int, to accumulator: inout DriftAccumulator
    ) {
        accumulator.add(a, b, at: offset)
    }
    package static func add(
        _ block: UnsafeBufferPointer<Double>, before: UnsafeBufferPointer<Double>, at offset: Int, to stats: inout StatsAccumulator,
        drift: inout DriftAccumulator
    ) {
        stats.add(block, at: offset)
        drift.add(before, block, at: offset)
    }
}

/// Carries a value across threads where the caller guarantees exclusive access.
/// Unchecked by design, for what the compiler cannot prove safe to share: a
/// non-`Sendable` closure and buffers into `concurrentPerform` (each index touches
/// only its own slot), a worker connection through the pool's idle list (one owner
/// at a time).
package struct UncheckedSendable<T>: @unchecked Sendable {
    package let value: T
    package init(_ value: T) { self.value = value }
}

extension Array {
    package func ifEmpty(_ replacement: [Element]) -> [Element] { isEmpty ? replacement : self }
}
