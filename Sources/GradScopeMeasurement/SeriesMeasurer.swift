import ElementTypes
import Foundation
import GradScopeModel
import GradScopeSources
import GradScopeStatistics
import HDF5
import Synchronization

/// Measures the tensors of a run that can be read from their files without libhdf5
/// (``DirectStorage``: contiguous, or gzip-compressed chunks listed when the file was
/// described) by reading their bytes directly, one tensor across all
/// its steps at a time: block by block, every step's block is read once and
/// feeds that step's statistics and, side by side with the block before it,
/// the drift from the previous step. A step's weights are therefore read once,
/// not twice (as the current step, then as the previous one), and no libhdf5
/// call is made, so this runs in the scanning process itself, on every core.
///
/// Compressed tensors are read in the blocks the libhdf5 path reads them in
/// (``TensorBlock/plan(shape:chunkShape:blockElements:)``), every chunk of every step of a
/// window inflated once (``ChunkedMeasurer``), and each block fed to its step's
/// accumulators in order, so their statistics are those of the step-by-step path to the bit.
/// Windows of compressed tensors are one job each (several run at once); one that holds a
/// large share of the range's bytes inflates its chunks on every thread.
///
/// Steps are taken in windows of at most ``maxWindow`` (fewer when per-unit
/// statistics are large), so memory stays at a few blocks and a window's
/// accumulators whatever the run's length; the step before a window is read
/// again for its first drift. A tensor of at least four blocks is also split
/// into one element share per thread, merged in order.
///
/// A step whose file changed since it was described, or cannot be opened, is
/// reported in ``Result/stepErrors``; a block that cannot be read fails that
/// tensor at that step (and the next step's drift from it), nothing else.
package enum SeriesMeasurer {
    /// One step as the measurer sees it: its file, as it was when described, and its tensors.
    package struct Step: Sendable {
        package var file: String
        package var size: Int
        package var mtime: Double
        package var tensors: [TensorRef]
        /// Parallel to `tensors`: where each lies in `file`, when it can be read directly.
        package var storage: [DirectStorage?]

        package init(file: String, size: Int, mtime: Double, tensors: [TensorRef], storage: [DirectStorage?]) {
            self.file = file
            self.size = size
            self.mtime = mtime
            self.tensors = tensors
            self.storage = storage
        }

        /// A described checkpoint: its file as it was when described, and its tensors' storage.
        package init(_ checkpoint: Checkpoint) {
            self.init(
                file: checkpoint.file, size: checkpoint.stamp.size, mtime: checkpoint.stamp.mtime, tensors: checkpoint.tensors,
                storage: checkpoint.storage)
        }
    }

    /// What was measured of one tensor at one step: its measurement (per-unit arrays already
    /// summarised and dropped, so a long run holds no per-unit data) and its unit snapshot, or why not.
    package struct Outcome: Sendable {
        /// The measurement and the unit snapshot, held by reference: an outcome is moved from the
        /// thread that finished it to its range's collector, out of it and into its save, and a
        /// measurement is about 700 bytes, copied at each move when held inline.
        private final class Parts: @unchecked Sendable {
            var measurement: TensorMeasurement?
            var snapshot: UnitSnapshot?

            init(measurement: TensorMeasurement?, snapshot: UnitSnapshot?) {
                self.measurement = measurement
                self.snapshot = snapshot
            }
        }

        private var parts: Parts?
        package var error: String?

        package init(measurement: TensorMeasurement?, snapshot: UnitSnapshot?, error: String?) {
            parts = measurement == nil && snapshot == nil ? nil : Parts(measurement: measurement, snapshot: snapshot)
            self.error = error
        }

        package var measurement: TensorMeasurement? { parts?.measurement }
        package var snapshot: UnitSnapshot? { parts?.snapshot }

        /// The measurement, moved out: nil afterwards.
        package mutating func takeMeasurement() -> TensorMeasurement? {
            unique()?.measurement.take()
        }

        /// The unit snapshot, moved out: nil afterwards.
        package mutating func takeSnapshot() -> UnitSnapshot? {
            unique()?.snapshot.take()
        }

        /// The parts, first copied when a copy of this outcome shares them (a value changes alone).
        private mutating func unique() -> Parts? {
            guard parts != nil else { return nil }
            if !isKnownUniquelyReferenced(&parts) {
                parts = parts.map { Parts(measurement: $0.measurement, snapshot: $0.snapshot) }
            }
            return parts
        }
    }

    package struct Result: Sendable {
        /// Per step of the range measured (`outcomes[s - range.lowerBound]`): outcomes by tensor
        /// index (nil for the tensors not measured here).
        package var outcomes: [[Outcome?]]
        /// By step: why its file could not be read at all.
        package var stepErrors: [Int: String]
    }

    /// Steps per window at most.
    package static let maxWindow = 16
    /// Memory a window's accumulators may take (per thread).
    package static let windowBudget = 32 << 20
    /// Memory the block buffers of a compressed tensor's window may take when its chunks are
    /// inflated on several threads (two blocks per save); above it, one thread reads the saves in
    /// turn through two blocks.
    package static let parallelBudget = 64 << 20

    /// The tensors of each step measured here: those stored directly, whose drift
    /// partner (the same weight, same shape, at the step before) is stored directly
    /// too, the same way (both contiguous, or both in chunks of the same shape), with the
    /// same element type. The rest are read through libhdf5. A compressed tensor is read here
    /// only when each of its chunks lies inside one of the blocks of `blockElements` the
    /// libhdf5 path reads it in (true unless a single row of chunks exceeds four blocks).
    /// A key that a checkpoint holds twice (two paths the layout names alike) is left to
    /// the step-by-step path, which settles such ties its own way.
    /// Only the steps in `range` (all by default) are chosen from; the others get an empty set.
    package static func eligible(
        _ steps: [Step], in range: Range<Int>? = nil, blockElements: Int = MeasureOptions().blockElements
    ) -> [Set<Int>] {
        let range = range ?? steps.indices
        // Per tensor of a list: whether its key is held twice in it (worked out once per list).
        var repeatedOf = SameTensors<[Bool]>()
        func repeated(_ step: Step) -> [Bool] {
            repeatedOf.value(for: step) { step in
                let keys = duplicateKeys(step)
                return keys.isEmpty ? [Bool](repeating: false, count: step.tensors.count) : step.tensors.map { keys.contains($0.key) }
            }
        }
        var plannable = PlannableChunks(blockElements: blockElements)
        var partnersOf = PartnerIndices()
        return steps.indices.map { s in
            var chosen = Set<Int>()
            guard range.contains(s) else { return chosen }
            let repeatedHere = repeated(steps[s])
            let repeatedBefore = s > 0 ? repeated(steps[s - 1]) : []
            let partners = s > 0 ? partnersOf.partners(in: steps[s], before: steps[s - 1]) : []
            steps[s].tensors.withUnsafeBufferPointer { tensors in
                for t in 0..<tensors.count {
                    guard tensors[t].fileIndex == 0, let storage = steps[s].storage[t], !repeatedHere[t] else { continue }
                    if let table = storage.chunks, !plannable.fits(table, type: storage.type) { continue }
                    if tensors[t].role == .weight, s > 0, let p = partners[t],
                        steps[s - 1].tensors[p].shape == tensors[t].shape
                    {
                        // `p` is the first of its key in the step before: the key is held twice there when it is.
                        guard !repeatedBefore[p], steps[s - 1].tensors[p].fileIndex == 0,
                            let before = steps[s - 1].storage[p], before.type == storage.type, before.count == storage.count,
                            sameLayout(before, storage)
                        else { continue }
                    }
                    chosen.insert(t)
                }
            }
            return chosen
        }
    }

    /// Whether two steps of a tensor are stored alike: both contiguous, or both in chunks of one grid.
    package static func sameLayout(_ a: DirectStorage, _ b: DirectStorage) -> Bool {
        switch (a.chunks, b.chunks) {
        case (nil, nil): return true
        case (let x?, let y?): return x.sameGrid(as: y)
        default: return false
        }
    }

    /// Whether compressed tensors can be read here: float32 or float64, and every chunk inside one
    /// block of the plan (remembered by shape and chunk shape, which is all it depends on).
    struct PlannableChunks {
        let blockElements: Int
        var known: [[Int]: Bool] = [:]

        mutating func fits(_ table: DeflatedChunkTable, type: ElementType) -> Bool {
            guard type == .float32 || type == .float64 else { return false }
            let key = table.shape + [-1] + table.chunkShape
            if let answer = known[key] { return answer }
            let answer = SeriesMeasurer.blocks(for: table, blockElements: blockElements) != nil
            known[key] = answer
            return answer
        }
    }

    /// The blocks a compressed tensor is read in (those of the libhdf5 path), or nil when a chunk
    /// would straddle two of them.
    package static func blocks(for table: DeflatedChunkTable, blockElements: Int) -> [TensorBlock]? {
        guard let grid = ChunkGrid(shape: table.shape, chunkShape: table.chunkShape) else { return nil }
        let blocks = TensorBlock.plan(shape: table.shape, chunkShape: table.chunkShape, blockElements: max(blockElements, 1))
        return ChunkedMeasurer.plan(blocks, grid: grid)
    }

    package static func duplicateKeys(_ step: Step) -> Set<TensorKey> {
        var seen = Set<TensorKey>(), repeated = Set<TensorKey>()
        for tensor in step.tensors where !seen.insert(tensor.key).inserted { repeated.insert(tensor.key) }
        return repeated
    }

    /// What a function of a step's tensors gave for the last step asked about, given again for a
    /// step that holds the very same list (saves of one model share their described tensors,
    /// ``DescriptionInterner``), so that it is worked out once for a run of such saves.
    struct SameTensors<Value> {
        private var last: (tensors: [TensorRef], value: Value)?

        mutating func value(for step: Step, _ make: (Step) -> Value) -> Value {
            if let last, DescriptionInterner.same(last.tensors, step.tensors) { return last.value }
            let value = make(step)
            last = (step.tensors, value)
            return value
        }
    }

    package static func partnerIndex(_ step: Step) -> [TensorKey: Int] {
        var index: [TensorKey: Int] = [:]
        for (t, tensor) in step.tensors.enumerated() where index[tensor.key] == nil { index[tensor.key] = t }
        return index
    }

    /// One tensor at one step of a window.
    package struct Entry: Sendable {
        package var step: Int
        package var tensor: Int
        /// Index of the same weight in the step before, when drift is measured.
        package var partner: Int?
        package var statsLayout: UnitLayout
        package var driftLayout: UnitLayout
        /// The input units whose zeros are counted (``TensorMeasurer/inputMap(for:)``), with the per-unit statistics.
        package var inputs: InputUnitMap? = nil

        /// A fresh statistics accumulator for this entry.
        package func accumulator(_ options: MeasureOptions) -> StatsAccumulator {
            var accumulator = StatsAccumulator(layout: statsLayout, histogramBins: options.histogramBins)
            accumulator.countInputZeros(inputs)
            return accumulator
        }

        /// A fresh drift accumulator for this entry, nil when it has no partner.
        package func driftAccumulator(_ options: MeasureOptions) -> DriftAccumulator? {
            partner == nil ? nil : DriftAccumulator(layout: driftLayout, normsOnly: options.driftNormsOnly)
        }
    }

    /// Steps of one tensor (same type, same shape, stored the same way) measured together.
    package struct Window: Sendable {
        package var entries: [Entry]
        package var storageType: ElementType
        package var count: Int
        /// The tensor is in compressed chunks (one job, ``ChunkedMeasurer``), not contiguous.
        package var chunked: Bool = false
        /// Element shares, one job each.
        package var shares: [[Range<Int>]]
        package var bytes: Int
    }

    /// Measures the eligible tensors (`selected[s]`, from ``eligible(_:)``) of every step. Steps from
    /// `unitWindowStart` on get per-unit liveness snapshots. `progress` is told (steps' worth of
    /// bytes done, steps) from one thread at a time, and last with both equal.
    /// Only the steps in `range` (all by default) are measured: a long run is measured a range at a
    /// time, so what waits in memory is one range's outcomes.
    package static func measure(
        _ steps: [Step], range: Range<Int>? = nil, selected: [Set<Int>], options: MeasureOptions, gradientNames: Set<String>,
        perUnitEverywhere: Bool, unitWindowStart: Int, distributions: Bool = true, progress: ((Int, Int) -> Void)? = nil
    ) -> Result {
        let planned = Planned(
            steps, range: range, selected: selected, options: options, gradientNames: gradientNames,
            perUnitEverywhere: perUnitEverywhere, distributions: distributions)
        return measure(steps, planned, unitWindowStart: unitWindowStart, progress: progress)
    }

    /// A range's windows, worked out before it is measured (on one thread: a range of 16 saves
    /// of 300 tensors takes a few milliseconds), so that they can be while the range before is.
    package struct Planned: Sendable {
        package let range: Range<Int>
        let windows: [Window]
        let options: MeasureOptions
        let gradientNames: Set<String>
        let distributions: Bool

        package init(
            _ steps: [Step], range: Range<Int>? = nil, selected: [Set<Int>], options: MeasureOptions, gradientNames: Set<String>,
            perUnitEverywhere: Bool, distributions: Bool = true
        ) {
            let range = range ?? steps.indices
            // Without distributions, the drift's cosine, largest |Δ| and sign flips go too.
            var options = options
            if !distributions { options.driftNormsOnly = true }
            self.range = range
            self.options = options
            self.gradientNames = gradientNames
            self.distributions = distributions
            windows = plan(
                steps, range: range, selected: selected, options: options, gradientNames: gradientNames,
                perUnitEverywhere: perUnitEverywhere)
        }
    }

    /// Measures a planned range: ``measure(_:range:selected:options:gradientNames:perUnitEverywhere:unitWindowStart:distributions:progress:)``
    /// with its windows worked out before (`steps` those it was planned with).
    package static func measure(
        _ steps: [Step], _ planned: Planned, unitWindowStart: Int, progress: ((Int, Int) -> Void)? = nil
    ) -> Result {
        let range = planned.range, windows = planned.windows, options = planned.options, distributions = planned.distributions
        let gradientNames = planned.gradientNames
        let files = StepFiles(steps, uses: windows, mapping: options.readInPlace)
        // Largest first (a stable sort: a window's shares stay together, in order): the last jobs,
        // while the other thread may have none left, are then the shortest. The numbers do not
        // depend on the order; each share's part is merged in its window's order.
        let jobs = windows.indices.flatMap { w in windows[w].shares.indices.map { (window: w, share: $0) } }
            .enumerated().sorted { a, b in
                let x = windows[a.element.window], y = windows[b.element.window]
                let (left, right) = (x.bytes / max(1, x.shares.count), y.bytes / max(1, y.shares.count))
                return left != right ? left > right : a.offset < b.offset
            }.map(\.element)
        let collector = Collector(windows: windows, steps: steps, range: range)
        let queue = JobQueue(count: jobs.count)
        let totalBytes = max(1, windows.reduce(0) { $0 + $1.bytes })
        let threads = max(1, min(options.threads, jobs.count))
        try? TensorMeasurer.inParallel(threads) { _ in
            while let j = queue.next() {
                let (w, share) = jobs[j]
                let window = windows[w]
                let part: Part
                if window.chunked {
                    // A window with more than a thread's share of the bytes inflates on every thread.
                    let inner = options.threads > 1 && window.bytes * options.threads > totalBytes ? options.threads : 1
                    switch window.storageType {
                    case .float32: part = runChunked(window, as: Float.self, steps: steps, files: files, options: options, threads: inner)
                    default: part = runChunked(window, as: Double.self, steps: steps, files: files, options: options, threads: inner)
                    }
                } else {
                    switch window.storageType {
                    case .float32: part = run(window, share: window.shares[share], as: Float.self, steps: steps, files: files, options: options)
                    default: part = run(window, share: window.shares[share], as: Double.self, steps: steps, files: files, options: options)
                    }
                }
                if let finished = collector.add(part, window: w, share: share) {
                    collector.store(
                        finish(
                            finished, window: window, steps: steps, gradientNames: gradientNames, options: options,
                            unitWindowStart: unitWindowStart, distributions: distributions), of: window)
                }
                files.done(with: window)
                collector.addBytes(window.bytes / max(1, window.shares.count)) { done in
                    progress?(min(steps.count - 1, done * steps.count / totalBytes), steps.count)
                }
            }
        }
        files.closeAll()
        progress?(steps.count, steps.count)
        return Result(outcomes: collector.takeOutcomes(), stepErrors: files.errors)
    }

    /// Cuts each tensor's steps into windows of the same type and shape, of a size its accumulators allow.
    ///
    /// What a tensor's entry takes from its description (unit layouts, input units, its chain's key,
    /// its drift partner's index) is worked out once per described tensor list, not per save: saves of
    /// one model share their list (``DescriptionInterner``), so a run's planning makes no dictionary
    /// look-up and copies no description per tensor and save.
    package static func plan(
        _ steps: [Step], range: Range<Int>? = nil, selected: [Set<Int>], options: MeasureOptions, gradientNames: Set<String>,
        perUnitEverywhere: Bool
    ) -> [Window] {
        // Every tensor key, in the order of first appearance, with its steps: a list's tensors are
        // given slots (one per key) once, and a slot its chain when first met.
        var slotOfKey: [TensorKey: Int] = [:]
        var chainOfSlot: [Int] = []
        var chains: [[(step: Int, tensor: Int)]] = []
        var slotsOf = SameTensors<[Int]>()
        for s in range ?? steps.indices {
            let slots = slotsOf.value(for: steps[s]) { step in
                step.tensors.map { tensor in
                    if let slot = slotOfKey[tensor.key] { return slot }
                    slotOfKey[tensor.key] = chainOfSlot.count
                    chainOfSlot.append(-1)
                    return chainOfSlot.count - 1
                }
            }
            for t in selected[s].sorted() {
                let slot = slots[t]
                if chainOfSlot[slot] < 0 {
                    chainOfSlot[slot] = chains.count
                    chains.append([])
                }
                chains[chainOfSlot[slot]].append((s, t))
            }
        }
        // Per step, by tensor (lists shared by steps alike): its unit layout, whether its statistics and
        // drift get per-unit parts, its input units, and its drift partner's index in the step before.
        var derivedOf = SameTensors<[PlannedTensor]>()
        var partnersOf = PartnerIndices()
        var derived = [[PlannedTensor]?](repeating: nil, count: steps.count)
        var partners = [[Int?]](repeating: [], count: steps.count)
        for chain in chains {
            for (s, _) in chain where derived[s] == nil {
                derived[s] = derivedOf.value(for: steps[s]) { step in
                    step.tensors.map { tensor in
                        PlannedTensor(
                            layout: TensorMeasurer.unitLayout(for: tensor),
                            parts: RunMeasurer.unitParts(of: tensor, gradientNames: gradientNames, perUnitEverywhere: perUnitEverywhere),
                            inputs: TensorMeasurer.inputMap(for: tensor))
                    }
                }
                partners[s] = s > 0 ? partnersOf.partners(in: steps[s], before: steps[s - 1]) : []
            }
        }
        var windows: [Window] = []
        for chain in chains {
            var current: [Entry] = []
            var currentType: ElementType = .float32
            var currentShape: [Int] = []
            var currentStorage: DirectStorage?
            var limit = maxWindow
            func close() {
                guard let first = current.first, let storage = steps[first.step].storage[first.tensor] else { return }
                let shares =
                    storage.isContiguous
                    ? TensorMeasurer.split(count: storage.count, block: TensorMeasurer.directBlockElements, threads: options.threads)
                    : [[0..<storage.count]]
                let bytes = storage.count * storage.elementSize * current.count
                windows.append(
                    Window(
                        entries: current, storageType: storage.type, count: storage.count, chunked: !storage.isContiguous, shares: shares,
                        bytes: bytes))
                current = []
            }
            for (s, t) in chain {
                guard let storage = steps[s].storage[t], let derived = derived[s] else { continue }
                let shape = steps[s].tensors[t].shape
                if !current.isEmpty
                    && (storage.type != currentType || shape != currentShape || current.count >= limit
                        || !sameLayout(storage, currentStorage ?? storage))
                {
                    close()
                }
                let layout = derived[t].layout
                let statsLayout = derived[t].parts.stats ? layout : .none
                let driftLayout = derived[t].parts.drift ? layout : .none
                var partner: Int?
                if steps[s].tensors[t].role == .weight, s > 0, let p = partners[s][t], steps[s - 1].tensors[p].shape == shape {
                    partner = p
                }
                if current.isEmpty {
                    currentType = storage.type
                    currentShape = shape
                    currentStorage = storage
                    // 256 KiB of sketch table and the per-unit sums (stats and drift) per step.
                    let units = layout.unitCount ?? 0
                    let perStep = (256 << 10) + units * 48
                    limit = max(1, min(maxWindow, windowBudget / perStep))
                }
                current.append(
                    Entry(
                        step: s, tensor: t, partner: partner, statsLayout: statsLayout,
                        driftLayout: partner == nil ? .none : driftLayout, inputs: derived[t].inputs))
            }
            close()
        }
        // Windows of the same steps together (so few files are open at once), the largest first
        // among them (so the last jobs, which may leave a core idle, are small ones).
        return windows.enumerated().sorted { a, b in
            let (stepA, stepB) = (a.element.entries[0].step / maxWindow, b.element.entries[0].step / maxWindow)
            if stepA != stepB { return stepA < stepB }
            if a.element.bytes != b.element.bytes { return a.element.bytes > b.element.bytes }
            return a.offset < b.offset
        }.map(\.element)
    }

    /// What planning takes from one described tensor.
    struct PlannedTensor {
        var layout: UnitLayout
        var parts: (stats: Bool, drift: Bool)
        var inputs: InputUnitMap?
    }

    /// The index of each tensor's drift partner (the first tensor of the same key) in the step before,
    /// worked out once for each pair of described lists, and answered from an index when the step
    /// before's list is not the step's.
    struct PartnerIndices {
        private var last: (before: [TensorRef], current: [TensorRef], partners: [Int?])?
        private var indexOf = SameTensors<[TensorKey: Int]>()

        /// By tensor of `step`: its partner's index in `before` (asked once per step, not per tensor).
        mutating func partners(in step: Step, before: Step) -> [Int?] {
            if let last, DescriptionInterner.same(last.before, before.tensors), DescriptionInterner.same(last.current, step.tensors) {
                return last.partners
            }
            let index = indexOf.value(for: before, SeriesMeasurer.partnerIndex)
            let partners = step.tensors.map { index[$0.key] }
            last = (before.tensors, step.tensors, partners)
            return partners
        }
    }

    /// The accumulators of one job: one element share of a window.
    package struct Part: Sendable {
        package var stats: [StatsAccumulator]
        package var drift: [DriftAccumulator?]
        package var errors: [String?]
        /// The drift of this entry could not be measured (its partner could not be read).
        package var driftLost: [Bool]
    }

    /// Reads one share of a window, block by block, every step's block once.
    package static func run<T: MeasuredElement>(
        _ window: Window, share: [Range<Int>], as _: T.Type, steps: [Step], files: StepFiles,
        options: MeasureOptions
    ) -> Part {
        let n = window.entries.count
        var part = Part(
            stats: window.entries.map { $0.accumulator(options) },
            drift: window.entries.map { $0.driftAccumulator(options) },
            errors: [String?](repeating: nil, count: n), driftLost: [Bool](repeating: false, count: n))
        // Room for the largest block of the share (a bias needs a few hundred values, not a block's 256 KiB).
        let blockCapacity = Swift.max(1, share.lazy.map(\.count).max() ?? 1)
        var previous = UnsafeMutableBufferPointer<T>.allocate(capacity: blockCapacity)
        var current = UnsafeMutableBufferPointer<T>.allocate(capacity: blockCapacity)
        defer {
            previous.deallocate()
            current.deallocate()
        }
        // Mapped pages are let go of as the blocks are measured, every `releaseElements` or so, not only
        // once the share is done: a window reads up to 17 saves of its tensor block by block, and the
        // pages of 17 whole tensors would stay mapped until then (of a 256 MiB tensor, 4 GiB counted
        // in the scan's memory). Per entry and per partner: where its pages not yet let go of begin.
        let releaseElements = max(1, Self.releaseBytes / max(1, MemoryLayout<T>.size))
        var releasedTo = [Int?](repeating: nil, count: n), partnerReleasedTo = [Int?](repeating: nil, count: n)
        var pending = share.first?.lowerBound ?? 0
        // A window's saves of its tensor are all of one size: copied with `pread` when small, none of
        // them has mapped pages to let go of (``StoredFile/takesInPlace(_:)``).
        let inPlace = window.entries.first.flatMap { steps[$0.step].storage[$0.tensor] }.map(StoredFile.takesInPlace) ?? false
        func release(upTo end: Int) {
            guard inPlace, pending < end else { return }
            let entries = window.entries
            for e in entries.indices {
                let entry = entries[e]
                releasedTo[e] = Self.release(
                    step: entry.step, tensor: entry.tensor, elements: pending..<end, from: releasedTo[e], steps: steps, files: files)
                // A partner that is the entry before (the same tensor one save earlier) was just let go of.
                if let partner = entry.partner, e == 0 || entries[e - 1].step != entry.step - 1 || entries[e - 1].tensor != partner {
                    partnerReleasedTo[e] = Self.release(
                        step: entry.step - 1, tensor: partner, elements: pending..<end, from: partnerReleasedTo[e], steps: steps,
                        files: files)
                }
            }
            pending = end
        }
        for range in share {
            // The step whose block `before` holds (in place in its file's mapping, or copied into `previous`).
            var held = -1
            var before: (elements: UnsafeBufferPointer<T>, file: StoredFile)?
            for (e, entry) in window.entries.enumerated() {
                guard part.errors[e] == nil else {
                    held = -1
                    continue
                }
                if let partner = entry.partner, held != entry.step - 1, !part.driftLost[e] {
                    // The first step of a window (or one after a gap): read the step before again.
                    do {
                        before = try elements(step: entry.step - 1, tensor: partner, range: range, buffer: previous, steps: steps, files: files)
                        held = entry.step - 1
                    } catch {
                        part.driftLost[e] = true
                    }
                }
                let block: UnsafeBufferPointer<T>, file: StoredFile
                do {
                    (block, file) = try elements(step: entry.step, tensor: entry.tensor, range: range, buffer: current, steps: steps, files: files)
                } catch {
                    part.errors[e] = Failures.reason(for: error)
                    held = -1
                    continue
                }
                if entry.partner != nil, !part.driftLost[e], held == entry.step - 1, let before {
                    // The block's statistics and its drift from the block before, in one pass.
                    T.add(block, before: before.elements, at: range.lowerBound, to: &part.stats[e], drift: &part.drift[e]!)
                    // Zeros from a file cut short while mapped are no drift.
                    if (try? before.file.checkIntact()) == nil { part.driftLost[e] = true }
                } else {
                    T.add(block, at: range.lowerBound, to: &part.stats[e])
                    if entry.partner != nil { part.driftLost[e] = true }
                }
                // Zeros from a file cut short while mapped are not its values: the tensor fails.
                do {
                    try file.checkIntact()
                } catch {
                    part.errors[e] = Failures.reason(for: error)
                    held = -1
                    continue
                }
                swap(&previous, &current)
                before = (block, file)
                held = entry.step
            }
            if range.upperBound - pending >= releaseElements { release(upTo: range.upperBound) }
        }
        // The pages measured are let go of (they stay in the page cache), so few stay mapped.
        if let last = share.last { release(upTo: last.upperBound) }
        return part
    }

    /// Reads a window of a compressed tensor: every chunk of every step once, block by block in
    /// the libhdf5 path's blocks, each block fed to its step's statistics and, with the same block
    /// of the step before, to its drift. A step whose chunks cannot be read fails that tensor at
    /// that step (and the next step's drift from it), nothing else.
    package static func runChunked<T: MeasuredElement>(
        _ window: Window, as _: T.Type, steps: [Step], files: StepFiles, options: MeasureOptions, threads: Int
    ) -> Part {
        let n = window.entries.count
        var part = Part(
            stats: window.entries.map { $0.accumulator(options) },
            drift: window.entries.map { $0.driftAccumulator(options) },
            errors: [String?](repeating: nil, count: n), driftLost: [Bool](repeating: false, count: n))
        // The steps read, each once: every entry's, and a first partner's not in the window.
        var sides: [DeflatedChunks?] = []
        var sideErrors: [String?] = []
        var sideOf: [Int: Int] = [:]  // by step
        func side(step: Int, tensor: Int) -> Int {
            if let known = sideOf[step] { return known }
            let path = steps[step].tensors[tensor].path
            sideOf[step] = sides.count
            do {
                guard let storage = steps[step].storage[tensor], let table = storage.chunks else {
                    throw CheckpointError(file: steps[step].file, reason: "\(path): not stored in chunks that can be read directly")
                }
                let chunks = try DeflatedChunks(
                    table: table, type: storage.type, source: try files.file(step), object: path, fileSize: steps[step].size)
                if let first = sides.lazy.compactMap({ $0 }).first, first.grid != chunks.grid || first.type != chunks.type {
                    throw CheckpointError(file: steps[step].file, reason: "\(path): its chunks differ from the other saves'")
                }
                sides.append(chunks)
                sideErrors.append(nil)
            } catch {
                sides.append(nil)
                sideErrors.append(Failures.reason(for: error))
            }
            return sides.count - 1
        }
        // Per entry: its side, and its partner's side (nil when it has no drift).
        var current = [Int](repeating: 0, count: n), before = [Int?](repeating: nil, count: n)
        for (e, entry) in window.entries.enumerated() {
            if let partner = entry.partner { before[e] = side(step: entry.step - 1, tensor: partner) }
            current[e] = side(step: entry.step, tensor: entry.tensor)
        }
        // The sides set up are read; `position` finds a side among them.
        let usable = sides.indices.filter { sides[$0] != nil }
        var position = [Int?](repeating: nil, count: sides.count)
        for (index, s) in usable.enumerated() { position[s] = index }
        if let table = usable.first.flatMap({ sides[$0]?.table }) {
            if let blocks = blocks(for: table, blockElements: options.blockElements) {
                let read = usable.compactMap { sides[$0] }
                // Per side read: the entry it is the current save of (if any), and whether that entry's drift
                // partner is the side read just before (always the case: a partner's side is made right
                // before its entry's).
                var entryOf = [Int?](repeating: nil, count: read.count)
                for e in 0..<n { if let c = position[current[e]] { entryOf[c] = e } }
                let bytes = read.count * 2 * (blocks.map(\.count).max() ?? 0) * MemoryLayout<T>.size
                let failures = withUnsafeMutablePointer(to: &part) { part in
                    if threads > 1 && bytes <= parallelBudget {
                        return ChunkedMeasurer.stream(read, blocks: blocks, as: T.self, threads: threads, stopAtFailure: false) {
                            block, buffers, failed in
                            for e in 0..<n {
                                guard let c = position[current[e]], !failed[c] else { continue }
                                let values = UnsafeBufferPointer(rebasing: buffers[c][0..<block.count])
                                T.add(values, at: block.offset, to: &part.pointee.stats[e])
                                if let b = before[e], let p = position[b], !failed[p], part.pointee.drift[e] != nil {
                                    T.add(
                                        UnsafeBufferPointer(rebasing: buffers[p][0..<block.count]), values, at: block.offset,
                                        to: &part.pointee.drift[e]!)
                                }
                            }
                        }
                    }
                    return ChunkedMeasurer.streamInTurn(read, blocks: blocks, as: T.self) { block, side, filled, previous in
                        guard let e = entryOf[side] else { return }
                        let values = UnsafeBufferPointer(rebasing: filled[0..<block.count])
                        T.add(values, at: block.offset, to: &part.pointee.stats[e])
                        if let b = before[e], position[b] == side - 1, let previous, part.pointee.drift[e] != nil {
                            T.add(UnsafeBufferPointer(rebasing: previous[0..<block.count]), values, at: block.offset, to: &part.pointee.drift[e]!)
                        }
                    }
                }
                for (index, s) in usable.enumerated() where index < failures.count {
                    if let error = failures[index] { sideErrors[s] = Failures.reason(for: error) }
                }
            } else {
                let path = steps[window.entries[0].step].tensors[window.entries[0].tensor].path
                for s in usable { sideErrors[s] = "\(path): its chunks straddle the blocks it is read in; not measured" }
            }
        }
        for e in 0..<n {
            if let error = sideErrors[current[e]] { part.errors[e] = error }
            if let b = before[e], sideErrors[b] != nil { part.driftLost[e] = true }
        }
        return part
    }

    /// Elements `range` of a tensor of a step, in place in its file's mapping or copied into `buffer`
    /// (``StoredFile/elements(_:range:buffer:object:)``), and the file, to check once they are used.
    package static func elements<T>(
        step: Int, tensor: Int, range: Range<Int>, buffer: UnsafeMutableBufferPointer<T>, steps: [Step],
        files: StepFiles
    ) throws -> (elements: UnsafeBufferPointer<T>, file: StoredFile) {
        let path = steps[step].tensors[tensor].path
        guard let storage = steps[step].storage[tensor] else {
            throw CheckpointError(file: steps[step].file, reason: "\(path): not stored where it can be read directly")
        }
        let file = try files.file(step)
        return (try file.elements(storage, range: range, buffer: buffer, object: path), file)
    }

    /// Mapped bytes of one tensor a window's share measures before it lets go of them (its blocks
    /// since the last time; with a window of 17 saves, about 21 MB of pages mapped per thread at most).
    package static let releaseBytes = 1 << 20

    /// Lets go of the mapped pages of elements `range` of a tensor of a step, once measured, from
    /// `from` on (``StoredFile/release(_:elements:from:)``); returns where the next part's pages begin.
    @discardableResult
    package static func release(
        step: Int, tensor: Int, elements range: Range<Int>, from: Int? = nil, steps: [Step], files: StepFiles
    )
        -> Int?
    {
        guard let storage = steps[step].storage[tensor], let file = try? files.file(step) else { return from }
        return file.release(storage, elements: range, from: from)
    }

    /// A window's outcomes from its merged shares.
    package static func finish(
        _ part: Part, window: Window, steps: [Step], gradientNames: Set<String>, options: MeasureOptions,
        unitWindowStart: Int, distributions: Bool = true
    ) -> [Outcome] {
        // The accumulators and descriptions are read in place (an element of an array read as a
        // value is a copy: a retain and release of all it holds).
        part.stats.withUnsafeBufferPointer { stats in
            window.entries.enumerated().map { e, entry in
                if let error = part.errors[e] { return Outcome(measurement: nil, snapshot: nil, error: error) }
                let drift = part.driftLost[e] ? nil : part.drift[e]?.finish()
                let (measurement, snapshot) = steps[entry.step].tensors.withUnsafeBufferPointer { tensors in
                    RunMeasurer.measurement(
                        of: tensors[entry.tensor], stats: stats[e].finish(distributions: distributions), drift: drift,
                        wantUnits: entry.step >= unitWindowStart,
                        gradientNames: gradientNames, options: options)
                }
                return Outcome(measurement: measurement, snapshot: snapshot, error: nil)
            }
        }
    }

    /// Gathers the shares of each window; the thread that brings a window's last share merges them
    /// (in order) and finishes it, and its outcomes go straight to their steps (an array per step, as
    /// long as its tensor list: a run's outcomes are its largest structure while they wait).
    package final class Collector: Sendable {
        /// The shares waiting for their window, the finished outcomes, and the bytes done, under one lock.
        private struct State {
            var pending: [[Part?]]
            var outcomes: [[Outcome?]]
            var bytes = 0
        }

        private let state: Mutex<State>
        private let first: Int

        package init(windows: [Window], steps: [Step], range: Range<Int>) {
            first = range.lowerBound
            state = Mutex(
                State(
                    pending: windows.map { [Part?](repeating: nil, count: $0.shares.count) },
                    outcomes: range.map { [Outcome?](repeating: nil, count: steps[$0].tensors.count) }))
        }

        /// Stores a share; returns the merged window when it was the last.
        package func add(_ part: Part, window: Int, share: Int) -> Part? {
            var (complete, parts) = state.withLock { state in
                state.pending[window][share] = part
                let complete = state.pending[window].allSatisfy { $0 != nil }
                let parts = complete ? state.pending[window].compactMap { $0 } : []
                if complete { state.pending[window] = [] }
                return (complete, parts)
            }
            // The first share is moved out, not copied: a copy would make merging into it copy its accumulators.
            guard complete, !parts.isEmpty else { return nil }
            var total = parts.removeFirst()
            for other in parts {
                for e in total.stats.indices {
                    total.errors[e] = total.errors[e] ?? other.errors[e]
                    total.driftLost[e] = total.driftLost[e] || other.driftLost[e]
                    total.stats[e].merge(other.stats[e])
                    if let drift = other.drift[e] { total.drift[e]?.merge(drift) }
                }
            }
            return total
        }

        /// Moves a finished window's outcomes to their steps.
        package func store(_ finished: consuming [Outcome], of window: Window) {
            var finished = finished
            state.withLock { state in
                for e in 0..<Swift.min(window.entries.count, finished.count) {
                    let entry = window.entries[e]
                    state.outcomes[entry.step - first][entry.tensor] = exchange(
                        &finished[e], with: Outcome(measurement: nil, snapshot: nil, error: nil))
                }
            }
        }

        /// Counts `n` more bytes done and tells `report` the total, one thread at a time.
        package func addBytes(_ n: Int, report: (Int) -> Void) {
            state.withLock { state in
                state.bytes += n
                report(state.bytes)
            }
        }

        package func takeOutcomes() -> [[Outcome?]] {
            state.withLock { state in
                let taken = state.outcomes
                state.outcomes = []
                return taken
            }
        }
    }

    /// The steps' files, opened on first use and checked against the size and
    /// modification time they had when described, closed when the last window
    /// reading them is done (jobs run in order, so few are open at once).
    package final class StepFiles: Sendable {
        /// By step: its open file, jobs still to read it, and why it could not be read.
        private struct State {
            var files: [Int: StoredFile] = [:]
            var remaining: [Int: Int] = [:]
            var errors: [Int: String] = [:]
        }

        private let steps: [Step]
        private let state: Mutex<State>
        /// Whether the files are mapped (``StoredFile``), for their contiguous tensors to be taken in place.
        private let mapping: Bool

        /// By step: why its file could not be read.
        package var errors: [Int: String] { state.withLock { $0.errors } }

        package init(_ steps: [Step], uses windows: [Window], mapping: Bool = StoredFile.mapsByDefault) {
            self.steps = steps
            self.mapping = mapping
            var remaining: [Int: Int] = [:]
            for window in windows {
                for step in Self.stepsRead(by: window) { remaining[step, default: 0] += window.shares.count }
            }
            state = Mutex(State(remaining: remaining))
        }

        /// The steps whose files a job of `window` reads, each once, in order (an array of one
        /// allocation: a set grew by several for each of a run's windows, twice per window).
        package static func stepsRead(by window: Window) -> [Int] {
            var steps: [Int] = []
            steps.reserveCapacity(2 * window.entries.count)
            for entry in window.entries {
                if entry.partner != nil { steps.append(entry.step - 1) }
                steps.append(entry.step)
            }
            steps.sort()
            var kept = 0
            for step in steps where kept == 0 || steps[kept - 1] != step {
                steps[kept] = step
                kept += 1
            }
            steps.removeLast(steps.count - kept)
            return steps
        }

        /// The file of `step`, opened on first use (``StoredFile`` refuses one that changed since it was described).
        package func file(_ step: Int) throws -> StoredFile {
            try state.withLock { state throws(CheckpointError) in
                if let open = state.files[step] { return open }
                let path = steps[step].file
                if let error = state.errors[step] { throw CheckpointError(file: path, reason: error) }
                do {
                    // A file none of whose tensors is taken in place is not mapped at all.
                    let inPlace = mapping && steps[step].storage.contains { $0.map(StoredFile.takesInPlace) ?? false }
                    let open = try StoredFile(path, expecting: FileStamp(size: steps[step].size, mtime: steps[step].mtime), mapping: inPlace)
                    state.files[step] = open
                    return open
                } catch let error as CheckpointError {
                    state.errors[step] = error.reason
                    throw error
                } catch {
                    let failure = CheckpointError(file: path, reason: Failures.reason(for: error))
                    state.errors[step] = failure.reason
                    throw failure
                }
            }
        }

        /// One job of `window` is done: closes the files no later job reads.
        package func done(with window: Window) {
            state.withLock { state in
                for step in Self.stepsRead(by: window) {
                    state.remaining[step, default: 0] -= 1
                    // Closed when the last reader lets go of it.
                    if state.remaining[step, default: 0] <= 0 { state.files[step] = nil }
                }
            }
        }

        package func closeAll() {
            state.withLock { state in state.files = [:] }
        }
    }
}

/// Hands out job indices in order to the threads that ask, without a lock (a thread asks for its
/// next job thousands of times a run; with a lock, two threads asking at once put one to sleep in
/// the kernel).
package final class JobQueue: Sendable {
    private let nextIndex = Atomic<Int>(0)
    private let count: Int
    package init(count: Int) { self.count = count }
    package func next() -> Int? {
        let index = nextIndex.wrappingAdd(1, ordering: .relaxed).oldValue
        return index >= 0 && index < count ? index : nil
    }
}
