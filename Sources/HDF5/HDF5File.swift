import CHDF5
import Foundation
import Synchronization

#if canImport(Glibc)
@preconcurrency import Glibc
#endif

/// Limits that keep a hostile or broken file from making the reader allocate,
/// recurse or loop without bound. Each is checked before the work it guards.
public struct ReadLimits: Sendable, Equatable {
    /// Deepest group nesting walked (real checkpoints nest fewer than 10 levels).
    public var maxDepth: Int = 64
    /// Most objects (groups, datasets, links) listed in one file.
    public var maxObjects: Int = 1_000_000
    /// Largest attribute read, in bytes (Keras layer-name lists are kilobytes).
    public var maxAttributeBytes: Int = 16 << 20
    /// Largest ratio of declared bytes to stored bytes accepted for a dataset.
    /// deflate cannot compress better than about 1032:1, so a dataset declaring
    /// more than this many times its storage cannot hold that much data.
    public var maxAmplification: Double = 1100
    /// Declared bytes always accepted whatever the storage (small fill-value datasets).
    public var amplificationSlack: Int = 1 << 20

    public init() {}
}

/// How a file is opened.
public struct OpenOptions: Sendable, Equatable {
    /// Follow soft links and external links, and read external-storage and
    /// virtual datasets. Off by default: those reach outside the named file.
    public var followLinks: Bool = false
    /// Load filter plugins named by `HDF5_PLUGIN_PATH`. Off by default.
    public var allowPlugins: Bool = false
    public var limits = ReadLimits()

    public init(followLinks: Bool = false, allowPlugins: Bool = false, limits: ReadLimits = ReadLimits()) {
        self.followLinks = followLinks
        self.allowPlugins = allowPlugins
        self.limits = limits
    }
}

/// An HDF5 file opened read-only.
///
/// The file is opened with file locking off, so a checkpoint still held open
/// by a training job can be read, and with external links denied unless
/// `OpenOptions.followLinks` is set. Nothing is ever written to it.
/// The corresponding C function is `H5Fopen`.
public final class HDF5File: Sendable {
    /// The path as given.
    public let path: String
    /// The file's size in bytes when it was opened.
    public let size: Int
    /// The file's modification time (seconds since 1970, from `stat`) when it was opened; 0 for an image.
    public let modificationTime: Double
    /// Offset of the HDF5 superblock (non-zero when the file has a user block, as MATLAB files do).
    public let superblockOffset: Int
    public let options: OpenOptions

    package let handle: Handle
    package let linkAccess: Handle
    /// The access properties every dataset of the file is opened with, made once per file
    /// (making them for each of hundreds of datasets was a measurable part of describing a file).
    package let datasetAccess: Handle
    private let infos = Mutex<[String: DatasetInfo]>([:])

    package func rememberedInfo(_ path: String) -> DatasetInfo? {
        // String keys compare by canonical equivalence; libhdf5 tells names apart by their bytes.
        infos.withLock { infos in
            guard let index = infos.index(forKey: path), sameBytes(infos[index].key, path) else { return nil }
            return infos[index].value
        }
    }

    package func remember(_ info: DatasetInfo, for path: String) {
        infos.withLock { infos in
            // A name equal to one remembered but for its bytes takes its place, key and all.
            if let index = infos.index(forKey: path), !sameBytes(infos[index].key, path) { infos.remove(at: index) }
            infos[path] = info
        }
    }
    /// The file opened a second time for direct reads (`-1` until first used).
    private let descriptor = Mutex<Int32>(-1)
    /// True for files opened from a memory image: there is no path to read directly.
    public let isMemoryImage: Bool
    /// The file's metadata read without libhdf5, when the file has a shape the native reader
    /// covers; nil when it does not (or `GRADSCOPE_HDF5_METADATA=libhdf5`): libhdf5 describes it.
    package let native: NativeMetadata?

    /// Opens `path` read-only, after checking that it is a readable, non-empty
    /// regular file with an HDF5 signature.
    public static func open(_ path: String, options: OpenOptions = OpenOptions()) throws -> HDF5File {
        try open(path, options: options, nativeMetadata: !NativeMetadata.disabledByEnvironment)
    }

    /// Opens `path`, reading its metadata natively when `nativeMetadata` is set and the file allows it
    /// (given a parse `memo` keeps, when the file's metadata is the same, ``ParseMemo``).
    package static func open(
        _ path: String, options: OpenOptions = OpenOptions(), nativeMetadata: Bool, memo: ParseMemo? = .shared
    ) throws -> HDF5File {
        Library.ensure()
        Library.setPluginsEnabled(options.allowPlugins)
        let probe = try FileProbe.examine(path)
        guard let superblock = probe.superblockOffset else {
            throw HDF5Error(file: path, reason: .notHDF5, message: "not an HDF5 file (\(probe.describeContent()))")
        }

        let fapl = Handle(H5Pcreate(gs_H5P_FILE_ACCESS()), .plist)
        guard fapl.id >= 0 else {
            throw HDF5Error(file: path, reason: .library, message: "could not create a file access property list")
        }
        H5Pset_file_locking(fapl.id, false, true)
        // Close every object when the file closes, so nothing outlives it.
        H5Pset_fclose_degree(fapl.id, H5F_CLOSE_STRONG)

        let id = H5Fopen(path, gs_H5F_ACC_RDONLY(), fapl.id)
        guard id >= 0 else {
            let summary = Library.errorSummary() ?? "the HDF5 library could not open it"
            throw classifyOpenFailure(path: path, size: probe.size, summary: summary)
        }
        let lapl = Handle(H5Pcreate(gs_H5P_LINK_ACCESS()), .plist)
        if !options.followLinks {
            gs_deny_external_links(lapl.id)
        }
        H5Pset_nlinks(lapl.id, 16)
        let native =
            nativeMetadata
            ? try? NativeMetadata(path: path, size: probe.size, superblockOffset: superblock, limits: options.limits, memo: memo) : nil
        return HDF5File(
            path: path, size: probe.size, modificationTime: probe.modificationTime, superblockOffset: superblock, options: options,
            handle: Handle(id, .file), linkAccess: lapl, native: native)
    }

    /// Opens an HDF5 file image held in memory (a member of a `.keras` zip,
    /// or a fuzzer's input). `name` is used in errors. The image is copied
    /// into libhdf5's in-memory driver; nothing touches the disk.
    /// The corresponding C function is `H5Pset_file_image`.
    public static func open(image: [UInt8], name: String, options: OpenOptions = OpenOptions()) throws -> HDF5File {
        try open(image: image, name: name, options: options, nativeMetadata: !NativeMetadata.disabledByEnvironment)
    }

    /// Opens a file image, reading its metadata natively when `nativeMetadata` is set and the image allows it
    /// (given a parse `memo` keeps, when the image's metadata is the same: none by default).
    package static func open(
        image: [UInt8], name: String, options: OpenOptions = OpenOptions(), nativeMetadata: Bool, memo: ParseMemo? = nil
    ) throws -> HDF5File {
        Library.ensure()
        Library.setPluginsEnabled(options.allowPlugins)
        guard !image.isEmpty else {
            throw HDF5Error(file: name, reason: .empty, message: "empty file (0 bytes)")
        }
        let probe = FileProbe(size: image.count, head: Array(image.prefix(64)), superblockOffset: FileProbe.findSignature(in: image))
        guard let superblock = probe.superblockOffset else {
            throw HDF5Error(file: name, reason: .notHDF5, message: "not an HDF5 file (\(probe.describeContent()))")
        }
        let fapl = Handle(H5Pcreate(gs_H5P_FILE_ACCESS()), .plist)
        H5Pset_fapl_core(fapl.id, 1 << 20, false)
        H5Pset_fclose_degree(fapl.id, H5F_CLOSE_STRONG)
        let status = image.withUnsafeBytes { raw in
            H5Pset_file_image(fapl.id, UnsafeMutableRawPointer(mutating: raw.baseAddress), raw.count)
        }
        guard status >= 0 else {
            throw HDF5Error(file: name, reason: .library, message: "could not load the file image: \(Library.errorSummary() ?? "failed")")
        }
        // libhdf5 looks the name up on disk and among its open files, so each image gets a
        // name that cannot exist (a path under /dev/null) and is unique; `name` is for people.
        let internalName = "/dev/null/gradscope-image-\(imageCounter.next())"
        let id = H5Fopen(internalName, gs_H5F_ACC_RDONLY(), fapl.id)
        guard id >= 0 else {
            let summary = (Library.errorSummary() ?? "the HDF5 library could not open it")
                .replacingOccurrences(of: internalName, with: name)
            throw classifyOpenFailure(path: name, size: image.count, summary: summary)
        }
        let lapl = Handle(H5Pcreate(gs_H5P_LINK_ACCESS()), .plist)
        if !options.followLinks { gs_deny_external_links(lapl.id) }
        H5Pset_nlinks(lapl.id, 16)
        let native = nativeMetadata ? try? NativeMetadata(image: image, superblockOffset: superblock, limits: options.limits, memo: memo) : nil
        return HDF5File(
            path: name, size: image.count, modificationTime: 0, superblockOffset: superblock, options: options,
            handle: Handle(id, .file), linkAccess: lapl, isMemoryImage: true, native: native)
    }

    private init(
        path: String, size: Int, modificationTime: Double, superblockOffset: Int, options: OpenOptions, handle: Handle,
        linkAccess: Handle, isMemoryImage: Bool = false, native: NativeMetadata? = nil
    ) {
        self.native = native
        self.path = path
        self.size = size
        self.modificationTime = modificationTime
        self.superblockOffset = superblockOffset
        self.options = options
        self.handle = handle
        self.linkAccess = linkAccess
        self.isMemoryImage = isMemoryImage
        let dapl = Handle(H5Pcreate(gs_H5P_DATASET_ACCESS()), .plist)
        // A bounded chunk cache: enough for chunks re-read across blocks, never the tensor.
        H5Pset_chunk_cache(dapl.id, 12_421, 32 << 20, 1.0)
        if !options.followLinks {
            gs_deny_external_links(dapl.id)
        }
        datasetAccess = dapl
    }

    deinit {
        descriptor.withLock { descriptor in
            if descriptor >= 0 { Glibc.close(descriptor) }
        }
    }

    package static func classifyOpenFailure(path: String, size: Int, summary: String) -> HDF5Error {
        let lower = summary.lowercased()
        if lower.contains("truncated file") {
            // libhdf5 says "truncated file: eof = 30000, sblock->base_addr = 0, stored_eof = 52288".
            let stored = number(after: "stored_eof = ", in: summary)
            let sizes = stored.map { "\(groupDigits(size)) of \(groupDigits($0)) bytes" } ?? "\(groupDigits(size)) bytes"
            return HDF5Error(
                file: path, reason: .truncated,
                message: "truncated: \(sizes), shorter than its own header says; it was cut off or is still being written (libhdf5: \(summary))")
        }
        if lower.contains("signature") {
            return HDF5Error(file: path, reason: .notHDF5, message: "not an HDF5 file (\(summary))")
        }
        if lower.contains("lock") {
            return HDF5Error(file: path, reason: .locked, message: "locked by another process (\(summary))")
        }
        if lower.contains("eoa") || lower.contains("end of") || lower.contains("addr overflow") {
            return HDF5Error(
                file: path, reason: .truncated,
                message: "truncated or corrupt: data lies beyond the end of the file (\(summary))")
        }
        return HDF5Error(file: path, reason: .corrupt, message: "malformed HDF5 file: \(summary)")
    }

    /// The decimal number that follows `label` in `text`, if any.
    static func number(after label: String, in text: String) -> Int? {
        guard let range = text.range(of: label) else { return nil }
        return Int(text[range.upperBound...].prefix { $0.isASCII && $0.isNumber })
    }

    /// 52288 as "52,288".
    package static func groupDigits(_ value: Int) -> String {
        let digits = String(value.magnitude)
        var grouped = ""
        for (index, digit) in digits.enumerated() {
            if index > 0 && (digits.count - index) % 3 == 0 { grouped.append(",") }
            grouped.append(digit)
        }
        return value < 0 ? "-" + grouped : grouped
    }

    /// An error about an object in this file, with libhdf5's message appended.
    package func failure(_ object: String?, _ what: String, reason: HDF5Error.Reason = .corrupt) -> HDF5Error {
        if let detail = Library.errorSummary() {
            return HDF5Error(file: path, object: object, reason: reason, message: "\(what): \(detail)")
        }
        return HDF5Error(file: path, object: object, reason: reason, message: what)
    }

    /// The file's descriptor for direct reads, opened read-only on first use.
    /// The file must still be the one libhdf5 opened: same size at least.
    package func directDescriptor(object: String) throws -> Int32 {
        try descriptor.withLock { descriptor throws(HDF5Error) in
            if descriptor >= 0 { return descriptor }
            guard !isMemoryImage else {
                throw HDF5Error(file: path, object: object, reason: .library, message: "an in-memory image has no file to read")
            }
            let fd = Glibc.open(path, O_RDONLY | O_CLOEXEC)
            guard fd >= 0 else {
                throw HDF5Error(file: path, object: object, reason: .io, message: "could not reopen the file: \(String(cString: strerror(errno)))")
            }
            var info = stat()
            guard fstat(fd, &info) == 0, Int(info.st_size) >= size else {
                Glibc.close(fd)
                throw HDF5Error(file: path, object: object, reason: .truncated, message: "truncated: the file became shorter while it was being read")
            }
            descriptor = fd
            return fd
        }
    }

    /// Reads `count` bytes at file offset `offset` into `buffer` with `pread`
    /// (thread-safe: no shared file position). A short file is an error, never a crash.
    /// The corresponding C function is `pread`.
    package func readBytes(at offset: Int, count: Int, into buffer: UnsafeMutableRawPointer, object: String) throws {
        try Self.readFully(try directDescriptor(object: object), at: offset, count: count, into: buffer, path: path, object: object)
    }

    /// Reads `count` bytes at `offset` of the open file `fd` (the file at `path`,
    /// named in errors) with `pread`, retrying short reads; a file that ends
    /// first is a `.truncated` error, never a crash.
    public static func readFully(
        _ fd: Int32, at offset: Int, count: Int, into buffer: UnsafeMutableRawPointer,
        path: String, object: String
    ) throws {
        var done = 0
        while done < count {
            let n = pread(fd, buffer + done, count - done, off_t(offset + done))
            if n > 0 {
                done += n
            } else if n == 0 {
                var info = stat()
                let end = fstat(fd, &info) == 0 ? Int(info.st_size) : offset + done
                let place = end <= offset ? "before this dataset's data (at byte \(offset))" : "inside this dataset's data"
                throw HDF5Error(file: path, object: object, reason: .truncated, message: "truncated: the file ends at byte \(end), \(place)")
            } else if errno != EINTR {
                throw HDF5Error(file: path, object: object, reason: .io, message: "read failed: \(String(cString: strerror(errno)))")
            }
        }
    }
}

/// Numbers for in-memory images' internal names.
package final class ImageCounter: Sendable {
    private let value = Mutex(0)
    package func next() -> Int {
        value.withLock { value in
            value += 1
            return value
        }
    }
}

package let imageCounter = ImageCounter()

/// What a path holds, checked before libhdf5 sees it.
package struct FileProbe {
    package let size: Int
    package var modificationTime: Double = 0
    package let head: [UInt8]
    package let superblockOffset: Int?

    package static let signature: [UInt8] = [0x89, 0x48, 0x44, 0x46, 0x0d, 0x0a, 0x1a, 0x0a]

    package static func examine(_ path: String) throws -> FileProbe {
        var info = stat()
        if stat(path, &info) != 0 {
            let code = errno
            switch code {
            case ENOENT: throw HDF5Error(file: path, reason: .notFound, message: "no such file")
            case EACCES: throw HDF5Error(file: path, reason: .permissionDenied, message: "permission denied")
            case ELOOP: throw HDF5Error(file: path, reason: .unsupported, message: "too many levels of symbolic links (a symlink loop)")
            default: throw HDF5Error(file: path, reason: .io, message: String(cString: strerror(code)))
            }
        }
        let kind = info.st_mode & S_IFMT
        if kind == S_IFDIR {
            throw HDF5Error(file: path, reason: .isDirectory, message: "is a directory, not a file")
        }
        guard kind == S_IFREG else {
            throw HDF5Error(
                file: path, reason: .unsupported, message: "\(describeKind(info.st_mode)), not a regular file: only regular files are read")
        }
        let fd = Glibc.open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else {
            let code = errno
            if code == EACCES {
                throw HDF5Error(file: path, reason: .permissionDenied, message: "permission denied")
            }
            throw HDF5Error(file: path, reason: .io, message: String(cString: strerror(code)))
        }
        defer { Glibc.close(fd) }
        let size = Int(info.st_size)
        if size == 0 {
            throw HDF5Error(file: path, reason: .empty, message: "empty file (0 bytes): nothing was written, or the save had not started")
        }
        var head = [UInt8](repeating: 0, count: min(size, 64))
        let got = head.withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, 0) }
        guard got >= 0 else {
            let code = errno
            throw HDF5Error(file: path, reason: .io, message: "could not read: \(String(cString: strerror(code)))")
        }
        head = Array(head.prefix(got))
        // The superblock sits at 0 or at a power of two >= 512 (after a user block).
        var offset = 0
        var found: Int?
        var candidate = [UInt8](repeating: 0, count: 8)
        while offset + 8 <= size {
            let n = candidate.withUnsafeMutableBytes { pread(fd, $0.baseAddress, 8, off_t(offset)) }
            if n == 8 && candidate == signature {
                found = offset
                break
            }
            offset = offset == 0 ? 512 : offset * 2
        }
        var probe = FileProbe(size: size, head: head, superblockOffset: found)
        probe.modificationTime = Double(info.st_mtim.tv_sec) + Double(info.st_mtim.tv_nsec) / 1e9
        return probe
    }

    /// What a path that is neither a regular file nor a directory is (a named pipe, a
    /// socket, a device), or nil for those two and for a path that cannot be examined.
    /// Such a path is refused before anything opens it: opening a named pipe blocks
    /// until a writer comes, and reading a device may never end.
    package static func irregularKind(_ path: String) -> String? {
        var info = stat()
        guard stat(path, &info) == 0 else { return nil }
        let kind = info.st_mode & S_IFMT
        if kind == S_IFREG || kind == S_IFDIR { return nil }
        return describeKind(info.st_mode)
    }

    /// A file type in words, from `st_mode`.
    package static func describeKind(_ mode: mode_t) -> String {
        switch mode & S_IFMT {
        case S_IFIFO: return "a named pipe (FIFO)"
        case S_IFSOCK: return "a socket"
        case S_IFCHR: return "a character device"
        case S_IFBLK: return "a block device"
        case S_IFDIR: return "a directory"
        case S_IFREG: return "a regular file"
        default: return "not a file"
        }
    }

    /// The offset of the HDF5 signature in an in-memory image, if any.
    package static func findSignature(in image: [UInt8]) -> Int? {
        var offset = 0
        while offset + 8 <= image.count {
            if Array(image[offset..<(offset + 8)]) == signature { return offset }
            offset = offset == 0 ? 512 : offset * 2
        }
        return nil
    }

    /// Names what the bytes look like, for a file that is not HDF5.
    package func describeContent() -> String {
        func starts(_ bytes: [UInt8]) -> Bool { head.count >= bytes.count && Array(head.prefix(bytes.count)) == bytes }
        if starts([0x50, 0x4b, 0x03, 0x04]) || starts([0x50, 0x4b, 0x05, 0x06]) {
            return "it is a zip archive"
        }
        if starts([0x89, 0x50, 0x4e, 0x47]) { return "it is a PNG image" }
        if starts([0x80]) && head.count > 1 && head[1] <= 5 { return "it is a Python pickle" }
        if starts([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59]) { return "it is a NumPy .npy array" }
        if starts([0x43, 0x44, 0x46]) { return "it is a classic netCDF file" }
        if starts([0x1f, 0x8b]) { return "it is gzip-compressed" }
        let printable = head.allSatisfy { ($0 >= 0x20 && $0 < 0x7f) || $0 == 0x0a || $0 == 0x0d || $0 == 0x09 }
        if printable { return "it looks like text" }
        return "no HDF5 signature at offset 0 or after a user block"
    }
}
