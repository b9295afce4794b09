import ElementTypes
import Foundation
import GradScopeModel
import GradScopeSources
import GradScopeStatistics
import HDF5

/// A compact binary form of any `Codable` value, for the messages between the
/// parent and its workers: numbers travel as their 8 bytes (NaN and infinities
/// included), strings as length and UTF-8, keyed containers as key–value lists.
/// About the same structure as JSON without formatting or parsing numbers,
/// which is most of JSON's cost for statistics.
///
/// Layout: one tag byte per value, then its payload, integers little-endian;
/// lengths and counts are LEB128 varints.
public enum BinaryCoding {
    public static func encode<T: Encodable>(_ value: T) throws -> Data {
        var writer = BinaryWriter()
        if let scalar = BinaryValueEncoder.scalar(value) {
            writer.write(scalar)
        } else {
            let encoder = BinaryValueEncoder()
            try value.encode(to: encoder)
            writer.write(encoder.storage)
        }
        return Data(writer.bytes)
    }

    public static func decode<T: Decodable>(_ type: T.Type, from data: Data) throws -> T {
        var reader = BinaryReader(bytes: [UInt8](data))
        let root = try reader.readValue(depth: 0)
        guard reader.atEnd else { throw BinaryCodingError.malformed("trailing bytes") }
        return try T(from: BinaryValueDecoder(value: root, codingPath: []))
    }
}

package enum BinaryCodingError: Error, CustomStringConvertible {
    case malformed(String)
    case mismatch(String, [CodingKey])

    package var description: String {
        switch self {
        case .malformed(let what): return "malformed binary message: \(what)"
        case .mismatch(let what, let path): return "\(what) at \(path.map(\.stringValue).joined(separator: "."))"
        }
    }
}

/// A decoded (or to-be-written) value.
package indirect enum BinaryValue {
    case null
    case bool(Bool)
    case int(Int64)
    case uint(UInt64)
    case double(Double)
    case string(String)
    case array([BinaryValue])
    case object([(String, BinaryValue)])
}

// MARK: Writing and reading bytes

/// The byte encodings both binary formats share: unsigned LEB128 numbers, little-endian 8-byte
/// words, and strings as their UTF-8 byte count (LEB128) then the bytes.
package enum ByteAppending {
    package static func varint(_ value: UInt64, to bytes: inout [UInt8]) {
        var v = value
        while v >= 0x80 {
            bytes.append(UInt8(truncatingIfNeeded: v) | 0x80)
            v >>= 7
        }
        bytes.append(UInt8(v))
    }

    package static func littleEndian(_ value: UInt64, to bytes: inout [UInt8]) {
        withUnsafeBytes(of: value.littleEndian) { bytes.append(contentsOf: $0) }
    }

    package static func string(_ value: String, to bytes: inout [UInt8]) {
        var value = value
        value.withUTF8 { utf8 in
            varint(UInt64(utf8.count), to: &bytes)
            bytes.append(contentsOf: utf8)
        }
    }
}

package struct BinaryWriter {
    package var bytes: [UInt8] = []

    package mutating func varint(_ value: Int) { ByteAppending.varint(UInt64(value), to: &bytes) }

    package mutating func fixed(_ value: UInt64) { ByteAppending.littleEndian(value, to: &bytes) }

    package mutating func string(_ value: String) { ByteAppending.string(value, to: &bytes) }

    /// Writes a node as the value it stands for (``BinaryNode/value``), without building that value.
    package mutating func write(_ node: BinaryNode) {
        switch node.kind {
        case .empty:
            bytes.append(8)
            varint(0)
        case .single:
            write(node.single)
        case .array:
            bytes.append(7)
            varint(node.children.count)
            for child in node.children { write(child) }
        case .object:
            bytes.append(8)
            varint(node.children.count)
            for (key, child) in zip(node.keys, node.children) {
                string(key)
                write(child)
            }
        }
    }

    package mutating func write(_ child: BinaryNode.Child) {
        switch child {
        case .value(let value): write(value)
        case .node(let node): write(node)
        }
    }

    package mutating func write(_ value: BinaryValue) {
        switch value {
        case .null: bytes.append(0)
        case .bool(let b): bytes.append(b ? 2 : 1)
        case .int(let i):
            bytes.append(3)
            fixed(UInt64(bitPattern: i))
        case .uint(let u):
            bytes.append(4)
            fixed(u)
        case .double(let d):
            bytes.append(5)
            fixed(d.bitPattern)
        case .string(let s):
            bytes.append(6)
            string(s)
        case .array(let items):
            bytes.append(7)
            varint(items.count)
            for item in items { write(item) }
        case .object(let pairs):
            bytes.append(8)
            varint(pairs.count)
            for (key, item) in pairs {
                string(key)
                write(item)
            }
        }
    }
}

package struct BinaryReader {
    package let bytes: [UInt8]
    package var offset = 0
    /// Deepest nesting accepted (the messages nest a few levels).
    package static let maxDepth = 64

    package var atEnd: Bool { offset == bytes.count }

    package mutating func byte() throws -> UInt8 {
        guard offset < bytes.count else { throw BinaryCodingError.malformed("cut short") }
        defer { offset += 1 }
        return bytes[offset]
    }

    package mutating func varint() throws -> Int {
        var result: UInt64 = 0
        var shift: UInt64 = 0
        while true {
            let b = try byte()
            guard shift < 63 else { throw BinaryCodingError.malformed("length too long") }
            result |= UInt64(b & 0x7F) << shift
            if b < 0x80 { break }
            shift += 7
        }
        // Every byte of a string and every element of a list takes at least one byte more.
        guard result <= UInt64(bytes.count - offset) else { throw BinaryCodingError.malformed("length beyond the message") }
        return Int(result)
    }

    package mutating func fixed() throws -> UInt64 {
        guard bytes.count - offset >= 8 else { throw BinaryCodingError.malformed("cut short") }
        var value: UInt64 = 0
        for i in 0..<8 { value |= UInt64(bytes[offset + i]) << (8 * UInt64(i)) }
        offset += 8
        return value
    }

    package mutating func string() throws -> String {
        let count = try varint()
        guard bytes.count - offset >= count else { throw BinaryCodingError.malformed("cut short") }
        defer { offset += count }
        return String(decoding: bytes[offset..<(offset + count)], as: UTF8.self)
    }

    package mutating func readValue(depth: Int) throws -> BinaryValue {
        guard depth < Self.maxDepth else { throw BinaryCodingError.malformed("nested too deeply") }
        switch try byte() {
        case 0: return .null
        case 1: return .bool(false)
        case 2: return .bool(true)
        case 3: return .int(Int64(bitPattern: try fixed()))
        case 4: return .uint(try fixed())
        case 5: return .double(Double(bitPattern: try fixed()))
        case 6: return .string(try string())
        case 7:
            let count = try varint()
            var items: [BinaryValue] = []
            items.reserveCapacity(count)
            for _ in 0..<count { items.append(try readValue(depth: depth + 1)) }
            return .array(items)
        case 8:
            let count = try varint()
            var pairs: [(String, BinaryValue)] = []
            pairs.reserveCapacity(count)
            for _ in 0..<count {
                let key = try string()
                pairs.append((key, try readValue(depth: depth + 1)))
            }
            return .object(pairs)
        case let tag:
            throw BinaryCodingError.malformed("unknown tag \(tag)")
        }
    }
}

// MARK: Encoding

/// A value under construction: containers are filled after they are handed out.
/// Scalars in a container are kept as values, not nodes: most of a message is numbers
/// and short strings, and a node (an object) for each would cost an allocation apiece.
package final class BinaryNode {
    package enum Kind { case empty, single, array, object }
    /// A container's element: a finished scalar, or a node still being filled.
    package enum Child {
        case value(BinaryValue)
        case node(BinaryNode)

        package var value: BinaryValue {
            switch self {
            case .value(let value): return value
            case .node(let node): return node.value
            }
        }
    }

    package var kind = Kind.empty
    package var single = BinaryValue.null
    package var children: [Child] = []
    /// For objects: the key of each child.
    package var keys: [String] = []

    package var value: BinaryValue {
        switch kind {
        case .empty: return .object([])
        case .single: return single
        case .array: return .array(children.map(\.value))
        case .object: return .object(zip(keys, children).map { ($0, $1.value) })
        }
    }

    package func set(_ value: BinaryValue) {
        kind = .single
        single = value
    }

    package func appendChild(key: String) -> BinaryNode {
        let child = BinaryNode()
        kind = .object
        keys.append(key)
        children.append(.node(child))
        return child
    }

    package func appendValue(key: String, _ value: BinaryValue) {
        kind = .object
        keys.append(key)
        children.append(.value(value))
    }

    package func appendElement() -> BinaryNode {
        let child = BinaryNode()
        kind = .array
        children.append(.node(child))
        return child
    }

    package func appendElementValue(_ value: BinaryValue) {
        kind = .array
        children.append(.value(value))
    }
}

package final class BinaryValueEncoder: Encoder {
    package let storage: BinaryNode
    package let codingPath: [CodingKey]
    package var userInfo: [CodingUserInfoKey: Any] { [:] }

    package init(storage: BinaryNode = BinaryNode(), codingPath: [CodingKey] = []) {
        self.storage = storage
        self.codingPath = codingPath
    }

    package func container<Key: CodingKey>(keyedBy type: Key.Type) -> KeyedEncodingContainer<Key> {
        if storage.kind == .empty { storage.kind = .object }
        return KeyedEncodingContainer(KeyedBinaryEncoding<Key>(node: storage, codingPath: codingPath))
    }

    package func unkeyedContainer() -> UnkeyedEncodingContainer {
        if storage.kind == .empty { storage.kind = .array }
        return UnkeyedBinaryEncoding(node: storage, codingPath: codingPath)
    }

    package func singleValueContainer() -> SingleValueEncodingContainer {
        SingleBinaryEncoding(node: storage, codingPath: codingPath)
    }

    /// Encodes `value` into `node`: scalars directly, everything else through its `encode(to:)`.
    package static func encode<T: Encodable>(_ value: T, into node: BinaryNode, codingPath: [CodingKey]) throws {
        if let scalar = scalar(value) {
            node.set(scalar)
        } else {
            try value.encode(to: BinaryValueEncoder(storage: node, codingPath: codingPath))
        }
    }

    /// Type comparisons, not dynamic casts: this runs for every number of every message.
    package static func scalar<T: Encodable>(_ value: T) -> BinaryValue? {
        if T.self == Double.self { return .double(unsafeBitCast(value, to: Double.self)) }
        if T.self == Int.self { return .int(Int64(unsafeBitCast(value, to: Int.self))) }
        if T.self == String.self { return .string(unsafeBitCast(value, to: String.self)) }
        if T.self == Bool.self { return .bool(unsafeBitCast(value, to: Bool.self)) }
        if T.self == Float.self { return .double(Double(unsafeBitCast(value, to: Float.self))) }
        if T.self == Int64.self { return .int(unsafeBitCast(value, to: Int64.self)) }
        if T.self == Int32.self { return .int(Int64(unsafeBitCast(value, to: Int32.self))) }
        if T.self == Int16.self { return .int(Int64(unsafeBitCast(value, to: Int16.self))) }
        if T.self == Int8.self { return .int(Int64(unsafeBitCast(value, to: Int8.self))) }
        if T.self == UInt.self { return .uint(UInt64(unsafeBitCast(value, to: UInt.self))) }
        if T.self == UInt64.self { return .uint(unsafeBitCast(value, to: UInt64.self)) }
        if T.self == UInt32.self { return .uint(UInt64(unsafeBitCast(value, to: UInt32.self))) }
        if T.self == UInt16.self { return .uint(UInt64(unsafeBitCast(value, to: UInt16.self))) }
        if T.self == UInt8.self { return .uint(UInt64(unsafeBitCast(value, to: UInt8.self))) }
        return nil
    }
}

package struct KeyedBinaryEncoding<Key: CodingKey>: KeyedEncodingContainerProtocol {
    package let node: BinaryNode
    package let codingPath: [CodingKey]

    package mutating func encodeNil(forKey key: Key) throws { node.appendValue(key: key.stringValue, .null) }

    package mutating func encode<T: Encodable>(_ value: T, forKey key: Key) throws {
        if let scalar = BinaryValueEncoder.scalar(value) {
            node.appendValue(key: key.stringValue, scalar)
        } else {
            try value.encode(to: BinaryValueEncoder(storage: node.appendChild(key: key.stringValue), codingPath: codingPath + [key]))
        }
    }

    package mutating func nestedContainer<NestedKey: CodingKey>(keyedBy keyType: NestedKey.Type, forKey key: Key) -> KeyedEncodingContainer<NestedKey>
    {
        let child = node.appendChild(key: key.stringValue)
        child.kind = .object
        return KeyedEncodingContainer(KeyedBinaryEncoding<NestedKey>(node: child, codingPath: codingPath + [key]))
    }

    package mutating func nestedUnkeyedContainer(forKey key: Key) -> UnkeyedEncodingContainer {
        let child = node.appendChild(key: key.stringValue)
        child.kind = .array
        return UnkeyedBinaryEncoding(node: child, codingPath: codingPath + [key])
    }

    package mutating func superEncoder() -> Encoder {
        BinaryValueEncoder(storage: node.appendChild(key: "super"), codingPath: codingPath)
    }

    package mutating func superEncoder(forKey key: Key) -> Encoder {
        BinaryValueEncoder(storage: node.appendChild(key: key.stringValue), codingPath: codingPath + [key])
    }
}

package struct UnkeyedBinaryEncoding: UnkeyedEncodingContainer {
    package let node: BinaryNode
    package let codingPath: [CodingKey]
    package var count: Int { node.children.count }

    package mutating func encodeNil() throws { node.appendElementValue(.null) }

    package mutating func encode<T: Encodable>(_ value: T) throws {
        if let scalar = BinaryValueEncoder.scalar(value) {
            node.appendElementValue(scalar)
        } else {
            try value.encode(to: BinaryValueEncoder(storage: node.appendElement(), codingPath: codingPath))
        }
    }

    package mutating func nestedContainer<NestedKey: CodingKey>(keyedBy keyType: NestedKey.Type) -> KeyedEncodingContainer<NestedKey> {
        let child = node.appendElement()
        child.kind = .object
        return KeyedEncodingContainer(KeyedBinaryEncoding<NestedKey>(node: child, codingPath: codingPath))
    }

    package mutating func nestedUnkeyedContainer() -> UnkeyedEncodingContainer {
        let child = node.appendElement()
        child.kind = .array
        return UnkeyedBinaryEncoding(node: child, codingPath: codingPath)
    }

    package mutating func superEncoder() -> Encoder { BinaryValueEncoder(storage: node.appendElement(), codingPath: codingPath) }
}

package struct SingleBinaryEncoding: SingleValueEncodingContainer {
    package let node: BinaryNode
    package let codingPath: [CodingKey]

    package mutating func encodeNil() throws { node.set(.null) }

    package mutating func encode<T: Encodable>(_ value: T) throws {
        try BinaryValueEncoder.encode(value, into: node, codingPath: codingPath)
    }
}

// MARK: Decoding

package struct BinaryValueDecoder: Decoder {
    package let value: BinaryValue
    package let codingPath: [CodingKey]
    package var userInfo: [CodingUserInfoKey: Any] { [:] }

    package func container<Key: CodingKey>(keyedBy type: Key.Type) throws -> KeyedDecodingContainer<Key> {
        guard case .object(let pairs) = value else { throw BinaryCodingError.mismatch("expected a keyed container", codingPath) }
        return KeyedDecodingContainer(KeyedBinaryDecoding<Key>(pairs: pairs, codingPath: codingPath))
    }

    package func unkeyedContainer() throws -> UnkeyedDecodingContainer {
        guard case .array(let items) = value else { throw BinaryCodingError.mismatch("expected a list", codingPath) }
        return UnkeyedBinaryDecoding(items: items, codingPath: codingPath)
    }

    package func singleValueContainer() throws -> SingleValueDecodingContainer { SingleBinaryDecoding(value: value, codingPath: codingPath) }

    /// Decodes a `T` from `value`: scalars directly, everything else through its `init(from:)`.
    package static func decode<T: Decodable>(_ type: T.Type, from value: BinaryValue, codingPath: [CodingKey]) throws -> T {
        if let scalar = try scalar(type, from: value, codingPath: codingPath) { return scalar }
        return try T(from: BinaryValueDecoder(value: value, codingPath: codingPath))
    }

    /// Whether `T` is one of the types ``scalar(_:from:codingPath:)`` decodes itself.
    package static func isScalar<T>(_: T.Type) -> Bool {
        T.self == Double.self || T.self == Int.self || T.self == String.self || T.self == Bool.self || T.self == Float.self
            || T.self == Int64.self || T.self == Int32.self || T.self == Int16.self || T.self == Int8.self || T.self == UInt.self
            || T.self == UInt64.self || T.self == UInt32.self || T.self == UInt16.self || T.self == UInt8.self
    }

    /// Type comparisons, not dynamic casts: this runs for every number of every message.
    package static func scalar<T>(_ type: T.Type, from value: BinaryValue, codingPath: [CodingKey]) throws -> T? {
        func integer<I: FixedWidthInteger>(_: I.Type) throws -> T {
            switch value {
            case .int(let i): if let v = I(exactly: i) { return unsafeBitCast(v, to: T.self) }
            case .uint(let u): if let v = I(exactly: u) { return unsafeBitCast(v, to: T.self) }
            default: break
            }
            throw BinaryCodingError.mismatch("expected \(I.self)", codingPath)
        }
        if T.self == Double.self {
            switch value {
            case .double(let d): return unsafeBitCast(d, to: T.self)
            case .int(let i): return unsafeBitCast(Double(i), to: T.self)
            case .uint(let u): return unsafeBitCast(Double(u), to: T.self)
            default: throw BinaryCodingError.mismatch("expected a number", codingPath)
            }
        }
        if T.self == Int.self { return try integer(Int.self) }
        if T.self == String.self {
            guard case .string(let s) = value else { throw BinaryCodingError.mismatch("expected a string", codingPath) }
            return unsafeBitCast(s, to: T.self)
        }
        if T.self == Bool.self {
            guard case .bool(let b) = value else { throw BinaryCodingError.mismatch("expected a boolean", codingPath) }
            return unsafeBitCast(b, to: T.self)
        }
        if T.self == Float.self {
            guard case .double(let d) = value else { throw BinaryCodingError.mismatch("expected a number", codingPath) }
            return unsafeBitCast(Float(d), to: T.self)
        }
        if T.self == Int64.self { return try integer(Int64.self) }
        if T.self == Int32.self { return try integer(Int32.self) }
        if T.self == Int16.self { return try integer(Int16.self) }
        if T.self == Int8.self { return try integer(Int8.self) }
        if T.self == UInt.self { return try integer(UInt.self) }
        if T.self == UInt64.self { return try integer(UInt64.self) }
        if T.self == UInt32.self { return try integer(UInt32.self) }
        if T.self == UInt16.self { return try integer(UInt16.self) }
        if T.self == UInt8.self { return try integer(UInt8.self) }
        return nil
    }
}

package struct KeyedBinaryDecoding<Key: CodingKey>: KeyedDecodingContainerProtocol {
    package let pairs: [(String, BinaryValue)]
    package let codingPath: [CodingKey]

    package var allKeys: [Key] { pairs.compactMap { Key(stringValue: $0.0) } }

    package func lookup(_ key: Key) -> BinaryValue? {
        let name = key.stringValue
        for (candidate, value) in pairs where candidate == name { return value }
        return nil
    }

    package func require(_ key: Key) throws -> BinaryValue {
        guard let value = lookup(key) else { throw BinaryCodingError.mismatch("no value for \(key.stringValue)", codingPath) }
        return value
    }

    package func contains(_ key: Key) -> Bool { lookup(key) != nil }

    package func decodeNil(forKey key: Key) throws -> Bool {
        if case .null = try require(key) { return true }
        return false
    }

    package func decode<T: Decodable>(_ type: T.Type, forKey key: Key) throws -> T {
        let value = try require(key)
        // The path is built for nested values and errors only: this runs for every field of every message.
        if BinaryValueDecoder.isScalar(type), let scalar = try? BinaryValueDecoder.scalar(type, from: value, codingPath: codingPath) {
            return scalar
        }
        return try BinaryValueDecoder.decode(type, from: value, codingPath: codingPath + [key])
    }

    package func nestedContainer<NestedKey: CodingKey>(keyedBy type: NestedKey.Type, forKey key: Key) throws -> KeyedDecodingContainer<NestedKey> {
        try BinaryValueDecoder(value: try require(key), codingPath: codingPath + [key]).container(keyedBy: type)
    }

    package func nestedUnkeyedContainer(forKey key: Key) throws -> UnkeyedDecodingContainer {
        try BinaryValueDecoder(value: try require(key), codingPath: codingPath + [key]).unkeyedContainer()
    }

    package func superDecoder() throws -> Decoder {
        BinaryValueDecoder(value: pairs.first { $0.0 == "super" }?.1 ?? .null, codingPath: codingPath)
    }

    package func superDecoder(forKey key: Key) throws -> Decoder {
        BinaryValueDecoder(value: lookup(key) ?? .null, codingPath: codingPath + [key])
    }
}

package struct UnkeyedBinaryDecoding: UnkeyedDecodingContainer {
    package let items: [BinaryValue]
    package let codingPath: [CodingKey]
    package var currentIndex = 0

    package init(items: [BinaryValue], codingPath: [CodingKey]) {
        self.items = items
        self.codingPath = codingPath
    }

    package var count: Int? { items.count }
    package var isAtEnd: Bool { currentIndex >= items.count }

    package mutating func next() throws -> BinaryValue {
        guard !isAtEnd else { throw BinaryCodingError.mismatch("list too short", codingPath) }
        defer { currentIndex += 1 }
        return items[currentIndex]
    }

    package mutating func decodeNil() throws -> Bool {
        guard !isAtEnd else { throw BinaryCodingError.mismatch("list too short", codingPath) }
        if case .null = items[currentIndex] {
            currentIndex += 1
            return true
        }
        return false
    }

    package mutating func decode<T: Decodable>(_ type: T.Type) throws -> T {
        try BinaryValueDecoder.decode(type, from: try next(), codingPath: codingPath)
    }

    package mutating func nestedContainer<NestedKey: CodingKey>(keyedBy type: NestedKey.Type) throws -> KeyedDecodingContainer<NestedKey> {
        try BinaryValueDecoder(value: try next(), codingPath: codingPath).container(keyedBy: type)
    }

    package mutating func nestedUnkeyedContainer() throws -> UnkeyedDecodingContainer {
        try BinaryValueDecoder(value: try next(), codingPath: codingPath).unkeyedContainer()
    }

    package mutating func superDecoder() throws -> Decoder { BinaryValueDecoder(value: try next(), codingPath: codingPath) }
}

package struct SingleBinaryDecoding: SingleValueDecodingContainer {
    package let value: BinaryValue
    package let codingPath: [CodingKey]

    package func decodeNil() -> Bool {
        if case .null = value { return true }
        return false
    }

    package func decode<T: Decodable>(_ type: T.Type) throws -> T {
        try BinaryValueDecoder.decode(type, from: value, codingPath: codingPath)
    }
}
