import Foundation
import GradScopeModel
import GradScopeSources

#if canImport(Glibc)
import Glibc
#endif

/// A cache of measured saves, so that re-scanning a growing run reads only its new files.
///
/// One entry per save, in its own file under ``directory``. An entry's key is everything the
/// save's measurements depend on: the file's fingerprint (``FileIdentity/fingerprint(_:)``: device,
/// inode, size, modification time, a hash of its first 64 KiB) and the save's name in it; the same
/// of the save before it in the run (its weights' drift is measured from that save); the names of
/// the tensors with gradients anywhere in the run; the reading and measuring options; and the
/// gradscope version. The value is the save's measurements and per-unit liveness (its step, loss
/// and learning rate are taken from the run as described at each scan). A save is cached only when
/// it is one regular file whose every tensor lies in it and every tensor was measured.
///
/// An entry holds its whole key and a checksum of its value: an entry that is cut, corrupt, of
/// another key or of another cache format is ignored, and the save measured and written again.
/// Entries are written atomically (a temporary file in the cache directory, then a rename), never
/// inside the run being scanned, and the run's files are only ever read. The directory is kept
/// under ``limit`` bytes by deleting the entries used longest ago (a hit renews an entry's time).
/// A cache that cannot be written is not used: ``note`` says why, once, and the scan goes on.
public final class SummaryCache: @unchecked Sendable {
    /// The version of an entry's form, raised whenever its fields or their meaning change.
    package static let formatVersion: UInt16 = 1
    package static let magic: [UInt8] = Array("GSCACHE".utf8)
    /// The default size cap: 1 GiB.
    public static let defaultLimit = 1 << 30

    /// The default for ``minimumTensorElements``: 2¹⁶ values (256 KiB of float32) a tensor on average.
    /// Taking a save from the cache costs about 30 µs a tensor (decoding its measurements) and
    /// keeping it about 60 µs; measuring a tensor from the page cache costs about 0.5 ms a MiB. Below
    /// some 16 K values a tensor, a hit is slower than reading the values again (a run of 500 saves
    /// of 298 tensors of 200 values: 17.0 s of CPU without the cache, 25.7 s filling it, 21.3 s
    /// from it); at 2¹⁶ a hit is about 4 times cheaper than measuring, and filling adds about 40%.
    public static let defaultMinimumTensorElements = 1 << 16

    public let directory: String
    public let limit: Int
    /// Saves whose tensors hold fewer values than this on average are measured at every scan, never
    /// cached: for them the cache costs more than it saves.
    public let minimumTensorElements: Int
    private let lock = NSLock()
    private var disabledReason: String?
    private var fingerprints: [String: String?] = [:]

    /// A cache in `directory`, created when first written, holding at most `limit` bytes.
    public init(
        directory: String, limit: Int = SummaryCache.defaultLimit,
        minimumTensorElements: Int = SummaryCache.defaultMinimumTensorElements
    ) {
        self.directory = (directory as NSString).standardizingPath
        self.limit = limit
        self.minimumTensorElements = minimumTensorElements
    }

    /// Whether keeping `checkpoint` saves more than it costs (``minimumTensorElements``).
    package func worthKeeping(_ checkpoint: Checkpoint) -> Bool {
        guard !checkpoint.tensors.isEmpty else { return false }
        let total = checkpoint.tensors.reduce(0) { $0 &+ $1.count }
        return total / checkpoint.tensors.count >= minimumTensorElements
    }

    /// `$XDG_CACHE_HOME/gradscope`, else `~/.cache/gradscope`; nil when neither can be told.
    public static func defaultDirectory(environment: [String: String] = ProcessInfo.processInfo.environment) -> String? {
        if let xdg = environment["XDG_CACHE_HOME"], xdg.hasPrefix("/") { return (xdg as NSString).appendingPathComponent("gradscope") }
        guard let home = environment["HOME"], home.hasPrefix("/") else { return nil }
        return (home as NSString).appendingPathComponent(".cache/gradscope")
    }

    /// Why the cache was not used (it could not be created or written, or lies inside the run), once; nil while it works.
    public var note: String? { lock.withLock { disabledReason } }

    /// Starts a scan of `run`: files are fingerprinted afresh (once each in a scan), and the cache
    /// is not used when its directory is `run` or inside it (the run's directory is never written).
    package func begin(_ run: String) {
        lock.withLock { fingerprints = [:] }
        let runPath = URL(fileURLWithPath: run).standardizedFileURL.resolvingSymlinksInPath().path
        let ownPath = URL(fileURLWithPath: directory).standardizedFileURL.resolvingSymlinksInPath().path
        if ownPath == runPath || ownPath.hasPrefix(runPath.hasSuffix("/") ? runPath : runPath + "/") {
            disable("\(directory) lies inside the run \(run), which is never written")
        }
    }

    private func disable(_ reason: String) {
        lock.withLock { if disabledReason == nil { disabledReason = "the cache is not used: \(reason)" } }
    }

    private var disabled: Bool { lock.withLock { disabledReason != nil } }

    /// What a key holds besides the saves: the version, the options and the run's gradient names.
    package static func context(load: LoadOptions, options: MeasureOptions, gradientNames: [String]) -> String {
        var names = FNV1a()
        for name in gradientNames {
            names.add(name)
            names.add([0])
        }
        return [
            "gradscope \(GradScopeVersion.string)", "layout \(load.layout?.rawValue ?? "auto")", "links \(load.open.followLinks)",
            "plugins \(load.open.allowPlugins)", "block \(options.blockElements)", "threads \(options.threads)",
            "bins \(options.histogramBins)", "dead \(options.deadActivationFraction.bitPattern)",
            "gradients \(gradientNames.count) \(names.hex)",
        ].joined(separator: "|")
    }

    /// An entry's key: its full text and the file name it is kept under.
    package struct Key: Sendable {
        package var text: String
        package var name: String
    }

    /// The key of `checkpoint` measured after `previous`; nil when it cannot be cached (not one
    /// regular file, tensors in other files, or changed since it was described).
    package func key(for checkpoint: Checkpoint, previous: Checkpoint?, context: String) -> Key? {
        guard !disabled, worthKeeping(checkpoint), let own = identity(of: checkpoint) else { return nil }
        var text = "\(context)|save \(checkpoint.source)|file \(own)"
        if let previous {
            guard let before = identity(of: previous) else { return nil }
            text += "|after \(previous.source)|file \(before)"
        } else {
            text += "|first"
        }
        var a = FNV1a(), b = FNV1a(seed: 0x6c62_272e_07bb_0142)
        a.add(text)
        b.add(text)
        b.add([0x5a])
        return Key(text: text, name: a.hex + b.hex + ".gscache")
    }

    private func identity(of checkpoint: Checkpoint) -> String? {
        guard checkpoint.tensors.allSatisfy({ $0.fileIndex == 0 }) else { return nil }
        let file = checkpoint.file
        let known = lock.withLock { fingerprints[file] }
        let print: String?
        if let known {
            print = known
        } else {
            print = FileIdentity.fingerprint(file)
            lock.withLock { fingerprints[file] = print }
        }
        // A file no longer as it was described is measured (and found changed), never taken from the cache.
        let (size, mtime) = FileIdentity.of(file)
        guard let print, size == checkpoint.stamp.size, mtime == checkpoint.stamp.mtime else { return nil }
        return print
    }

    private struct Entry: Codable {
        var record: StepRecord
        var units: [UnitSnapshot]
    }

    /// The save kept under `key`, or nil (none, or one that cannot be trusted).
    package func lookup(_ key: Key) -> (StepRecord, [UnitSnapshot])? {
        guard !disabled else { return nil }
        let path = (directory as NSString).appendingPathComponent(key.name)
        guard let data = FileManager.default.contents(atPath: path), let payload = Self.payload(of: data, key: key.text),
            let entry = try? BinaryCoding.decode(Entry.self, from: payload)
        else { return nil }
        // Used now: the last to be evicted.
        utimes(path, nil)
        return (entry.record, entry.units)
    }

    /// The checked value of an entry's bytes: magic, version, the same key, the length and checksum.
    static func payload(of data: Data, key: String) -> Data? {
        let bytes = [UInt8](data)
        var position = magic.count
        guard bytes.count >= position + 2 + 4, Array(bytes[0..<position]) == magic else { return nil }
        let version = UInt16(bytes[position]) | UInt16(bytes[position + 1]) << 8
        position += 2
        guard version == formatVersion else { return nil }
        let keyBytes = Array(key.utf8)
        let keyLength = bytes[position..<(position + 4)].enumerated().reduce(0) { $0 | Int($1.element) << (8 * $1.offset) }
        position += 4
        guard keyLength == keyBytes.count, bytes.count >= position + keyLength + 16,
            Array(bytes[position..<(position + keyLength)]) == keyBytes
        else { return nil }
        position += keyLength
        let length = bytes[position..<(position + 8)].enumerated().reduce(0) { $0 | Int($1.element) << (8 * $1.offset) }
        position += 8
        guard length >= 0, bytes.count == position + length + 8 else { return nil }
        let payload = bytes[position..<(position + length)]
        var hash = FNV1a()
        hash.add(payload)
        let stored = bytes[(position + length)...].enumerated().reduce(UInt64(0)) { $0 | UInt64($1.element) << (8 * UInt64($1.offset)) }
        guard stored == hash.value else { return nil }
        return Data(payload)
    }

    /// Keeps `record` and `units` under `key`, atomically; a cache that cannot be written is no longer used.
    package func store(_ key: Key, record: StepRecord, units: [UnitSnapshot]) {
        guard !disabled, let payload = try? BinaryCoding.encode(Entry(record: record, units: units)) else { return }
        var bytes = Self.magic
        withUnsafeBytes(of: Self.formatVersion.littleEndian) { bytes.append(contentsOf: $0) }
        let keyBytes = Array(key.text.utf8)
        withUnsafeBytes(of: UInt32(keyBytes.count).littleEndian) { bytes.append(contentsOf: $0) }
        bytes.append(contentsOf: keyBytes)
        withUnsafeBytes(of: UInt64(payload.count).littleEndian) { bytes.append(contentsOf: $0) }
        bytes.append(contentsOf: payload)
        var hash = FNV1a()
        hash.add(payload)
        withUnsafeBytes(of: hash.value.littleEndian) { bytes.append(contentsOf: $0) }
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            try AtomicFile.write(Data(bytes), to: (directory as NSString).appendingPathComponent(key.name))
        } catch {
            disable("cannot write \(directory): \(Failures.plain(error))")
        }
    }

    /// Deletes the entries used longest ago until the directory holds at most ``limit`` bytes.
    package func trim() {
        guard !disabled, let names = try? FileManager.default.contentsOfDirectory(atPath: directory) else { return }
        var entries: [(path: String, size: Int, time: Double)] = []
        for name in names where name.hasSuffix(".gscache") {
            let path = (directory as NSString).appendingPathComponent(name)
            let (size, time) = FileIdentity.of(path)
            entries.append((path, size, time))
        }
        var total = entries.reduce(0) { $0 + $1.size }
        guard total > limit else { return }
        for entry in entries.sorted(by: { ($0.time, $0.path) < ($1.time, $1.path) }) where total > limit {
            if unlink(entry.path) == 0 { total -= entry.size }
        }
    }
}

/// Writes a file whole or not at all: into a temporary file beside it, flushed, then renamed over it.
package enum AtomicFile {
    package static func write(_ data: Data, to path: String) throws {
        let directory = (path as NSString).deletingLastPathComponent
        let temporary = ((directory.isEmpty ? "." : directory) as NSString).appendingPathComponent(
            ".\((path as NSString).lastPathComponent).\(getpid()).\(UInt32.random(in: 0...UInt32.max)).tmp")
        let fd = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw POSIXFailure(errno) }
        var failure: Int32 = 0
        data.withUnsafeBytes { buffer in
            var done = 0
            while done < buffer.count {
                let n = Glibc.write(fd, buffer.baseAddress! + done, buffer.count - done)
                if n < 0 {
                    if errno == EINTR { continue }
                    failure = errno
                    return
                }
                done += n
            }
        }
        if failure == 0 && fsync(fd) != 0 { failure = errno }
        close(fd)
        if failure == 0 && rename(temporary, path) != 0 { failure = errno }
        if failure != 0 {
            unlink(temporary)
            throw POSIXFailure(failure)
        }
    }
}

/// A system call's failure, in the system's words.
package struct POSIXFailure: Error, CustomStringConvertible {
    package var code: Int32
    package init(_ code: Int32) { self.code = code }
    package var description: String { String(cString: strerror(code)) }
}
