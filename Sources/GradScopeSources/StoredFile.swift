import CMapGuard
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
/// file's structure is parsed here, only bytes read, so it needs no isolation.
///
/// The file is also mapped read-only, so that measuring can take a contiguous tensor's elements
/// where they lie (``elements(_:range:buffer:object:)``) instead of copying them out of the page
/// cache with `pread`. A file that shrinks while it is mapped (a trainer rewriting it in place)
/// would kill the reader with SIGBUS: the mapping is guarded (`CMapGuard`), so that such a read
/// sees zeros and marks the mapping, and ``checkIntact()`` then fails what was read from it with
/// ``changedReason``. Anything that cannot be mapped or taken in place (a map that fails,
/// misaligned elements, chunks) is read with `pread`, as are tensors under 1 MiB, which cost less
/// copied (``inPlaceMinimumBytes``), and everything under `GRADSCOPE_READ=pread`.
public final class StoredFile: Sendable {
    public let path: String
    private let descriptor: Int32
    private let mapping: GuardedMapping?

    /// Whether files are mapped unless asked otherwise: not under `GRADSCOPE_READ=pread`.
    public static let mapsByDefault: Bool = ProcessInfo.processInfo.environment["GRADSCOPE_READ"] != "pread"

    /// Opens `path` for reading, refusing a file whose size or modification time are not
    /// `stamp`'s (checked on the open descriptor, so a file replaced by a rename is caught too):
    /// no step is measured half from the file that was described, half from another.
    /// With `mapping`, the file is then mapped too (when it can be).
    public init(_ path: String, expecting stamp: FileStamp, mapping: Bool = StoredFile.mapsByDefault) throws {
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
        self.mapping = mapping ? GuardedMapping(fd, offset: 0, length: size) : nil
    }

    deinit {
        mapping?.unmap()
        close(descriptor)
    }

    /// Why a file is not measured when it changed after it was described.
    public static let changedReason = "changed while the run was being scanned (a save in progress?); not analysed"

    /// Whether the file is mapped (reads of contiguous, aligned tensors take their elements in place).
    public var isMapped: Bool { mapping != nil }

    /// Throws ``changedReason`` when the file turned out shorter than when it was mapped: then
    /// what was taken from the mapping since may be zeros, not the file's values, and must not be used.
    public func checkIntact() throws {
        if let mapping, mapping.faulted {
            throw CheckpointError(file: path, reason: StoredFile.changedReason)
        }
    }

    /// Elements `range` of the tensor stored at `storage`: in place in the file's mapping when
    /// the file is mapped, the tensor is large enough (``takesInPlace(_:)``) and the elements are
    /// aligned for `T`, else read into `buffer` (as
    /// ``read(_:elements:into:object:)``). What comes from the mapping is only valid while this
    /// file is open, and only once ``checkIntact()`` has not thrown after it was used.
    public func elements<T>(
        _ storage: DirectStorage, range: Range<Int>, buffer: UnsafeMutableBufferPointer<T>, object: String
    ) throws -> UnsafeBufferPointer<T> {
        if let mapping, Self.takesInPlace(storage), storage.elementSize == MemoryLayout<T>.size, range.lowerBound >= 0,
            range.upperBound <= storage.count, storage.offset >= 0
        {
            let start = storage.offset + range.lowerBound * storage.elementSize
            let (end, overflow) = start.addingReportingOverflow(range.count * storage.elementSize)
            if !overflow, end <= mapping.length, start % MemoryLayout<T>.alignment == 0 {
                return UnsafeBufferPointer(start: (mapping.base + start).assumingMemoryBound(to: T.self), count: range.count)
            }
        }
        try read(storage, elements: range, into: buffer, object: object)
        return UnsafeBufferPointer(rebasing: buffer[0..<range.count])
    }

    /// The smallest tensor taken in place from a mapping; smaller ones are read with `pread`.
    ///
    /// Taking a tensor in place costs a page fault per 16 pages (the kernel maps a fault's
    /// neighbours too) and, to let go of its pages once measured, an `madvise`. In a process
    /// whose threads run on several cores, each `madvise` that drops pages interrupts every other
    /// core running the process to flush its TLB. A copy costs about 0.1 ns a byte from the page
    /// cache and lands in the cache the statistics then read. So a small tensor is cheaper
    /// copied: a model's biases, norms and small matrices, hundreds per save, each would
    /// otherwise cost a fault and a flush of the other cores. From 1 MiB on, the 256 faults and
    /// one flush per MiB cost less than the copy, and in place is cheaper. On a run of 300 saves
    /// of 298 tensors of 512 B to 512 KiB, reading those with `pread` took about 8% less CPU and
    /// 18 MB less memory than mapping them (no page of them stays mapped between measurements).
    public static let inPlaceMinimumBytes = 1 << 20

    /// Whether `storage` is taken in place from the mapping (``inPlaceMinimumBytes``).
    public static func takesInPlace(_ storage: DirectStorage) -> Bool {
        storage.isContiguous && storage.count * storage.elementSize >= inPlaceMinimumBytes
    }

    /// Lets go of the mapped pages of elements `range` of the tensor at `storage` once they have
    /// been measured (whole pages inside the range only), so that a long scan keeps few of the
    /// file's pages mapped: they stay in the page cache, and a later read maps them again.
    ///
    /// A tensor let go of in parts passes, with each part, what the call for the part just before
    /// it returned (`from`): the page the two parts share is then let go of too, so none stays
    /// mapped between them. Returns where the pages not let go of begin (a page boundary), to pass
    /// with the next part; nil when nothing is mapped, or the tensor is read with `pread`
    /// (``takesInPlace(_:)``), which maps none of its pages.
    @discardableResult
    public func release(_ storage: DirectStorage, elements range: Range<Int>, from: Int? = nil) -> Int? {
        guard let mapping, Self.takesInPlace(storage), range.lowerBound >= 0, range.upperBound <= storage.count, storage.offset >= 0
        else {
            return nil
        }
        let start = storage.offset + range.lowerBound * storage.elementSize
        let end = min(mapping.length, storage.offset + range.upperBound * storage.elementSize)
        guard let pages = Self.releasable(start: start, end: end, from: from, page: GuardedMapping.pageSize) else { return from }
        madvise(UnsafeMutableRawPointer(mutating: mapping.base + pages.lowerBound), pages.count, MADV_DONTNEED)
        return pages.upperBound
    }

    /// The bytes of whole pages to let go of once bytes `start..<end` are measured: the pages
    /// inside them, and the page they start in as well when `from` (the end of what the part
    /// before let go of) says the part before ended in it; nil when there is none.
    package static func releasable(start: Int, end: Int, from: Int?, page: Int) -> Range<Int>? {
        var first = (start + page - 1) / page * page
        // The part before ended inside the page this one starts in: that page is measured whole now.
        if let from, from <= start, start - from < page, from % page == 0 { first = from }
        let last = end / page * page
        return first < last ? first..<last : nil
    }

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

/// Bytes of an open file mapped read-only and registered with the SIGBUS guard (`CMapGuard`): a
/// page found missing (the file shrank) reads as zeros and sets ``faulted``, never kills the process.
struct GuardedMapping: @unchecked Sendable {
    /// The first byte mapped (page-aligned) and how many bytes from there.
    let base: UnsafeRawPointer
    let length: Int
    let slot: Int32

    static let pageSize = max(4096, Int(sysconf(Int32(_SC_PAGESIZE))))

    /// Maps `length` bytes of `fd` from `offset` (a multiple of the page size) and guards them, or
    /// nil (then the caller reads with `pread`): on a 32-bit system, or when the map or the guard fail.
    init?(_ fd: Int32, offset: Int, length: Int) {
        guard MemoryLayout<Int>.size == 8, length > 0, offset >= 0, offset % Self.pageSize == 0 else { return nil }
        guard let base = mmap(nil, length, PROT_READ, MAP_SHARED, fd, off_t(offset)), base != MAP_FAILED else { return nil }
        let slot = gs_map_guard_register(base, length)
        guard slot >= 0 else {
            munmap(base, length)
            return nil
        }
        self.base = UnsafeRawPointer(base)
        self.length = length
        self.slot = slot
    }

    /// Whether a page was found missing since it was mapped.
    var faulted: Bool { gs_map_guard_faulted(slot) != 0 }

    func unmap() {
        gs_map_guard_unregister(slot)
        munmap(UnsafeMutableRawPointer(mutating: base), length)
    }
}

/// One contiguous tensor's bytes mapped read-only from its open file, for measuring it in place
/// (``ContiguousTensor/mapped()``), guarded as ``StoredFile``'s mappings are; unmapped when released.
public final class MappedTensor: Sendable {
    private let mapping: GuardedMapping
    /// Where element 0 lies from the start of the mapping.
    private let start: Int
    private let count: Int
    private let elementSize: Int
    private let path: String

    /// Maps the `count` elements of `elementSize` bytes at byte `offset` of `descriptor` (the open
    /// file at `path`), or nil when they are not aligned for their type or cannot be mapped.
    public init?(descriptor: Int32, offset: Int, count: Int, elementSize: Int, path: String) {
        let page = GuardedMapping.pageSize
        guard offset >= 0, count > 0, elementSize > 0, offset % elementSize == 0 else { return nil }
        let (bytes, overflow) = count.multipliedReportingOverflow(by: elementSize)
        let first = offset / page * page
        guard !overflow, let mapping = GuardedMapping(descriptor, offset: first, length: offset - first + bytes) else { return nil }
        self.mapping = mapping
        start = offset - first
        self.count = count
        self.elementSize = elementSize
        self.path = path
    }

    deinit { mapping.unmap() }

    /// Elements `range` in place, or nil when `T` is not the stored element type or the range is outside the tensor.
    public func elements<T>(_ range: Range<Int>, as _: T.Type) -> UnsafeBufferPointer<T>? {
        guard MemoryLayout<T>.size == elementSize, range.lowerBound >= 0, range.upperBound <= count else { return nil }
        return UnsafeBufferPointer(start: (mapping.base + start + range.lowerBound * elementSize).assumingMemoryBound(to: T.self), count: range.count)
    }

    /// Throws ``StoredFile/changedReason`` when the file turned out shorter than when it was
    /// mapped: what was taken in place since may be zeros and must not be used.
    public func checkIntact() throws {
        if mapping.faulted { throw CheckpointError(file: path, reason: StoredFile.changedReason) }
    }
}

extension StoredFile: ChunkByteSource {
    /// Reads a compressed chunk's stored bytes (``DeflatedChunks``, from a described checkpoint's chunk table).
    public func readChunkBytes(at offset: Int, count: Int, into buffer: UnsafeMutableRawPointer, object: String) throws {
        try HDF5File.readFully(descriptor, at: offset, count: count, into: buffer, path: path, object: object)
    }
}
