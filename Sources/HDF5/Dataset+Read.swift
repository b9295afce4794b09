import CHDF5

/// A floating-point type datasets can be read into: Float or Double.
public protocol HDF5Real: BinaryFloatingPoint, Sendable {
    static var nativeType: hid_t { get }
    init(bfloat16Bits: UInt16)
}

extension Float: HDF5Real {
    public static var nativeType: hid_t { gs_H5T_NATIVE_FLOAT() }
    /// bfloat16 is the high half of a float32: shift the bits up.
    public init(bfloat16Bits bits: UInt16) { self = Float(bitPattern: UInt32(bits) << 16) }
}

extension Double: HDF5Real {
    public static var nativeType: hid_t { gs_H5T_NATIVE_DOUBLE() }
    public init(bfloat16Bits bits: UInt16) { self = Double(Float(bitPattern: UInt32(bits) << 16)) }
}

/// One block of a streamed read: which flat elements it covers and how to select them.
public struct ReadBlock: Sendable {
    /// Flat (row-major) index of the block's first element.
    public let offset: Int
    public let count: Int
    /// Hyperslab start and count per axis.
    package let start: [hsize_t]
    package let extent: [hsize_t]
}

/// Splits a dataset into row-major blocks of at most about `blockElements`
/// elements, each a hyperslab that is contiguous in flat order, aligned to
/// the chunk grid along the split axis when the dataset is chunked.
package struct BlockPlan: Sequence {
    package let shape: [Int]
    package let splitAxis: Int
    package let rowsPerBlock: Int
    package let inner: Int

    package init(shape: [Int], chunkShape: [Int]?, blockElements: Int) {
        self.shape = shape
        let rank = shape.count
        var inner = [Int](repeating: 1, count: rank)
        if rank >= 2 {
            for axis in stride(from: rank - 2, through: 0, by: -1) {
                inner[axis] = inner[axis + 1].multipliedReportingOverflow(by: shape[axis + 1]).partialValue
            }
        }
        var axis = 0
        while axis < rank - 1 && inner[axis] > blockElements { axis += 1 }
        splitAxis = axis
        self.inner = rank == 0 ? 1 : inner[axis]
        var rows = Swift.max(1, blockElements / Swift.max(self.inner, 1))
        if let chunkShape, chunkShape.count == rank, rank > 0 {
            let chunkRows = Swift.max(chunkShape[axis], 1)
            if rows >= chunkRows {
                rows = (rows / chunkRows) * chunkRows
            } else if chunkRows.multipliedReportingOverflow(by: self.inner).partialValue <= 4 * blockElements {
                rows = chunkRows
            }
        }
        rowsPerBlock = rank == 0 ? 1 : Swift.min(rows, Swift.max(shape[axis], 1))
    }

    package func makeIterator() -> AnyIterator<ReadBlock> {
        let rank = shape.count
        if rank == 0 {
            var done = false
            return AnyIterator {
                if done { return nil }
                done = true
                return ReadBlock(offset: 0, count: 1, start: [], extent: [])
            }
        }
        if shape.contains(0) { return AnyIterator { nil } }
        let outerAxes = Array(shape.prefix(splitAxis))
        var outerIndex = [Int](repeating: 0, count: splitAxis)
        var outerFlat = 0
        var row = 0
        var finished = false
        let span = shape[splitAxis] * inner
        let shape = self.shape, splitAxis = self.splitAxis, rowsPerBlock = self.rowsPerBlock, inner = self.inner
        return AnyIterator {
            if finished { return nil }
            let rows = Swift.min(rowsPerBlock, shape[splitAxis] - row)
            var start = [hsize_t](repeating: 0, count: rank)
            var extent = [hsize_t](repeating: 1, count: rank)
            for axis in 0..<splitAxis { start[axis] = hsize_t(outerIndex[axis]) }
            start[splitAxis] = hsize_t(row)
            extent[splitAxis] = hsize_t(rows)
            for axis in (splitAxis + 1)..<rank { extent[axis] = hsize_t(shape[axis]) }
            let block = ReadBlock(offset: outerFlat * span + row * inner, count: rows * inner, start: start, extent: extent)
            row += rows
            if row >= shape[splitAxis] {
                row = 0
                outerFlat += 1
                var axis = splitAxis - 1
                while axis >= 0 {
                    outerIndex[axis] += 1
                    if outerIndex[axis] < outerAxes[axis] { break }
                    outerIndex[axis] = 0
                    axis -= 1
                }
                if axis < 0 { finished = true }
            }
            return block
        }
    }
}

extension Dataset {
    /// Throws when the dataset cannot or must not be read as numbers: refused
    /// by the safety rules, not numeric, never written, or behind a filter
    /// this libhdf5 lacks.
    public func checkReadable() throws {
        Library.ensure()
        if let refusal = info.refusal(limits: file.options.limits, followLinks: file.options.followLinks) {
            throw HDF5Error(file: file.path, object: path, reason: .refused, message: refusal)
        }
        guard info.type.isNumeric else {
            throw HDF5Error(
                file: file.path, object: path, reason: .unsupported,
                message: "element type \(info.type) cannot be read as numbers")
        }
        if case .otherFloat(let bits) = info.type, bits > 64 || info.byteOrder == .vax {
            throw HDF5Error(
                file: file.path, object: path, reason: .unsupported,
                message: "element type \(info.type) (\(info.byteOrder.rawValue)-order) is not supported")
        }
        if let missing = info.filters.first(where: { !$0.available }) {
            throw HDF5Error(
                file: file.path, object: path, reason: .unsupported,
                message: "compressed with \(missing.name), which this HDF5 library cannot decode")
        }
        if !info.allocated && info.elementCount > 0 && info.layout != .virtual && info.externalFileCount == 0 {
            throw HDF5Error(
                file: file.path, object: path, reason: .incomplete,
                message: "no data was ever written to this dataset (storage not allocated)")
        }
        if info.layout == .contiguous, let offset = info.dataOffset,
            offset.addingReportingOverflow(info.storageSize).partialValue > file.size
        {
            throw HDF5Error(
                file: file.path, object: path, reason: .truncated,
                message: "data lies beyond the end of the file (offset \(offset) + \(info.storageSize) bytes > \(file.size)): truncated")
        }
    }

    /// Reads the dataset in row-major blocks of about `blockElements`,
    /// converting every numeric type (float16, bfloat16, float32/64, any
    /// integer, bool) to `T`, and calls `body` with each block and the flat
    /// index of its first element. Memory use is one block, whatever the size.
    public func stream<T: HDF5Real>(
        as _: T.Type, blockElements: Int = 1 << 20,
        _ body: (UnsafeBufferPointer<T>, Int) throws -> Void
    ) throws {
        try checkReadable()
        let count = info.elementCount
        guard count > 0 else { return }
        let plan = BlockPlan(shape: info.shape, chunkShape: info.chunkShape, blockElements: max(blockElements, 1))
        var buffer = [T](repeating: 0, count: min(count, plan.rowsPerBlock * plan.inner))
        for block in plan {
            try buffer.withUnsafeMutableBufferPointer { pointer in
                try read(block, into: pointer, checked: true)
                try body(UnsafeBufferPointer(rebasing: pointer[0..<block.count]), block.offset)
            }
        }
    }

    /// The blocks `stream` would read, for callers that read two datasets of
    /// the same shape side by side (the plan follows this dataset's chunks).
    public func blocks(blockElements: Int = 1 << 20) -> [ReadBlock] {
        guard info.elementCount > 0 else { return [] }
        return Array(BlockPlan(shape: info.shape, chunkShape: info.chunkShape, blockElements: max(blockElements, 1)))
    }

    /// Reads one block (from `blocks`, of this dataset or one of the same shape)
    /// into `buffer`, which must hold at least `block.count` elements.
    public func read<T: HDF5Real>(_ block: ReadBlock, into buffer: UnsafeMutableBufferPointer<T>) throws {
        try read(block, into: buffer, checked: false)
    }

    /// `checked`: the caller already ran `checkReadable()`.
    package func read<T: HDF5Real>(_ block: ReadBlock, into buffer: UnsafeMutableBufferPointer<T>, checked: Bool) throws {
        if !checked { try checkReadable() }
        guard buffer.count >= block.count, block.start.count == info.shape.count else {
            throw HDF5Error(file: file.path, object: path, reason: .library, message: "block does not fit this dataset")
        }
        let fileSpace = Handle(H5Dget_space(handle.id), .dataspace)
        let memSpace: Handle
        if info.shape.isEmpty {
            memSpace = Handle(H5Screate(H5S_SCALAR), .dataspace)
        } else {
            var start = block.start, extent = block.extent
            guard H5Sselect_hyperslab(fileSpace.id, H5S_SELECT_SET, &start, nil, &extent, nil) >= 0 else {
                throw file.failure(path, "cannot select a block", reason: .library)
            }
            var dims = block.extent
            memSpace = Handle(H5Screate_simple(Int32(dims.count), &dims, nil), .dataspace)
        }
        let fileSelection = info.shape.isEmpty ? gs_H5S_ALL() : fileSpace.id
        if needsRawConversion {
            var scratch = [UInt8](repeating: 0, count: block.count * (info.type.byteSize ?? 1))
            try readRaw(memSpace: memSpace.id, fileSpace: fileSelection, into: &scratch)
            convertRaw(scratch, count: block.count, into: buffer)
        } else {
            let status = H5Dread(handle.id, T.nativeType, memSpace.id, fileSelection, gs_H5P_DEFAULT(), buffer.baseAddress)
            guard status >= 0 else { throw readFailure() }
        }
    }

    /// Reads every element into an array. Meant for small tensors and tests;
    /// refuses more than `maxElements` so a large tensor is streamed instead.
    public func read<T: HDF5Real>(as type: T.Type = Float.self, maxElements: Int = 64 << 20) throws -> [T] {
        guard info.elementCount <= maxElements else {
            throw HDF5Error(
                file: file.path, object: path, reason: .tooLarge,
                message: "\(info.elementCount) elements: too many to read at once (limit \(maxElements)); stream it")
        }
        var result: [T] = []
        result.reserveCapacity(info.elementCount)
        try stream(as: type) { block, _ in result.append(contentsOf: block) }
        return result
    }

    /// bfloat16 stored as opaque bytes and h5py's bool enum are converted by
    /// hand; libhdf5 converts everything else.
    private var needsRawConversion: Bool {
        switch info.type {
        case .bool: return true
        case .bfloat16: return isOpaque
        default: return false
        }
    }

    private var isOpaque: Bool {
        let tid = H5Dget_type(handle.id)
        guard tid >= 0 else { return false }
        defer { H5Tclose(tid) }
        return H5Tget_class(tid) == H5T_OPAQUE
    }

    private func readRaw(memSpace: hid_t, fileSpace: hid_t, into scratch: inout [UInt8]) throws {
        let tid = H5Dget_type(handle.id)
        guard tid >= 0 else { throw file.failure(path, "corrupt datatype") }
        let type = Handle(tid, .datatype)
        let memType: Handle
        if info.type == .bool {
            memType = Handle(H5Tget_native_type(type.id, H5T_DIR_ASCEND), .datatype)
        } else {
            memType = Handle(H5Tcopy(type.id), .datatype)
        }
        let status = scratch.withUnsafeMutableBytes { pointer in
            H5Dread(handle.id, memType.id, memSpace, fileSpace, gs_H5P_DEFAULT(), pointer.baseAddress)
        }
        guard status >= 0 else { throw readFailure() }
    }

    private func convertRaw<T: HDF5Real>(_ scratch: [UInt8], count: Int, into out: UnsafeMutableBufferPointer<T>) {
        scratch.withUnsafeBytes { bytes in
            if info.type == .bool {
                for index in 0..<count { out[index] = bytes[index] != 0 ? 1 : 0 }
            } else {
                let bigEndian = info.byteOrder == .big
                for index in 0..<count {
                    let lo = UInt16(bytes[2 * index]), hi = UInt16(bytes[2 * index + 1])
                    out[index] = T(bfloat16Bits: bigEndian ? (lo << 8 | hi) : (hi << 8 | lo))
                }
            }
        }
    }

    private func readFailure() -> HDF5Error {
        let detail = Library.errorSummary() ?? "read failed"
        let lower = detail.lowercased()
        let reason: HDF5Error.Reason
        if lower.contains("filter") {
            reason = .unsupported
        } else if lower.contains("addr") || lower.contains("eoa") || lower.contains("eof") || lower.contains("truncat") {
            reason = .truncated
        } else {
            reason = .corrupt
        }
        return HDF5Error(file: file.path, object: path, reason: reason, message: "the HDF5 library failed reading it: \(detail)")
    }
}

extension ReadBlock {
    /// A block from its flat offset and count and its hyperslab in plain integers.
    package init(offset: Int, count: Int, hyperslabStart: [Int], hyperslabExtent: [Int]) {
        self.init(offset: offset, count: count, start: hyperslabStart.map { hsize_t($0) }, extent: hyperslabExtent.map { hsize_t($0) })
    }

    /// The hyperslab's start per axis.
    package var hyperslabStart: [Int] { start.map { Int($0) } }
    /// The hyperslab's count per axis.
    package var hyperslabExtent: [Int] { extent.map { Int($0) } }
}
