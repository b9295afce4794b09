import Foundation
import GradScopeDiagnosis

/// Renders reports as the JSON contract of docs/JSON.md: one pretty-printed object
/// with sorted snake_case keys, then a newline.
package struct JSONRenderer: ReportRenderer, Sendable {
    /// A renderer; JSON has no options.
    package init() {}

    /// The scan as one JSON object.
    package func render(_ report: ScanReport) throws -> String { try encodeJSON(report) + "\n" }

    /// The inspected checkpoint as one JSON object.
    package func render(_ report: InspectReport) throws -> String { try encodeJSON(report) + "\n" }

    /// The diff as one JSON object.
    package func render(_ report: DiffReport) throws -> String { try encodeJSON(report) + "\n" }

    /// The scan as one JSON object, handed to `output` a megabyte at a time as it is written:
    /// a long run's tens of megabytes of timeline never wait whole in memory.
    package func write(_ report: ScanReport, to output: (UnsafeRawBufferPointer) throws -> Void) throws {
        try PrettyJSON.write(report, to: output)
    }
}

/// Encodes a report as the JSON contract: snake_case keys, sorted, pretty-printed.
///
/// JSON has no NaN or infinity, so every non-finite number, wherever it stands (a
/// loss, a learning rate, an evidence value, an element of an array), is written as
/// one of the strings `"nan"`, `"inf"` and `"-inf"`: the one representation of
/// docs/JSON.md ("Non-finite numbers"). Evidence values encode the same way
/// (``EvidenceValue``).
public func encodeJSON<T: Encodable>(_ value: T) throws -> String {
    // The contract's own writer; a value it does not handle (a Date, Data, a URL, an encoding
    // error) goes through Foundation's encoder, which writes the same bytes more slowly.
    if let text = try? PrettyJSON.encode(value) { return text }
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
    encoder.nonConformingFloatEncodingStrategy = .convertToString(
        positiveInfinity: NonFiniteJSON.positiveInfinity, negativeInfinity: NonFiniteJSON.negativeInfinity, nan: NonFiniteJSON.nan)
    return String(decoding: try encoder.encode(value), as: UTF8.self)
}

/// The strings that stand for non-finite numbers in the JSON contract (docs/JSON.md).
public enum NonFiniteJSON {
    public static let nan = "nan"
    public static let positiveInfinity = "inf"
    public static let negativeInfinity = "-inf"
    /// All three, for readers that check a number field.
    public static let all: Set<String> = [nan, positiveInfinity, negativeInfinity]
}

/// Writes exactly what Foundation's `JSONEncoder` writes with `[.prettyPrinted, .sortedKeys,
/// .withoutEscapingSlashes]` and non-finite numbers as ``NonFiniteJSON`` strings, several times
/// faster (a scan's timeline is tens of megabytes of JSON): two-space indentation, `"key" : value`,
/// keys in the order of their UTF-8 bytes, an empty array or object as an opening bracket, a blank
/// line and the closing one, numbers as Swift prints them without a trailing `.0`, and in strings
/// only `"`, `\\` and control characters escaped (`\b \t \n \f \r`, the rest as `\u00XX`).
/// A key encoded twice keeps its last value. Values Foundation encodes in its own way (dates,
/// data, URLs, decimals) and a top level that encodes nothing are refused with ``Unsupported``.
package enum PrettyJSON {
    package struct Unsupported: Error {}

    package static func encode<T: Encodable>(_ value: T) throws -> String {
        var writer = Writer()
        try write(value, with: &writer)
        return String(decoding: writer.bytes, as: UTF8.self)
    }

    /// `value`, then a newline, handed to `output` in pieces of about ``Writer/flushSize`` bytes.
    /// Nothing of a value that fails to encode reaches `output` before the failure when it fails in
    /// its first piece; a later failure leaves what was handed out incomplete (reports do not fail).
    package static func write<T: Encodable>(_ value: T, to output: (UnsafeRawBufferPointer) throws -> Void) throws {
        try withoutActuallyEscaping(output) { output in
            var writer = Writer()
            writer.output = output
            try write(value, with: &writer)
            writer.bytes.append(0x0A)
            try writer.bytes.withUnsafeBytes(output)
        }
    }

    private static func write<T: Encodable>(_ value: T, with writer: inout Writer) throws {
        if let scalar = try Encoding.scalar(value) {
            writer.write(scalar)
        } else {
            let root = Node()
            try value.encode(to: Encoding(node: root, codingPath: []))
            guard root.kind != .empty else { throw Unsupported() }
            try writer.write(root, depth: 0)
        }
    }

    /// A number, string, boolean or null, written when the tree is.
    package enum Scalar {
        case null
        case bool(Bool)
        case int(Int64)
        case uint(UInt64)
        case double(Double)
        case float(Float)
        case string(String)
    }

    /// A value under construction: containers are filled after they are handed out. A child that
    /// is itself a container is kept as the value it came from and encoded when the writer reaches
    /// it, then dropped: what stands in memory at once is one path from the root, not the tree.
    package final class Node {
        package enum Kind { case empty, single, array, object }
        package enum Child {
            case scalar(Scalar)
            case node(Node)
            case deferred(any Encodable, [CodingKey])
        }

        package var kind = Kind.empty
        package var single = Scalar.null
        package var children: [Child] = []
        /// For objects: the key of each child.
        package var keys: [String] = []
        /// For large objects: where each key is in `keys`.
        private var positions: [String: Int] = [:]

        /// Sets `key` to `child`, replacing an earlier value of the same key as Foundation does.
        package func set(_ key: String, _ child: Child) {
            kind = .object
            if let position = position(of: key) {
                children[position] = child
                return
            }
            keys.append(key)
            children.append(child)
            if keys.count > 16 { positions[key] = keys.count - 1 }
        }

        private func position(of key: String) -> Int? {
            if keys.count <= 16 { return keys.firstIndex(of: key) }
            if positions.count < keys.count {
                for (index, name) in keys.enumerated() where positions[name] == nil { positions[name] = index }
            }
            return positions[key]
        }

        package func append(_ child: Child) {
            kind = .array
            children.append(child)
        }
    }

    package struct Writer {
        package var bytes: [UInt8] = []
        /// Room a value lays itself out in before it is appended (a timeline point), kept from one to
        /// the next: each would otherwise take a few KiB from the heap, under its lock.
        var scratch: [UInt8] = []
        /// Where full pieces go as they are written (nil: everything stays in `bytes`).
        var output: ((UnsafeRawBufferPointer) throws -> Void)?
        /// Bytes gathered before they are handed to `output`.
        package static let flushSize = 1 << 20
        /// Per depth, the keys of the last object written there and their sorted order: objects of
        /// one type (a timeline's points) come in runs with the same keys, sorted once per run.
        private var orders: [(keys: [String], order: [Int])] = []
        private static let spaces = [UInt8](repeating: UInt8(ascii: " "), count: 128)

        package init() { bytes.reserveCapacity(1 << 16) }

        mutating func indent(_ depth: Int) {
            if 2 * depth <= Self.spaces.count {
                bytes.append(contentsOf: Self.spaces[0..<(2 * depth)])
            } else {
                bytes.append(contentsOf: repeatElement(UInt8(ascii: " "), count: 2 * depth))
            }
        }

        /// The positions of `keys` in the order of their UTF-8 bytes.
        mutating func sortedOrder(_ keys: [String], depth: Int) -> [Int] {
            while orders.count <= depth { orders.append(([], [])) }
            if orders[depth].keys == keys { return orders[depth].order }
            let order = keys.indices.sorted { keys[$0].utf8.lexicographicallyPrecedes(keys[$1].utf8) }
            orders[depth] = (keys, order)
            return order
        }

        /// Hands what was written to `output` once a piece is full.
        mutating func flushIfFull() throws {
            guard bytes.count >= Self.flushSize, let output else { return }
            try bytes.withUnsafeBytes(output)
            bytes.removeAll(keepingCapacity: true)
        }

        package mutating func write(_ node: Node, depth: Int) throws {
            switch node.kind {
            case .single:
                write(node.single)
            case .empty:
                bytes.append(contentsOf: [UInt8(ascii: "{"), 0x0A, 0x0A])
                indent(depth)
                bytes.append(UInt8(ascii: "}"))
            case .array:
                bytes.append(contentsOf: [UInt8(ascii: "["), 0x0A])
                if node.children.isEmpty { bytes.append(0x0A) }
                for (index, child) in node.children.enumerated() {
                    indent(depth + 1)
                    try write(child, depth: depth + 1)
                    if index < node.children.count - 1 { bytes.append(UInt8(ascii: ",")) }
                    bytes.append(0x0A)
                    try flushIfFull()
                }
                indent(depth)
                bytes.append(UInt8(ascii: "]"))
            case .object:
                bytes.append(contentsOf: [UInt8(ascii: "{"), 0x0A])
                if node.children.isEmpty { bytes.append(0x0A) }
                let order = sortedOrder(node.keys, depth: depth)
                for (rank, index) in order.enumerated() {
                    indent(depth + 1)
                    write(string: node.keys[index])
                    bytes.append(contentsOf: [UInt8(ascii: " "), UInt8(ascii: ":"), UInt8(ascii: " ")])
                    try write(node.children[index], depth: depth + 1)
                    if rank < order.count - 1 { bytes.append(UInt8(ascii: ",")) }
                    bytes.append(0x0A)
                    try flushIfFull()
                }
                indent(depth)
                bytes.append(UInt8(ascii: "}"))
            }
        }

        mutating func write(_ child: Node.Child, depth: Int) throws {
            switch child {
            case .scalar(let scalar): write(scalar)
            case .node(let node): try write(node, depth: depth)
            case .deferred(let value, let codingPath):
                if let direct = value as? any PrettyJSONDirect {
                    try direct.writeJSON(to: &self, depth: depth)
                    return
                }
                let node = Node()
                try value.encode(to: Encoding(node: node, codingPath: codingPath))
                try write(node, depth: depth)
            }
        }

        package mutating func write(_ scalar: Scalar) {
            switch scalar {
            case .null: bytes.append(contentsOf: "null".utf8)
            case .bool(let value): bytes.append(contentsOf: (value ? "true" : "false").utf8)
            case .int(let value): write(integer: value)
            case .uint(let value): write(unsigned: value)
            case .double(let value):
                if value.isNaN {
                    write(string: NonFiniteJSON.nan)
                } else if value.isInfinite {
                    write(string: value < 0 ? NonFiniteJSON.negativeInfinity : NonFiniteJSON.positiveInfinity)
                } else {
                    write(finite: value)
                }
            case .float(let value):
                if value.isNaN {
                    write(string: NonFiniteJSON.nan)
                } else if value.isInfinite {
                    write(string: value < 0 ? NonFiniteJSON.negativeInfinity : NonFiniteJSON.positiveInfinity)
                } else {
                    write(finite: value)
                }
            case .string(let value): write(string: value)
            }
        }

        /// An integer's decimal digits (its `description`), written straight into `bytes`.
        package mutating func write(integer value: Int64) {
            if value < 0 {
                bytes.append(UInt8(ascii: "-"))
                write(unsigned: value.magnitude)
            } else {
                write(unsigned: UInt64(value))
            }
        }

        /// An unsigned integer's decimal digits (its `description`), written straight into `bytes`.
        package mutating func write(unsigned value: UInt64) {
            if value < 10 {
                bytes.append(UInt8(ascii: "0") &+ UInt8(truncatingIfNeeded: value))
                return
            }
            // At most 20 digits, written from the last into a fixed buffer.
            var digits: (UInt64, UInt64, UInt64) = (0, 0, 0)
            withUnsafeMutableBytes(of: &digits) { buffer in
                var rest = value
                var start = 24
                while rest > 0 {
                    start -= 1
                    let (quotient, remainder) = rest.quotientAndRemainder(dividingBy: 10)
                    buffer[start] = UInt8(ascii: "0") &+ UInt8(truncatingIfNeeded: remainder)
                    rest = quotient
                }
                bytes.append(contentsOf: UnsafeRawBufferPointer(rebasing: buffer[start..<24]))
            }
        }

        /// A finite number as Swift prints it (its `description`), without a trailing `.0`, written
        /// straight into `bytes`: the standard library hands its digits to ``NumberOutput`` without
        /// making a String.
        package mutating func write<Number: BinaryFloatingPoint & TextOutputStreamable>(finite value: Number) {
            var output = NumberOutput()
            swap(&output.bytes, &bytes)
            let start = output.bytes.count
            value.write(to: &output)
            swap(&output.bytes, &bytes)
            let end = bytes.count
            if end - start >= 2, bytes[end - 1] == UInt8(ascii: "0"), bytes[end - 2] == UInt8(ascii: ".") {
                bytes.removeLast(2)
            }
        }

        package mutating func write(string: String) {
            bytes.append(UInt8(ascii: "\""))
            for byte in string.utf8 {
                switch byte {
                case UInt8(ascii: "\""): bytes.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "\"")])
                case UInt8(ascii: "\\"): bytes.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "\\")])
                case 0x08: bytes.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "b")])
                case 0x09: bytes.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "t")])
                case 0x0A: bytes.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "n")])
                case 0x0C: bytes.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "f")])
                case 0x0D: bytes.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "r")])
                case 0..<0x20:
                    let hex = Array("0123456789abcdef".utf8)
                    bytes.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "u"), UInt8(ascii: "0"), UInt8(ascii: "0")])
                    bytes.append(hex[Int(byte >> 4)])
                    bytes.append(hex[Int(byte & 0xF)])
                default: bytes.append(byte)
                }
            }
            bytes.append(UInt8(ascii: "\""))
        }
    }

    /// Where a number writes its text: appended to `bytes`, the standard library's ASCII digits
    /// without a String between.
    package struct NumberOutput: TextOutputStream {
        package var bytes: [UInt8] = []

        package mutating func write(_ string: String) { bytes.append(contentsOf: string.utf8) }

        package mutating func _writeASCII(_ buffer: UnsafeBufferPointer<UInt8>) { bytes.append(contentsOf: buffer) }
    }

    /// The `Encoder` that builds the tree.
    package struct Encoding: Encoder {
        package let node: Node
        package let codingPath: [CodingKey]
        package var userInfo: [CodingUserInfoKey: Any] { [:] }

        package func container<Key: CodingKey>(keyedBy type: Key.Type) -> KeyedEncodingContainer<Key> {
            if node.kind == .empty || node.kind == .single { node.kind = .object }
            return KeyedEncodingContainer(Keyed<Key>(node: node, codingPath: codingPath))
        }

        package func unkeyedContainer() -> UnkeyedEncodingContainer {
            if node.kind == .empty || node.kind == .single { node.kind = .array }
            return Unkeyed(node: node, codingPath: codingPath)
        }

        package func singleValueContainer() -> SingleValueEncodingContainer { Single(node: node, codingPath: codingPath) }

        /// `value` as a scalar when it is one (type comparisons, not casts: this runs for every number);
        /// nil for containers; ``Unsupported`` for the types Foundation encodes in its own way.
        package static func scalar<T: Encodable>(_ value: T) throws -> Scalar? {
            if T.self == Double.self { return .double(unsafeBitCast(value, to: Double.self)) }
            if T.self == Int.self { return .int(Int64(unsafeBitCast(value, to: Int.self))) }
            if T.self == String.self { return .string(unsafeBitCast(value, to: String.self)) }
            if T.self == Bool.self { return .bool(unsafeBitCast(value, to: Bool.self)) }
            if T.self == Float.self { return .float(unsafeBitCast(value, to: Float.self)) }
            if T.self == Int64.self { return .int(unsafeBitCast(value, to: Int64.self)) }
            if T.self == Int32.self { return .int(Int64(unsafeBitCast(value, to: Int32.self))) }
            if T.self == Int16.self { return .int(Int64(unsafeBitCast(value, to: Int16.self))) }
            if T.self == Int8.self { return .int(Int64(unsafeBitCast(value, to: Int8.self))) }
            if T.self == UInt.self { return .uint(UInt64(unsafeBitCast(value, to: UInt.self))) }
            if T.self == UInt64.self { return .uint(unsafeBitCast(value, to: UInt64.self)) }
            if T.self == UInt32.self { return .uint(UInt64(unsafeBitCast(value, to: UInt32.self))) }
            if T.self == UInt16.self { return .uint(UInt64(unsafeBitCast(value, to: UInt16.self))) }
            if T.self == UInt8.self { return .uint(UInt64(unsafeBitCast(value, to: UInt8.self))) }
            if T.self == Date.self || T.self == Data.self || T.self == URL.self || T.self == Decimal.self { throw Unsupported() }
            return nil
        }

        /// `value` as a child: a scalar, or the value itself, encoded when it is written.
        package static func child<T: Encodable>(_ value: T, codingPath: @autoclosure () -> [CodingKey]) throws -> Node.Child {
            if let scalar = try scalar(value) { return .scalar(scalar) }
            return .deferred(value, codingPath())
        }
    }

    package struct Keyed<Key: CodingKey>: KeyedEncodingContainerProtocol {
        package let node: Node
        package let codingPath: [CodingKey]

        package mutating func encodeNil(forKey key: Key) throws { node.set(key.stringValue, .scalar(.null)) }

        package mutating func encode<T: Encodable>(_ value: T, forKey key: Key) throws {
            node.set(key.stringValue, try Encoding.child(value, codingPath: codingPath + [key]))
        }

        package mutating func nestedContainer<NestedKey: CodingKey>(
            keyedBy keyType: NestedKey.Type, forKey key: Key
        ) -> KeyedEncodingContainer<NestedKey> {
            let child = Node()
            child.kind = .object
            node.set(key.stringValue, .node(child))
            return KeyedEncodingContainer(Keyed<NestedKey>(node: child, codingPath: codingPath + [key]))
        }

        package mutating func nestedUnkeyedContainer(forKey key: Key) -> UnkeyedEncodingContainer {
            let child = Node()
            child.kind = .array
            node.set(key.stringValue, .node(child))
            return Unkeyed(node: child, codingPath: codingPath + [key])
        }

        package mutating func superEncoder() -> Encoder {
            let child = Node()
            node.set("super", .node(child))
            return Encoding(node: child, codingPath: codingPath)
        }

        package mutating func superEncoder(forKey key: Key) -> Encoder {
            let child = Node()
            node.set(key.stringValue, .node(child))
            return Encoding(node: child, codingPath: codingPath + [key])
        }
    }

    package struct Unkeyed: UnkeyedEncodingContainer {
        package let node: Node
        package let codingPath: [CodingKey]
        package var count: Int { node.children.count }

        package mutating func encodeNil() throws { node.append(.scalar(.null)) }

        package mutating func encode<T: Encodable>(_ value: T) throws {
            node.append(try Encoding.child(value, codingPath: codingPath))
        }

        package mutating func nestedContainer<NestedKey: CodingKey>(keyedBy keyType: NestedKey.Type) -> KeyedEncodingContainer<NestedKey> {
            let child = Node()
            child.kind = .object
            node.append(.node(child))
            return KeyedEncodingContainer(Keyed<NestedKey>(node: child, codingPath: codingPath))
        }

        package mutating func nestedUnkeyedContainer() -> UnkeyedEncodingContainer {
            let child = Node()
            child.kind = .array
            node.append(.node(child))
            return Unkeyed(node: child, codingPath: codingPath)
        }

        package mutating func superEncoder() -> Encoder {
            let child = Node()
            node.append(.node(child))
            return Encoding(node: child, codingPath: codingPath)
        }
    }

    package struct Single: SingleValueEncodingContainer {
        package let node: Node
        package let codingPath: [CodingKey]

        package mutating func encodeNil() throws {
            node.kind = .single
            node.single = .null
        }

        package mutating func encode<T: Encodable>(_ value: T) throws {
            if let scalar = try Encoding.scalar(value) {
                node.kind = .single
                node.single = scalar
            } else {
                try value.encode(to: Encoding(node: node, codingPath: codingPath))
            }
        }
    }
}
