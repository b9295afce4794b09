import ElementTypes
import Foundation
import GradScopeModel
import HDF5

/// A checkpoint as a source opened it: its description and the files its tensors are read from.
public struct OpenCheckpoint: Sendable {
    /// What the checkpoint is; its storage and stamp are filled in by ``described()``.
    public var checkpoint: Checkpoint
    /// The open files this checkpoint's tensors live in (several for a sharded save).
    public let files: [HDF5File]

    public init(_ checkpoint: Checkpoint, files: [HDF5File]) {
        self.checkpoint = checkpoint
        self.files = files
    }

    /// The dataset holding `tensor`.
    public func dataset(for tensor: TensorRef) throws -> Dataset {
        guard tensor.fileIndex >= 0, tensor.fileIndex < files.count else {
            throw HDF5Error(file: checkpoint.source, object: tensor.path, reason: .notFound, message: "no such file in this checkpoint")
        }
        return try files[tensor.fileIndex].dataset(tensor.path)
    }

    /// Whether a file of this checkpoint is held in memory (a `.keras` archive's weights).
    public var isMemoryImage: Bool { files.contains(where: \.isMemoryImage) }

    /// The checkpoint with its file's stamp (as libhdf5 opened it, or as it is now for a file
    /// read from memory) and where each tensor of its first file lies when it can be read
    /// directly (only there: that is the file a reader opens again by path).
    public func described() -> OpenCheckpoint {
        var copy = self
        if let opened = files.first(where: { $0.path == checkpoint.file }), !opened.isMemoryImage {
            copy.checkpoint.stamp = FileStamp(size: opened.size, mtime: opened.modificationTime)
        } else {
            let (size, mtime) = FileIdentity.of(checkpoint.file)
            copy.checkpoint.stamp = FileStamp(size: size, mtime: mtime)
        }
        copy.checkpoint.storage = checkpoint.tensors.map { tensor in
            guard tensor.fileIndex == 0, let first = files.first, first.path == checkpoint.file, !first.isMemoryImage,
                let info = try? first.datasetInfo(tensor.path),
                info.refusal(limits: first.options.limits, followLinks: first.options.followLinks) == nil
            else { return nil }
            return info.directStorage(fileSize: first.size)
        }
        return copy
    }
}
