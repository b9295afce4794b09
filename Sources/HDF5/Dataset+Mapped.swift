#if canImport(Glibc)
import Glibc
#endif

/// The raw bytes of a contiguous dataset, mapped from the file without copying.
///
/// Valid while this value (which keeps its file open) lives. Elements are in
/// the machine's byte order, as the gate in `Dataset.mapped()` guarantees.
public struct MappedTensor: @unchecked Sendable {
    public let file: HDF5File
    public let bytes: UnsafeRawBufferPointer
    public let type: ElementType
    public let count: Int

    /// The elements as float32, when the stored type is float32.
    public var floats: UnsafeBufferPointer<Float>? {
        guard type == .float32, let base = bytes.baseAddress else { return nil }
        return UnsafeBufferPointer(start: base.assumingMemoryBound(to: Float.self), count: count)
    }

    /// Drops the pages holding elements `range` from this process's memory once
    /// they have been read (they stay in the page cache). Keeps the resident size
    /// of a scan bounded whatever the tensor's size. Only whole pages inside the
    /// range are released.
    public func release(elements range: Range<Int>) {
        guard let base = bytes.baseAddress, let size = type.byteSize, !range.isEmpty else { return }
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        guard page > 0 else { return }
        let start = UInt(bitPattern: base) + UInt(range.lowerBound * size)
        let end = UInt(bitPattern: base) + UInt(range.upperBound * size)
        let alignedStart = (start + UInt(page) - 1) / UInt(page) * UInt(page)
        let alignedEnd = end / UInt(page) * UInt(page)
        guard alignedEnd > alignedStart, let pointer = UnsafeMutableRawPointer(bitPattern: alignedStart) else { return }
        madvise(pointer, Int(alignedEnd - alignedStart), MADV_DONTNEED)
    }

    /// The elements as float64, when the stored type is float64.
    public var doubles: UnsafeBufferPointer<Double>? {
        guard type == .float64, let base = bytes.baseAddress else { return nil }
        return UnsafeBufferPointer(start: base.assumingMemoryBound(to: Double.self), count: count)
    }
}

extension Dataset {
    /// The dataset's data mapped directly from the file, or nil when the
    /// zero-copy path does not apply. It applies only when all of these hold:
    /// the layout is contiguous and its space allocated, there is no external
    /// storage, the type is float32 or float64 in the machine's byte order,
    /// the stored size equals elements × element size, the data lies inside
    /// the file, and the offset is aligned for the element type.
    /// Everything else is read through libhdf5 by `stream`.
    public func mapped() -> MappedTensor? {
        guard info.layout == .contiguous, info.allocated, info.externalFileCount == 0,
              let offset = info.dataOffset, info.elementCount > 0 else { return nil }
        let size: Int
        switch info.type {
        case .float32: size = 4
        case .float64: size = 8
        default: return nil
        }
        #if _endian(little)
        guard info.byteOrder == .little else { return nil }
        #else
        guard info.byteOrder == .big else { return nil }
        #endif
        let (bytes, overflow) = info.elementCount.multipliedReportingOverflow(by: size)
        guard !overflow, info.storageSize == bytes, offset >= 0,
              offset.addingReportingOverflow(bytes).partialValue <= file.size,
              !offset.addingReportingOverflow(bytes).overflow,
              offset % size == 0 else { return nil }
        guard let whole = file.mappedFile(), let base = whole.baseAddress else { return nil }
        let region = UnsafeRawBufferPointer(start: base + offset, count: bytes)
        return MappedTensor(file: file, bytes: region, type: info.type, count: info.elementCount)
    }
}
