import Foundation
import GradScopeDiagnosis
import Synchronization

/// A value that writes its own JSON, byte for byte what its `Encodable` conformance gives through
/// ``PrettyJSON``, without building nodes: the timelines, tens of thousands of small objects in a long
/// run's report, went through `Encoder` containers, a node and a key array each.
package protocol PrettyJSONDirect {
    /// The value at `depth` (its opening bracket where the writer stands, its closing one indented by `depth`).
    func writeJSON(to writer: inout PrettyJSON.Writer, depth: Int) throws
}

extension PrettyJSON.Writer {
    /// Writes an object's fields in the order given (the caller gives them sorted by their keys' UTF-8
    /// bytes and leaves out the absent ones); `field` is called once per key to write its value.
    package struct ObjectFields {
        var depth: Int
        var first = true
    }

    mutating func beginObject(depth: Int) -> ObjectFields {
        bytes.append(UInt8(ascii: "{"))
        bytes.append(0x0A)
        return ObjectFields(depth: depth)
    }

    mutating func key(_ key: StaticString, in object: inout ObjectFields) {
        if !object.first {
            bytes.append(UInt8(ascii: ","))
            bytes.append(0x0A)
        }
        object.first = false
        indent(object.depth + 1)
        bytes.append(UInt8(ascii: "\""))
        key.withUTF8Buffer { bytes.append(contentsOf: $0) }
        bytes.append(contentsOf: [UInt8(ascii: "\""), UInt8(ascii: " "), UInt8(ascii: ":"), UInt8(ascii: " ")])
    }

    mutating func endObject(_ object: ObjectFields) {
        // An empty object is "{", a blank line and "}".
        bytes.append(0x0A)
        if object.first { bytes.append(0x0A) }
        indent(object.depth)
        bytes.append(UInt8(ascii: "}"))
    }

    mutating func write(integers: [Int], depth: Int) {
        bytes.append(UInt8(ascii: "["))
        bytes.append(0x0A)
        if integers.isEmpty { bytes.append(0x0A) }
        for (index, value) in integers.enumerated() {
            indent(depth + 1)
            write(integer: Int64(value))
            if index < integers.count - 1 { bytes.append(UInt8(ascii: ",")) }
            bytes.append(0x0A)
        }
        indent(depth)
        bytes.append(UInt8(ascii: "]"))
    }
}

extension TimelinePoint: PrettyJSONDirect {
    package func writeJSON(to writer: inout PrettyJSON.Writer, depth: Int) throws {
        var object = writer.beginObject(depth: depth)
        func double(_ key: StaticString, _ value: Double?) {
            guard let value else { return }
            writer.key(key, in: &object)
            writer.write(.double(value))
        }
        func integer(_ key: StaticString, _ value: Int?) {
            guard let value else { return }
            writer.key(key, in: &object)
            writer.write(integer: Int64(value))
        }
        func integers(_ key: StaticString, _ value: [Int]?) {
            guard let value else { return }
            writer.key(key, in: &object)
            writer.write(integers: value, depth: depth + 1)
        }
        // The CodingKeys' strings in the order of their UTF-8 bytes.
        integer("dead_units", deadUnits)
        integers("gradient_log2_counts", gradientLog2Counts)
        integer("gradient_log2_min", gradientLog2Min)
        integer("gradient_non_finite", gradientNonFinite)
        double("gradient_norm", gradientNorm)
        double("gradient_ratio", gradientRatio)
        double("gradient_zero_fraction", gradientZeroFraction)
        integers("log2_counts", log2Counts)
        integer("log2_min", log2Min)
        integer("non_finite", nonFinite)
        double("norm", norm)
        integer("step", step)
        double("update_per_save", updatePerSave)
        double("update_ratio", updateRatio)
        double("zero_fraction", zeroFraction)
        writer.endObject(object)
    }
}

extension TensorTimeline: PrettyJSONDirect {
    package func writeJSON(to writer: inout PrettyJSON.Writer, depth: Int) throws {
        var object = writer.beginObject(depth: depth)
        writer.key("layer", in: &object)
        writer.write(string: layer)
        writer.key("name", in: &object)
        writer.write(string: name)
        writer.key("points", in: &object)
        writer.bytes.append(UInt8(ascii: "["))
        writer.bytes.append(0x0A)
        if points.isEmpty { writer.bytes.append(0x0A) }
        for (index, point) in points.enumerated() {
            writer.indent(depth + 2)
            try point.writeJSON(to: &writer, depth: depth + 2)
            if index < points.count - 1 { writer.bytes.append(UInt8(ascii: ",")) }
            writer.bytes.append(0x0A)
            try writer.flushIfFull()
        }
        writer.indent(depth + 1)
        writer.bytes.append(UInt8(ascii: "]"))
        writer.key("shape", in: &object)
        writer.write(integers: shape, depth: depth + 1)
        if let units {
            writer.key("units", in: &object)
            writer.write(integer: Int64(units))
        }
        writer.endObject(object)
    }
}

/// A list of timelines, the bulk of a scan's JSON (tens of megabytes over a long run): written a few
/// pieces at a time, each piece (consecutive timelines of about ``pointsPerPiece`` points) by its own
/// thread into its own buffer, the pieces then handed on in order. The bytes are those written one
/// timeline after the other.
extension Array: PrettyJSONDirect where Element == TensorTimeline {
    package func writeJSON(to writer: inout PrettyJSON.Writer, depth: Int) throws {
        try writeJSON(to: &writer, depth: depth, threads: TimelineWriting.threads(self))
    }

    /// The list, its pieces written on up to `threads` threads at once (one: one after the other).
    package func writeJSON(to writer: inout PrettyJSON.Writer, depth: Int, threads: Int) throws {
        writer.bytes.append(UInt8(ascii: "["))
        writer.bytes.append(0x0A)
        if isEmpty { writer.bytes.append(0x0A) }
        let pieces = TimelineWriting.pieces(self)
        var next = 0
        while next < pieces.count {
            let batch = pieces[next..<Swift.min(next + Swift.max(threads, 1), pieces.count)]
            next = batch.endIndex
            if batch.count == 1, let range = batch.first {
                try writeElements(range, to: &writer, depth: depth)
                continue
            }
            let written = Mutex([Result<[UInt8], any Error>?](repeating: nil, count: batch.count))
            DispatchQueue.concurrentPerform(iterations: batch.count) { slot in
                var piece = PrettyJSON.Writer()
                let result = Result { () throws -> [UInt8] in
                    try writeElements(batch[batch.startIndex + slot], to: &piece, depth: depth)
                    return piece.bytes
                }
                written.withLock { $0[slot] = result }
            }
            for result in written.withLock({ $0 }) {
                guard let result else { continue }
                try writer.append(flushing: try result.get())
            }
        }
        writer.indent(depth)
        writer.bytes.append(UInt8(ascii: "]"))
    }

    /// The timelines of `range`, each indented, with its comma when one follows, and its newline.
    private func writeElements(_ range: Range<Int>, to writer: inout PrettyJSON.Writer, depth: Int) throws {
        for index in range {
            writer.indent(depth + 1)
            try self[index].writeJSON(to: &writer, depth: depth + 1)
            if index < count - 1 { writer.bytes.append(UInt8(ascii: ",")) }
            writer.bytes.append(0x0A)
            try writer.flushIfFull()
        }
    }
}

extension PrettyJSON.Writer {
    /// Appends `piece`, handing what was written to the output each time a piece of
    /// ``flushSize`` is full, as when the same bytes are written one value at a time.
    mutating func append(flushing piece: [UInt8]) throws {
        guard output != nil else {
            bytes.append(contentsOf: piece)
            return
        }
        var offset = 0
        while offset < piece.count {
            let take = Swift.min(piece.count - offset, Swift.max(Self.flushSize - bytes.count, 1))
            bytes.append(contentsOf: piece[offset..<(offset + take)])
            offset += take
            try flushIfFull()
        }
    }
}

/// How a list of timelines is cut into pieces written side by side.
package enum TimelineWriting {
    /// About a megabyte of JSON per piece (a point is a few hundred bytes).
    package static let pointsPerPiece = 2048

    /// Below this many points in all, the list is written on one thread.
    package static let concurrentPoints = 4096

    /// The threads a list is written on: one for a short list, else one per core, at most 4.
    package static func threads(_ timelines: [TensorTimeline]) -> Int {
        guard timelines.count > 1, timelines.reduce(0, { $0 + $1.points.count }) >= concurrentPoints else { return 1 }
        return Swift.max(1, Swift.min(ProcessInfo.processInfo.activeProcessorCount, 4))
    }

    /// Consecutive ranges of the timelines, each of at least one timeline and, unless one timeline
    /// alone exceeds it, at most `pointsPerPiece` points; together, every timeline once, in order.
    package static func pieces(_ timelines: [TensorTimeline], pointsPerPiece: Int = pointsPerPiece) -> [Range<Int>] {
        var pieces: [Range<Int>] = []
        var start = 0
        var points = 0
        for index in timelines.indices {
            let size = timelines[index].points.count
            if index > start && points + size > pointsPerPiece {
                pieces.append(start..<index)
                start = index
                points = 0
            }
            points += size
        }
        if start < timelines.count { pieces.append(start..<timelines.count) }
        return pieces
    }
}
