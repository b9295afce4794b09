import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// Whether an HDF5 file's writer still has it open, judged without opening it through libhdf5
/// (which would take a lock a writer's next open could trip over) and without locking it:
///
/// - a write lock on the file, from `/proc/locks`: libhdf5 1.10 and later `flock`s a file it opens
///   for writing (`LOCK_EX`) until it closes it, unless file locking is turned off
///   (`HDF5_USE_FILE_LOCKING=FALSE`, common on parallel file systems);
/// - the superblock's "open for write" flags (superblock version 2 and 3, `libver="latest"` and SWMR
///   writers; version 0, h5py's default, has none);
/// - the superblock's end-of-file address, which libhdf5 writes when it flushes or closes the file
///   and to whose value it truncates the file on close: while the file is being written it is
///   behind the file's size (h5py: 2048 bytes until the first flush). It counts from the file's
///   first byte, a user block included (checked with h5py's `userblock_size` 512 and 4096).
///
/// The last two stay set in a file whose writer died; a file that shows them but has not changed
/// for ``staleAfter`` seconds and holds no lock is taken as finished, and left to the reader.
package enum HDF5WriteState {
    /// Seconds after its last change from which a file with only superblock signs of an open writer
    /// is read anyway (the writer died, or left it open without writing).
    package static let staleAfter: Double = 60

    /// A file's identity as `/proc/locks` names it: device major, minor, inode.
    package struct LockKey: Hashable, Sendable {
        package var major: UInt64
        package var minor: UInt64
        package var inode: UInt64

        package init(major: UInt64, minor: UInt64, inode: UInt64) {
            self.major = major
            self.minor = minor
            self.inode = inode
        }

        /// The key of a file from its `stat`.
        package init(_ info: stat) {
            let device = UInt64(info.st_dev)
            major = ((device >> 8) & 0xfff) | ((device >> 32) & ~UInt64(0xfff))
            minor = (device & 0xff) | ((device >> 12) & ~UInt64(0xff))
            inode = UInt64(info.st_ino)
        }
    }

    /// The files some process holds a write lock on (flock, POSIX or open file description locks),
    /// from `/proc/locks`; empty where that file does not exist (not Linux).
    package static func writeLockedFiles() -> Set<LockKey> {
        guard let text = try? String(contentsOfFile: "/proc/locks", encoding: .utf8) else { return [] }
        return parseLocks(text)
    }

    /// The write locks a `/proc/locks` text lists (a waiter's line, marked `->`, holds nothing).
    package static func parseLocks(_ text: String) -> Set<LockKey> {
        var keys = Set<LockKey>()
        for line in text.split(separator: "\n") {
            let fields = line.split(separator: " ", omittingEmptySubsequences: true)
            guard fields.count >= 6, !fields.contains("->"), let access = fields.firstIndex(where: { $0 == "WRITE" || $0 == "READ" }),
                fields[access] == "WRITE", access + 2 < fields.count
            else { continue }
            let parts = fields[access + 2].split(separator: ":")
            guard parts.count == 3, let major = UInt64(parts[0], radix: 16), let minor = UInt64(parts[1], radix: 16),
                let inode = UInt64(parts[2])
            else { continue }
            keys.insert(LockKey(major: major, minor: minor, inode: inode))
        }
        return keys
    }

    /// Why the HDF5 file at `path` looks still open by its writer, or nil when it does not (or is not
    /// an HDF5 file, or cannot be examined: the reader then says why). `writeLocked` is
    /// ``writeLockedFiles()``, read once for all the files of one look; `now` is seconds since 1970.
    package static func stillWriting(_ path: String, writeLocked: Set<LockKey>, now: Double) -> String? {
        var info = stat()
        guard stat(path, &info) == 0, info.st_mode & S_IFMT == S_IFREG else { return nil }
        if writeLocked.contains(LockKey(info)) { return "its writer holds it open (a write lock on it)" }
        let size = Int(info.st_size)
        let modified = Double(info.st_mtim.tv_sec) + Double(info.st_mtim.tv_nsec) / 1e9
        guard now - modified < staleAfter else { return nil }
        let fd = Glibc.open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK)
        guard fd >= 0 else { return nil }
        defer { Glibc.close(fd) }
        return superblockSaysOpen(size: size) { offset, count in
            var bytes = [UInt8](repeating: 0, count: count)
            let got = bytes.withUnsafeMutableBytes { pread(fd, $0.baseAddress, count, off_t(offset)) }
            return got == count ? bytes : nil
        }
    }

    /// Why a file's superblock says its writer has not closed it, or nil: `read(offset, count)`
    /// returns that many bytes of the file, or nil past its end.
    package static func superblockSaysOpen(size: Int, read: (Int, Int) -> [UInt8]?) -> String? {
        // The superblock sits at 0 or at a power of two >= 512 (after a user block).
        var offset = 0
        var found: Int?
        while offset + 8 <= size {
            if let bytes = read(offset, 8), bytes == FileProbe.signature {
                found = offset
                break
            }
            offset = offset == 0 ? 512 : offset * 2
        }
        guard let start = found, let fixed = read(start, 16) else { return nil }
        let version = fixed[8]
        let offsets: Int
        let baseAt: Int
        switch version {
        case 0, 1:
            offsets = Int(fixed[13])
            baseAt = start + (version == 0 ? 24 : 28)
        case 2, 3:
            offsets = Int(fixed[9])
            baseAt = start + 12
            // File consistency flags: bit 0 open for writing, bit 2 open for SWMR writing.
            if fixed[11] & 0x05 != 0 { return "its superblock marks it open for writing" }
        default: return nil
        }
        guard [2, 4, 8].contains(offsets), let addresses = read(baseAt, 3 * offsets) else { return nil }
        func address(_ index: Int) -> UInt64? {
            var value: UInt64 = 0
            for byte in addresses[(index * offsets)..<((index + 1) * offsets)].reversed() { value = value << 8 | UInt64(byte) }
            // All ones: the undefined address.
            return value == (offsets == 8 ? UInt64.max : (UInt64(1) << UInt64(8 * offsets)) - 1) ? nil : value
        }
        // Base address, then (v0/1) free-space or (v2/3) extension address, then the end-of-file
        // address, which counts from the file's first byte (a user block included).
        guard let end = address(2) else { return nil }
        if end != UInt64(size) {
            return "its superblock's end of file (\(end) bytes) is not its size (\(size) bytes): not closed yet"
        }
        return nil
    }
}
