import ElementTypes
import Foundation
import GradScopeModel
import HDF5

#if canImport(Glibc)
import Glibc
#endif

/// Follows a run while training writes it (`gradscope watch`): each ``look(now:)`` lists the run's
/// entries (its files, and the folders of a Trainer run) and tells the complete ones from those
/// still being written, which wait for a later look without being an error:
///
/// - an entry whose size, modification time or inode changed since the previous look;
/// - one first seen less than ``settle`` seconds after its last change;
/// - an HDF5 file its writer has not closed (``HDF5WriteState``);
/// - one that could not be read while it had changed within ``recentFailure`` seconds
///   (``scanned(_:skipped:now:)``): a format without an "open" mark (safetensors, torch.save) caught
///   half written.
///
/// Hidden and temporary names (`.x.tmp`, `x.part`, `tmp-checkpoint-500`: a save in progress, to
/// be renamed when done) are not entries. The complete entries are offered to the scan through a
/// folder of symbolic links (``scanPath(for:)``), so that a file still being written is never
/// read; an atomic rename (temporary file, then rename) is a new inode at the same name, seen as
/// a change. Text beside the saves (training logs, JSON) is always offered and never a change on
/// its own: a log appended every second would otherwise make every look a new scan.
package final class RunWatcher {
    /// What one entry was at a look: for a folder, every file in it.
    package struct Signature: Equatable, Sendable {
        package var files: [FileState]
        /// The newest modification time among them.
        package var newest: Double { files.map(\.modified).max() ?? 0 }
    }

    /// One file's identity at a look.
    package struct FileState: Equatable, Sendable {
        package var name: String
        package var inode: UInt64
        package var size: Int
        package var modified: Double
    }

    /// An entry waiting for a later look, and why.
    package struct Pending: Equatable, Sendable {
        package var name: String
        package var reason: String
    }

    /// One look at the run.
    package struct Look: Sendable {
        /// The complete entries, by name, with what they were.
        package var complete: [String: Signature]
        /// The entries still being written, by name.
        package var pending: [Pending]
        /// Whether the complete checkpoint entries differ from those of the last scan.
        package var changed: Bool
        /// Whether the run exists at all.
        package var exists: Bool
    }

    /// Seconds a newly seen entry must have rested since its last change before it is read.
    package static let settle: Double = 2
    /// Seconds after its last change during which an entry that cannot be read is retried, not skipped.
    package static let recentFailure: Double = 10

    /// The run as given.
    package let path: String
    private var previous: [String: Signature] = [:]
    private var scanned: [String: Signature]?
    private var failed: [String: Signature] = [:]
    private var links: String?

    package init(path: String) {
        self.path = path
    }

    deinit { removeLinks() }

    /// Whether the run is one file (a multi-step HDF5 file, or one checkpoint) rather than a folder.
    package var isFile: Bool {
        var isDirectory: ObjCBool = false
        return FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) && !isDirectory.boolValue
    }

    /// Whether a name is a save in progress or hidden: never an entry.
    package static func isTemporary(_ name: String) -> Bool {
        name.hasPrefix(".") || name.hasSuffix(".tmp") || name.hasSuffix(".part") || name.hasSuffix(".partial") || name.hasPrefix("tmp-")
    }

    /// Whether a name is text beside the saves (a training log, a config), offered to the scan as it
    /// is and never a reason to scan again; shard manifests are checkpoint entries.
    package static func isSideText(_ name: String) -> Bool {
        let lower = name.lowercased()
        if lower.hasSuffix(".weights.json") || lower.hasSuffix(".safetensors.index.json") { return false }
        return [".log", ".csv", ".tsv", ".txt", ".md", ".yaml", ".yml", ".py", ".json"].contains { lower.hasSuffix($0) }
    }

    /// Lists the run and sorts its entries into complete and pending (see the type's description).
    package func look(now: Double) -> Look {
        let writeLocked = HDF5WriteState.writeLockedFiles()
        var complete: [String: Signature] = [:]
        var pending: [Pending] = []
        var current: [String: Signature] = [:]
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
            previous = [:]
            return Look(complete: [:], pending: [], changed: false, exists: false)
        }
        let entries: [(name: String, path: String)]
        if isDirectory.boolValue {
            let names = (try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []
            entries = names.filter { !Self.isTemporary($0) }.sorted().map { ($0, (path as NSString).appendingPathComponent($0)) }
        } else {
            entries = [((path as NSString).lastPathComponent, path)]
        }
        for entry in entries {
            guard let signature = Self.signature(of: entry.path) else { continue }
            current[entry.name] = signature
            if Self.isSideText(entry.name) {
                complete[entry.name] = signature
                continue
            }
            if let reason = pendingReason(entry, signature, writeLocked: writeLocked, now: now) {
                pending.append(Pending(name: entry.name, reason: reason))
            } else {
                complete[entry.name] = signature
                failed[entry.name] = nil
            }
        }
        previous = current
        let checkpoints = complete.filter { !Self.isSideText($0.key) }
        let changed = scanned.map { last in last.filter { !Self.isSideText($0.key) } != checkpoints } ?? !checkpoints.isEmpty
        return Look(complete: complete, pending: pending, changed: changed, exists: true)
    }

    private func pendingReason(
        _ entry: (name: String, path: String), _ signature: Signature, writeLocked: Set<HDF5WriteState.LockKey>, now: Double
    )
        -> String?
    {
        if let before = previous[entry.name], before != signature {
            return before.files.count == 1 && signature.files.count == 1 && before.files[0].inode != signature.files[0].inode
                ? "replaced since the last look" : "changed since the last look"
        }
        let age = now - signature.newest
        if previous[entry.name] == nil, age < Self.settle {
            return "changed \(Self.seconds(age)) ago"
        }
        if let before = failed[entry.name], before == signature, age < Self.recentFailure {
            return "could not be read yet, changed \(Self.seconds(age)) ago"
        }
        let files =
            signature.files.count == 1 && signature.files[0].name.isEmpty
            ? [entry.path] : signature.files.map { (entry.path as NSString).appendingPathComponent($0.name) }
        for file in files {
            if let reason = HDF5WriteState.stillWriting(file, writeLocked: writeLocked, now: now) {
                return files.count == 1 ? reason : "\((file as NSString).lastPathComponent): \(reason)"
            }
        }
        return nil
    }

    /// Records that the entries of `look` were scanned, and sorts the scan's skipped items: an
    /// entry that could not be read while it had changed within ``recentFailure`` seconds is
    /// retried at a later look (and left out of the result: it is not skipped, only early); the
    /// others are returned, their paths those of the run, not of ``scanPath(for:)``'s links.
    package func scanned(_ look: Look, skipped: [SkippedItem], now: Double) -> [SkippedItem] {
        scanned = look.complete
        var kept: [SkippedItem] = []
        for var item in skipped {
            item.item = runPath(item.item)
            if item.kind == .unreadable, let name = entryName(of: item.item), let signature = look.complete[name], !Self.isSideText(name),
                now - signature.newest < Self.recentFailure
            {
                failed[name] = signature
                // Scanned again once it reads, or once it is old enough to be reported.
                scanned?[name] = nil
                continue
            }
            kept.append(item)
        }
        return kept
    }

    /// The entry (top-level name in the run) a path of the run lies in, if any.
    private func entryName(of item: String) -> String? {
        if isFile { return (path as NSString).lastPathComponent }
        let prefix = path.hasSuffix("/") ? path : path + "/"
        guard item.hasPrefix(prefix) else { return nil }
        let rest = item.dropFirst(prefix.count)
        return rest.split(separator: "/").first.map { String($0.split(separator: ":").first ?? $0) }
    }

    /// A path of the links folder as the same path in the run.
    package func runPath(_ item: String) -> String {
        guard let links, item.hasPrefix(links) else { return item }
        return path + item.dropFirst(links.count)
    }

    /// What to scan for `look`: the run itself when it is one file, else a private folder of
    /// symbolic links to the run's complete entries (made on first use, kept up to date).
    package func scanPath(for look: Look) throws -> String {
        if isFile { return path }
        let folder: String
        if let links {
            folder = links
        } else {
            var template = Array((NSTemporaryDirectory() as NSString).appendingPathComponent("gradscope-watch-XXXXXX").utf8CString)
            guard let made = mkdtemp(&template) else {
                throw CheckpointError(file: NSTemporaryDirectory(), reason: "cannot make a temporary folder: \(String(cString: strerror(errno)))")
            }
            folder = String(cString: made)
            links = folder
        }
        let absolute = URL(fileURLWithPath: path).standardizedFileURL.path
        let present = Set((try? FileManager.default.contentsOfDirectory(atPath: folder)) ?? [])
        for name in present where look.complete[name] == nil {
            unlink((folder as NSString).appendingPathComponent(name))
        }
        for name in look.complete.keys.sorted() where !present.contains(name) {
            let link = (folder as NSString).appendingPathComponent(name)
            guard symlink((absolute as NSString).appendingPathComponent(name), link) == 0 else {
                throw CheckpointError(file: link, reason: "cannot link to the run's file: \(String(cString: strerror(errno)))")
            }
        }
        return folder
    }

    /// Removes the links folder (``scanPath(for:)``), if made.
    package func removeLinks() {
        guard let links else { return }
        try? FileManager.default.removeItem(atPath: links)
        self.links = nil
    }

    /// An entry's signature: the file itself (with an empty name), or every file in the folder
    /// (two levels deep, as Trainer saves are one); nil when it vanished meanwhile.
    static func signature(of path: String) -> Signature? {
        var info = stat()
        guard stat(path, &info) == 0 else { return nil }
        if info.st_mode & S_IFMT != S_IFDIR { return Signature(files: [state("", info)]) }
        var files: [FileState] = []
        func walk(_ directory: String, _ prefix: String, depth: Int) {
            for name in ((try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []).sorted() {
                let full = (directory as NSString).appendingPathComponent(name)
                var entry = stat()
                guard stat(full, &entry) == 0 else { continue }
                if entry.st_mode & S_IFMT == S_IFDIR {
                    if depth > 0 { walk(full, prefix + name + "/", depth: depth - 1) }
                } else {
                    files.append(state(prefix + name, entry))
                }
            }
        }
        walk(path, "", depth: 1)
        // An empty folder: its own time, so that a folder being filled is seen changing.
        if files.isEmpty { files.append(state(".", info)) }
        return Signature(files: files)
    }

    private static func state(_ name: String, _ info: stat) -> FileState {
        let (size, modified) = FileIdentity.of(info)
        return FileState(name: name, inode: UInt64(info.st_ino), size: size, modified: modified)
    }

    private static func seconds(_ value: Double) -> String {
        value < 10 ? String(format: "%.1f s", max(0, value)) : "\(Int(value)) s"
    }
}
