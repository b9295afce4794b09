import ElementTypes
import Foundation
import GradScopeModel
import HDF5

#if canImport(Glibc)
import Glibc
#endif

/// A checkpoint file opened to read its tensors' bytes by offset, where ``Checkpoint/storage``
/// says they lie: the read-by-offset half of a checkpoint source, the same for every format
/// whose tensors are stored contiguously (HDF5's contiguous datasets today). Nothing of the
/// file's structure is parsed here, only bytes copied, so it needs no isolation.
public final class StoredFile: Sendable {
    public let path: String
    private let descriptor: Int32

    /// Opens `path` for reading, refusing a file whose size or modification time are not
    /// `stamp`'s (checked on the open descriptor, so a file replaced by a rename is caught too):
    /// no step is measured half from the file that was described, half from another.
    public init(_ path: String, expecting stamp: FileStamp) throws {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else {
            throw CheckpointError(file: path, reason: "could not open the file again to measure it: \(String(cString: strerror(errno)))")
        }
        let (size, mtime) = FileIdentity.of(descriptor: fd)
        guard size == stamp.size, mtime == stamp.mtime else {
            close(fd)
            throw CheckpointError(file: path, reason: StoredFile.changedReason)
        }
        self.path = path
        descriptor = fd
    }

    deinit { close(descriptor) }

    /// Why a file is not measured when it changed after it was described.
    public static let changedReason = "changed while the run was being scanned (a save in progress?); not analysed"

    /// Reads elements `range` of the tensor stored at `storage` into `buffer`, whose element
    /// type must be the stored one (`Float` for float32, `Double` for float64). A file that ends
    /// first is a `truncated` error naming the file and `object`, never a crash.
    public func read<T>(
        _ storage: DirectStorage, elements range: Range<Int>, into buffer: UnsafeMutableBufferPointer<T>,
        object: String
    ) throws {
        guard storage.isContiguous, storage.elementSize == MemoryLayout<T>.size, range.lowerBound >= 0, range.upperBound <= storage.count,
            range.count <= buffer.count, let base = buffer.baseAddress
        else {
            throw CheckpointError(file: path, reason: "\(object): a direct read of elements \(range) does not fit its buffer")
        }
        try HDF5File.readFully(
            descriptor, at: storage.offset + range.lowerBound * storage.elementSize,
            count: range.count * storage.elementSize, into: UnsafeMutableRawPointer(base), path: path, object: object)
    }
}

extension StoredFile: ChunkByteSource {
    /// Reads a compressed chunk's stored bytes (``DeflatedChunks``, from a described checkpoint's chunk table).
    public func readChunkBytes(at offset: Int, count: Int, into buffer: UnsafeMutableRawPointer, object: String) throws {
        try HDF5File.readFully(descriptor, at: offset, count: count, into: buffer, path: path, object: object)
    }
}
