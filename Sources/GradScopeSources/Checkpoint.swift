import Foundation
import HDF5
import ElementTypes
import GradScopeModel

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
    package var directStorage: [String: DirectStorage]?
    /// Size and modification time of `file` when a worker process described it.
    package var describedIdentity: (size: Int, mtime: Double)?

    /// Size and modification time of `file` when it was read: as libhdf5 opened it, as a
    /// worker described it, or (a checkpoint with neither) as it is now. Measuring a file
    /// that no longer matches would mix an old description with new bytes.
    package var identity: (size: Int, mtime: Double) {
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

extension Checkpoint {
    /// The checkpoint restricted to tensors whose name matches `select`.
    public func selecting(_ select: NSRegularExpression?) -> Checkpoint {
        let checkpoint = self
        guard let select else { return self }
        let tensors = checkpoint.tensors.filter { tensor in
            select.firstMatch(in: tensor.name, range: NSRange(tensor.name.startIndex..., in: tensor.name)) != nil
        }
        let filtered = Checkpoint(source: checkpoint.source, layout: checkpoint.layout, metadata: checkpoint.metadata, tensors: tensors,
                                  layers: checkpoint.layers, skipped: checkpoint.skipped, notes: checkpoint.notes, files: checkpoint.files,
                                  modified: checkpoint.modified, file: checkpoint.file)
        filtered.directStorage = checkpoint.directStorage
        filtered.describedIdentity = checkpoint.describedIdentity
        return filtered
    }
}
