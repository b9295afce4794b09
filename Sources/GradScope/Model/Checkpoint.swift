import Foundation
import HDF5

/// Where a step number came from.
public enum StepSource: String, Sendable, Codable {
    /// A root attribute such as `step`, `global_step` or `iteration`.
    case attribute
    /// The optimizer's iteration counter saved in the file (Keras).
    case optimizerIterations = "optimizer-iterations"
    /// The last integer in the file name.
    case fileName = "file-name"
    /// The name of the group holding the step in a multi-step file.
    case groupName = "group-name"
    /// An epoch number (an `epoch` attribute, or a number labelled as an epoch in
    /// the file name): it orders the saves but does not count optimizer updates.
    case epoch
    /// Nothing said; the step is the file's position in the run.
    case position
}

/// What a checkpoint says about its step.
public struct StepMetadata: Sendable, Equatable, Codable {
    public var step: Int?
    public var stepSource: StepSource?
    public var loss: Double?
    public var learningRate: Double?
    public var framework: String?
    /// The optimizer's class, when the file names it (`Adam`, `SGD`).
    public var optimizer: String?
    public var epoch: Int?
    /// When the step was read from the file name: every number the name holds, in
    /// order, which orders the run when the step alone cannot (LayoutSupport.stepInFileName).
    public var nameKey: [Int]?

    public init(step: Int? = nil, stepSource: StepSource? = nil, loss: Double? = nil, learningRate: Double? = nil,
                framework: String? = nil, optimizer: String? = nil, epoch: Int? = nil) {
        self.step = step
        self.stepSource = stepSource
        self.loss = loss
        self.learningRate = learningRate
        self.framework = framework
        self.optimizer = optimizer
        self.epoch = epoch
    }
}

/// Something in a file that was not used, with the reason.
public struct SkippedItem: Sendable, Equatable, Codable {
    /// A file path, or `file:object` for an object inside a file.
    public var item: String
    public var reason: String

    public init(item: String, reason: String) {
        self.item = item
        self.reason = reason
    }
}

/// One saved step of a training run: its tensors and what it says about itself.
public final class Checkpoint: @unchecked Sendable {
    /// The path shown to people (the file, or `file:/step_100` inside a multi-step file).
    public let source: String
    public let layout: LayoutKind
    public var metadata: StepMetadata
    public let tensors: [TensorRef]
    /// Layers in depth order, input first.
    public let layers: [String]
    /// Objects in the file that are not tensors gradscope analyses, with the reason.
    public let skipped: [SkippedItem]
    /// Notes about how the file was understood (e.g. optimizer slots matched by shape).
    public let notes: [String]
    /// The open files this checkpoint's tensors live in.
    public let files: [HDF5File]
    /// The file's modification time, when it came from disk.
    public let modified: Date?
    /// The file on disk the checkpoint was read from.
    public let file: String
    /// Where tensors of `file` lie when they can be read directly, by object path, as a
    /// worker process found them (a checkpoint described elsewhere holds no open file).
    var directStorage: [String: DirectStorage]?
    /// Size and modification time of `file` when a worker process described it.
    var describedIdentity: (size: Int, mtime: Double)?

    /// Size and modification time of `file` when it was read: as libhdf5 opened it, as a
    /// worker described it, or (a checkpoint with neither) as it is now. Measuring a file
    /// that no longer matches would mix an old description with new bytes.
    var identity: (size: Int, mtime: Double) {
        if let opened = files.first(where: { $0.path == file }), !opened.isMemoryImage { return (opened.size, opened.modificationTime) }
        if let describedIdentity { return describedIdentity }
        return FileIdentity.of(file)
    }

    public init(source: String, layout: LayoutKind, metadata: StepMetadata, tensors: [TensorRef], layers: [String],
                skipped: [SkippedItem], notes: [String], files: [HDF5File], modified: Date? = nil, file: String? = nil) {
        self.file = file ?? files.first?.path ?? source
        self.source = source
        self.layout = layout
        self.metadata = metadata
        self.tensors = tensors
        self.layers = layers
        self.skipped = skipped
        self.notes = notes
        self.files = files
        self.modified = modified
    }

    /// The dataset holding `tensor`.
    public func dataset(for tensor: TensorRef) throws -> Dataset {
        guard tensor.fileIndex >= 0, tensor.fileIndex < files.count else {
            throw HDF5Error(file: source, object: tensor.path, reason: .notFound, message: "no such file in this checkpoint")
        }
        return try files[tensor.fileIndex].dataset(tensor.path)
    }

    /// Tensors with the given role.
    public func tensors(_ role: TensorRole) -> [TensorRef] { tensors.filter { $0.role == role } }

    /// The weight tensor named `name`.
    public func weight(named name: String) -> TensorRef? { tensors.first { $0.role == .weight && $0.name == name } }
}
