import ElementTypes
import Foundation
import GradScopeModel
import HDF5

/// A run of a tensor's elements read together: contiguous in row-major order, from flat index
/// `offset`, `count` of them, the hyperslab `start` and `extent` per axis. A block planned for one
/// tensor reads the same elements of any other tensor of the same shape (drift reads two side by side).
public struct TensorBlock: Sendable, Equatable {
    public let offset: Int
    public let count: Int
    public let start: [Int]
    public let extent: [Int]

    public init(offset: Int, count: Int, start: [Int], extent: [Int]) {
        self.offset = offset
        self.count = count
        self.start = start
        self.extent = extent
    }
}

extension TensorBlock {
    /// The blocks an HDF5 dataset of `shape`, chunked as `chunkShape` (nil when contiguous), is read
    /// in (``TensorData/blocks(blockElements:)``): computed from the shapes alone, so a reader
    /// without the open dataset (the scanning process, from a chunk table) plans the same blocks.
    public static func plan(shape: [Int], chunkShape: [Int]?, blockElements: Int) -> [TensorBlock] {
        var count = 1
        for extent in shape {
            let (product, overflow) = count.multipliedReportingOverflow(by: extent)
            guard !overflow else { return [] }
            count = product
        }
        guard count > 0 else { return [] }
        return BlockPlan(shape: shape, chunkShape: chunkShape, blockElements: max(blockElements, 1)).map {
            TensorBlock(offset: $0.offset, count: $0.count, start: $0.hyperslabStart, extent: $0.hyperslabExtent)
        }
    }
}

/// A tensor's elements as they lie contiguous in a file, read by offset into the caller's buffers
/// (float32 or float64, in the machine's byte order).
public protocol ContiguousTensor: Sendable {
    var type: ElementType { get }
    var count: Int { get }
    /// Reads elements `range` into `buffer`, whose element type is the stored one.
    func read<T>(_ range: Range<Int>, into buffer: UnsafeMutableBufferPointer<T>) throws
    /// Its elements mapped in place from its file, when the source can map them (else they are read).
    func mapped() -> MappedTensor?
}

extension ContiguousTensor {
    /// Not mapped: read with ``read(_:into:)``.
    public func mapped() -> MappedTensor? { nil }
}

/// One tensor of an open checkpoint, as its source reads it: directly by offset where its bytes
/// allow (``contiguous()``), else through the source's library in blocks, converted to `Float` or
/// `Double` from whatever type it is stored in.
public protocol TensorData {
    var shape: [Int] { get }
    /// Whether its values need `Double` to be read without loss (float64, wide integers).
    var needsDouble: Bool { get }
    /// Throws why it cannot be read (refused by a limit, never written, a missing filter), before any read.
    func checkReadable() throws
    /// Its bytes, when they can be read by offset.
    func contiguous() -> (any ContiguousTensor)?
    /// Its gzip-compressed chunks, when they can be read by offset and inflated on any thread
    /// (an HDF5 chunked float32 or float64 dataset, deflate or shuffle then deflate).
    func deflatedChunks() -> DeflatedChunks?
    /// Blocks of about `blockElements` elements covering it in row-major order.
    func blocks(blockElements: Int) -> [TensorBlock]
    /// Reads `block` converted to `T`.
    func read<T: HDF5Real>(_ block: TensorBlock, into buffer: UnsafeMutableBufferPointer<T>) throws
    /// Reads it block by block converted to `T`, calling `body` with each block and the flat index of its first element.
    func stream<T: HDF5Real>(as type: T.Type, blockElements: Int, _ body: (UnsafeBufferPointer<T>, Int) throws -> Void) throws
}

extension TensorData {
    /// None, unless the source stores gzip-compressed chunks (HDF5 does).
    public func deflatedChunks() -> DeflatedChunks? { nil }
}

/// Where the tensors of an open checkpoint are read from: a source's open files.
public protocol TensorSource: Sendable {
    /// The tensor's data, ready to read.
    func data(for tensor: TensorRef) throws -> any TensorData
    /// Where `tensor` lies in `file` when its bytes can be read by offset (``Checkpoint/storage``).
    func storage(of tensor: TensorRef, in file: String) -> DirectStorage?
    /// `file` as the source opened it, or nil when the source did not open it from disk.
    func stamp(of file: String) -> FileStamp?
    /// Whether the data is held in memory (a `.keras` archive's weights): not worth keeping open.
    var isMemoryImage: Bool { get }
}

/// The open HDF5 files of a checkpoint (several for a sharded save).
public struct HDF5Files: TensorSource {
    public let files: [HDF5File]
    /// The path shown in errors.
    let source: String

    public init(_ files: [HDF5File], source: String) {
        self.files = files
        self.source = source
    }

    public func data(for tensor: TensorRef) throws -> any TensorData { try dataset(for: tensor) }

    /// The dataset holding `tensor`.
    public func dataset(for tensor: TensorRef) throws -> Dataset {
        guard tensor.fileIndex >= 0, tensor.fileIndex < files.count else {
            throw HDF5Error(file: source, object: tensor.path, reason: .notFound, message: "no such file in this checkpoint")
        }
        return try files[tensor.fileIndex].dataset(tensor.path)
    }

    /// Only in the first file: that is the file a reader opens again by path. Contiguous
    /// float32/float64 data by its offset; gzip-compressed chunked float32/float64 data by its
    /// chunk table (``DeflatedChunks``), when every chunk is stored and filtered as expected.
    public func storage(of tensor: TensorRef, in file: String) -> DirectStorage? {
        guard tensor.fileIndex == 0, let first = files.first, first.path == file, !first.isMemoryImage,
            let info = try? first.datasetInfo(tensor.path),
            info.refusal(limits: first.options.limits, followLinks: first.options.followLinks) == nil
        else { return nil }
        if let contiguous = info.directStorage(fileSize: first.size) { return contiguous }
        guard info.layout == .chunked, info.type == .float32 || info.type == .float64, info.elementCount > 0,
            let chunks = (try? first.dataset(tensor.path))?.deflatedChunks()
        else { return nil }
        return DirectStorage(offset: 0, count: info.elementCount, type: info.type, chunks: chunks.table)
    }

    public func stamp(of file: String) -> FileStamp? {
        guard let opened = files.first(where: { $0.path == file }), !opened.isMemoryImage else { return nil }
        return FileStamp(size: opened.size, mtime: opened.modificationTime)
    }

    public var isMemoryImage: Bool { files.contains(where: \.isMemoryImage) }
}

extension DirectTensor: ContiguousTensor {
    /// Tensors of at least 64 KiB are mapped from the file's open descriptor (when aligned); smaller
    /// ones are read with `pread`, cheaper than mapping them.
    public func mapped() -> MappedTensor? {
        guard let size = type.byteSize, count * size >= 64 << 10, let descriptor = try? file.directDescriptor(object: object) else { return nil }
        return MappedTensor(descriptor: descriptor, offset: offset, count: count, elementSize: size, path: file.path)
    }
}

extension Dataset: TensorData {
    public var shape: [Int] { info.shape }
    public var needsDouble: Bool { info.type.needsDouble }
    public func contiguous() -> (any ContiguousTensor)? { direct() }

    public func blocks(blockElements: Int) -> [TensorBlock] {
        TensorBlock.plan(shape: info.shape, chunkShape: info.chunkShape, blockElements: blockElements)
    }

    public func read<T: HDF5Real>(_ block: TensorBlock, into buffer: UnsafeMutableBufferPointer<T>) throws {
        let planned = ReadBlock(offset: block.offset, count: block.count, hyperslabStart: block.start, hyperslabExtent: block.extent)
        try read(planned, into: buffer)
    }
}
