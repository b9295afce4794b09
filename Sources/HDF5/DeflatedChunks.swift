import CDeflate
import CHDF5

#if canImport(Glibc)
import Glibc
#endif

/// A file that chunks' stored bytes are read from by offset: an open HDF5 file, or (in the
/// scanning process) the file a described checkpoint's chunk table points into.
public protocol ChunkByteSource: Sendable {
    /// The file's path, for errors.
    var path: String { get }
    /// Reads `count` bytes at `offset` into `buffer`; a file that ends first is an error naming `object`.
    func readChunkBytes(at offset: Int, count: Int, into buffer: UnsafeMutableRawPointer, object: String) throws
}

extension HDF5File: ChunkByteSource {
    public func readChunkBytes(at offset: Int, count: Int, into buffer: UnsafeMutableRawPointer, object: String) throws {
        try readBytes(at: offset, count: count, into: buffer, object: object)
    }
}

/// A chunked, gzip-compressed float32 or float64 dataset whose chunks can be read straight from
/// the file and inflated here, on any thread, without libhdf5 (which inflates one chunk at a time,
/// under its global lock, with zlib).
///
/// It exists only when every condition holds (see `Dataset.deflatedChunks()`): chunked layout;
/// the filters exactly deflate, or shuffle then deflate; float32 or float64 in either byte order;
/// every chunk of the grid allocated, filtered by the whole pipeline (filter mask 0), of a
/// plausible stored size and inside the file. Anything else is read through libhdf5.
/// Its chunk list (`table`) can travel without the file: a described checkpoint carries it
/// (`DirectStorage.chunks`), and `init(table:type:source:object:fileSize:)` checks it again.
public struct DeflatedChunks: Sendable {
    /// Where the chunks' bytes are read from.
    public let source: any ChunkByteSource
    /// The dataset's path in the file, for errors.
    public let object: String
    public let type: ElementType
    public let grid: ChunkGrid
    /// Bytes of one element (4 or 8).
    public let elementSize: Int
    /// Bytes of one chunk inflated: the product of the chunk shape times the element size.
    public let chunkBytes: Int
    /// Per chunk, in the grid's order: where its bytes lie and how many are stored.
    public let table: DeflatedChunkTable

    /// Whether the bytes were shuffled before deflate (HDF5's shuffle filter).
    public var shuffled: Bool { table.shuffled }
    /// Whether the stored byte order is not the machine's.
    public var swapsBytes: Bool { table.swapsBytes }
    /// The path of the file the chunks are read from.
    public var path: String { source.path }

    /// The chunks of `table`, read from `source` (a file of `fileSize` bytes), or why not: a type
    /// other than float32 or float64, a grid that does not match the table, chunks too large, or a
    /// chunk whose stored size or place is implausible.
    public init(table: DeflatedChunkTable, type: ElementType, source: any ChunkByteSource, object: String, fileSize: Int) throws {
        func refuse(_ why: String) -> HDF5Error {
            HDF5Error(file: source.path, object: object, reason: .corrupt, message: "its chunk list does not fit: \(why)")
        }
        let elementSize: Int
        switch type {
        case .float32: elementSize = 4
        case .float64: elementSize = 8
        default: throw refuse("element type \(type), not float32 or float64")
        }
        guard let grid = ChunkGrid(shape: table.shape, chunkShape: table.chunkShape), grid.count <= Self.maxChunks,
            table.addresses.count == grid.count, table.sizes.count == grid.count
        else { throw refuse("\(table.count) chunks for shape \(table.shape) in chunks of \(table.chunkShape)") }
        var chunkElements = 1
        for extent in table.chunkShape {
            let (product, overflow) = chunkElements.multipliedReportingOverflow(by: extent)
            guard !overflow, product <= Self.maxChunkBytes / elementSize else { throw refuse("chunks larger than \(Self.maxChunkBytes) bytes") }
            chunkElements = product
        }
        let chunkBytes = chunkElements * elementSize
        let maxStored = Self.maxStoredBytes(chunkBytes: chunkBytes)
        for index in 0..<grid.count {
            let address = table.addresses[index], size = Int(table.sizes[index])
            let (end, overflow) = address.addingReportingOverflow(size)
            guard size > 0, size <= maxStored, address >= 0, !overflow, end <= fileSize else {
                throw refuse("the chunk at \(grid.origin(of: index)) has an implausible address or size")
            }
        }
        self.init(source: source, object: object, type: type, grid: grid, elementSize: elementSize, chunkBytes: chunkBytes, table: table)
    }

    init(
        source: any ChunkByteSource, object: String, type: ElementType, grid: ChunkGrid, elementSize: Int, chunkBytes: Int,
        table: DeflatedChunkTable
    ) {
        self.source = source
        self.object = object
        self.type = type
        self.grid = grid
        self.elementSize = elementSize
        self.chunkBytes = chunkBytes
        self.table = table
    }

    /// Largest chunk read this way, inflated (libhdf5 reads bigger ones). Each thread holds one
    /// chunk per tensor being read, inflated and as stored (two for drift), so memory stays a few
    /// times this per thread at most; h5py's automatic chunks are at most 1 MiB.
    public static let maxChunkBytes = 16 << 20
    /// Most chunks read this way (their addresses are listed before reading).
    public static let maxChunks = 1 << 20

    /// Stored bytes of chunk `index`.
    public func storedSize(of index: Int) -> Int { Int(table.sizes[index]) }
    /// File offset of chunk `index`.
    public func address(of index: Int) -> Int { table.addresses[index] }

    /// Where `chunk`'s position in the dataset is described in errors: "the chunk at [0, 59]".
    public func describe(_ chunk: Int) -> String {
        "the chunk at [\(grid.origin(of: chunk).map(String.init).joined(separator: ", "))]"
    }

    /// Copies the part of `chunk` (inflated in `decoded`, elements in the machine's byte order)
    /// that lies inside the dataset into the flat, row-major `block`, whose first element has
    /// flat index `blockOffset` and which holds `blockCount` elements of `elementSize` bytes.
    /// Throws, copying nothing, when that part does not lie wholly inside the block.
    public func copy(
        _ chunk: Int, from decoded: UnsafeRawBufferPointer, into block: UnsafeMutableRawPointer, blockOffset: Int, blockCount: Int
    ) throws {
        let rank = grid.shape.count
        let origin = grid.origin(of: chunk)
        let shape = grid.shape, chunkShape = grid.chunkShape
        var valid = [Int](repeating: 0, count: rank)
        for axis in 0..<rank { valid[axis] = min(chunkShape[axis], shape[axis] - origin[axis]) }
        var datasetStrides = [Int](repeating: 1, count: rank), chunkStrides = [Int](repeating: 1, count: rank)
        for axis in stride(from: rank - 2, through: 0, by: -1) {
            datasetStrides[axis] = datasetStrides[axis + 1] * shape[axis + 1]
            chunkStrides[axis] = chunkStrides[axis + 1] * chunkShape[axis + 1]
        }
        var first = 0, last = 0
        for axis in 0..<rank {
            first += origin[axis] * datasetStrides[axis]
            last += (origin[axis] + valid[axis] - 1) * datasetStrides[axis]
        }
        guard decoded.count >= chunkBytes, first >= blockOffset, last < blockOffset + blockCount else {
            throw HDF5Error(
                file: path, object: object, reason: .library,
                message: "\(describe(chunk)) does not lie inside the block being read")
        }
        // Rows that are contiguous in both the chunk and the dataset are copied as one run.
        var runAxis = rank - 1
        var run = valid[runAxis]
        while runAxis > 0 && valid[runAxis] == chunkShape[runAxis] && chunkShape[runAxis] == shape[runAxis] {
            runAxis -= 1
            run *= valid[runAxis]
        }
        let size = elementSize, runBytes = run * size
        guard let source = decoded.baseAddress else { return }
        var position = [Int](repeating: 0, count: runAxis)
        while true {
            var from = 0, to = first - blockOffset
            for axis in 0..<runAxis {
                from += position[axis] * chunkStrides[axis]
                to += position[axis] * datasetStrides[axis]
            }
            (block + to * size).copyMemory(from: source + from * size, byteCount: runBytes)
            var axis = runAxis - 1
            while axis >= 0 {
                position[axis] += 1
                if position[axis] < valid[axis] { break }
                position[axis] = 0
                axis -= 1
            }
            if axis < 0 { return }
        }
    }
}

/// Reads and inflates chunks of one `DeflatedChunks` (or of others with chunks of the same
/// size: the same tensor at other saves), one at a time, into buffers of its own.
/// Not shared between threads: each thread makes its own (they are cheap).
public final class ChunkDecoder {
    public let chunks: DeflatedChunks
    private let decompressor: OpaquePointer
    private let stored: UnsafeMutableRawBufferPointer
    private let inflated: UnsafeMutableRawBufferPointer
    private var unshuffled: UnsafeMutableRawBufferPointer?

    public init(_ chunks: DeflatedChunks) throws {
        guard let decompressor = libdeflate_alloc_decompressor() else {
            throw HDF5Error(file: chunks.path, object: chunks.object, reason: .library, message: "out of memory for a decompressor")
        }
        self.chunks = chunks
        self.decompressor = decompressor
        stored = .allocate(byteCount: max(DeflatedChunks.maxStoredBytes(chunkBytes: chunks.chunkBytes), 1), alignment: 64)
        inflated = .allocate(byteCount: max(chunks.chunkBytes, 1), alignment: 64)
        unshuffled = chunks.shuffled ? .allocate(byteCount: max(chunks.chunkBytes, 1), alignment: 64) : nil
    }

    deinit {
        libdeflate_free_decompressor(decompressor)
        stored.deallocate()
        inflated.deallocate()
        unshuffled?.deallocate()
    }

    /// Reads chunk `index` from the file and undoes its filters: the chunk's elements, the
    /// whole chunk shape of them (edge chunks too), in the machine's byte order. Valid until
    /// the next call. A chunk that does not inflate to exactly the chunk's size is a `corrupt`
    /// error naming the dataset and the chunk.
    public func decode(_ index: Int) throws -> UnsafeRawBufferPointer { try decode(index, of: chunks) }

    /// Chunk `index` of `chunks`, whose chunks must be of this decoder's size (`chunkBytes` and
    /// element size); otherwise as `decode(_:)`.
    public func decode(_ index: Int, of chunks: DeflatedChunks) throws -> UnsafeRawBufferPointer {
        guard chunks.chunkBytes == self.chunks.chunkBytes, chunks.elementSize == self.chunks.elementSize else {
            throw HDF5Error(
                file: chunks.path, object: chunks.object, reason: .library,
                message: "chunks of \(chunks.chunkBytes) bytes given to a decoder of \(self.chunks.chunkBytes)-byte chunks")
        }
        let size = chunks.storedSize(of: index)
        guard let storedBase = stored.baseAddress, let inflatedBase = inflated.baseAddress, size > 0, size <= stored.count else {
            throw failure(index, of: chunks, "its stored size \(size) is not plausible for \(chunks.chunkBytes) bytes of data")
        }
        try chunks.source.readChunkBytes(at: chunks.address(of: index), count: size, into: storedBase, object: chunks.object)
        var produced = 0
        let result = libdeflate_zlib_decompress(decompressor, storedBase, size, inflatedBase, chunks.chunkBytes, &produced)
        switch result {
        case LIBDEFLATE_SUCCESS:
            guard produced == chunks.chunkBytes else {
                throw failure(index, of: chunks, "it inflates to \(produced) bytes, not the chunk's \(chunks.chunkBytes)")
            }
        case LIBDEFLATE_INSUFFICIENT_SPACE:
            throw failure(index, of: chunks, "it inflates to more than the chunk's \(chunks.chunkBytes) bytes")
        case LIBDEFLATE_SHORT_OUTPUT:
            throw failure(index, of: chunks, "it inflates to fewer than the chunk's \(chunks.chunkBytes) bytes")
        default:
            throw failure(index, of: chunks, "its deflate stream is corrupt (bad compressed data or checksum)")
        }
        var elements = UnsafeMutableRawBufferPointer(inflated)
        if chunks.shuffled && unshuffled == nil { unshuffled = .allocate(byteCount: max(chunks.chunkBytes, 1), alignment: 64) }
        if chunks.shuffled, let unshuffled, let target = unshuffled.baseAddress {
            Self.unshuffle(UnsafeRawPointer(inflatedBase), into: target, count: chunks.chunkBytes / chunks.elementSize, size: chunks.elementSize)
            elements = unshuffled
        }
        if chunks.swapsBytes { Self.swapBytes(elements, size: chunks.elementSize) }
        return UnsafeRawBufferPointer(elements)
    }

    private func failure(_ index: Int, of chunks: DeflatedChunks, _ why: String) -> HDF5Error {
        HDF5Error(file: chunks.path, object: chunks.object, reason: .corrupt, message: "\(chunks.describe(index)) is corrupt: \(why)")
    }

    /// Undoes HDF5's shuffle filter: byte `k` of every element was stored in plane `k`.
    static func unshuffle(_ source: UnsafeRawPointer, into target: UnsafeMutableRawPointer, count: Int, size: Int) {
        let from = source.assumingMemoryBound(to: UInt8.self), to = target.assumingMemoryBound(to: UInt8.self)
        for plane in 0..<size {
            let planeStart = from + plane * count
            var element = 0
            while element < count {
                to[element &* size &+ plane] = planeStart[element]
                element &+= 1
            }
        }
    }

    /// Reverses the bytes of every element of `size` bytes in `buffer`.
    static func swapBytes(_ buffer: UnsafeMutableRawBufferPointer, size: Int) {
        let count = buffer.count / size
        if size == 4 {
            for index in 0..<count {
                let value = buffer.load(fromByteOffset: index * 4, as: UInt32.self)
                buffer.storeBytes(of: value.byteSwapped, toByteOffset: index * 4, as: UInt32.self)
            }
        } else if size == 8 {
            for index in 0..<count {
                let value = buffer.load(fromByteOffset: index * 8, as: UInt64.self)
                buffer.storeBytes(of: value.byteSwapped, toByteOffset: index * 8, as: UInt64.self)
            }
        }
    }
}

extension DeflatedChunks {
    /// Most bytes a chunk of `chunkBytes` can take once deflated: zlib's bound for incompressible data
    /// (about 0.03% more, plus its header) with a wide margin. Larger stored chunks are corrupt.
    static func maxStoredBytes(chunkBytes: Int) -> Int { chunkBytes + chunkBytes / 8 + 4096 }
}

extension Dataset {
    /// The dataset's chunks, to be read and inflated without libhdf5, or nil when that does not
    /// apply (`deflatedChunksRefusal` says why); never for a file held in memory.
    public func deflatedChunks() -> DeflatedChunks? {
        switch planDeflatedChunks() {
        case .success(let chunks): return chunks
        case .failure: return nil
        }
    }

    /// Why `deflatedChunks()` is nil, or nil when it is not.
    public var deflatedChunksRefusal: String? {
        switch planDeflatedChunks() {
        case .success: return nil
        case .failure(let refusal): return refusal.reason
        }
    }

    package struct ChunkRefusal: Error {
        package let reason: String
    }

    /// Checks every condition of the direct chunk path (see `DeflatedChunks`) and lists the chunks.
    package func planDeflatedChunks() -> Result<DeflatedChunks, ChunkRefusal> {
        func refuse(_ reason: String) -> Result<DeflatedChunks, ChunkRefusal> { .failure(ChunkRefusal(reason: reason)) }
        guard !file.isMemoryImage else { return refuse("the file is an in-memory image") }
        guard info.layout == .chunked, info.externalFileCount == 0 else { return refuse("not a chunked dataset") }
        guard info.refusal(limits: file.options.limits, followLinks: file.options.followLinks) == nil else {
            return refuse("refused by the read limits")
        }
        let elementSize: Int
        switch info.type {
        case .float32: elementSize = 4
        case .float64: elementSize = 8
        default: return refuse("element type \(info.type), not float32 or float64")
        }
        let swapsBytes: Bool
        #if _endian(little)
        switch info.byteOrder {
        case .little: swapsBytes = false
        case .big: swapsBytes = true
        default: return refuse("byte order \(info.byteOrder.rawValue)")
        }
        #else
        switch info.byteOrder {
        case .big: swapsBytes = false
        case .little: swapsBytes = true
        default: return refuse("byte order \(info.byteOrder.rawValue)")
        }
        #endif
        guard let chunkShape = info.chunkShape, let grid = ChunkGrid(shape: info.shape, chunkShape: chunkShape) else {
            return refuse("no usable chunk shape (or no elements)")
        }
        var chunkElements = 1
        for extent in chunkShape {
            let (product, overflow) = chunkElements.multipliedReportingOverflow(by: extent)
            guard !overflow, product <= DeflatedChunks.maxChunkBytes / elementSize else {
                return refuse("chunks larger than \(DeflatedChunks.maxChunkBytes) bytes")
            }
            chunkElements = product
        }
        let chunkBytes = chunkElements * elementSize
        guard let pipeline = try? filterPipeline() else { return refuse("unreadable filter pipeline") }
        let shuffled: Bool
        switch pipeline.map(\.id) {
        case [Int(H5Z_FILTER_DEFLATE)]:
            shuffled = false
        case [Int(H5Z_FILTER_SHUFFLE), Int(H5Z_FILTER_DEFLATE)]:
            guard pipeline[0].parameters.first.map(Int.init) == elementSize else {
                return refuse("shuffle declared for \(pipeline[0].parameters.first ?? 0)-byte elements, not \(elementSize)")
            }
            shuffled = true
        default:
            let names = pipeline.map { HDF5File.filterName($0.id) }
            return refuse("filters [\(names.joined(separator: ", "))], not deflate or shuffle then deflate")
        }
        guard grid.count <= DeflatedChunks.maxChunks else { return refuse("more than \(DeflatedChunks.maxChunks) chunks") }
        guard let stored = try? storedChunkCount(), stored == grid.count else {
            return refuse("not every chunk is allocated (the rest are fill values)")
        }
        let maxStored = DeflatedChunks.maxStoredBytes(chunkBytes: chunkBytes)
        var addresses = [Int](repeating: 0, count: grid.count), sizes = [UInt32](repeating: 0, count: grid.count)
        for index in 0..<grid.count {
            guard let record = try? chunk(at: grid.origin(of: index)) else {
                return refuse("the chunk at \(grid.origin(of: index)) is not allocated")
            }
            guard record.filterMask == 0 else { return refuse("the chunk at \(record.offset) skipped a filter") }
            let (end, overflow) = record.address.addingReportingOverflow(record.size)
            guard record.size > 0, record.size <= maxStored, record.address >= 0, !overflow, end <= file.size else {
                return refuse("the chunk at \(record.offset) has an implausible address or size")
            }
            addresses[index] = record.address
            sizes[index] = UInt32(record.size)
        }
        let table = DeflatedChunkTable(
            shape: info.shape, chunkShape: chunkShape, shuffled: shuffled, swapsBytes: swapsBytes, addresses: addresses, sizes: sizes)
        return .success(
            DeflatedChunks(
                source: file, object: path, type: info.type, grid: grid, elementSize: elementSize, chunkBytes: chunkBytes, table: table))
    }
}
