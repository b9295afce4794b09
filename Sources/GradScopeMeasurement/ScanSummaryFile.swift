import Foundation
import GradScopeModel
import GradScopeSources

#if canImport(Glibc)
import Glibc
#endif

/// Which saves one shard of a scan measures: the run's described saves (every model of its
/// folder, the run of the newest files first, each in step order) numbered one after another
/// from 0, and shard `index` of `count` the saves from `index·G/count` up to `(index+1)·G/count`
/// (G saves in all), so that the shards cover every save once and differ in size by one save at
/// most. Every shard describes the whole run (metadata only) and so numbers the saves alike.
public struct ShardSpec: Sendable, Equatable, CustomStringConvertible {
    public var index: Int
    public var count: Int

    public init(index: Int, count: Int) {
        self.index = index
        self.count = count
    }

    /// `I/N` with 0 ≤ I < N.
    public init?(parsing text: String) {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 2, let index = Int(parts[0]), let count = Int(parts[1]), count >= 1, index >= 0, index < count else { return nil }
        self.init(index: index, count: count)
    }

    public var description: String { "\(index)/\(count)" }

    /// The shard's saves among `total`.
    public func range(of total: Int) -> Range<Int> { (index * total / count)..<((index + 1) * total / count) }
}

/// Why summary files cannot be merged (or one written): one line, naming the file.
public struct ScanSummaryError: Error, CustomStringConvertible, Sendable {
    public var file: String
    public var reason: String

    public init(file: String, reason: String) {
        self.file = file
        self.reason = reason
    }

    public var description: String { "\(file): \(reason)" }
}

/// The head of a scan summary file: what the file is, of which run, and the run's metadata.
package struct ScanSummaryHeader: Codable, Sendable {
    package struct Model: Codable, Sendable {
        /// The run as described: its source, notes, skipped items (of describing) and training log.
        package var source: String
        package var count: Int
        package var skipped: [SkippedItem]
        package var notes: [String]
        package var trainingLog: [TrainingLogEntry]?
    }

    package var gradscopeVersion: String
    /// The path the run was scanned as.
    package var run: String
    /// A hash over every described save of every model: its name relative to the run, its file's
    /// size and its step, in order. Shards of one run have the same.
    package var runDigest: String
    package var shard: Int
    package var shards: Int
    /// The reading and measuring options (the same for every shard of one scan).
    package var settings: String
    package var deadActivationFraction: Double
    package var models: [Model]
}

/// A scan summary file (`gradscope scan RUN --shard I/N --summary OUT`): a compact, versioned,
/// self-describing record of what one shard measured, from which `gradscope merge` gives what a
/// scan of the whole run gives. See docs/STATISTICS.md, "Shards and merging".
///
/// Layout: the magic bytes `GSSCAN`, the format version (2 bytes, little-endian), then blocks, each
/// a kind byte (`H` header, `S` save, `E` end), its length (8 bytes), its bytes in ``BinaryCoding``
/// and their FNV-1a hash (8 bytes): one header (``ScanSummaryHeader``), one block per save of the
/// shard in order (its model, its index among the model's saves, and its ``SaveSummary`` or the
/// item skipped in its place), then an end block holding the number of save blocks. A file that
/// stops before its end block is cut; a block whose hash does not match is corrupt.
public enum ScanSummaryFile {
    public static let formatVersion: UInt16 = 1
    public static let magic: [UInt8] = Array("GSSCAN".utf8)
    /// The suffix of a summary file's default name.
    public static let suffix = ".gssum"

    package struct Entry: Codable, Sendable {
        package var model: Int
        package var index: Int
        package var outcome: SaveOutcome
    }

    /// Whether the file at `path` starts as a scan summary does.
    public static func isSummary(_ path: String) -> Bool {
        guard let handle = FileHandle(forReadingAtPath: path) else { return false }
        defer { try? handle.close() }
        return (try? handle.read(upToCount: magic.count)).map { Array($0) == magic } ?? false
    }

    /// The run identity of described models (``ScanSummaryHeader/runDigest``).
    package static func digest(of models: [Run], root: String) -> String {
        var a = FNV1a(), b = FNV1a(seed: 0x6c62_272e_07bb_0142)
        let prefix = root.hasSuffix("/") ? root : root + "/"
        // A name relative to the run: a file in its directory by its name, the run's own file as
        // `.` (`.:/step_100` for a step inside it), so other spellings of the run's path agree.
        func relative(_ source: String) -> String {
            if source.hasPrefix(prefix) { return String(source.dropFirst(prefix.count)) }
            if source == root { return "." }
            if source.hasPrefix(root + ":") { return "." + source.dropFirst(root.count) }
            return source
        }
        for (m, model) in models.enumerated() {
            let marker = "model \(m) \(model.checkpoints.count)\n"
            a.add(marker)
            b.add(marker)
            for checkpoint in model.checkpoints {
                let name = relative(checkpoint.source)
                let line = "\(name)\t\(checkpoint.stamp.size)\t\(checkpoint.metadata.step.map(String.init) ?? "-")\n"
                a.add(line)
                b.add(line)
            }
        }
        return a.hex + b.hex
    }

    // MARK: writing

    /// Writes a summary file block by block into a temporary file beside `path`, renamed to `path`
    /// only when complete (a failed or interrupted shard leaves no summary, never a cut one).
    package final class Writer {
        private let path: String
        private let temporary: String
        private let fd: Int32
        private var entries = 0
        private var finished = false

        package init(path: String, header: ScanSummaryHeader) throws {
            self.path = path
            let directory = (path as NSString).deletingLastPathComponent
            temporary = ((directory.isEmpty ? "." : directory) as NSString).appendingPathComponent(
                ".\((path as NSString).lastPathComponent).\(getpid()).\(UInt32.random(in: 0...UInt32.max)).tmp")
            fd = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
            guard fd >= 0 else { throw ScanSummaryError(file: path, reason: "cannot write the summary: \(POSIXFailure(errno))") }
            var start = magic
            withUnsafeBytes(of: formatVersion.littleEndian) { start.append(contentsOf: $0) }
            try write(start)
            try block(UInt8(ascii: "H"), try BinaryCoding.encode(header))
        }

        deinit {
            guard fd >= 0 else { return }
            close(fd)
            if !finished { unlink(temporary) }
        }

        package func append(_ entry: Entry) throws {
            try block(UInt8(ascii: "S"), try BinaryCoding.encode(entry))
            entries += 1
        }

        /// Ends the file and puts it in place.
        package func finish() throws {
            var count = Data()
            withUnsafeBytes(of: UInt64(entries).littleEndian) { count.append(contentsOf: $0) }
            try block(UInt8(ascii: "E"), count)
            guard fsync(fd) == 0 else { throw ScanSummaryError(file: path, reason: "cannot write the summary: \(POSIXFailure(errno))") }
            guard rename(temporary, path) == 0 else {
                throw ScanSummaryError(file: path, reason: "cannot write the summary: \(POSIXFailure(errno))")
            }
            finished = true
        }

        private func block(_ kind: UInt8, _ payload: Data) throws {
            var bytes: [UInt8] = [kind]
            withUnsafeBytes(of: UInt64(payload.count).littleEndian) { bytes.append(contentsOf: $0) }
            bytes.append(contentsOf: payload)
            var hash = FNV1a()
            hash.add(payload)
            withUnsafeBytes(of: hash.value.littleEndian) { bytes.append(contentsOf: $0) }
            try write(bytes)
        }

        private func write(_ bytes: [UInt8]) throws {
            var done = 0
            while done < bytes.count {
                let n = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress! + done, bytes.count - done) }
                if n < 0 {
                    if errno == EINTR { continue }
                    throw ScanSummaryError(file: path, reason: "cannot write the summary: \(POSIXFailure(errno))")
                }
                done += n
            }
        }
    }

    // MARK: reading

    /// Reads a summary file: its header, then its saves one at a time.
    package final class Reader {
        package let path: String
        package let header: ScanSummaryHeader
        private let handle: FileHandle
        private var entries = 0
        private var ended = false

        package init(path: String) throws {
            self.path = path
            if let why = Failures.unreadablePath(path) { throw ScanSummaryError(file: path, reason: "cannot read the summary: \(why)") }
            guard let handle = FileHandle(forReadingAtPath: path) else {
                throw ScanSummaryError(file: path, reason: "cannot read the summary")
            }
            self.handle = handle
            let start = (try? handle.read(upToCount: magic.count + 2)).map { [UInt8]($0) } ?? []
            guard start.count >= magic.count, Array(start.prefix(magic.count)) == magic else {
                throw ScanSummaryError(file: path, reason: "not a gradscope scan summary")
            }
            guard start.count == magic.count + 2 else {
                throw ScanSummaryError(file: path, reason: "a cut scan summary (it ends in its first bytes)")
            }
            let version = UInt16(start[magic.count]) | UInt16(start[magic.count + 1]) << 8
            guard version == formatVersion else {
                throw ScanSummaryError(
                    file: path, reason: "a scan summary of format version \(version); this gradscope reads version \(formatVersion)")
            }
            guard let (kind, payload) = try Self.block(handle, path: path), kind == UInt8(ascii: "H") else {
                throw ScanSummaryError(file: path, reason: "a corrupt scan summary (no header)")
            }
            do { header = try BinaryCoding.decode(ScanSummaryHeader.self, from: payload) } catch {
                throw ScanSummaryError(file: path, reason: "a corrupt scan summary (its header cannot be read)")
            }
        }

        deinit { try? handle.close() }

        /// The next save, or nil after the last (the end block checked).
        package func next() throws -> Entry? {
            guard !ended else { return nil }
            guard let (kind, payload) = try Self.block(handle, path: path) else {
                throw ScanSummaryError(file: path, reason: "a cut scan summary (it stops before its end)")
            }
            switch kind {
            case UInt8(ascii: "S"):
                entries += 1
                do { return try BinaryCoding.decode(Entry.self, from: payload) } catch {
                    throw ScanSummaryError(file: path, reason: "a corrupt scan summary (save \(entries) cannot be read)")
                }
            case UInt8(ascii: "E"):
                let count = payload.count == 8 ? payload.enumerated().reduce(0) { $0 | Int($1.element) << (8 * $1.offset) } : -1
                guard count == entries else {
                    throw ScanSummaryError(file: path, reason: "a corrupt scan summary (it ends after \(entries) saves, its end says \(count))")
                }
                ended = true
                return nil
            default:
                throw ScanSummaryError(file: path, reason: "a corrupt scan summary (a block of unknown kind)")
            }
        }

        /// One block: nil at the end of the file; a cut or corrupt block throws.
        private static func block(_ handle: FileHandle, path: String) throws -> (UInt8, Data)? {
            let head = (try? handle.read(upToCount: 9)) ?? Data()
            if head.isEmpty { return nil }
            guard head.count == 9 else { throw ScanSummaryError(file: path, reason: "a cut scan summary (it stops inside a block)") }
            let length = head.dropFirst().enumerated().reduce(UInt64(0)) { $0 | UInt64($1.element) << (8 * UInt64($1.offset)) }
            guard length < 1 << 40 else { throw ScanSummaryError(file: path, reason: "a corrupt scan summary (a block's length is wrong)") }
            let payload = (try? handle.read(upToCount: Int(length) + 8)) ?? Data()
            guard payload.count == Int(length) + 8 else {
                throw ScanSummaryError(file: path, reason: "a cut scan summary (it stops inside a block)")
            }
            let body = payload.prefix(Int(length))
            var hash = FNV1a()
            hash.add(body)
            let stored = payload.suffix(8).enumerated().reduce(UInt64(0)) { $0 | UInt64($1.element) << (8 * UInt64($1.offset)) }
            guard stored == hash.value else {
                throw ScanSummaryError(file: path, reason: "a corrupt scan summary (a block's checksum does not match)")
            }
            return (head[head.startIndex], Data(body))
        }
    }
}
