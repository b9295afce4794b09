#if canImport(Glibc)
import Glibc
#endif

/// The raw bytes of a contiguous dataset, read straight from the file with
/// `pread` into the caller's buffers, bypassing libhdf5 (and its global lock).
///
/// Elements are in the machine's byte order, as the gate in `Dataset.direct()`
/// guarantees, so a read is a plain copy from the page cache into a small
/// buffer. Measuring takes large tensors in place from a guarded mapping of the
/// file instead (GradScopeSources' `MappedTensor`), and keeps this read as the fallback.
public struct DirectTensor: Sendable {
    public let file: HDF5File
    /// The dataset's path in the file, for errors.
    public let object: String
    /// Byte offset of element 0 in the file.
    public let offset: Int
    public let type: ElementType
    public let count: Int

    /// Reads elements `range` into `buffer`, which must hold at least
    /// `range.count` elements of the dataset's type (`Float` for float32,
    /// `Double` for float64).
    public func read<T>(_ range: Range<Int>, into buffer: UnsafeMutableBufferPointer<T>) throws {
        guard let size = type.byteSize, MemoryLayout<T>.size == size, range.lowerBound >= 0, range.upperBound <= count,
            buffer.count >= range.count, let base = buffer.baseAddress
        else {
            throw HDF5Error(file: file.path, object: object, reason: .library, message: "direct read of \(range) does not fit its buffer")
        }
        try file.readBytes(
            at: offset + range.lowerBound * size, count: range.count * size,
            into: UnsafeMutableRawPointer(base), object: object)
    }
}

extension DatasetInfo {
    /// The dataset as a region of a file of `fileSize` bytes that can be read
    /// directly, or nil when that path does not apply. It applies only when all
    /// of these hold: the layout is contiguous and its space allocated, there is
    /// no external storage, the type is float32 or float64 in the machine's
    /// byte order, the stored size equals elements × element size, and the data
    /// lies inside the file. Everything else is read through libhdf5.
    public func directStorage(fileSize: Int) -> DirectStorage? {
        guard layout == .contiguous, allocated, externalFileCount == 0, let offset = dataOffset, elementCount > 0 else { return nil }
        let size: Int
        switch type {
        case .float32: size = 4
        case .float64: size = 8
        default: return nil
        }
        #if _endian(little)
        guard byteOrder == .little else { return nil }
        #else
        guard byteOrder == .big else { return nil }
        #endif
        let (bytes, overflow) = elementCount.multipliedReportingOverflow(by: size)
        guard !overflow, storageSize == bytes, offset >= 0,
            offset.addingReportingOverflow(bytes).partialValue <= fileSize,
            !offset.addingReportingOverflow(bytes).overflow
        else { return nil }
        return DirectStorage(offset: offset, count: elementCount, type: type)
    }
}

extension Dataset {
    /// The dataset as a region of the file that can be read directly (see
    /// `DatasetInfo.directStorage`), or nil; never for a file held in memory.
    public func direct() -> DirectTensor? {
        guard !file.isMemoryImage, let storage = info.directStorage(fileSize: file.size) else { return nil }
        return DirectTensor(file: file, object: path, offset: storage.offset, type: storage.type, count: storage.count)
    }
}
