import ElementTypes
import Foundation
import GradScopeModel
import GradScopeSources
import GradScopeStatistics
import HDF5
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// Coding between the parent and its workers: requests and responses field by field
/// (``WorkerMessages``), anything else in ``BinaryCoding``. Doubles travel as their
/// 8 bytes either way, so a NaN loss or an infinite norm arrives as it left.
public enum WorkerCoding {
    public static func encode(_ request: WorkerRequest) throws -> Data { WorkerMessages.encode(request) }

    public static func encode(_ response: WorkerResponse) throws -> Data { try WorkerMessages.encode(response) }

    public static func decode(_ type: WorkerRequest.Type, from data: Data) throws -> WorkerRequest {
        try WorkerMessages.decodeRequest(data)
    }

    public static func decode(_ type: WorkerResponse.Type, from data: Data) throws -> WorkerResponse {
        try WorkerMessages.decodeResponse(data)
    }

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
    public var current: Checkpoint?
    public var previous: Checkpoint?
    public var index: Int
    public var wantUnits: Bool
    public var gradientNames: [String]
    /// measure: the keys of the tensors to measure (the others are read by the parent).
    public var only: [TensorKey]?
    public var blockElements: Int
    public var threads: Int
    public var histogramBins: Int
    public var deadActivationFraction: Double
    /// measure: per-unit statistics for every tensor (inspect shows them), not only where a detector needs them.
    public var perUnitEverywhere: Bool = false

    package var loadOptions: LoadOptions { LoadOptions(layout: layout, open: OpenOptions(followLinks: followLinks, allowPlugins: allowPlugins)) }

    package init(
        task: Task, path: String, layout: LayoutKind? = nil, followLinks: Bool, allowPlugins: Bool, current: Checkpoint? = nil,
        previous: Checkpoint? = nil, index: Int, wantUnits: Bool, gradientNames: [String], only: [TensorKey]? = nil, blockElements: Int, threads: Int,
        histogramBins: Int, deadActivationFraction: Double
    ) {
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
    public var checkpoints: [Checkpoint]?
    public var record: StepRecord?
    public var units: [UnitSnapshot]?
    public var error: String?

    public init(checkpoints: [Checkpoint]? = nil, record: StepRecord? = nil, units: [UnitSnapshot]? = nil, error: String? = nil) {
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
                return WorkerResponse(checkpoints: try describe(request.path, options: request.loadOptions))
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
                let (record, units) = RunMeasurer.measureStep(
                    checkpoint, previous: previous, index: request.index, wantUnits: request.wantUnits,
                    gradientNames: Set(request.gradientNames), options: options,
                    perUnitEverywhere: request.perUnitEverywhere,
                    only: request.only.map(Set.init)
                ) { tensor in
                    marker(tensor.path)
                }
                return WorkerResponse(record: record, units: units)
            }
        } catch let error as CheckpointError {
            return WorkerResponse(error: error.reason)
        } catch {
            return WorkerResponse(error: Failures.reason(for: error))
        }
    }

    /// Describes the checkpoints in `path`, keeping the file open for their measurement
    /// (``OpenCheckpoints``): the first half of every scan, in whichever process reads the file.
    package static func describe(_ path: String, options: LoadOptions) throws -> [Checkpoint] {
        let checkpoints = try CheckpointLoader.open(path, options: options)
        if let first = checkpoints.first {
            OpenCheckpoints.shared.keep(checkpoints, file: path, size: first.checkpoint.stamp.size, mtime: first.checkpoint.stamp.mtime)
        }
        return checkpoints.map(\.checkpoint)
    }

    /// Opens the checkpoint a description names (or takes it from the files this
    /// worker still holds open), refusing a file that changed since it was described.
    package static func reopen(_ described: Checkpoint, options: LoadOptions) throws -> OpenCheckpoint {
        let (size, mtime) = FileIdentity.of(described.file)
        guard size == described.stamp.size, mtime == described.stamp.mtime else {
            throw CheckpointError(file: described.file, reason: "changed while the run was being scanned (a save in progress?); not analysed")
        }
        let all: [OpenCheckpoint]
        if let held = OpenCheckpoints.shared.take(file: described.file, size: size, mtime: mtime) {
            all = held
        } else {
            all = try CheckpointLoader.open(described.file, options: options)
            OpenCheckpoints.shared.keep(all, file: described.file, size: size, mtime: mtime)
        }
        guard var checkpoint = all.first(where: { $0.checkpoint.source == described.source }) else {
            throw CheckpointError(file: described.file, reason: "no longer holds \(described.source)")
        }
        if checkpoint.checkpoint.metadata.step == nil || checkpoint.checkpoint.metadata.stepSource != described.metadata.stepSource {
            checkpoint.checkpoint.metadata = described.metadata
        } else {
            checkpoint.checkpoint.metadata.step = described.metadata.step
        }
        return checkpoint
    }
}

/// The last few files a worker opened, kept open: the measuring phase needs
/// each file twice (as the current step and as the previous one) and usually
/// right after it was described, and opening a file costs more than measuring
/// a small one. Entries are reused only while size and modification time match.
/// Files read into memory (`.keras` archives) are not kept.
package final class OpenCheckpoints: Sendable {
    package static let shared = OpenCheckpoints()
    /// Files kept open at most: the current step and the previous one, and one more
    /// so that a small run's files are still open when measured right after being described.
    package static let capacity = 3

    private struct Entry {
        var file: String
        var size: Int
        var mtime: Double
        var checkpoints: [OpenCheckpoint]
    }

    private let entries = Mutex<[Entry]>([])

    package init() {}

    package func keep(_ checkpoints: [OpenCheckpoint], file: String, size: Int, mtime: Double) {
        // A `.keras` archive is read into memory: holding several would hold their bytes too.
        if checkpoints.contains(where: \.isMemoryImage) { return }
        // The entries let go of are closed here, after the lock (closing a file frees all its
        // description; another thread describing a file would wait for it).
        let evicted = entries.withLock { entries -> [Entry] in
            var evicted: [Entry] = []
            if let index = entries.firstIndex(where: { $0.file == file }) { evicted.append(entries.remove(at: index)) }
            entries.append(Entry(file: file, size: size, mtime: mtime, checkpoints: checkpoints))
            if entries.count > Self.capacity {
                evicted += entries[..<(entries.count - Self.capacity)]
                entries.removeFirst(entries.count - Self.capacity)
            }
            return evicted
        }
        _ = consume evicted
    }

    package func take(file: String, size: Int, mtime: Double) -> [OpenCheckpoint]? {
        entries.withLock { entries in
            guard let index = entries.firstIndex(where: { $0.file == file }) else { return nil }
            let entry = entries.remove(at: index)
            guard entry.size == size, entry.mtime == mtime else { return nil }
            entries.append(entry)
            return entry.checkpoints
        }
    }
}
