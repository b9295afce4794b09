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
