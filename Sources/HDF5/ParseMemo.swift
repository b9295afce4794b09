import Foundation
import Synchronization

#if canImport(Glibc)
@preconcurrency import Glibc
#endif

/// The bytes a parse of a file's metadata consulted: each range (absolute offsets) the parser looked
/// into, with the bytes it found there. Written by the one thread parsing the file.
final class ParseRecord: @unchecked Sendable {
    private(set) var starts: [Int] = []
    private(set) var counts: [Int] = []
    private(set) var bytes: [UInt8] = []
    /// A read failed during the parse (an answer was left out for it), or an attribute's value was
    /// read: the parse is not kept.
    var failed = false
    /// The (version 1) object headers holding attributes, whose values are not noted as consulted:
    /// a file given this parse has these headers read again, for its own values.
    var rereadHeaders: [UInt64] = []

    /// Notes bytes `range` of `buffer`, found at absolute offset `start`.
    func add(_ buffer: [UInt8], _ range: Range<Int>, at start: Int) {
        guard !range.isEmpty else { return }
        starts.append(start)
        counts.append(range.count)
        bytes.append(contentsOf: buffer[range])
    }
}

/// Parses kept to be given again to files whose metadata is the same: the saves of one model,
/// written by the same code, lay their metadata out alike, byte for byte, and differ only in their
/// tensors' values.
///
/// A parse is a function of the bytes it consults (every read below is noted where it is made: each
/// structure's bytes as far as the parser looks into them), of the file's size (its reads are
/// checked against it), of where the superblock lies and of the limits. So a file of the same size,
/// superblock offset and limits, holding the same bytes at every range a kept parse consulted,
/// parses to the same objects, paths and answers: it is given that parse instead, after its ranges
/// are read and compared (a few dozen reads of a few KiB, against the parse's hundreds of
/// allocations per object). Anything else, one byte differing, is parsed afresh. Attribute values
/// are the one part of a header the parse does not consult (the step a save records differs from
/// save to save): the headers holding attributes are parsed again from the file given the parse,
/// so that their messages are that file's bytes. Only the structure is shared: reads made later
/// (attribute values, chunk indexes) read the file itself.
package final class ParseMemo: Sendable {
    /// The structure a parse found, shared by the files given it.
    struct Parsed: Sendable {
        var offsetSize: Int
        var lengthSize: Int
        var endOfAddresses: UInt64
        var rootAddress: UInt64
        var objects: [UInt64: NativeObject]
        var paths: [String: NativeMetadata.IndexedPath]
        var derived: NativeMetadata.Derived
    }

    /// A kept parse and what it consulted, sorted by offset.
    final class Kept: Sendable {
        let parsed: Parsed
        let fileSize: Int
        let base: Int
        let limits: ReadLimits
        /// The headers to read again from a file given this parse (``ParseRecord/rereadHeaders``).
        let rereadHeaders: [UInt64]
        let starts: [Int]
        let counts: [Int]
        /// Where each range's bytes begin in `bytes`.
        let positions: [Int]
        let bytes: [UInt8]

        init(parsed: Parsed, record: ParseRecord, fileSize: Int, base: Int, limits: ReadLimits) {
            self.parsed = parsed
            self.fileSize = fileSize
            self.base = base
            self.limits = limits
            rereadHeaders = record.rereadHeaders
            var positions = [Int](repeating: 0, count: record.starts.count)
            var position = 0
            for index in record.counts.indices {
                positions[index] = position
                position += record.counts[index]
            }
            let order = record.starts.indices.sorted { record.starts[$0] < record.starts[$1] }
            starts = order.map { record.starts[$0] }
            counts = order.map { record.counts[$0] }
            self.positions = order.map { positions[$0] }
            bytes = record.bytes
        }

        /// The parse, its headers holding attributes read again from `source` (whose consulted bytes
        /// match): the same messages, their bodies this file's. Nil when one cannot be read.
        func reread(from source: NativeMetadata.Source) -> Parsed? {
            guard !rereadHeaders.isEmpty else { return parsed }
            var result = parsed
            var parser = Parser(source: source, fileSize: fileSize, base: base, limits: limits)
            parser.offsetSize = parsed.offsetSize
            parser.lengthSize = parsed.lengthSize
            for address in rereadHeaders {
                guard let object = result.objects[address], let messages = try? parser.parseHeader(address),
                    messages.count == object.messages.count
                else { return nil }
                result.objects[address] = NativeObject(kind: object.kind, messages: messages, links: object.links)
            }
            return result
        }

        /// Whether `source` holds the same bytes at every range consulted. From a file, the ranges
        /// lying within ``gap`` bytes of each other are read together (at most ``span`` bytes a read).
        func matches(_ source: NativeMetadata.Source) -> Bool {
            if case .image(let image) = source {
                // Compared where they lie.
                guard image.count == fileSize else { return false }
                return image.withUnsafeBytes { image in
                    bytes.withUnsafeBytes { kept in
                        starts.indices.allSatisfy { index in
                            memcmp(image.baseAddress! + starts[index], kept.baseAddress! + positions[index], counts[index]) == 0
                        }
                    }
                }
            }
            var index = 0
            while index < starts.count {
                // The ranges read together: from this one on, while the next begins near the end so far.
                let first = starts[index]
                var end = first + counts[index]
                var last = index + 1
                while last < starts.count, starts[last] <= end + Self.gap, max(end, starts[last] + counts[last]) - first <= Self.span {
                    end = max(end, starts[last] + counts[last])
                    last += 1
                }
                guard first >= 0, end <= fileSize, let read = try? NativeMetadata.readAbsolute(source, start: first, count: end - first)
                else { return false }
                let same = read.withUnsafeBytes { read in
                    bytes.withUnsafeBytes { kept in
                        (index..<last).allSatisfy { range in
                            memcmp(read.baseAddress! + (starts[range] - first), kept.baseAddress! + positions[range], counts[range]) == 0
                        }
                    }
                }
                guard same else { return false }
                index = last
            }
            return true
        }

        /// Ranges lying within this many bytes of each other are read together.
        static let gap = 4096
        /// The longest read made.
        static let span = 256 << 10
    }

    /// The parses kept, the latest first.
    private let kept = Mutex<[Kept]>([])
    /// How many files were given a kept parse.
    private let given = Atomic<Int>(0)

    /// How many files were given a kept parse so far.
    package var hits: Int { given.load(ordering: .relaxed) }

    /// How many parses are kept: a run's saves, or two kinds of files taken in turn.
    static let capacity = 2
    /// The most metadata a kept parse may hold (the objects' header blocks); larger ones are not kept.
    static let maxHeldBytes = 8 << 20

    package init() {}

    /// The memo every file opened from a path consults.
    package static let shared = ParseMemo()

    /// A kept parse whose consulted bytes `source` holds too, for a file of that size, superblock offset and limits.
    func parse(matching source: NativeMetadata.Source, fileSize: Int, base: Int, limits: ReadLimits) -> Parsed? {
        let candidates = kept.withLock { $0 }
        for candidate in candidates
        where candidate.fileSize == fileSize && candidate.base == base && candidate.limits == limits && candidate.matches(source) {
            guard let parsed = candidate.reread(from: source) else { continue }
            given.add(1, ordering: .relaxed)
            return parsed
        }
        return nil
    }

    /// Keeps a parse that consulted what `record` noted (unless a read failed, or it holds too much).
    func keep(_ parsed: Parsed, record: ParseRecord, fileSize: Int, base: Int, limits: ReadLimits, held: Int) {
        guard !record.failed, held <= Self.maxHeldBytes, record.bytes.count <= Self.maxHeldBytes else { return }
        let entry = Kept(parsed: parsed, record: record, fileSize: fileSize, base: base, limits: limits)
        kept.withLock { kept in
            kept.insert(entry, at: 0)
            if kept.count > Self.capacity { kept.removeLast(kept.count - Self.capacity) }
        }
    }
}
