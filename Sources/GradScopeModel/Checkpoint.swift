import ElementTypes
import Foundation

/// A file's size and modification time when it was described: a file that no longer matches
/// is not measured (an old description with new bytes would mix two saves).
public struct FileStamp: Sendable, Equatable, Codable {
    public var size: Int
    public var mtime: Double

    public init(size: Int, mtime: Double) {
        self.size = size
        self.mtime = mtime
    }
}

/// One saved step of a training run, as its source described it: what its tensors are
/// and where they lie, what it says about itself. A plain value: it holds no open file
/// (the sources open files; the scan engine reads them where it chooses).
public struct Checkpoint: Sendable, Codable {
    /// The path shown to people (the file, or `file:/step_100` inside a multi-step file).
    public var source: String
    /// The file on disk the checkpoint was read from.
    public var file: String
    public var layout: LayoutKind
    public var metadata: StepMetadata
    public var tensors: [TensorRef]
    /// Layers in depth order, input first.
    public var layers: [String]
    /// Objects in the file that are not tensors gradscope analyses, with the reason.
    public var skipped: [SkippedItem]
    /// Notes about how the file was understood (e.g. optimizer slots matched by shape).
    public var notes: [String]
    /// The file's modification time, when it came from disk.
    public var modified: Date?
    /// `file` as it was when described (zero for a file read from memory).
    public var stamp: FileStamp
    /// Parallel to `tensors`: where each lies in `file` when its bytes can be read directly.
    public var storage: [DirectStorage?]

    public init(
        source: String, file: String? = nil, layout: LayoutKind, metadata: StepMetadata, tensors: [TensorRef],
        layers: [String], skipped: [SkippedItem] = [], notes: [String] = [], modified: Date? = nil,
        stamp: FileStamp = FileStamp(size: 0, mtime: 0), storage: [DirectStorage?]? = nil
    ) {
        self.source = source
        self.file = file ?? source
        self.layout = layout
        self.metadata = metadata
        self.tensors = tensors
        self.layers = layers
        self.skipped = skipped
        self.notes = notes
        self.modified = modified
        self.stamp = stamp
        self.storage = storage ?? Array(repeating: nil, count: tensors.count)
    }

    /// Tensors with the given role.
    public func tensors(_ role: TensorRole) -> [TensorRef] { tensors.filter { $0.role == role } }

    /// The weight tensor named `name`.
    public func weight(named name: String) -> TensorRef? { tensors.first { $0.role == .weight && $0.name == name } }

    /// The checkpoint restricted to tensors whose name matches `select` (their storage kept alongside).
    public func selecting(_ select: NSRegularExpression?) -> Checkpoint {
        guard let select else { return self }
        var selected = self
        let kept = tensors.indices.filter { index in
            let name = tensors[index].name
            return select.firstMatch(in: name, range: NSRange(name.startIndex..., in: name)) != nil
        }
        selected.tensors = kept.map { tensors[$0] }
        selected.storage = kept.map { storage.indices.contains($0) ? storage[$0] : nil }
        return selected
    }
}

/// The ordered steps of one training run.
public struct Run: Sendable {
    /// The directory or file the run was read from.
    public var source: String
    /// Checkpoints sorted by step.
    public var checkpoints: [Checkpoint]
    /// Files and objects that were not used, each with the reason.
    public var skipped: [SkippedItem]
    /// Things about the run as a whole a person should know (mixed layouts, duplicate steps, tensors that come and go).
    public var notes: [String]
    /// Saves of other models found in the same folder (most tensor names or shapes differ: a run
    /// restarted with another architecture, an older run's files left beside a newer one), each a
    /// run of its own, judged on its own. This run is the one whose files are the newest.
    public var otherModels: [Run] = []
    /// The training log the run's saves carry, every logging step of it (a Hugging Face Trainer's
    /// `log_history`); nil when the saves carry none. Richer than the one loss per save.
    public var trainingLog: [TrainingLogEntry]? = nil

    public init(source: String, checkpoints: [Checkpoint], skipped: [SkippedItem] = [], notes: [String] = []) {
        self.source = source
        self.checkpoints = checkpoints
        self.skipped = skipped
        self.notes = notes
    }

    /// The saved steps, in order.
    public var steps: [Int] { checkpoints.enumerated().map { $0.element.metadata.step ?? $0.offset } }

    /// Layers in depth order, as the checkpoints list them (the last checkpoint's order, then any others).
    public var layers: [String] {
        var seen = Set<String>()
        var order: [String] = []
        for checkpoint in checkpoints.reversed() {
            for layer in checkpoint.layers where !seen.contains(layer) {
                seen.insert(layer)
                order.append(layer)
            }
            if !order.isEmpty { break }
        }
        for checkpoint in checkpoints {
            for layer in checkpoint.layers where !seen.contains(layer) {
                seen.insert(layer)
                order.append(layer)
            }
        }
        return order
    }
}

/// One logging step of a training log: what the training loop logged there.
public struct TrainingLogEntry: Sendable, Equatable, Codable {
    public var step: Int
    /// The training loss (the mean over the steps since the last logging step, as the Trainer logs it).
    public var loss: Double?
    /// The total gradient norm (over every parameter, before clipping).
    public var gradNorm: Double?
    public var learningRate: Double?

    public init(step: Int, loss: Double? = nil, gradNorm: Double? = nil, learningRate: Double? = nil) {
        self.step = step
        self.loss = loss
        self.gradNorm = gradNorm
        self.learningRate = learningRate
    }
}

/// Shares the descriptions that the saves of a run repeat: a model saved 5,000 times is
/// described 5,000 times alike (the same tensors, names, shapes and layers), and each
/// description decoded on its own would hold its own copies, about 150 KB per save of
/// 300 tensors. An equal description takes the copy already kept, so a run's descriptions
/// cost one model's plus what differs (paths, steps, storage).
package struct DescriptionInterner {
    /// The distinct tensor lists seen last, most recent first (runs change models rarely:
    /// a few lists cover a run that alternates between them).
    private var tensors: [[TensorRef]] = []
    private var layers: [[String]] = []
    private let capacity = 4

    package init() {}

    /// Whether two tensor lists are one list's storage, as saves alike share it once interned:
    /// equal contents, known without comparing them.
    package static func same(_ a: [TensorRef], _ b: [TensorRef]) -> Bool {
        a.count == b.count && a.withUnsafeBufferPointer { x in b.withUnsafeBufferPointer { y in x.baseAddress == y.baseAddress } }
    }

    /// `checkpoint` with its tensors and layers replaced by equal ones already kept.
    package mutating func intern(_ checkpoint: inout Checkpoint) {
        checkpoint.tensors = Self.shared(checkpoint.tensors, in: &tensors, capacity: capacity)
        checkpoint.layers = Self.shared(checkpoint.layers, in: &layers, capacity: capacity)
    }

    private static func shared<T: Equatable>(_ value: [T], in kept: inout [[T]], capacity: Int) -> [T] {
        if let index = kept.firstIndex(of: value) {
            let found = kept[index]
            if index > 0 {
                kept.remove(at: index)
                kept.insert(found, at: 0)
            }
            return found
        }
        kept.insert(value, at: 0)
        if kept.count > capacity { kept.removeLast() }
        return value
    }
}
