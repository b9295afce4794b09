import Foundation
import HDF5
import ElementTypes
import GradScopeModel
import GradScopeSources
import GradScopeStatistics
#if canImport(Glibc)
import Glibc
#endif

/// A checkpoint as a worker process describes it to the parent: everything
/// but the open file, which the parent never holds.
public struct CheckpointSummary: Sendable, Codable {
    public var source: String
    public var file: String
    public var layout: LayoutKind
    public var metadata: StepMetadata
    public var tensors: [TensorRef]
    public var layers: [String]
    public var skipped: [SkippedItem]
    public var notes: [String]
    public var modified: Date?
    /// Size and modification time when it was read: a file that changes before
    /// it is measured is reported, not analysed half-old, half-new.
    public var size: Int
    public var mtime: Double
    /// Parallel to `tensors`: where each lies in `file` when the parent can read it directly.
    public var storage: [DirectStorage?]

    package init(_ checkpoint: Checkpoint) {
        source = checkpoint.source
        file = checkpoint.file
        layout = checkpoint.layout
        metadata = checkpoint.metadata
        tensors = checkpoint.tensors
        layers = checkpoint.layers
        skipped = checkpoint.skipped
        notes = checkpoint.notes
        modified = checkpoint.modified
        (size, mtime) = checkpoint.identity
        storage = checkpoint.directStorage.map { known in checkpoint.tensors.map { $0.fileIndex == 0 ? known[$0.path] : nil } }
            ?? SeriesMeasurer.storage(of: checkpoint)
    }

    /// The checkpoint as the parent's direct measurement sees it.
    package var step: SeriesMeasurer.Step {
        SeriesMeasurer.Step(file: file, size: size, mtime: mtime, tensors: tensors, storage: storage)
    }

    /// A checkpoint for the parent's bookkeeping; it holds no open file.
    package var checkpoint: Checkpoint {
        let checkpoint = Checkpoint(source: source, layout: layout, metadata: metadata, tensors: tensors, layers: layers,
                                    skipped: skipped, notes: notes, files: [], modified: modified, file: file)
        var known: [String: DirectStorage] = [:]
        for (tensor, storage) in zip(tensors, storage) where tensor.fileIndex == 0 { known[tensor.path] = storage }
        checkpoint.directStorage = known
        checkpoint.describedIdentity = (size, mtime)
        return checkpoint
    }
}


/// Coding between the parent and its workers (``BinaryCoding``): doubles travel
/// as their 8 bytes, so a NaN loss or an infinite norm arrives as it left.
public enum WorkerCoding {
    public static func encode<T: Encodable>(_ value: T) throws -> Data { try BinaryCoding.encode(value) }

    public static func decode<T: Decodable>(_ type: T.Type, from data: Data) throws -> T { try BinaryCoding.decode(type, from: data) }
}

/// What the parent asks a worker to do.
public struct WorkerRequest: Sendable, Codable {
    public enum Task: String, Sendable, Codable { case load, measure }
    public var task: Task
    public var path: String
    public var layout: LayoutKind?
    public var followLinks: Bool
    public var allowPlugins: Bool
    /// measure: the checkpoint to measure and the one before it.
    public var current: CheckpointSummary?
    public var previous: CheckpointSummary?
    public var index: Int
    public var wantUnits: Bool
    public var gradientNames: [String]
    /// measure: the keys of the tensors to measure (the others are read by the parent).
    public var only: [String]?
    public var blockElements: Int
    public var threads: Int
    public var histogramBins: Int
    public var deadActivationFraction: Double

    package var loadOptions: LoadOptions { LoadOptions(layout: layout, open: OpenOptions(followLinks: followLinks, allowPlugins: allowPlugins)) }

    package init(task: Task, path: String, layout: LayoutKind? = nil, followLinks: Bool, allowPlugins: Bool, current: CheckpointSummary? = nil, previous: CheckpointSummary? = nil, index: Int, wantUnits: Bool, gradientNames: [String], only: [String]? = nil, blockElements: Int, threads: Int, histogramBins: Int, deadActivationFraction: Double) {
        self.task = task
        self.path = path
        self.layout = layout
        self.followLinks = followLinks
        self.allowPlugins = allowPlugins
        self.current = current
        self.previous = previous
        self.index = index
        self.wantUnits = wantUnits
        self.gradientNames = gradientNames
        self.only = only
        self.blockElements = blockElements
        self.threads = threads
        self.histogramBins = histogramBins
        self.deadActivationFraction = deadActivationFraction
    }
}

/// What a worker answers.
public struct WorkerResponse: Sendable, Codable {
    public var checkpoints: [CheckpointSummary]?
    public var record: StepRecord?
    public var units: [UnitSnapshot]?
    public var error: String?

    public init(checkpoints: [CheckpointSummary]? = nil, record: StepRecord? = nil, units: [UnitSnapshot]? = nil, error: String? = nil) {
        self.checkpoints = checkpoints
        self.record = record
        self.units = units
        self.error = error
    }
}

/// The work a worker process does, in the worker.
public enum Worker {
    /// Handles one request; `marker` is told which object is about to be read,
    /// so that a crash inside libhdf5 can be attributed to it.
    public static func handle(_ request: WorkerRequest, marker: @escaping (String) -> Void) -> WorkerResponse {
        do {
            switch request.task {
            case .load:
                marker("opening")
                let checkpoints = try CheckpointLoader.load(request.path, options: request.loadOptions)
                let summaries = checkpoints.map { CheckpointSummary($0) }
                if let first = summaries.first { OpenCheckpoints.shared.keep(checkpoints, file: request.path, size: first.size, mtime: first.mtime) }
                return WorkerResponse(checkpoints: summaries)
            case .measure:
                guard let current = request.current else { return WorkerResponse(error: "no checkpoint to measure") }
                marker("opening")
                let checkpoint = try reopen(current, options: request.loadOptions)
                // A previous file that cannot be opened again costs this step its drift, not the step.
                let previous = request.previous.flatMap { try? reopen($0, options: request.loadOptions) }
                var options = MeasureOptions()
                options.blockElements = request.blockElements
                options.threads = request.threads
                options.histogramBins = request.histogramBins
                options.deadActivationFraction = request.deadActivationFraction
                let (record, units) = RunMeasurer.measureStep(checkpoint, previous: previous, index: request.index, wantUnits: request.wantUnits,
                                                              gradientNames: Set(request.gradientNames), options: options,
                                                              only: request.only.map(Set.init)) { tensor in
                    marker(tensor.path)
                }
                return WorkerResponse(record: record, units: units)
            }
        } catch let error as CheckpointError {
            return WorkerResponse(error: error.reason)
        } catch {
            return WorkerResponse(error: RunLoader.reason(for: error))
        }
    }

    /// Opens the checkpoint a summary describes (or takes it from the files
    /// this worker still holds open), refusing a file that changed since.
    package static func reopen(_ summary: CheckpointSummary, options: LoadOptions) throws -> Checkpoint {
        let (size, mtime) = FileIdentity.of(summary.file)
        guard size == summary.size, mtime == summary.mtime else {
            throw CheckpointError(file: summary.file, reason: "changed while the run was being scanned (a save in progress?); not analysed")
        }
        let all: [Checkpoint]
        if let held = OpenCheckpoints.shared.take(file: summary.file, size: size, mtime: mtime) {
            all = held
        } else {
            all = try CheckpointLoader.load(summary.file, options: options)
            OpenCheckpoints.shared.keep(all, file: summary.file, size: size, mtime: mtime)
        }
        guard let checkpoint = all.first(where: { $0.source == summary.source }) else {
            throw CheckpointError(file: summary.file, reason: "no longer holds \(summary.source)")
        }
        if checkpoint.metadata.step == nil || checkpoint.metadata.stepSource != summary.metadata.stepSource {
            checkpoint.metadata = summary.metadata
        } else {
            checkpoint.metadata.step = summary.metadata.step
        }
        return checkpoint
    }
}

/// The last few files a worker opened, kept open: the measuring phase needs
/// each file twice (as the current step and as the previous one) and usually
/// right after it was described, and opening a file costs more than measuring
/// a small one. Entries are reused only while size and modification time match.
/// Files read into memory (`.keras` archives) are not kept.
package final class OpenCheckpoints: @unchecked Sendable {
    package static let shared = OpenCheckpoints()
    /// Files kept open at most: the current step and the previous one, and one more
    /// so that a small run's files are still open when measured right after being described.
    package static let capacity = 3

    private struct Entry {
        package var file: String
        package var size: Int
        package var mtime: Double
        package var checkpoints: [Checkpoint]
    }

    private let lock = NSLock()
    private var entries: [Entry] = []

    package init() {}

    package func keep(_ checkpoints: [Checkpoint], file: String, size: Int, mtime: Double) {
        // A `.keras` archive is read into memory: holding several would hold their bytes too.
        if checkpoints.contains(where: { $0.files.contains(where: \.isMemoryImage) }) { return }
        lock.lock()
        defer { lock.unlock() }
        entries.removeAll { $0.file == file }
        entries.append(Entry(file: file, size: size, mtime: mtime, checkpoints: checkpoints))
        if entries.count > Self.capacity { entries.removeFirst(entries.count - Self.capacity) }
    }

    package func take(file: String, size: Int, mtime: Double) -> [Checkpoint]? {
        lock.lock()
        defer { lock.unlock() }
        guard let index = entries.firstIndex(where: { $0.file == file }) else { return nil }
        let entry = entries.remove(at: index)
        guard entry.size == size, entry.mtime == mtime else { return nil }
        entries.append(entry)
        return entry.checkpoints
    }
}
