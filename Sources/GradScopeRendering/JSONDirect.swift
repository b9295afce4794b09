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
        // The point is laid out in a buffer of room enough for its longest form, then appended at once:
        // no bounds check, no reference count and no growth check per byte (a long run's timeline
        // holds hundreds of thousands of points, each of some forty pieces).
        writeLine(to: &writer, depth: depth, indented: false, comma: false, newline: false)
    }

    /// The point as an element of a list: indented by `depth` when `indented`, then the point, its
    /// comma when `comma`, and a newline when `newline`.
    func writeLine(to writer: inout PrettyJSON.Writer, depth: Int, indented: Bool, comma: Bool, newline: Bool) {
        let room = PointBytes.room(self, depth: depth)
        if writer.scratch.count < room { writer.scratch = [UInt8](repeating: 0, count: Swift.max(room, 4096)) }
        let used = writer.scratch.withUnsafeMutableBufferPointer { buffer -> Int in
            var out = PointBytes(base: buffer.baseAddress!, depth: depth)
            if indented { out.indent() }
            out.write(self)
            if comma { out.comma() }
            if newline { out.newline() }
            return out.count
        }
        writer.scratch.withUnsafeBufferPointer { buffer in
            writer.bytes.append(contentsOf: UnsafeBufferPointer(rebasing: buffer[0..<used]))
        }
    }
}

/// One timeline point's JSON, laid out at a pointer with room for it (``room(_:depth:)``): the bytes
/// of the point's `Encodable` conformance through ``PrettyJSON`` (keys sorted by their UTF-8 bytes,
/// absent ones left out, `"key" : value`, two spaces per depth, numbers as their `description`
/// without a trailing `.0`, non-finite ones as the contract's strings).
package struct PointBytes: TextOutputStream {
    let base: UnsafeMutablePointer<UInt8>
    let depth: Int
    private(set) var count = 0
    private var first = true

    init(base: UnsafeMutablePointer<UInt8>, depth: Int) {
        self.base = base
        self.depth = depth
    }

    /// The most bytes `point` at `depth` can take: fifteen fields of at most 24 bytes of key, 26 of
    /// value and their indentation, and a line per element of its two lists.
    package static func room(_ point: TimelinePoint, depth: Int) -> Int {
        let elements = (point.log2Counts?.count ?? 0) + (point.gradientLog2Counts?.count ?? 0)
        return 17 * (64 + 2 * depth) + (elements + 4) * (2 * depth + 32) + 64
    }

    mutating func write(_ point: TimelinePoint) {
        byte(UInt8(ascii: "{"))
        byte(0x0A)
        // The CodingKeys' strings in the order of their UTF-8 bytes.
        integer("dead_units", point.deadUnits)
        integers("gradient_log2_counts", point.gradientLog2Counts)
        integer("gradient_log2_min", point.gradientLog2Min)
        integer("gradient_non_finite", point.gradientNonFinite)
        double("gradient_norm", point.gradientNorm)
        double("gradient_ratio", point.gradientRatio)
        double("gradient_zero_fraction", point.gradientZeroFraction)
        integers("log2_counts", point.log2Counts)
        integer("log2_min", point.log2Min)
        integer("non_finite", point.nonFinite)
        double("norm", point.norm)
        integer("step", point.step)
        double("update_per_save", point.updatePerSave)
        double("update_ratio", point.updateRatio)
        double("zero_fraction", point.zeroFraction)
        // An empty object is "{", a blank line and "}".
        byte(0x0A)
        if first { byte(0x0A) }
        spaces(2 * depth)
        byte(UInt8(ascii: "}"))
    }

    /// The point's indentation, before its opening brace.
    mutating func indent() { spaces(2 * depth) }

    mutating func comma() { byte(UInt8(ascii: ",")) }

    mutating func newline() { byte(0x0A) }

    @inline(__always)
    private mutating func byte(_ value: UInt8) {
        base[count] = value
        count += 1
    }

    @inline(__always)
    private mutating func spaces(_ n: Int) {
        (base + count).initialize(repeating: UInt8(ascii: " "), count: n)
        count += n
    }

    private mutating func copy(_ bytes: UnsafeBufferPointer<UInt8>) {
        guard let source = bytes.baseAddress, !bytes.isEmpty else { return }
        (base + count).initialize(from: source, count: bytes.count)
        count += bytes.count
    }

    private mutating func key(_ key: StaticString) {
        if !first {
            byte(UInt8(ascii: ","))
            byte(0x0A)
        }
        first = false
        spaces(2 * depth + 2)
        byte(UInt8(ascii: "\""))
        key.withUTF8Buffer { copy($0) }
        byte(UInt8(ascii: "\""))
        byte(UInt8(ascii: " "))
        byte(UInt8(ascii: ":"))
        byte(UInt8(ascii: " "))
    }

    private mutating func integer(_ key: StaticString, _ value: Int?) {
        guard let value else { return }
        self.key(key)
        integer(value)
    }

    private mutating func double(_ key: StaticString, _ value: Double?) {
        guard let value else { return }
        self.key(key)
        if value.isNaN {
            quoted(NonFiniteJSON.nan)
        } else if value.isInfinite {
            quoted(value < 0 ? NonFiniteJSON.negativeInfinity : NonFiniteJSON.positiveInfinity)
        } else {
            let start = count
            value.write(to: &self)
            if count - start >= 2, base[count - 1] == UInt8(ascii: "0"), base[count - 2] == UInt8(ascii: ".") { count -= 2 }
        }
    }

    private mutating func integers(_ key: StaticString, _ values: [Int]?) {
        guard let values else { return }
        self.key(key)
        byte(UInt8(ascii: "["))
        byte(0x0A)
        if values.isEmpty { byte(0x0A) }
        values.withUnsafeBufferPointer { values in
            for index in values.indices {
                spaces(2 * depth + 4)
                integer(values[index])
                if index < values.count - 1 { byte(UInt8(ascii: ",")) }
                byte(0x0A)
            }
        }
        spaces(2 * depth + 2)
        byte(UInt8(ascii: "]"))
    }

    private mutating func quoted(_ text: String) {
        byte(UInt8(ascii: "\""))
        for character in text.utf8 { byte(character) }
        byte(UInt8(ascii: "\""))
    }

    /// An integer's decimal digits (its `description`).
    @inline(__always)
    private mutating func integer(_ value: Int) {
        if value < 0 { byte(UInt8(ascii: "-")) }
        var rest = value.magnitude
        if rest < 10 {
            byte(UInt8(ascii: "0") &+ UInt8(truncatingIfNeeded: rest))
            return
        }
        var digits = 0
        var probe = rest
        while probe > 0 {
            digits += 1
            probe /= 10
        }
        var at = count + digits
        count = at
        while rest > 0 {
            at -= 1
            let (quotient, remainder) = rest.quotientAndRemainder(dividingBy: 10)
            base[at] = UInt8(ascii: "0") &+ UInt8(truncatingIfNeeded: remainder)
            rest = quotient
        }
    }

    package mutating func write(_ string: String) {
        var string = string
        string.withUTF8 { copy($0) }
    }

    package mutating func _writeASCII(_ buffer: UnsafeBufferPointer<UInt8>) { copy(buffer) }
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
        try points.withUnsafeBufferPointer { points in
            for index in points.indices {
                points[index].writeLine(to: &writer, depth: depth + 2, indented: true, comma: index < points.count - 1, newline: true)
                try writer.flushIfFull()
            }
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

/// A list of timelines, the bulk of a scan's JSON (tens of megabytes over a long run): cut in pieces
/// (consecutive timelines of about ``TimelineWriting/pointsPerPiece`` points), written by `threads`
/// threads each taking the next piece as it is free, into its own buffer; meanwhile this thread hands
/// the pieces on in order as they are done, a few pieces ahead at most. The bytes are those written
/// one timeline after the other.
extension Array: PrettyJSONDirect where Element == TensorTimeline {
    package func writeJSON(to writer: inout PrettyJSON.Writer, depth: Int) throws {
        try writeJSON(to: &writer, depth: depth, threads: TimelineWriting.threads(self))
    }

    /// The list, its pieces written on up to `threads` threads at once (one: one after the other, in this thread).
    package func writeJSON(to writer: inout PrettyJSON.Writer, depth: Int, threads: Int) throws {
        writer.bytes.append(UInt8(ascii: "["))
        writer.bytes.append(0x0A)
        if isEmpty { writer.bytes.append(0x0A) }
        let pieces = TimelineWriting.pieces(self)
        if threads <= 1 || pieces.count <= 1 {
            for range in pieces { try writeElements(range, to: &writer, depth: depth) }
        } else {
            let queue = TimelineWriting.PieceQueue(count: pieces.count, ahead: 2 * threads)
            let group = DispatchGroup()
            for _ in 0..<Swift.min(threads, pieces.count) {
                DispatchQueue.global().async(group: group) {
                    while let slot = queue.take() {
                        var piece = PrettyJSON.Writer()
                        let result = Result { () throws -> [UInt8] in
                            try writeElements(pieces[slot], to: &piece, depth: depth)
                            return piece.bytes
                        }
                        queue.put(slot, result)
                    }
                }
            }
            do {
                for slot in pieces.indices { try writer.append(flushing: try queue.wait(for: slot).get()) }
            } catch {
                queue.cancel()
                group.wait()
                throw error
            }
            group.wait()
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
    /// Appends `piece`, handing what was written to the output each time ``flushSize`` bytes are
    /// gathered, as when the same bytes are written one value at a time: the output gets the same
    /// pieces. Whole pieces of ``flushSize`` within `piece` are handed on from it, not copied first.
    mutating func append(flushing piece: [UInt8]) throws {
        guard let output, bytes.count + piece.count >= Self.flushSize else {
            bytes.append(contentsOf: piece)
            return
        }
        try piece.withUnsafeBytes { piece in
            // Fill what is gathered up to a piece, then whole pieces straight from `piece`, then keep the rest.
            var offset = Swift.max(Self.flushSize - bytes.count, 0)
            bytes.append(contentsOf: piece[0..<offset])
            try flushIfFull()
            while piece.count - offset >= Self.flushSize {
                try output(UnsafeRawBufferPointer(rebasing: piece[offset..<(offset + Self.flushSize)]))
                offset += Self.flushSize
            }
            bytes.append(contentsOf: piece[offset...])
        }
    }
}

/// How a list of timelines is cut into pieces written side by side.
package enum TimelineWriting {
    /// The pieces of a list between the threads that write them and the one that hands them on: a
    /// thread takes the next piece unless it is more than `ahead` pieces past the one to hand on next.
    final class PieceQueue: @unchecked Sendable {
        private let condition = NSCondition()
        private var results: [Result<[UInt8], any Error>?]
        private var next = 0
        private var handed = 0
        private var cancelled = false
        private let ahead: Int

        init(count: Int, ahead: Int) {
            results = Array(repeating: nil, count: count)
            self.ahead = Swift.max(ahead, 1)
        }

        /// The next piece to write; nil when every piece is taken or the list was given up.
        func take() -> Int? {
            condition.lock()
            defer { condition.unlock() }
            while !cancelled && next < results.count && next >= handed + ahead { condition.wait() }
            guard !cancelled, next < results.count else { return nil }
            next += 1
            return next - 1
        }

        func put(_ slot: Int, _ result: Result<[UInt8], any Error>) {
            condition.lock()
            results[slot] = result
            condition.broadcast()
            condition.unlock()
        }

        /// The piece `slot` once written (taken out of the queue: slots are asked for in order).
        func wait(for slot: Int) -> Result<[UInt8], any Error> {
            condition.lock()
            defer { condition.unlock() }
            while results[slot] == nil { condition.wait() }
            let result = results[slot]!
            results[slot] = nil
            handed = slot + 1
            condition.broadcast()
            return result
        }

        /// Stops handing out pieces.
        func cancel() {
            condition.lock()
            cancelled = true
            condition.broadcast()
            condition.unlock()
        }
    }

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
