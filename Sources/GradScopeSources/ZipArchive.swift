import ElementTypes
import Foundation
import GradScopeModel
import HDF5

/// Just enough of the zip format to take the members out of a `.keras` file:
/// Keras writes them stored (uncompressed). Every offset and size read from
/// the archive is checked against its length before use.
package struct ZipArchive {
    package struct Member {
        package let name: String
        package let method: UInt16
        package let compressedSize: Int
        package let size: Int
        package let localHeaderOffset: Int
    }

    package let data: Data
    package let members: [Member]

    package enum ZipError: Error, CustomStringConvertible {
        case malformed(String)
        case compressed(String)
        package var description: String {
            switch self {
            case .malformed(let what): return "malformed zip archive: \(what)"
            case .compressed(let name): return "zip member \(name) is compressed; gradscope reads stored (uncompressed) members, as Keras writes them"
            }
        }
    }

    package static func isZip(_ head: Data) -> Bool {
        head.count >= 4 && head[head.startIndex] == 0x50 && head[head.startIndex + 1] == 0x4b
            && (head[head.startIndex + 2] == 0x03 || head[head.startIndex + 2] == 0x05)
    }

    package init(contentsOf url: URL) throws {
        let data = try Data(contentsOf: url, options: .alwaysMapped)
        self.data = data
        members = try ZipArchive.readDirectory(data)
    }

    private static func u16(_ data: Data, _ offset: Int) -> UInt16? {
        guard offset >= 0, offset + 2 <= data.count else { return nil }
        let base = data.startIndex + offset
        return UInt16(data[base]) | UInt16(data[base + 1]) << 8
    }

    private static func u32(_ data: Data, _ offset: Int) -> UInt32? {
        guard let lo = u16(data, offset), let hi = u16(data, offset + 2) else { return nil }
        return UInt32(lo) | UInt32(hi) << 16
    }

    private static func readDirectory(_ data: Data) throws -> [Member] {
        // The end-of-central-directory record is in the last 64 KiB + 22 bytes.
        let searchStart = max(0, data.count - 65_557)
        var eocd: Int?
        var position = data.count - 22
        while position >= searchStart {
            if u32(data, position) == 0x0605_4b50 {
                eocd = position
                break
            }
            position -= 1
        }
        guard let eocd, let entryCount = u16(data, eocd + 10), let directoryOffset = u32(data, eocd + 16) else {
            throw ZipError.malformed("no central directory (truncated?)")
        }
        var members: [Member] = []
        var offset = Int(directoryOffset)
        for _ in 0..<Int(entryCount) {
            guard u32(data, offset) == 0x0201_4b50,
                let method = u16(data, offset + 10),
                let compressed = u32(data, offset + 20), let size = u32(data, offset + 24),
                let nameLength = u16(data, offset + 28), let extraLength = u16(data, offset + 30),
                let commentLength = u16(data, offset + 32), let local = u32(data, offset + 42),
                offset + 46 + Int(nameLength) <= data.count
            else {
                throw ZipError.malformed("bad central directory entry")
            }
            let nameStart = data.startIndex + offset + 46
            let name = String(decoding: data[nameStart..<(nameStart + Int(nameLength))], as: UTF8.self)
            members.append(
                Member(
                    name: name, method: method, compressedSize: Int(compressed), size: Int(size),
                    localHeaderOffset: Int(local)))
            offset += 46 + Int(nameLength) + Int(extraLength) + Int(commentLength)
        }
        return members
    }

    /// The bytes of a stored member.
    package func contents(of name: String) throws -> [UInt8]? {
        guard let member = members.first(where: { $0.name == name }) else { return nil }
        guard member.method == 0 else { throw ZipError.compressed(name) }
        let header = member.localHeaderOffset
        guard ZipArchive.u32(data, header) == 0x0403_4b50,
            let nameLength = ZipArchive.u16(data, header + 26), let extraLength = ZipArchive.u16(data, header + 28)
        else {
            throw ZipError.malformed("bad local header for \(name)")
        }
        let start = header + 30 + Int(nameLength) + Int(extraLength)
        guard start >= 0, member.size >= 0, start + member.size <= data.count else {
            throw ZipError.malformed("member \(name) runs past the end of the archive (truncated?)")
        }
        let base = data.startIndex + start
        return [UInt8](data[base..<(base + member.size)])
    }
}

/// The central directory of a zip archive read from its file by offset (the archive is never
/// loaded whole): every entry's name, method, sizes and the offset of its data, for archives whose
/// tensor data is read in place (torch.save). Names are checked: a duplicated name, or one that
/// climbs out of the archive (`..`, absolute), refuses the archive.
package struct ZipDirectory {
    /// One entry, with the offset of its first data byte in the file.
    package struct Entry: Sendable {
        package let name: String
        package let method: UInt16
        package let size: Int
        package let dataOffset: Int
    }

    package let entries: [Entry]
    package let byName: [String: Int]

    /// The most entries read from one directory.
    static let maxEntries = 1_000_000

    /// Whether `name` climbs out of the archive: absolute, or with a `..` component.
    package static func climbs(_ name: String) -> Bool {
        name.hasPrefix("/") || name.hasPrefix("\\") || name.split(separator: "/").contains("..") || name.split(separator: "\\").contains("..")
    }

    /// Reads the directory of the archive open as `fd`, of `size` bytes; errors are reasons.
    /// `checkNames` false lists duplicated and climbing names too (to recognise an archive, whose
    /// opening then refuses them).
    package init(fd: Int32, size: Int, path: String, checkNames: Bool = true) throws {
        func refuse(_ reason: String) -> CheckpointError { CheckpointError(file: path, reason: "malformed zip archive: " + reason) }
        func bytes(_ offset: Int, _ count: Int) throws -> [UInt8] {
            guard offset >= 0, count >= 0, offset + count <= size else {
                throw refuse("a record at \(offset) runs past the end of the archive (truncated?)")
            }
            var result = [UInt8](repeating: 0, count: count)
            if count > 0 {
                try result.withUnsafeMutableBytes {
                    try HDF5File.readFully(fd, at: offset, count: count, into: $0.baseAddress!, path: path, object: "zip directory")
                }
            }
            return result
        }
        func u16(_ b: [UInt8], _ o: Int) -> Int { Int(b[o]) | Int(b[o + 1]) << 8 }
        func u32(_ b: [UInt8], _ o: Int) -> Int { u16(b, o) | u16(b, o + 2) << 16 }
        func u64(_ b: [UInt8], _ o: Int) throws -> Int {
            let high = u32(b, o + 4)
            guard high < 1 << 30 else { throw refuse("a zip64 size or offset of 2^62 bytes or more") }
            return u32(b, o) | high << 32
        }
        guard size >= 22 else { throw refuse("\(size) bytes, too short for a zip archive") }
        let tailStart = max(0, size - 65_557)
        let tail = try bytes(tailStart, size - tailStart)
        var eocd: Int?
        var position = tail.count - 22
        while position >= 0 {
            if u32(tail, position) == 0x0605_4b50 {
                eocd = position
                break
            }
            position -= 1
        }
        guard let eocd else { throw refuse("no end of central directory (truncated?)") }
        var count = u16(tail, eocd + 10)
        var directorySize = u32(tail, eocd + 12)
        var directoryOffset = u32(tail, eocd + 16)
        // Zip64 (archives over 4 GB, as torch.save writes for large models): a locator just before
        // the end record points at the zip64 end record, which holds the 8-byte counts and offsets.
        if eocd >= 20 && u32(tail, eocd - 20) == 0x0706_4b50 {
            let record = try bytes(try u64(tail, eocd - 20 + 8), 56)
            guard u32(record, 0) == 0x0606_4b50 else { throw refuse("a zip64 locator that points at no zip64 end record") }
            count = try u64(record, 32)
            directorySize = try u64(record, 40)
            directoryOffset = try u64(record, 48)
        } else if count == 0xFFFF || directorySize == 0xFFFF_FFFF || directoryOffset == 0xFFFF_FFFF {
            throw refuse("a zip64 end record without its locator")
        }
        guard count <= Self.maxEntries else { throw refuse("\(count) entries") }
        guard directorySize <= count * (46 + 3 * 65_535) else { throw refuse("a central directory of \(directorySize) bytes for \(count) entries") }
        let directory = try bytes(directoryOffset, directorySize)
        var entries: [Entry] = []
        var byName: [String: Int] = [:]
        var offset = 0
        for _ in 0..<count {
            guard offset + 46 <= directory.count, u32(directory, offset) == 0x0201_4b50 else { throw refuse("bad central directory entry") }
            let method = UInt16(u16(directory, offset + 10))
            var compressed = u32(directory, offset + 20), stored = u32(directory, offset + 24)
            let nameLength = u16(directory, offset + 28), extraLength = u16(directory, offset + 30), commentLength = u16(directory, offset + 32)
            var local = u32(directory, offset + 42)
            guard offset + 46 + nameLength + extraLength <= directory.count else { throw refuse("bad central directory entry") }
            if compressed == 0xFFFF_FFFF || stored == 0xFFFF_FFFF || local == 0xFFFF_FFFF {
                // The zip64 extra field (0x0001) holds, in this order, the 8-byte values of the fields set to 0xFFFFFFFF.
                var extra = offset + 46 + nameLength
                let extraEnd = extra + extraLength
                var values: [Int]?
                while extra + 4 <= extraEnd {
                    let id = u16(directory, extra), length = u16(directory, extra + 2)
                    guard extra + 4 + length <= extraEnd else { break }
                    if id == 0x0001 {
                        values = try stride(from: extra + 4, to: extra + 4 + length - 7, by: 8).map { try u64(directory, $0) }
                        break
                    }
                    extra += 4 + length
                }
                var remaining = values ?? []
                func take(_ field: Int) throws -> Int {
                    guard field == 0xFFFF_FFFF else { return field }
                    guard !remaining.isEmpty else { throw refuse("a zip64 entry without its zip64 sizes") }
                    return remaining.removeFirst()
                }
                stored = try take(stored)
                compressed = try take(compressed)
                local = try take(local)
            }
            let name = String(decoding: directory[(offset + 46)..<(offset + 46 + nameLength)], as: UTF8.self)
            offset += 46 + nameLength + extraLength + commentLength
            if checkNames && Self.climbs(name) {
                throw CheckpointError(file: path, reason: "zip entry \(name) climbs out of the archive: refused")
            }
            guard byName[name] == nil || !checkNames else { throw CheckpointError(file: path, reason: "zip entry \(name) appears twice: refused") }
            let header = try bytes(local, 30)
            guard u32(header, 0) == 0x0403_4b50 else { throw refuse("bad local header for \(name)") }
            let dataOffset = local + 30 + u16(header, 26) + u16(header, 28)
            let length = method == 0 ? stored : compressed
            guard dataOffset + length <= size else { throw refuse("entry \(name) runs past the end of the archive (truncated?)") }
            if method == 0 && compressed != stored { throw refuse("stored entry \(name) has two different sizes") }
            if byName[name] == nil { byName[name] = entries.count }
            entries.append(Entry(name: name, method: method, size: stored, dataOffset: dataOffset))
        }
        if checkNames {
            // Two names whose bytes share a range would let one stored range be read as two entries.
            let ordered = entries.filter { $0.size > 0 }.sorted { $0.dataOffset < $1.dataOffset }
            for (previous, next) in zip(ordered, ordered.dropFirst()) where next.dataOffset < previous.dataOffset + previous.size {
                throw CheckpointError(file: path, reason: "zip entries \(previous.name) and \(next.name) overlap: refused")
            }
        }
        self.entries = entries
        self.byName = byName
    }
}
