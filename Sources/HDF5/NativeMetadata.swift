import Foundation
import Synchronization

#if canImport(Glibc)
@preconcurrency import Glibc
#endif

/// Why the native metadata reader gave up on a file, an object or a message.
/// It never reaches users: the caller falls back to libhdf5, which gives today's answers and errors.
package struct NativeFormatError: Error, CustomStringConvertible {
    package let reason: String
    package init(_ reason: String) { self.reason = reason }
    package var description: String { reason }
}

/// A bounds-checked reader over bytes taken from the file: every read past the end throws.
struct ByteCursor {
    let bytes: [UInt8]
    var position: Int
    let end: Int

    init(_ bytes: [UInt8], from start: Int = 0, to end: Int? = nil) {
        self.bytes = bytes
        self.position = max(0, min(start, bytes.count))
        self.end = max(self.position, min(end ?? bytes.count, bytes.count))
    }

    var remaining: Int { end - position }

    mutating func skip(_ count: Int) throws {
        guard count >= 0, count <= remaining else { throw NativeFormatError("field runs past its structure") }
        position += count
    }

    mutating func u8() throws -> UInt8 {
        guard remaining >= 1 else { throw NativeFormatError("field runs past its structure") }
        defer { position += 1 }
        return bytes[position]
    }

    /// A little-endian unsigned number of `size` bytes (1 to 8).
    mutating func unsigned(_ size: Int) throws -> UInt64 {
        guard size >= 1, size <= 8, remaining >= size else { throw NativeFormatError("field runs past its structure") }
        var value: UInt64 = 0
        for index in stride(from: size - 1, through: 0, by: -1) {
            value = value << 8 | UInt64(bytes[position + index])
        }
        position += size
        return value
    }

    mutating func u16() throws -> Int { Int(try unsigned(2)) }
    mutating func u32() throws -> Int { Int(try unsigned(4)) }

    /// A count or size of `size` bytes that must fit an Int.
    mutating func count(_ size: Int) throws -> Int {
        let value = try unsigned(size)
        guard value <= UInt64(Int.max) else { throw NativeFormatError("implausible length") }
        return Int(value)
    }

    /// A cursor over the next `count` bytes (sharing the storage), skipped here.
    mutating func sub(_ count: Int) throws -> ByteCursor {
        guard count >= 0, count <= remaining else { throw NativeFormatError("field runs past its structure") }
        defer { position += count }
        return ByteCursor(bytes, from: position, to: position + count)
    }

    /// The bytes left, copied.
    var rest: [UInt8] { Array(bytes[position..<end]) }

    mutating func take(_ count: Int) throws -> [UInt8] {
        guard count >= 0, count <= remaining else { throw NativeFormatError("field runs past its structure") }
        defer { position += count }
        return Array(bytes[position..<(position + count)])
    }
}

/// Whether two names are the same bytes (libhdf5 compares names byte for byte; `==` on strings
/// compares by canonical equivalence).
@inline(__always)
func sameBytes<A: StringProtocol, B: StringProtocol>(_ a: A, _ b: B) -> Bool {
    let fast = a.utf8.withContiguousStorageIfAvailable { left in
        b.utf8.withContiguousStorageIfAvailable { right in
            left.count == right.count && (left.count == 0 || memcmp(left.baseAddress!, right.baseAddress!, left.count) == 0)
        }
    }
    if let fast, let decided = fast { return decided }
    return a.utf8.elementsEqual(b.utf8)
}

/// Whether `a` sorts before `b` byte by byte, a prefix first: `lexicographicallyPrecedes`, with memcmp.
@inline(__always)
func bytesPrecede(_ a: [UInt8], _ b: [UInt8]) -> Bool {
    let common = min(a.count, b.count)
    if common > 0 {
        let order = a.withUnsafeBytes { left in b.withUnsafeBytes { right in memcmp(left.baseAddress!, right.baseAddress!, common) } }
        if order != 0 { return order < 0 }
    }
    return a.count < b.count
}

/// An address as stored: relative to the superblock, all ones when undefined.
let undefinedAddress = UInt64.max

/// One message of an object header.
struct NativeMessage: Sendable {
    let type: Int
    let flags: UInt8
    /// The header chunk holding the message (shared by its messages), and where the body lies in it.
    let chunk: [UInt8]
    let start: Int
    let length: Int

    var isShared: Bool { flags & 0x02 != 0 }
    var cursor: ByteCursor { ByteCursor(chunk, from: start, to: start + length) }
    var firstByte: UInt8? { length > 0 ? chunk[start] : nil }
}

/// A link in a group, as stored.
enum NativeLinkTarget: Sendable, Equatable {
    case hard(UInt64)
    case soft(String)
    case external(file: String, object: String)
    case userDefined
}

struct NativeLink: Sendable {
    let name: String
    let target: NativeLinkTarget
}

/// An object header, parsed: its kind and its messages, plus the links of a group.
struct NativeObject: Sendable {
    let kind: Entry.Kind
    let messages: [NativeMessage]
    /// A group's links in storage order (name order), and by name.
    let links: [NativeLink]

    func message(_ type: Int) -> NativeMessage? { messages.first { $0.type == type } }

    /// The link of that name (compared byte for byte, as libhdf5 compares names).
    func link(named name: Substring) -> NativeLink? {
        links.first { sameBytes($0.name, name) }
    }
}

/// HDF5 file metadata read without libhdf5, for the shapes real checkpoints have: superblocks
/// 0 to 3, object headers 1 and 2, symbol-table and compact-link groups, and the messages that
/// describe contiguous and compact datasets and their attributes. Everything reachable from the
/// root is parsed when the file is opened; anything unsupported or inconsistent throws, and the
/// file is then described by libhdf5 as before.
package final class NativeMetadata: Sendable {
    enum Source: Sendable {
        case descriptor(Descriptor)
        case image([UInt8])
    }

    /// A file descriptor, closed when the last reader lets go of it.
    final class Descriptor: Sendable {
        let fd: Int32
        init(_ fd: Int32) { self.fd = fd }
        deinit { Glibc.close(fd) }
    }

    /// An object's first path in a depth-first walk, with a dataset's description made once.
    struct IndexedPath: Sendable {
        let address: UInt64
        let info: DatasetInfo?
    }

    let source: Source
    let fileSize: Int
    /// Absolute offset that relative addresses count from (the superblock's).
    let base: Int
    let offsetSize: Int
    let lengthSize: Int
    /// End of the file's address space, relative to the base.
    let endOfAddresses: UInt64
    package let rootAddress: UInt64
    let objects: [UInt64: NativeObject]
    /// Each object's first path in a depth-first walk, for looking paths up in one step.
    let paths: [String: IndexedPath]
    let limits: ReadLimits
    /// Answers worked out from the parsed metadata alone, shared by every file parsed alike (``ParseMemo``).
    let derived: Derived

    /// Answers that depend on nothing but the parsed metadata and the limits, kept once made.
    final class Derived: Sendable {
        /// The walk, when it was answered natively (``HDF5File/walk()``).
        let walk = Mutex<[Entry]?>(nil)
    }

    /// Most bytes of metadata held for one file.
    static let maxMetadataBytes = 256 << 20
    /// Largest single structure read (an object header chunk, a heap).
    static let maxBlock = 64 << 20

    /// Whether the environment asks for libhdf5 to describe files (`GRADSCOPE_HDF5_METADATA=libhdf5`).
    package static var disabledByEnvironment: Bool {
        guard let value = getenv("GRADSCOPE_HDF5_METADATA") else { return false }
        return String(cString: value).lowercased() == "libhdf5"
    }

    /// Parses the file at `path`, whose superblock is at `superblockOffset`; or, when `memo` holds a
    /// file whose parse consulted the very same bytes (``ParseMemo``), takes that parse.
    package convenience init(path: String, size: Int, superblockOffset: Int, limits: ReadLimits, memo: ParseMemo? = .shared) throws {
        let fd = Glibc.open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw NativeFormatError("cannot open") }
        try self.init(source: .descriptor(Descriptor(fd)), size: size, superblockOffset: superblockOffset, limits: limits, memo: memo)
    }

    /// Parses a file image held in memory.
    package convenience init(image: [UInt8], superblockOffset: Int, limits: ReadLimits, memo: ParseMemo? = nil) throws {
        try self.init(source: .image(image), size: image.count, superblockOffset: superblockOffset, limits: limits, memo: memo)
    }

    private convenience init(source: Source, size: Int, superblockOffset: Int, limits: ReadLimits, memo: ParseMemo?) throws {
        if let memo, let parsed = memo.parse(matching: source, fileSize: size, base: superblockOffset, limits: limits) {
            self.init(source: source, size: size, superblockOffset: superblockOffset, parsed: parsed, limits: limits)
            return
        }
        let record = memo == nil ? nil : ParseRecord()
        var parser = Parser(source: source, fileSize: size, base: superblockOffset, limits: limits)
        parser.record = record
        try parser.readSuperblock()
        try parser.parseTree()
        // Datasets are described once, here, by a reader without the index; the index keeps the answers.
        let structure = ParseMemo.Parsed(
            offsetSize: parser.offsetSize, lengthSize: parser.lengthSize, endOfAddresses: parser.endOfAddresses,
            rootAddress: parser.rootAddress, objects: parser.objects, paths: [:], derived: Derived())
        let bare = NativeMetadata(
            source: source, size: size, superblockOffset: superblockOffset, parsed: structure, limits: limits, record: record)
        var parsed = structure
        parsed.paths = bare.index()
        self.init(source: source, size: size, superblockOffset: superblockOffset, parsed: parsed, limits: limits)
        if let memo, let record { memo.keep(parsed, record: record, fileSize: size, base: superblockOffset, limits: limits, held: parser.heldBytes) }
    }

    private init(source: Source, size: Int, superblockOffset: Int, parsed: ParseMemo.Parsed, limits: ReadLimits, record: ParseRecord? = nil) {
        self.source = source
        self.fileSize = size
        self.base = superblockOffset
        self.offsetSize = parsed.offsetSize
        self.lengthSize = parsed.lengthSize
        self.endOfAddresses = parsed.endOfAddresses
        self.rootAddress = parsed.rootAddress
        self.objects = parsed.objects
        self.paths = parsed.paths
        self.limits = limits
        self.derived = parsed.derived
        self.record = record
    }

    /// While the file is parsed (describing its datasets for the index): where the bytes read are noted.
    let record: ParseRecord?

    func index() -> [String: IndexedPath] {
        let root = rootAddress
        var paths: [String: IndexedPath] = ["/": IndexedPath(address: root, info: nil)]
        // Every object has a path at least; more only when it is linked twice.
        paths.reserveCapacity(objects.count + 1)
        var pending: [(String, UInt64)] = [("/", root)]
        var seen: Set<UInt64> = [root]
        seen.reserveCapacity(objects.count)
        while let (path, address) = pending.popLast() {
            guard let group = objects[address], case .group = group.kind else { continue }
            for link in group.links {
                guard case .hard(let child) = link.target else { continue }
                let childPath = joinObjectPath(path, link.name)
                if paths[childPath] == nil {
                    var info: DatasetInfo?
                    if let object = objects[child], case .dataset = object.kind { info = try? datasetInfo(childPath, object: object) }
                    paths[childPath] = IndexedPath(address: child, info: info)
                }
                if seen.insert(child).inserted { pending.append((childPath, child)) }
            }
        }
        return paths
    }

    /// Reads `count` bytes at relative address `address`.
    func read(_ address: UInt64, count: Int) throws -> [UInt8] {
        do {
            let bytes = try Self.read(source, fileSize: fileSize, base: base, address: address, count: count)
            record?.add(bytes, 0..<count, at: base + Int(address))
            return bytes
        } catch {
            // A parse that met a failed read (an answer left out) is not one to give again.
            record?.failed = true
            throw error
        }
    }

    static func read(_ source: Source, fileSize: Int, base: Int, address: UInt64, count: Int) throws -> [UInt8] {
        let start = try absolute(address, count: count, base: base, fileSize: fileSize)
        return try readAbsolute(source, start: start, count: count)
    }

    /// The absolute offset of `count` bytes at relative `address`, checked to lie inside the file.
    static func absolute(_ address: UInt64, count: Int, base: Int, fileSize: Int) throws -> Int {
        guard address != undefinedAddress, address <= UInt64(Int.max), count >= 0, count <= maxBlock else {
            throw NativeFormatError("address or size out of range")
        }
        let (start, overflow) = base.addingReportingOverflow(Int(address))
        guard !overflow else { throw NativeFormatError("address out of range") }
        let (end, overflow2) = start.addingReportingOverflow(count)
        guard !overflow2, end <= fileSize else { throw NativeFormatError("structure lies beyond the end of the file") }
        return start
    }

    /// Reads `count` bytes at absolute offset `start`, already checked against the file's size.
    static func readAbsolute(_ source: Source, start: Int, count: Int) throws -> [UInt8] {
        let end = start + count
        switch source {
        case .image(let image):
            guard end <= image.count else { throw NativeFormatError("structure lies beyond the end of the image") }
            return Array(image[start..<end])
        case .descriptor(let descriptor):
            let fd = descriptor.fd
            // Filled by the reads, not zeroed first; a read that fails leaves nothing behind.
            return try [UInt8](unsafeUninitializedCapacity: count) { buffer, initialized in
                var done = 0
                while done < count {
                    let n = pread(fd, buffer.baseAddress! + done, count - done, off_t(start + done))
                    if n > 0 {
                        done += n
                    } else if n == 0 {
                        throw NativeFormatError("file ends early")
                    } else if errno != EINTR {
                        throw NativeFormatError("read failed")
                    }
                }
                initialized = count
            }
        }
    }

    /// What `HDF5File.kind(of:)` answers through libhdf5: `.some(nil)` when nothing is there,
    /// nil when the native reader leaves the question to libhdf5.
    func kind(of path: String) -> Entry.Kind?? {
        let components = path.split(separator: "/", omittingEmptySubsequences: true)
        if components.isEmpty { return .some(.group) }
        var current = rootAddress
        for (position, component) in components.enumerated() {
            guard component != ".", let object = objects[current] else { return nil }
            guard case .group = object.kind, let link = object.link(named: component) else { return .some(nil) }
            let isLast = position == components.count - 1
            switch link.target {
            case .hard(let address):
                if isLast { return objects[address].map { .some($0.kind) } }
                current = address
            case .soft: return .some(isLast ? .softLink(target: "?") : nil)
            case .external: return .some(isLast ? .externalLink(file: "?", object: "?") : nil)
            case .userDefined: return .some(isLast ? .userDefinedLink : nil)
            }
        }
        return nil
    }

    /// The description of the dataset at `path`, when it was made on open.
    package func knownInfo(_ path: String) -> DatasetInfo? {
        guard let index = paths.index(forKey: path), sameBytes(paths[index].key, path) else { return nil }
        return paths[index].value.info
    }

    /// The address of the object at `path`, following hard links only; nil when the path
    /// passes through anything else or names nothing (libhdf5 then answers, with its errors).
    func resolve(_ path: String) -> UInt64? {
        // String keys compare by canonical equivalence; libhdf5 compares bytes.
        if let index = paths.index(forKey: path), sameBytes(paths[index].key, path) { return paths[index].value.address }
        var current = rootAddress
        for component in path.split(separator: "/", omittingEmptySubsequences: true) {
            if component == "." { return nil }
            guard let object = objects[current], case .group = object.kind, let link = object.link(named: component),
                case .hard(let address) = link.target
            else { return nil }
            current = address
        }
        return current
    }
}

/// Parses the superblock and every object reachable from the root group.
struct Parser {
    let source: NativeMetadata.Source
    let fileSize: Int
    let base: Int
    let limits: ReadLimits
    var offsetSize = 8
    var lengthSize = 8
    var endOfAddresses: UInt64 = 0
    var rootAddress: UInt64 = 0
    var objects: [UInt64: NativeObject] = [:]
    var heldBytes = 0
    var linkCount = 0
    /// Where the bytes this parse consults are noted (``ParseMemo``): every structure's bytes, as
    /// far as the parse looks into them. Each read below notes what it consults.
    var record: ParseRecord?

    init(source: NativeMetadata.Source, fileSize: Int, base: Int, limits: ReadLimits) {
        self.source = source
        self.fileSize = fileSize
        self.base = base
        self.limits = limits
    }

    /// Aligned blocks of the file already read: object headers and symbol nodes lie together in
    /// libhdf5's metadata blocks (h5py's dataset headers 272 bytes apart), so one read serves many.
    var blocks: [Int: [UInt8]] = [:]
    static let blockSize = 4096

    /// `count` bytes at `address`, all of them consulted (noted in ``record``) unless `noting` is false
    /// (the caller then notes what it consults itself).
    mutating func read(_ address: UInt64, _ count: Int, noting: Bool = true) throws -> [UInt8] {
        let (bytes, start) = try readShared(address, count)
        if noting { record?.add(bytes, start..<(start + count), at: base + Int(address)) }
        return start == 0 && bytes.count == count ? bytes : Array(bytes[start..<(start + count)])
    }

    /// Notes bytes `range` of `buffer`, read from absolute offset `at`, as consulted. A caller of
    /// ``readShared(_:_:)`` or ``readUpTo(_:_:minimum:)`` (which read more than they consult) notes
    /// what it looks at itself.
    func consulted(_ buffer: [UInt8], _ range: Range<Int>, at start: Int) {
        record?.add(buffer, range, at: start)
    }

    /// `count` bytes at `address`, as a buffer and the offset in it where they start: a cached
    /// block when they lie inside one (no copy), else a buffer of their own.
    mutating func readShared(_ address: UInt64, _ count: Int) throws -> (bytes: [UInt8], start: Int) {
        let start = try NativeMetadata.absolute(address, count: count, base: base, fileSize: fileSize)
        let index = start / Self.blockSize
        guard count > 0, (start + count - 1) / Self.blockSize == index else {
            return (try NativeMetadata.readAbsolute(source, start: start, count: count), 0)
        }
        let blockStart = index * Self.blockSize
        let block: [UInt8]
        if let known = blocks[index] {
            block = known
        } else {
            if blocks.count >= 4096 { blocks.removeAll(keepingCapacity: true) }
            block = try NativeMetadata.readAbsolute(source, start: blockStart, count: min(Self.blockSize, fileSize - blockStart))
            blocks[index] = block
            // Headers keep their block alive: count every block read against the metadata limit.
            _ = try hold(block)
        }
        return (block, start - blockStart)
    }

    /// Reads what fits of `count` bytes at `address` (at least `minimum`), for structures whose size is
    /// only known once their start is read.
    mutating func readUpTo(_ address: UInt64, _ count: Int, minimum: Int) throws -> [UInt8] {
        let (bytes, start, available) = try readUpToShared(address, count, minimum: minimum)
        return start == 0 && bytes.count == available ? bytes : Array(bytes[start..<(start + available)])
    }

    /// The same without a copy: a buffer, where the bytes start in it, and how many were read.
    mutating func readUpToShared(_ address: UInt64, _ count: Int, minimum: Int) throws -> (bytes: [UInt8], start: Int, count: Int) {
        guard address != undefinedAddress, address <= UInt64(Int.max) else { throw NativeFormatError("address out of range") }
        let (start, overflow) = base.addingReportingOverflow(Int(address))
        guard !overflow, start < fileSize else { throw NativeFormatError("structure lies beyond the end of the file") }
        var available = min(count, fileSize - start)
        guard available >= minimum else { throw NativeFormatError("structure lies beyond the end of the file") }
        // Stay inside one block when the minimum fits there: the caller reads on when it needs more.
        let inBlock = Self.blockSize - start % Self.blockSize
        if inBlock >= minimum { available = min(available, inBlock) }
        let (bytes, offset) = try readShared(address, available)
        return (bytes, offset, available)
    }

    mutating func readSuperblock() throws {
        let head = try readUpTo(0, 256, minimum: 24)
        guard Array(head.prefix(8)) == FileProbe.signature else { throw NativeFormatError("no signature") }
        var cursor = ByteCursor(head, from: 8)
        let version = try cursor.u8()
        switch version {
        case 0, 1:
            try cursor.skip(4)  // free-space, root symbol table entry and shared-header versions, reserved
            offsetSize = Int(try cursor.u8())
            lengthSize = Int(try cursor.u8())
            try cursor.skip(1)
            guard [2, 4, 8].contains(offsetSize), [2, 4, 8].contains(lengthSize) else { throw NativeFormatError("field sizes") }
            let leafK = try cursor.u16()
            let internalK = try cursor.u16()
            guard leafK > 0, internalK > 0 else { throw NativeFormatError("B-tree K") }
            try cursor.skip(4)  // consistency flags
            if version == 1 { try cursor.skip(4) }
            _ = try address(&cursor)  // base address: libhdf5 uses the superblock's position
            _ = try address(&cursor)  // free-space info
            endOfAddresses = try address(&cursor)
            _ = try address(&cursor)  // driver info
            // Root group symbol table entry: name offset, object header address, cache type...
            _ = try address(&cursor)
            rootAddress = try address(&cursor)
            consulted(head, 0..<cursor.position, at: base)
        case 2, 3:
            offsetSize = Int(try cursor.u8())
            lengthSize = Int(try cursor.u8())
            try cursor.skip(1)  // flags
            guard [2, 4, 8].contains(offsetSize), [2, 4, 8].contains(lengthSize) else { throw NativeFormatError("field sizes") }
            _ = try address(&cursor)  // base
            _ = try address(&cursor)  // extension
            endOfAddresses = try address(&cursor)
            rootAddress = try address(&cursor)
            let checked = cursor.position
            let stored = try cursor.u32()
            guard UInt32(stored) == lookup3(head, 0..<checked) else { throw NativeFormatError("superblock checksum") }
            consulted(head, 0..<cursor.position, at: base)
        default:
            throw NativeFormatError("superblock version \(version)")
        }
        guard rootAddress != undefinedAddress, endOfAddresses != undefinedAddress else { throw NativeFormatError("root address") }
    }

    func address(_ cursor: inout ByteCursor) throws -> UInt64 {
        let value = try cursor.unsigned(offsetSize)
        let allOnes: UInt64 = offsetSize == 8 ? UInt64.max : (UInt64(1) << UInt64(8 * offsetSize)) - 1
        return value == allOnes ? undefinedAddress : value
    }

    /// Parses the root and everything below it, depth first, each object once.
    mutating func parseTree() throws {
        var pending: [(address: UInt64, depth: Int)] = [(rootAddress, 0)]
        var seen: Set<UInt64> = [rootAddress]
        while let (address, depth) = pending.popLast() {
            let object = try parseObject(address)
            guard case .group = object.kind else {
                objects[address] = object
                continue
            }
            guard depth <= limits.maxDepth else { throw NativeFormatError("nesting beyond the walk's limit") }
            objects[address] = object
            for link in object.links {
                guard case .hard(let child) = link.target, !seen.contains(child) else { continue }
                guard seen.count < limits.maxObjects else { throw NativeFormatError("more objects than the walk's limit") }
                seen.insert(child)
                pending.append((child, depth + 1))
            }
        }
        if case .group = objects[rootAddress]?.kind {} else { throw NativeFormatError("the root is not a group") }
    }

    mutating func parseObject(_ address: UInt64) throws -> NativeObject {
        let messages = try parseHeader(address)
        var symbolTable = false, linkInfo = false, dataspace = false, datatype = false
        for message in messages {
            switch message.type {
            case 17: symbolTable = true
            case 2: linkInfo = true
            case 1: dataspace = true
            case 3: datatype = true
            default: break
            }
        }
        if symbolTable || linkInfo {
            guard !(symbolTable && linkInfo) else { throw NativeFormatError("group with both a symbol table and link info") }
            let links = try symbolTable ? symbolTableLinks(messages) : compactLinks(messages)
            linkCount += links.count
            guard links.count <= limits.maxObjects, linkCount <= limits.maxObjects else { throw NativeFormatError("too many links") }
            for link in links {
                guard !link.name.isEmpty, link.name != ".", !link.name.utf8.contains(0x2f) else { throw NativeFormatError("link name") }
            }
            // A symbol table's names are checked to be strictly increasing; link messages could repeat one.
            if !symbolTable, Set(links.map { Array($0.name.utf8) }).count != links.count { throw NativeFormatError("two links of one name") }
            return NativeObject(kind: .group, messages: messages, links: links)
        }
        if datatype && dataspace { return NativeObject(kind: .dataset, messages: messages, links: []) }
        if datatype { return NativeObject(kind: .namedType, messages: messages, links: []) }
        throw NativeFormatError("object of unknown type")
    }

    // MARK: Object headers

    mutating func parseHeader(_ address: UInt64) throws -> [NativeMessage] {
        // One read usually holds the whole first chunk of a version 1 header (h5py's are a few hundred bytes).
        guard address != undefinedAddress, address <= UInt64(Int.max), base.addingReportingOverflow(Int(address)).overflow == false else {
            throw NativeFormatError("address out of range")
        }
        let absolute = base + Int(address)
        let inBlock = min(Self.blockSize - absolute % Self.blockSize, fileSize - absolute)
        let (prefix, offset) = try readShared(address, inBlock >= 16 ? inBlock : 16)
        var cursor = ByteCursor(prefix, from: offset)
        if cursor.remaining >= 4, prefix[offset] == 0x4f, prefix[offset + 1] == 0x48, prefix[offset + 2] == 0x44, prefix[offset + 3] == 0x52 {
            return try parseHeaderV2(address)
        }
        guard try cursor.u8() == 1 else { throw NativeFormatError("object header version") }
        try cursor.skip(1)
        let declared = try cursor.u16()
        try cursor.skip(4)  // reference count
        let size = try cursor.u32()
        consulted(prefix, offset..<cursor.position, at: absolute)
        var messages: [NativeMessage] = []
        messages.reserveCapacity(declared)
        var chunks: [(UInt64, Int)] = [(address &+ 16, size)]
        var visited: Set<UInt64> = []
        var attributeValues = false
        while let (chunkAddress, chunkSize) = chunks.popLast() {
            guard visited.insert(chunkAddress).inserted, visited.count <= 10_000 else { throw NativeFormatError("continuation cycle") }
            var body: ByteCursor
            // Where the chunk's first byte lies in the file.
            let chunkStart: Int
            if chunkAddress == address &+ 16, chunkSize <= prefix.count - offset - 16 {
                body = ByteCursor(prefix, from: offset + 16, to: offset + 16 + chunkSize)
                chunkStart = absolute + 16 - (offset + 16)
            } else {
                body = ByteCursor(try hold(read(chunkAddress, chunkSize, noting: false)))
                chunkStart = base + Int(chunkAddress)
            }
            while body.remaining >= 8 {
                let messageStart = body.position
                let type = try body.u16()
                let length = try body.u16()
                let flags = try body.u8()
                try body.skip(3)
                // Each message's header and body are consulted, but an attribute's body: its value is read
                // later, from the file it belongs to (a parse given again re-reads such headers, ``ParseMemo``).
                if record != nil, body.remaining >= length {
                    let end = type == 12 ? body.position : body.position + length
                    consulted(body.bytes, messageStart..<end, at: chunkStart + messageStart)
                    if type == 12 { attributeValues = true }
                }
                if type == 0x10 {
                    var data = try body.sub(length)
                    chunks.insert((try self.address(&data), try data.count(lengthSize)), at: 0)
                } else {
                    try body.skip(length)
                }
                messages.append(NativeMessage(type: type, flags: flags, chunk: body.bytes, start: body.position - length, length: length))
                guard messages.count <= 65_535 else { throw NativeFormatError("too many messages") }
            }
            guard body.remaining == 0 else { throw NativeFormatError("object header chunk has trailing bytes") }
        }
        guard messages.count == declared else { throw NativeFormatError("object header message count") }
        if attributeValues { record?.rereadHeaders.append(address) }
        return messages
    }

    mutating func parseHeaderV2(_ address: UInt64) throws -> [NativeMessage] {
        let prefix = try readUpTo(address, 40, minimum: 40)
        var cursor = ByteCursor(prefix, from: 4)
        guard try cursor.u8() == 2 else { throw NativeFormatError("object header version") }
        let flags = try cursor.u8()
        guard flags & 0xc0 == 0 else { throw NativeFormatError("object header flags") }
        if flags & 0x20 != 0 { try cursor.skip(16) }
        if flags & 0x10 != 0 { try cursor.skip(4) }
        let size = try cursor.count(1 << Int(flags & 0x03))
        let start = cursor.position
        let (total, overflow) = start.addingReportingOverflow(size)
        guard !overflow, total <= NativeMetadata.maxBlock - 4 else { throw NativeFormatError("object header size") }
        let chunk = try hold(read(address, total + 4))
        try verifyChecksum(chunk)
        let tracked = flags & 0x04 != 0
        var messages: [NativeMessage] = []
        var chunks: [(UInt64, Int)] = []
        try parseV2Messages(chunk, from: start, to: total, tracked: tracked, into: &messages, continuations: &chunks)
        var visited: Set<UInt64> = [address]
        while !chunks.isEmpty {
            let (chunkAddress, chunkSize) = chunks.removeFirst()
            guard visited.insert(chunkAddress).inserted, visited.count <= 10_000 else { throw NativeFormatError("continuation cycle") }
            guard chunkSize >= 8 else { throw NativeFormatError("continuation size") }
            let block = try hold(read(chunkAddress, chunkSize))
            guard Array(block.prefix(4)) == [0x4f, 0x43, 0x48, 0x4b] else { throw NativeFormatError("continuation signature") }
            try verifyChecksum(block)
            try parseV2Messages(block, from: 4, to: chunkSize - 4, tracked: tracked, into: &messages, continuations: &chunks)
        }
        return messages
    }

    func verifyChecksum(_ block: [UInt8]) throws {
        guard block.count >= 4 else { throw NativeFormatError("checksum") }
        var cursor = ByteCursor(block, from: block.count - 4)
        guard UInt32(try cursor.u32()) == lookup3(block, 0..<(block.count - 4)) else { throw NativeFormatError("checksum mismatch") }
    }

    func parseV2Messages(
        _ block: [UInt8], from start: Int, to end: Int, tracked: Bool, into messages: inout [NativeMessage],
        continuations: inout [(UInt64, Int)]
    ) throws {
        var body = ByteCursor(block, from: start, to: end)
        let headerSize = tracked ? 6 : 4
        while body.remaining >= headerSize {
            let type = Int(try body.u8())
            let length = try body.u16()
            let flags = try body.u8()
            if tracked { try body.skip(2) }
            if type == 0x10 {
                var data = try body.sub(length)
                continuations.append((try address(&data), try data.count(lengthSize)))
            } else {
                try body.skip(length)
            }
            messages.append(NativeMessage(type: type, flags: flags, chunk: block, start: body.position - length, length: length))
            guard messages.count <= 65_535 else { throw NativeFormatError("too many messages") }
        }
    }

    mutating func hold(_ bytes: [UInt8]) throws -> [UInt8] {
        try hold(count: bytes.count)
        return bytes
    }

    /// Counts `count` bytes of metadata held against the limit.
    mutating func hold(count: Int) throws {
        heldBytes += count
        guard heldBytes <= NativeMetadata.maxMetadataBytes else { throw NativeFormatError("metadata larger than the limit") }
    }

    // MARK: Groups

    /// A group's links from its symbol table: a v1 B-tree of symbol nodes, names in a local heap.
    mutating func symbolTableLinks(_ messages: [NativeMessage]) throws -> [NativeLink] {
        guard let message = messages.first(where: { $0.type == 17 }), !message.isShared else { throw NativeFormatError("symbol table") }
        var cursor = message.cursor
        let tree = try address(&cursor)
        let heapAddress = try address(&cursor)
        let heap = try localHeap(heapAddress)
        var links: [NativeLink] = []
        var visited: Set<UInt64> = []
        var names: [[UInt8]] = []
        try collectSymbols(tree, level: nil, heap: heap, visited: &visited, into: &links, names: &names)
        return links
    }

    /// A local heap's data segment.
    mutating func localHeap(_ address: UInt64) throws -> [UInt8] {
        let head = try read(address, 8 + 2 * lengthSize + offsetSize)
        guard Array(head.prefix(4)) == [0x48, 0x45, 0x41, 0x50], head[4] == 0 else { throw NativeFormatError("local heap signature") }
        var cursor = ByteCursor(head, from: 8)
        let size = try cursor.count(lengthSize)
        _ = try cursor.unsigned(lengthSize)
        let data = try self.address(&cursor)
        return try hold(read(data, size))
    }

    /// Collects the symbols under a B-tree node. libhdf5 finds a name by binary search over the
    /// keys (child `i` holds the names after key `i` up to key `i + 1`) and then over a symbol
    /// node's sorted entries; a tree that breaks that order lists names libhdf5 cannot look up,
    /// so it is refused.
    mutating func collectSymbols(
        _ node: UInt64, level: Int?, heap: [UInt8], visited: inout Set<UInt64>, into links: inout [NativeLink], names: inout [[UInt8]]
    ) throws {
        guard visited.insert(node).inserted, visited.count <= limits.maxObjects else { throw NativeFormatError("B-tree cycle") }
        let headerSize = 8 + 2 * offsetSize
        var (block, origin, available) = try readUpToShared(node, 1024, minimum: headerSize)
        guard block[origin] == 0x54, block[origin + 1] == 0x52, block[origin + 2] == 0x45, block[origin + 3] == 0x45, block[origin + 4] == 0 else {
            throw NativeFormatError("B-tree node signature")
        }
        let nodeLevel = Int(block[origin + 5])
        if let level, nodeLevel != level { throw NativeFormatError("B-tree level") }
        var cursor = ByteCursor(block, from: origin + 6, to: origin + available)
        let entries = try cursor.u16()
        let size = headerSize + (entries + 1) * lengthSize + entries * offsetSize
        if size > available { (block, origin, available) = (try read(node, size), 0, size) }
        consulted(block, origin..<(origin + size), at: base + Int(node))
        try hold(count: available)
        var entryCursor = ByteCursor(block, from: origin + headerSize, to: origin + size)
        var keys: [[UInt8]] = [try heapString(heap, at: entryCursor.count(lengthSize))]
        var childAddresses: [UInt64] = []
        for _ in 0..<entries {
            childAddresses.append(try address(&entryCursor))
            keys.append(try heapString(heap, at: entryCursor.count(lengthSize)))
        }
        for index in keys.indices.dropFirst() where bytesPrecede(keys[index], keys[index - 1]) {
            throw NativeFormatError("B-tree keys out of order")
        }
        for (index, child) in childAddresses.enumerated() {
            let first = names.count
            if nodeLevel > 0 {
                try collectSymbols(child, level: nodeLevel - 1, heap: heap, visited: &visited, into: &links, names: &names)
            } else {
                try readSymbolNode(child, heap: heap, visited: &visited, into: &links, names: &names)
            }
            for name in names[first...] {
                guard bytesPrecede(keys[index], name), !bytesPrecede(keys[index + 1], name) else {
                    throw NativeFormatError("symbol outside its B-tree keys")
                }
            }
        }
    }

    mutating func readSymbolNode(
        _ address: UInt64, heap: [UInt8], visited: inout Set<UInt64>, into links: inout [NativeLink], names: inout [[UInt8]]
    ) throws {
        guard visited.insert(address).inserted else { throw NativeFormatError("symbol node seen twice") }
        var (block, origin, available) = try readUpToShared(address, 1024, minimum: 8)
        guard block[origin] == 0x53, block[origin + 1] == 0x4e, block[origin + 2] == 0x4f, block[origin + 3] == 0x44, block[origin + 4] == 1 else {
            throw NativeFormatError("symbol node signature")
        }
        var cursor = ByteCursor(block, from: origin + 6, to: origin + available)
        let count = try cursor.u16()
        let size = 8 + count * (2 * offsetSize + 24)
        if size > available { (block, origin, available) = (try read(address, size), 0, size) }
        consulted(block, origin..<(origin + size), at: base + Int(address))
        try hold(count: available)
        var entries = ByteCursor(block, from: origin + 8, to: origin + size)
        var previous: [UInt8]?
        for _ in 0..<count {
            let nameOffset = try entries.count(offsetSize)
            let header = try self.address(&entries)
            let cacheType = try entries.u32()
            try entries.skip(4)
            var scratch = try entries.sub(16)
            let nameBytes = try heapString(heap, at: nameOffset)
            if let previous, !bytesPrecede(previous, nameBytes) { throw NativeFormatError("symbols out of order") }
            previous = nameBytes
            names.append(nameBytes)
            let name = String(decoding: nameBytes, as: UTF8.self)
            if cacheType == 2 {
                let value = try heapString(heap, at: try scratch.u32())
                let target: NativeLinkTarget =
                    value.count + 1 > 1 << 16 ? .soft("?") : .soft(String(decoding: value, as: UTF8.self))
                links.append(NativeLink(name: name, target: target))
            } else {
                guard header != undefinedAddress else { throw NativeFormatError("hard link without an address") }
                links.append(NativeLink(name: name, target: .hard(header)))
            }
            guard links.count <= limits.maxObjects else { throw NativeFormatError("too many links") }
        }
    }

    /// The NUL-terminated string at `offset` of a local heap.
    /// Names longer than 4 KiB (none that checkpoints hold) go to libhdf5, so that a heap without
    /// terminators cannot make the search for each of many names run through all of it.
    func heapString(_ heap: [UInt8], at offset: Int) throws -> [UInt8] {
        guard offset >= 0, offset < heap.count, let nul = heap[offset..<min(heap.count, offset + 4096)].firstIndex(of: 0) else {
            throw NativeFormatError("name outside its heap, or longer than 4 KiB")
        }
        return Array(heap[offset..<nul])
    }

    /// A new-style group's links, held in its header (a link-info message without a fractal heap).
    func compactLinks(_ messages: [NativeMessage]) throws -> [NativeLink] {
        guard let info = messages.first(where: { $0.type == 2 }), !info.isShared else { throw NativeFormatError("link info") }
        var cursor = info.cursor
        guard try cursor.u8() == 0 else { throw NativeFormatError("link info version") }
        let flags = try cursor.u8()
        guard flags & 0xfc == 0 else { throw NativeFormatError("link info flags") }
        if flags & 0x01 != 0 { try cursor.skip(8) }
        guard try address(&cursor) == undefinedAddress else { throw NativeFormatError("dense link storage") }
        var links: [NativeLink] = []
        for message in messages where message.type == 6 {
            guard !message.isShared else { throw NativeFormatError("shared link message") }
            links.append(try parseLink(message.cursor))
        }
        return links
    }

    func parseLink(_ body: ByteCursor) throws -> NativeLink {
        var cursor = body
        guard try cursor.u8() == 1 else { throw NativeFormatError("link message version") }
        let flags = try cursor.u8()
        guard flags & 0xe0 == 0 else { throw NativeFormatError("link message flags") }
        var type = 0
        if flags & 0x08 != 0 { type = Int(try cursor.u8()) }
        if flags & 0x04 != 0 { try cursor.skip(8) }
        if flags & 0x10 != 0 {
            guard try cursor.u8() <= 1 else { throw NativeFormatError("link name encoding") }
        }
        let nameLength = try cursor.count(1 << Int(flags & 0x03))
        guard nameLength > 0 else { throw NativeFormatError("empty link name") }
        let raw = try cursor.take(nameLength)
        guard !raw.contains(0) else { throw NativeFormatError("NUL in a link name") }
        let name = String(decoding: raw, as: UTF8.self)
        switch type {
        case 0:
            let target = try address(&cursor)
            guard target != undefinedAddress else { throw NativeFormatError("hard link without an address") }
            return NativeLink(name: name, target: .hard(target))
        case 1:
            let length = try cursor.u16()
            let value = try cursor.take(length)
            return NativeLink(name: name, target: .soft(String(decoding: value.prefix { $0 != 0 }, as: UTF8.self)))
        case 64:
            let length = try cursor.u16()
            let value = try cursor.take(length)
            guard length >= 3, value[0] == 0 else { throw NativeFormatError("external link value") }
            let rest = value[1...]
            guard let fileEnd = rest.firstIndex(of: 0) else { throw NativeFormatError("external link file") }
            let objectPart = value[(fileEnd + 1)...]
            guard let objectEnd = objectPart.firstIndex(of: 0) else { throw NativeFormatError("external link object") }
            let file = String(decoding: value[1..<fileEnd], as: UTF8.self)
            let object = String(decoding: value[(fileEnd + 1)..<objectEnd], as: UTF8.self)
            return NativeLink(name: name, target: .external(file: file, object: object))
        default:
            throw NativeFormatError("user-defined link")
        }
    }
}

/// Bob Jenkins' lookup3 `hashlittle` with initial value 0: HDF5's metadata checksum.
func lookup3(_ bytes: [UInt8], _ range: Range<Int>) -> UInt32 {
    @inline(__always) func rot(_ x: UInt32, _ k: UInt32) -> UInt32 { (x << k) | (x >> (32 - k)) }
    var length = range.count
    var a = 0xdead_beef &+ UInt32(truncatingIfNeeded: length)
    var b = a
    var c = a
    var k = range.lowerBound
    @inline(__always) func word(_ at: Int, _ count: Int) -> UInt32 {
        var value: UInt32 = 0
        for index in stride(from: count - 1, through: 0, by: -1) { value = value << 8 | UInt32(bytes[at + index]) }
        return value
    }
    while length > 12 {
        a &+= word(k, 4)
        b &+= word(k + 4, 4)
        c &+= word(k + 8, 4)
        a &-= c
        a ^= rot(c, 4)
        c &+= b
        b &-= a
        b ^= rot(a, 6)
        a &+= c
        c &-= b
        c ^= rot(b, 8)
        b &+= a
        a &-= c
        a ^= rot(c, 16)
        c &+= b
        b &-= a
        b ^= rot(a, 19)
        a &+= c
        c &-= b
        c ^= rot(b, 4)
        b &+= a
        length -= 12
        k += 12
    }
    if length == 0 { return c }
    a &+= word(k, min(length, 4))
    if length > 4 { b &+= word(k + 4, min(length - 4, 4)) }
    if length > 8 { c &+= word(k + 8, length - 8) }
    c ^= b
    c &-= rot(b, 14)
    a ^= c
    a &-= rot(c, 11)
    b ^= a
    b &-= rot(a, 25)
    c ^= b
    c &-= rot(b, 16)
    a ^= c
    a &-= rot(c, 4)
    b ^= a
    b &-= rot(a, 14)
    c ^= b
    c &-= rot(b, 24)
    return c
}
