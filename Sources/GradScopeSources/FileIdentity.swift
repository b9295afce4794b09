import ElementTypes
import Foundation
import GradScopeModel
import HDF5

#if canImport(Glibc)
import Glibc
#endif

/// Size and modification time of a file (0, 0 when it cannot be read), from
/// `stat`, the same way for a path and for an open descriptor.
package enum FileIdentity {
    package static func of(_ path: String) -> (Int, Double) {
        var info = stat()
        guard stat(path, &info) == 0 else { return (0, 0) }
        return of(info)
    }

    package static func of(descriptor fd: Int32) -> (Int, Double) {
        var info = stat()
        guard fstat(fd, &info) == 0 else { return (0, 0) }
        return of(info)
    }

    package static func of(_ info: stat) -> (Int, Double) {
        (Int(info.st_size), Double(info.st_mtim.tv_sec) + Double(info.st_mtim.tv_nsec) / 1e9)
    }

    /// The modification date `FileManager.attributesOfItem(atPath:)` gives (of the link itself
    /// for a symbolic link, as it does), from one `lstat`: without the owner and group names it
    /// also looks up, which read the password and group files for every file described.
    package static func modificationDate(_ path: String) -> Date? {
        var info = stat()
        guard lstat(path, &info) == 0 else { return nil }
        // Summed in Foundation's order (seconds moved to the reference date first), so the date is its to the bit.
        return Date(
            timeIntervalSinceReferenceDate: TimeInterval(info.st_mtim.tv_sec) - Date.timeIntervalBetween1970AndReferenceDate
                + TimeInterval(info.st_mtim.tv_nsec) / 1_000_000_000.0)
    }

    /// The first `count` bytes of the file at `path` (fewer when it is shorter, none when it cannot
    /// be read), for telling formats apart.
    package static func head(_ path: String, count: Int = 8) -> [UInt8] {
        // Non-blocking: a path swapped for a named pipe since it was checked does not hang the open.
        let fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK)
        guard fd >= 0 else { return [] }
        defer { close(fd) }
        var bytes = [UInt8](repeating: 0, count: count)
        var done = 0
        while done < count {
            let n = bytes.withUnsafeMutableBytes { pread(fd, $0.baseAddress! + done, count - done, off_t(done)) }
            if n > 0 {
                done += n
            } else if n < 0, errno == EINTR {
                continue
            } else {
                break
            }
        }
        return Array(bytes.prefix(done))
    }
}

extension FileIdentity {
    /// Bytes of a file's beginning that ``fingerprint(_:)`` hashes.
    package static let headBytes = 65536

    /// What tells one regular file's contents apart without reading them whole: its device, inode,
    /// size, modification time (to the nanosecond) and a hash of its first ``headBytes`` bytes;
    /// nil for what is not a readable regular file. A file rewritten in place changes its time or
    /// size; a file replaced by another (an atomic rename) changes its inode; a copy elsewhere
    /// changes its device or inode. Used to recognise a file measured before.
    package static func fingerprint(_ path: String) -> String? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0, (info.st_mode & S_IFMT) == S_IFREG else { return nil }
        let wanted = min(headBytes, max(0, Int(info.st_size)))
        var head = [UInt8](repeating: 0, count: wanted)
        var done = 0
        while done < wanted {
            let n = head.withUnsafeMutableBytes { pread(fd, $0.baseAddress! + done, wanted - done, off_t(done)) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { return nil }
            done += n
        }
        var hash = FNV1a()
        hash.add(head)
        return "\(info.st_dev):\(info.st_ino):\(info.st_size):\(info.st_mtim.tv_sec).\(info.st_mtim.tv_nsec):\(hash.hex)"
    }
}

/// The 64-bit FNV-1a hash: a fast, stable checksum (not a cryptographic one) for telling files and
/// records apart and for catching corrupt bytes.
package struct FNV1a {
    package private(set) var value: UInt64

    package init(seed: UInt64 = 0xcbf2_9ce4_8422_2325) { value = seed }

    package mutating func add<Bytes: Sequence>(_ bytes: Bytes) where Bytes.Element == UInt8 {
        for byte in bytes {
            value ^= UInt64(byte)
            value = value &* 0x0000_0100_0000_01b3
        }
    }

    package mutating func add(_ text: String) { add(text.utf8) }

    /// The same for bytes in memory, without going through a sequence one element at a time.
    package mutating func add(_ data: Data) {
        data.withUnsafeBytes { (buffer: UnsafeRawBufferPointer) in
            var value = self.value
            for byte in buffer {
                value ^= UInt64(byte)
                value = value &* 0x0000_0100_0000_01b3
            }
            self.value = value
        }
    }

    /// The hash as 16 hexadecimal digits.
    package var hex: String {
        let digits = String(value, radix: 16)
        return String(repeating: "0", count: 16 - digits.count) + digits
    }
}
