import Dispatch
import ElementTypes
import GradScopeSources
import GradScopeStatistics
import HDF5
import Synchronization

/// Statistics of gzip-compressed chunked tensors (float32 or float64, deflate or shuffle then
/// deflate) read without libhdf5: each chunk's bytes are read from the file with `pread` and
/// inflated with libdeflate on every thread, and the statistics are fed the very blocks, in the
/// very order, that the libhdf5 path feeds them, so both give the same numbers to the last bit.
///
/// The tensor is taken block by block (the blocks `TensorData.blocks` plans, about
/// `blockElements` each, aligned to the chunk grid). While one block is added to the
/// accumulators, the chunks of the next are inflated into a second buffer: one task adds, the
/// others inflate, on `options.threads` threads. Memory stays two blocks per tensor plus a chunk or
/// two per thread, whatever the tensor's size. Applies only when every chunk lies inside one
/// block (true unless a single row of chunks exceeds four blocks); otherwise the caller reads
/// through libhdf5.
package enum ChunkedMeasurer {
    /// The blocks to read, when each of `chunks`' chunks lies inside one of them; nil otherwise.
    package static func plan(_ data: any TensorData, _ chunks: [DeflatedChunks], blockElements: Int) -> [TensorBlock]? {
        guard let grid = chunks.first?.grid, chunks.allSatisfy({ $0.grid == grid }) else { return nil }
        return plan(data.blocks(blockElements: blockElements), grid: grid)
    }

    /// `blocks`, when each chunk of `grid` lies inside one of them; nil otherwise.
    package static func plan(_ blocks: [TensorBlock], grid: ChunkGrid) -> [TensorBlock]? {
        guard !blocks.isEmpty else { return nil }
        for block in blocks where !grid.holdsWholeChunks(start: block.start, extent: block.extent) { return nil }
        return blocks
    }

    /// The statistics of `data`, whose chunks are `chunks`; nil when the blocks do not hold whole chunks.
    package static func stats(
        of data: any TensorData, chunks: DeflatedChunks, layout: UnitLayout, inputs: InputUnitMap? = nil, options: MeasureOptions
    ) throws -> TensorStats? {
        guard let blocks = plan(data, [chunks], blockElements: max(options.blockElements, 1)) else { return nil }
        switch chunks.type {
        case .float32: return try stats(chunks, blocks: blocks, as: Float.self, layout: layout, inputs: inputs, options: options)
        case .float64: return try stats(chunks, blocks: blocks, as: Double.self, layout: layout, inputs: inputs, options: options)
        default: return nil
        }
    }

    /// The statistics of `current` and its drift from `earlier`; nil unless both have the same
    /// element type and chunk grid and the blocks hold whole chunks.
    package static func statsAndDrift(
        earlier: DeflatedChunks, current: DeflatedChunks, of data: any TensorData,
        statsLayout: UnitLayout, driftLayout: UnitLayout, options: MeasureOptions
    ) throws -> (TensorStats, DriftStats)? {
        guard earlier.type == current.type,
            let blocks = plan(data, [earlier, current], blockElements: max(options.blockElements, 1))
        else { return nil }
        switch current.type {
        case .float32:
            return try both(
                earlier, current, blocks: blocks, as: Float.self, statsLayout: statsLayout, driftLayout: driftLayout, options: options)
        case .float64:
            return try both(
                earlier, current, blocks: blocks, as: Double.self, statsLayout: statsLayout, driftLayout: driftLayout, options: options)
        default: return nil
        }
    }

    static func stats<T: MeasuredElement>(
        _ chunks: DeflatedChunks, blocks: [TensorBlock], as _: T.Type, layout: UnitLayout, inputs: InputUnitMap? = nil,
        options: MeasureOptions
    ) throws -> TensorStats {
        var accumulator = StatsAccumulator(layout: layout, histogramBins: options.histogramBins)
        accumulator.countInputZeros(inputs)
        try withUnsafeMutablePointer(to: &accumulator) { stats in
            try stream([chunks], blocks: blocks, as: T.self, threads: options.threads) { block, buffers in
                T.add(UnsafeBufferPointer(rebasing: buffers[0][0..<block.count]), at: block.offset, to: &stats.pointee)
            }
        }
        return accumulator.finish()
    }

    static func both<T: MeasuredElement>(
        _ earlier: DeflatedChunks, _ current: DeflatedChunks, blocks: [TensorBlock], as _: T.Type,
        statsLayout: UnitLayout, driftLayout: UnitLayout, options: MeasureOptions
    ) throws -> (TensorStats, DriftStats) {
        var statsAccumulator = StatsAccumulator(layout: statsLayout, histogramBins: options.histogramBins)
        var driftAccumulator = DriftAccumulator(layout: driftLayout)
        try withUnsafeMutablePointer(to: &statsAccumulator) { stats in
            try withUnsafeMutablePointer(to: &driftAccumulator) { drift in
                try stream([earlier, current], blocks: blocks, as: T.self, threads: options.threads) { block, buffers in
                    let a = UnsafeBufferPointer(rebasing: buffers[0][0..<block.count])
                    let b = UnsafeBufferPointer(rebasing: buffers[1][0..<block.count])
                    T.add(b, at: block.offset, to: &stats.pointee)
                    T.add(a, b, at: block.offset, to: &drift.pointee)
                }
            }
        }
        return (statsAccumulator.finish(), driftAccumulator.finish())
    }

    /// Chunks inflated by one task at most: a block's chunks are shared out in groups of at least
    /// this many, so each task's decoder buffers serve several chunks.
    static let chunksPerTaskMinimum = 4

    /// Fills each block of `blocks` from the chunks of every tensor of `sides` (one buffer per
    /// side) and calls `consume` with it, in order, on one task at a time; the next block's
    /// chunks are inflated meanwhile. The first chunk that fails stops it, and its error is thrown.
    static func stream<T>(
        _ sides: [DeflatedChunks], blocks: [TensorBlock], as _: T.Type, threads: Int,
        consume: (TensorBlock, [UnsafeMutableBufferPointer<T>]) -> Void
    ) throws {
        let failures = stream(sides, blocks: blocks, as: T.self, threads: threads, stopAtFailure: true) { block, buffers, _ in
            consume(block, buffers)
        }
        if let first = failures.compactMap({ $0 }).first { throw first }
    }

    /// As `stream(_:blocks:as:threads:consume:)`, but (unless `stopAtFailure`) a side whose chunk
    /// fails is only dropped: its chunks are not read any more, `consume` is told for every block
    /// from the one that failed on (`failed[side]`, its buffer then holds nothing usable), and the
    /// other sides go on. Returns each side's error (nil when all its blocks were read).
    /// The sides must have the same grid and element type. With one thread, the blocks are filled
    /// and consumed in turn in one buffer per side; with more, in two (one filled while the other
    /// is consumed).
    static func stream<T>(
        _ sides: [DeflatedChunks], blocks: [TensorBlock], as _: T.Type, threads: Int, stopAtFailure: Bool,
        consume: (TensorBlock, [UnsafeMutableBufferPointer<T>], [Bool]) -> Void
    ) -> [Error?] {
        guard let grid = sides.first?.grid else { return [] }
        let failures = SideFailures(count: sides.count)
        let capacity = blocks.map(\.count).max() ?? 0
        let threads = max(1, min(threads, 64))
        let sets = threads == 1 ? 1 : 2
        let buffers = (0..<sets).map { _ in sides.map { _ in UnsafeMutableBufferPointer<T>.allocate(capacity: max(capacity, 1)) } }
        defer { buffers.joined().forEach { $0.deallocate() } }
        func fill(
            _ block: TensorBlock, step: Int, chunks: ArraySlice<Int>, into target: [UnsafeMutableBufferPointer<T>], decoder: ChunkDecoder
        )
            throws
        {
            for chunk in chunks {
                for side in sides.indices where !failures.failed(side, by: step) {
                    try Self.fill(
                        side, of: sides, block: block, step: step, chunks: CollectionOfOne(chunk), into: target[side], decoder: decoder,
                        failures: failures, stopAtFailure: stopAtFailure)
                }
            }
        }
        do {
            if sets == 1 {
                let decoder = try ChunkDecoder(sides[0])
                for (step, block) in blocks.enumerated() {
                    let chunks = grid.chunks(start: block.start, extent: block.extent)
                    try fill(block, step: step, chunks: chunks[...], into: buffers[0], decoder: decoder)
                    consume(block, buffers[0], sides.indices.map { failures.failed($0, by: step) })
                }
                return failures.errors
            }
            for step in 0...blocks.count {
                let filling = step < blocks.count ? blocks[step] : nil
                let consuming = step > 0 ? blocks[step - 1] : nil
                let chunks = filling.map { grid.chunks(start: $0.start, extent: $0.extent) } ?? []
                let groupCount = min(4 * threads, (chunks.count + chunksPerTaskMinimum - 1) / chunksPerTaskMinimum)
                let first = consuming == nil ? 0 : 1
                let target = buffers[step % 2], previous = buffers[(step + 1) % 2]
                try runTasks(first + groupCount, threads: threads) { task in
                    if task < first, let consuming {
                        consume(consuming, previous, sides.indices.map { failures.failed($0, by: step - 1) })
                        return
                    }
                    guard let filling else { return }
                    let group = task - first
                    let range = (chunks.count * group / groupCount)..<(chunks.count * (group + 1) / groupCount)
                    try fill(filling, step: step, chunks: chunks[range], into: target, decoder: try ChunkDecoder(sides[0]))
                }
            }
        } catch {
            if failures.errors.allSatisfy({ $0 == nil }) { return [error] + [Error?](repeating: nil, count: sides.count - 1) }
        }
        return failures.errors
    }

    /// Inflates `chunks` (of block `step`) of side `side` into `target`; a failure is recorded in
    /// `failures` (and thrown when `stopAtFailure`), and the side's remaining chunks are skipped.
    static func fill<T, C: Collection<Int>>(
        _ side: Int, of sides: [DeflatedChunks], block: TensorBlock, step: Int, chunks: C, into target: UnsafeMutableBufferPointer<T>,
        decoder: ChunkDecoder, failures: SideFailures, stopAtFailure: Bool
    ) throws {
        guard let base = target.baseAddress else { return }
        do {
            for chunk in chunks {
                let decoded = try decoder.decode(chunk, of: sides[side])
                try sides[side].copy(chunk, from: decoded, into: UnsafeMutableRawPointer(base), blockOffset: block.offset, blockCount: block.count)
            }
        } catch {
            failures.record(error, side: side, at: step)
            if stopAtFailure { throw error }
        }
    }

    /// Fills each block of `blocks` from one side after another (the same tensor at successive
    /// saves) on this thread, and calls `consume(block, side, values, before)` as each side's block
    /// is filled: `before` is the previous side's same block (nil for side 0 or when that side
    /// failed). Only two blocks are held, whatever the number of sides, so a long window stays in
    /// the cache's reach. A side whose chunk fails is dropped from then on (`consume` is no longer
    /// called for it); returns each side's error. Each accumulator still sees its blocks in order.
    static func streamInTurn<T>(
        _ sides: [DeflatedChunks], blocks: [TensorBlock], as _: T.Type,
        consume: (TensorBlock, Int, UnsafeMutableBufferPointer<T>, UnsafeMutableBufferPointer<T>?) -> Void
    ) -> [Error?] {
        guard let grid = sides.first?.grid else { return [] }
        let failures = SideFailures(count: sides.count)
        let capacity = max(blocks.map(\.count).max() ?? 0, 1)
        var current = UnsafeMutableBufferPointer<T>.allocate(capacity: capacity)
        var previous = UnsafeMutableBufferPointer<T>.allocate(capacity: capacity)
        defer {
            current.deallocate()
            previous.deallocate()
        }
        let decoder: ChunkDecoder
        do { decoder = try ChunkDecoder(sides[0]) } catch { return [error] + [Error?](repeating: nil, count: sides.count - 1) }
        for (step, block) in blocks.enumerated() {
            let chunks = grid.chunks(start: block.start, extent: block.extent)
            var previousFilled = false
            for side in sides.indices {
                guard !failures.failed(side, by: step) else {
                    previousFilled = false
                    continue
                }
                try? fill(
                    side, of: sides, block: block, step: step, chunks: chunks, into: current, decoder: decoder, failures: failures,
                    stopAtFailure: false)
                guard !failures.failed(side, by: step) else {
                    previousFilled = false
                    continue
                }
                consume(block, side, current, previousFilled ? previous : nil)
                swap(&current, &previous)
                previousFilled = true
            }
        }
        return failures.errors
    }

    /// Runs `body(task)` for every task of `0..<count` on at most `threads` threads, each taking the
    /// next task not yet taken (task 0 first), and waits for all. Rethrows the error of the lowest
    /// task that failed; after a failure, tasks not yet started are skipped.
    static func runTasks(_ count: Int, threads: Int, _ body: (Int) throws -> Void) throws {
        let workers = min(threads, count)
        if workers <= 1 {
            for task in 0..<count { try body(task) }
            return
        }
        let next = TaskCounter()
        var failures = [(task: Int, error: Error)?](repeating: nil, count: workers)
        try failures.withUnsafeMutableBufferPointer { slots in
            try TensorMeasurer.inParallel(workers) { worker in
                while let task = next.take(below: count) {
                    do {
                        try body(task)
                    } catch {
                        slots[worker] = (task, error)
                        next.stop()
                        return
                    }
                }
            }
        }
        if let first = failures.compactMap({ $0 }).min(by: { $0.task < $1.task }) { throw first.error }
    }
}

/// The next task to hand out, shared by the threads of `ChunkedMeasurer.runTasks`.
final class TaskCounter: Sendable {
    private let state = Mutex((next: 0, stopped: false))

    /// The next task below `count`, or nil when all are taken or a task failed.
    func take(below count: Int) -> Int? {
        state.withLock { state in
            guard !state.stopped, state.next < count else { return nil }
            state.next += 1
            return state.next - 1
        }
    }

    func stop() { state.withLock { $0.stopped = true } }
}

/// Which sides of `ChunkedMeasurer.stream` failed, at which block, and why: shared by its tasks.
final class SideFailures: Sendable {
    private let state: Mutex<[(block: Int, error: Error)?]>

    init(count: Int) { state = Mutex([(block: Int, error: Error)?](repeating: nil, count: count)) }

    /// Notes that `side` failed at block `block` (kept only if it is the earliest).
    func record(_ error: Error, side: Int, at block: Int) {
        state.withLock { state in
            if let known = state[side], known.block <= block { return }
            state[side] = (block, error)
        }
    }

    /// Whether `side` failed at block `block` or before.
    func failed(_ side: Int, by block: Int) -> Bool { state.withLock { $0[side].map { $0.block <= block } ?? false } }

    var errors: [Error?] { state.withLock { $0.map { $0?.error } } }
}
