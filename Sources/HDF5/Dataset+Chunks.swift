import CHDF5

/// One stored chunk of a chunked dataset, as the dataset's chunk index lists it.
public struct ChunkRecord: Sendable, Equatable {
    /// The chunk's first element, in dataset coordinates (a multiple of the chunk shape).
    public let offset: [Int]
    /// Bit `i` set: filter `i` of the pipeline was skipped for this chunk (an optional filter that failed).
    public let filterMask: UInt32
    /// Absolute byte offset of the stored bytes in the file (a user block included).
    public let address: Int
    /// Bytes stored in the file (compressed when filtered).
    public let size: Int
}

/// One filter of a dataset's pipeline, in the order they are applied when writing
/// (reading undoes them last to first).
public struct FilterStep: Sendable, Equatable {
    /// The filter's registered number (1 deflate, 2 shuffle, 3 fletcher32, ...).
    public let id: Int
    /// `H5Z_FLAG_OPTIONAL` and the like.
    public let flags: UInt32
    /// The filter's client data: the level for deflate, the element size for shuffle.
    public let parameters: [UInt32]
}

extension Dataset {
    /// The dataset's filter pipeline, in writing order, from its creation properties.
    /// The corresponding C functions are `H5Pget_nfilters` and `H5Pget_filter2`.
    public func filterPipeline() throws -> [FilterStep] {
        Library.ensure()
        let pid = H5Dget_create_plist(handle.id)
        guard pid >= 0 else { throw file.failure(path, "corrupt creation properties") }
        let plist = Handle(pid, .plist)
        let count = Int(H5Pget_nfilters(plist.id))
        guard count >= 0, count <= 32 else { throw file.failure(path, "corrupt filter pipeline: \(count) filters") }
        var steps: [FilterStep] = []
        for index in 0..<count {
            var flags: UInt32 = 0
            var parameterCount = 16
            var parameters = [UInt32](repeating: 0, count: 16)
            var name = [CChar](repeating: 0, count: 64)
            var config: UInt32 = 0
            let id = H5Pget_filter2(plist.id, UInt32(index), &flags, &parameterCount, &parameters, 64, &name, &config)
            guard id >= 0 else { throw file.failure(path, "corrupt filter pipeline") }
            steps.append(FilterStep(id: Int(id), flags: flags, parameters: Array(parameters.prefix(min(max(parameterCount, 0), 16)))))
        }
        return steps
    }

    /// How many chunks are allocated in the file (each one written at least once).
    /// The corresponding C function is `H5Dget_num_chunks`.
    public func storedChunkCount() throws -> Int {
        Library.ensure()
        let space = Handle(H5Dget_space(handle.id), .dataspace)
        guard space.id >= 0 else { throw file.failure(path, "corrupt dataspace") }
        var count: hsize_t = 0
        guard H5Dget_num_chunks(handle.id, space.id, &count) >= 0 else { throw file.failure(path, "cannot count its chunks") }
        return Int(clamping: count)
    }

    /// The stored chunk whose first element is `offset` (a multiple of the chunk shape), or nil when
    /// that chunk was never written (its elements are the fill value).
    /// The corresponding C function is `H5Dget_chunk_info_by_coord` (libhdf5 1.10.5 and later).
    public func chunk(at offset: [Int]) throws -> ChunkRecord? {
        Library.ensure()
        guard info.layout == .chunked, offset.count == info.shape.count, offset.allSatisfy({ $0 >= 0 }) else {
            throw HDF5Error(file: file.path, object: path, reason: .library, message: "chunk offset \(offset) does not fit this dataset")
        }
        var coordinates = offset.map { hsize_t($0) }
        var mask: UInt32 = 0
        var address: haddr_t = 0
        var size: hsize_t = 0
        guard H5Dget_chunk_info_by_coord(handle.id, &coordinates, &mask, &address, &size) >= 0 else {
            throw file.failure(path, "cannot look up the chunk at \(offset)")
        }
        guard address != gs_HADDR_UNDEF(), size > 0 else { return nil }
        // Before 1.14.4, libhdf5 gives chunk addresses relative to the superblock (the base
        // address), where `H5Dget_offset` gives contiguous data's absolute offset.
        let base = Library.chunkAddressesAreAbsolute ? 0 : file.superblockOffset
        let (absolute, overflow) = Int(clamping: address).addingReportingOverflow(base)
        return ChunkRecord(
            offset: offset, filterMask: mask, address: overflow ? Int.max : absolute, size: Int(clamping: size))
    }

    /// Every stored chunk in row-major order of the chunk grid, at most `limit` of them (more throws
    /// `tooLarge`); unallocated chunks are left out.
    public func chunks(limit: Int = 1 << 20) throws -> [ChunkRecord] {
        guard info.layout == .chunked, let chunkShape = info.chunkShape, chunkShape.count == info.shape.count,
            chunkShape.allSatisfy({ $0 > 0 })
        else { return [] }
        guard let grid = ChunkGrid(shape: info.shape, chunkShape: chunkShape), grid.count <= limit else {
            throw HDF5Error(
                file: file.path, object: path, reason: .tooLarge, message: "more than \(limit) chunks: too many to list")
        }
        var records: [ChunkRecord] = []
        for index in 0..<grid.count {
            if let record = try chunk(at: grid.origin(of: index)) { records.append(record) }
        }
        return records
    }
}

/// The grid of chunks over a dataset: how many along each axis, numbered in row-major order.
public struct ChunkGrid: Sendable, Equatable {
    public let shape: [Int]
    public let chunkShape: [Int]
    /// Chunks along each axis (edge chunks included).
    public let counts: [Int]
    /// Number of chunks.
    public let count: Int

    /// Nil for a shape the grid cannot describe: rank 0, a chunk dimension below 1, an empty
    /// dimension, or a count that overflows.
    public init?(shape: [Int], chunkShape: [Int]) {
        guard !shape.isEmpty, shape.count == chunkShape.count, chunkShape.allSatisfy({ $0 > 0 }), shape.allSatisfy({ $0 > 0 })
        else { return nil }
        let counts = zip(shape, chunkShape).map { ($0 + $1 - 1) / $1 }
        var total = 1
        for count in counts {
            let (product, overflow) = total.multipliedReportingOverflow(by: count)
            guard !overflow else { return nil }
            total = product
        }
        self.shape = shape
        self.chunkShape = chunkShape
        self.counts = counts
        count = total
    }

    /// The first element, in dataset coordinates, of chunk `index`.
    public func origin(of index: Int) -> [Int] {
        var origin = [Int](repeating: 0, count: shape.count)
        var rest = index
        for axis in stride(from: shape.count - 1, through: 0, by: -1) {
            origin[axis] = (rest % counts[axis]) * chunkShape[axis]
            rest /= counts[axis]
        }
        return origin
    }

    /// Whether the hyperslab `start`/`extent` holds whole chunks only: every chunk it touches
    /// has all of its elements inside the dataset inside the hyperslab.
    public func holdsWholeChunks(start: [Int], extent: [Int]) -> Bool {
        guard start.count == shape.count, extent.count == shape.count else { return false }
        for axis in shape.indices {
            let end = start[axis] + extent[axis]
            guard start[axis] >= 0, extent[axis] > 0, end <= shape[axis] else { return false }
            guard start[axis] % chunkShape[axis] == 0, end == shape[axis] || end % chunkShape[axis] == 0 else { return false }
        }
        return true
    }

    /// The chunks (by index) a hyperslab touches, in row-major order of the grid.
    public func chunks(start: [Int], extent: [Int]) -> [Int] {
        guard start.count == shape.count, extent.count == shape.count, extent.allSatisfy({ $0 > 0 }) else { return [] }
        let first = zip(start, chunkShape).map { $0 / $1 }
        let last = shape.indices.map { min((start[$0] + extent[$0] - 1) / chunkShape[$0], counts[$0] - 1) }
        var result: [Int] = []
        var position = first
        while true {
            var index = 0
            for axis in shape.indices { index = index * counts[axis] + position[axis] }
            result.append(index)
            var axis = shape.count - 1
            while axis >= 0 {
                position[axis] += 1
                if position[axis] <= last[axis] { break }
                position[axis] = first[axis]
                axis -= 1
            }
            if axis < 0 { return result }
        }
    }
}
