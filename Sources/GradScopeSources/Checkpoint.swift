import ElementTypes
import Foundation
import GradScopeModel
import HDF5

/// A checkpoint as a source opened it: its description and where its tensors are read from.
public struct OpenCheckpoint: Sendable {
    /// What the checkpoint is; its storage and stamp are filled in by ``described()``.
    public var checkpoint: Checkpoint
    /// The open files its tensors are read from.
    public let tensors: any TensorSource

    public init(_ checkpoint: Checkpoint, tensors: any TensorSource) {
        self.checkpoint = checkpoint
        self.tensors = tensors
    }

    /// A checkpoint read from open HDF5 files (several for a sharded save).
    public init(_ checkpoint: Checkpoint, files: [HDF5File]) {
        self.init(checkpoint, tensors: HDF5Files(files, source: checkpoint.source))
    }

    /// The HDF5 files it was read from (none for another kind of source).
    public var files: [HDF5File] { (tensors as? HDF5Files)?.files ?? [] }

    /// The data of `tensor`, ready to read.
    public func data(for tensor: TensorRef) throws -> any TensorData { try tensors.data(for: tensor) }

    /// Whether its data is held in memory (a `.keras` archive's weights).
    public var isMemoryImage: Bool { tensors.isMemoryImage }

    /// The checkpoint with its file's stamp (as its source opened it, or as it is now for data
    /// held in memory) and where each tensor lies when its bytes can be read by offset.
    public func described() -> OpenCheckpoint {
        var copy = self
        if let stamp = tensors.stamp(of: checkpoint.file) {
            copy.checkpoint.stamp = stamp
        } else {
            let (size, mtime) = FileIdentity.of(checkpoint.file)
            copy.checkpoint.stamp = FileStamp(size: size, mtime: mtime)
        }
        copy.checkpoint.storage = checkpoint.tensors.map { tensors.storage(of: $0, in: checkpoint.file) }
        return copy
    }
}
