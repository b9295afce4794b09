import ElementTypes
import Foundation
import GradScopeModel
import GradScopeSources
import Synchronization

/// The messages between the parent and its workers, written field by field: a worker's
/// description of a file (its checkpoints: tensors, storage, metadata) is most of what crosses,
/// thousands of fields a save, and going through `Codable` containers cost the parent as much
/// again as building the description cost the worker. A step's measurements (``StepRecord``,
/// ``UnitSnapshot``) still travel in ``BinaryCoding`` inside the message.
///
/// A message starts with ``magic``, ``version`` and its kind; integers are zigzag LEB128 varints,
/// doubles their 8 bytes little-endian (NaN and infinities arrive as they left), strings and lists
/// a count then their contents, optionals a presence byte. Reading checks every count against the
/// bytes left, so a cut or corrupt message is an error, never a crash or a huge allocation.
package enum WorkerMessages {
    package static let magic: UInt8 = 0x57  // "W"
    /// Raised whenever the layout of a message changes: the parent and its workers are one
    /// executable, so a mismatch means a message that is not one of ours.
    package static let version: UInt8 = 2
    static let requestKind: UInt8 = 0x51  // "Q"
    static let responseKind: UInt8 = 0x41  // "A"

    // MARK: Responses

    package static func encode(_ response: WorkerResponse) throws -> Data {
        var w = WireWriter()
        w.header(responseKind)
        var flags: UInt8 = 0
        if response.checkpoints != nil { flags |= 1 }
        if response.record != nil { flags |= 2 }
        if response.units != nil { flags |= 4 }
        if response.error != nil { flags |= 8 }
        w.byte(flags)
        if let checkpoints = response.checkpoints {
            w.count(checkpoints.count)
            for checkpoint in checkpoints { w.checkpoint(checkpoint) }
        }
        if let record = response.record { w.blob(try BinaryCoding.encode(record)) }
        if let units = response.units { w.blob(try BinaryCoding.encode(units)) }
        if let error = response.error { w.string(error) }
        return w.data
    }

    package static func decodeResponse(_ data: Data) throws -> WorkerResponse {
        try data.withUnsafeBytes { raw in
            var r = WireReader(raw)
            try r.header(responseKind)
            let flags = try r.byte()
            guard flags & ~0x0F == 0 else { throw WireError.malformed("unknown parts \(flags)") }
            var response = WorkerResponse()
            if flags & 1 != 0 {
                let count = try r.count()
                var checkpoints: [Checkpoint] = []
                checkpoints.reserveCapacity(count)
                for _ in 0..<count { checkpoints.append(try r.checkpoint()) }
                response.checkpoints = checkpoints
            }
            if flags & 2 != 0 { response.record = try BinaryCoding.decode(StepRecord.self, from: try r.blob()) }
            if flags & 4 != 0 { response.units = try BinaryCoding.decode([UnitSnapshot].self, from: try r.blob()) }
            if flags & 8 != 0 { response.error = try r.string() }
            try r.end()
            return response
        }
    }

    // MARK: Requests

    package static func encode(_ request: WorkerRequest) -> Data {
        var w = WireWriter()
        w.header(requestKind)
        w.string(request.task.rawValue)
        w.string(request.path)
        w.optional(request.layout) { $0.string($1.rawValue) }
        w.bool(request.followLinks)
        w.bool(request.allowPlugins)
        w.optional(request.current) { $0.checkpoint($1) }
        w.optional(request.previous) { $0.checkpoint($1) }
        w.int(request.index)
        w.bool(request.wantUnits)
        w.strings(request.gradientNames)
        w.optional(request.only) { w, keys in
            w.count(keys.count)
            for key in keys { w.string(key.description) }
        }
        w.int(request.blockElements)
        w.int(request.threads)
        w.int(request.histogramBins)
        w.double(request.deadActivationFraction)
        w.bool(request.perUnitEverywhere)
        return w.data
    }

    package static func decodeRequest(_ data: Data) throws -> WorkerRequest {
        try data.withUnsafeBytes { raw in
            var r = WireReader(raw)
            try r.header(requestKind)
            let task = try r.enumeration(WorkerRequest.Task.self)
            let path = try r.string()
            let layout = try r.optional { try $0.enumeration(LayoutKind.self) }
            let followLinks = try r.bool()
            let allowPlugins = try r.bool()
            let current = try r.optional { try $0.checkpoint() }
            let previous = try r.optional { try $0.checkpoint() }
            let index = try r.int()
            let wantUnits = try r.bool()
            let gradientNames = try r.strings()
            let only = try r.optional { r -> [TensorKey] in
                let count = try r.count()
                var keys: [TensorKey] = []
                keys.reserveCapacity(count)
                for _ in 0..<count {
                    let text = try r.string()
                    guard let key = TensorKey(text) else { throw WireError.malformed("not a tensor key: \(text)") }
                    keys.append(key)
                }
                return keys
            }
            var request = WorkerRequest(
                task: task, path: path, layout: layout, followLinks: followLinks, allowPlugins: allowPlugins, current: current,
                previous: previous, index: index, wantUnits: wantUnits, gradientNames: gradientNames, only: only,
                blockElements: try r.int(), threads: try r.int(), histogramBins: try r.int(), deadActivationFraction: try r.double())
            request.perUnitEverywhere = try r.bool()
            try r.end()
            return request
        }
    }
}

package enum WireError: Error, CustomStringConvertible {
    case malformed(String)

    package var description: String {
        switch self {
        case .malformed(let what): return "malformed worker message: \(what)"
        }
    }
}

// MARK: Writing

package struct WireWriter {
    package private(set) var bytes: [UInt8] = []

    package init() { bytes.reserveCapacity(1 << 12) }

    package var data: Data { Data(bytes) }

    mutating func header(_ kind: UInt8) {
        bytes.append(WorkerMessages.magic)
        bytes.append(WorkerMessages.version)
        bytes.append(kind)
    }

    mutating func byte(_ value: UInt8) { bytes.append(value) }

    mutating func bool(_ value: Bool) { bytes.append(value ? 1 : 0) }

    mutating func unsigned(_ value: UInt64) { ByteAppending.varint(value, to: &bytes) }

    /// Zigzag: small negative numbers stay short.
    mutating func int(_ value: Int) {
        let v = Int64(value)
        unsigned(UInt64(bitPattern: (v << 1) ^ (v >> 63)))
    }

    mutating func count(_ value: Int) { unsigned(UInt64(value)) }

    mutating func double(_ value: Double) { ByteAppending.littleEndian(value.bitPattern, to: &bytes) }

    mutating func string(_ value: String) { ByteAppending.string(value, to: &bytes) }

    mutating func strings(_ values: [String]) {
        count(values.count)
        for value in values { string(value) }
    }

    mutating func ints(_ values: [Int]) {
        count(values.count)
        for value in values { int(value) }
    }

    mutating func blob(_ value: Data) {
        count(value.count)
        bytes.append(contentsOf: value)
    }

    mutating func optional<T>(_ value: T?, _ write: (inout WireWriter, T) -> Void) {
        guard let value else {
            bytes.append(0)
            return
        }
        bytes.append(1)
        write(&self, value)
    }

    mutating func checkpoint(_ c: Checkpoint) {
        string(c.source)
        // The file is the source for every file but a multi-step one's steps.
        optional(c.file == c.source ? nil : c.file) { $0.string($1) }
        string(c.layout.rawValue)
        let m = c.metadata
        optional(m.step) { $0.int($1) }
        optional(m.stepSource) { $0.string($1.rawValue) }
        optional(m.loss) { $0.double($1) }
        optional(m.learningRate) { $0.double($1) }
        optional(m.framework) { $0.string($1) }
        optional(m.optimizer) { $0.string($1) }
        optional(m.epoch) { $0.int($1) }
        optional(m.nameKey) { $0.ints($1) }
        section { w in
            w.count(c.tensors.count)
            for t in c.tensors { w.tensor(t) }
        }
        section { $0.strings(c.layers) }
        count(c.skipped.count)
        for item in c.skipped {
            string(item.item)
            string(item.kind.rawValue)
            string(item.reason)
        }
        strings(c.notes)
        optional(c.modified) { $0.double($1.timeIntervalSinceReferenceDate) }
        int(c.stamp.size)
        double(c.stamp.mtime)
        section { w in
            w.count(c.storage.count)
            for s in c.storage { w.optional(s) { $0.storage($1) } }
        }
    }

    /// What `write` writes, after its length in bytes: a part the reader can take whole
    /// (``WireReader/section(_:_:)``).
    mutating func section(_ write: (inout WireWriter) -> Void) {
        var inner = WireWriter()
        write(&inner)
        count(inner.bytes.count)
        bytes.append(contentsOf: inner.bytes)
    }

    mutating func tensor(_ t: TensorRef) {
        string(t.name)
        string(t.layer)
        string(t.role.rawValue)
        optional(t.slot) { $0.string($1.rawValue) }
        optional(t.slotName) { $0.string($1) }
        ints(t.shape)
        string(t.dtype.description)
        optional(t.unitAxis) { $0.int($1) }
        optional(t.gates) { $0.int($1) }
        string(t.path)
        int(t.fileIndex)
        optional(t.trainable) { $0.bool($1) }
    }

    mutating func storage(_ s: DirectStorage) {
        int(s.offset)
        int(s.count)
        string(s.type.description)
        optional(s.chunks) { w, table in
            w.ints(table.shape)
            w.ints(table.chunkShape)
            w.bool(table.shuffled)
            w.bool(table.swapsBytes)
            w.ints(table.addresses)
            w.count(table.sizes.count)
            for size in table.sizes { w.unsigned(UInt64(size)) }
        }
    }
}

// MARK: Reading

/// Reads a message in place; every count is checked against the bytes left before anything is
/// allocated for it (each element takes at least one byte).
package struct WireReader {
    private let raw: UnsafeRawBufferPointer
    private var offset = 0

    package init(_ raw: UnsafeRawBufferPointer) { self.raw = raw }

    private var left: Int { raw.count - offset }

    mutating func header(_ kind: UInt8) throws {
        guard try byte() == WorkerMessages.magic else { throw WireError.malformed("not a worker message") }
        let version = try byte()
        guard version == WorkerMessages.version else {
            throw WireError.malformed("version \(version), expected \(WorkerMessages.version)")
        }
        let found = try byte()
        guard found == kind else { throw WireError.malformed("kind \(found), expected \(kind)") }
    }

    mutating func end() throws {
        guard left == 0 else { throw WireError.malformed("\(left) bytes left over") }
    }

    mutating func byte() throws -> UInt8 {
        guard offset < raw.count else { throw WireError.malformed("cut short") }
        defer { offset += 1 }
        return raw[offset]
    }

    mutating func bool() throws -> Bool {
        switch try byte() {
        case 0: return false
        case 1: return true
        case let b: throw WireError.malformed("\(b) is not a boolean")
        }
    }

    mutating func unsigned() throws -> UInt64 {
        var result: UInt64 = 0
        var shift: UInt64 = 0
        while true {
            let b = try byte()
            guard shift < 64, shift < 63 || b <= 1 else { throw WireError.malformed("number too long") }
            result |= UInt64(b & 0x7F) << shift
            if b < 0x80 { return result }
            shift += 7
        }
    }

    mutating func int() throws -> Int {
        let u = try unsigned()
        return Int(Int64(bitPattern: (u >> 1) ^ (0 &- (u & 1))))
    }

    /// A count of elements that each take at least one byte.
    mutating func count() throws -> Int {
        let n = try unsigned()
        guard n <= UInt64(left) else { throw WireError.malformed("count \(n) beyond the message") }
        return Int(n)
    }

    mutating func double() throws -> Double {
        guard left >= 8 else { throw WireError.malformed("cut short") }
        var bits: UInt64 = 0
        for i in 0..<8 { bits |= UInt64(raw[offset + i]) << (8 * UInt64(i)) }
        offset += 8
        return Double(bitPattern: bits)
    }

    mutating func string() throws -> String {
        let n = try count()
        defer { offset += n }
        return String(decoding: UnsafeRawBufferPointer(rebasing: raw[offset..<(offset + n)]), as: UTF8.self)
    }

    mutating func strings() throws -> [String] {
        let n = try count()
        var values: [String] = []
        values.reserveCapacity(n)
        for _ in 0..<n { values.append(try string()) }
        return values
    }

    mutating func ints() throws -> [Int] {
        let n = try count()
        var values: [Int] = []
        values.reserveCapacity(n)
        for _ in 0..<n { values.append(try int()) }
        return values
    }

    mutating func blob() throws -> Data {
        let n = try count()
        defer { offset += n }
        return Data(UnsafeRawBufferPointer(rebasing: raw[offset..<(offset + n)]))
    }

    /// A part written by ``WireWriter/section(_:)``, read by `read`, which must take all of it;
    /// bytes equal to a part read before give the value read then (``RepeatedSections``).
    mutating func section<Value>(_ repeated: RepeatedSections<Value>, _ read: (inout WireReader) throws -> Value) throws -> Value {
        let n = try count()
        let bytes = UnsafeRawBufferPointer(rebasing: raw[offset..<(offset + n)])
        offset += n
        return try repeated.value(of: bytes) {
            var inner = WireReader(bytes)
            let value = try read(&inner)
            try inner.end()
            return value
        }
    }

    mutating func optional<T>(_ read: (inout WireReader) throws -> T) throws -> T? {
        try bool() ? try read(&self) : nil
    }

    mutating func enumeration<E: RawRepresentable>(_: E.Type) throws -> E where E.RawValue == String {
        let text = try string()
        guard let value = E(rawValue: text) else { throw WireError.malformed("unknown \(E.self) \(text)") }
        return value
    }

    mutating func checkpoint() throws -> Checkpoint {
        let source = try string()
        let file = try optional { try $0.string() } ?? source
        let layout = try enumeration(LayoutKind.self)
        var m = StepMetadata()
        m.step = try optional { try $0.int() }
        m.stepSource = try optional { try $0.enumeration(StepSource.self) }
        m.loss = try optional { try $0.double() }
        m.learningRate = try optional { try $0.double() }
        m.framework = try optional { try $0.string() }
        m.optimizer = try optional { try $0.string() }
        m.epoch = try optional { try $0.int() }
        m.nameKey = try optional { try $0.ints() }
        let tensors = try section(repeatedTensorLists) { r in
            let tensorCount = try r.count()
            var tensors: [TensorRef] = []
            tensors.reserveCapacity(tensorCount)
            for _ in 0..<tensorCount { tensors.append(try r.tensor()) }
            return tensors
        }
        let layers = try section(repeatedLayerLists) { try $0.strings() }
        let skippedCount = try count()
        var skipped: [SkippedItem] = []
        skipped.reserveCapacity(skippedCount)
        for _ in 0..<skippedCount {
            let item = try string()
            let kind = try enumeration(SkipKind.self)
            skipped.append(SkippedItem(item: item, kind: kind, reason: try string()))
        }
        let notes = try strings()
        let modified = try optional { Date(timeIntervalSinceReferenceDate: try $0.double()) }
        let stamp = FileStamp(size: try int(), mtime: try double())
        let storage = try section(repeatedStorageLists) { r in
            let storageCount = try r.count()
            var storage: [DirectStorage?] = []
            storage.reserveCapacity(storageCount)
            for _ in 0..<storageCount { storage.append(try r.optional { try $0.storage() }) }
            return storage
        }
        return Checkpoint(
            source: source, file: file, layout: layout, metadata: m, tensors: tensors, layers: layers, skipped: skipped, notes: notes,
            modified: modified, stamp: stamp, storage: storage)
    }

    mutating func tensor() throws -> TensorRef {
        let name = try string()
        let layer = try string()
        let role = try enumeration(TensorRole.self)
        let slot = try optional { try $0.enumeration(OptimizerSlot.self) }
        let slotName = try optional { try $0.string() }
        let shape = try ints()
        let dtype = ElementType(name: try string())
        let unitAxis = try optional { try $0.int() }
        let gates = try optional { try $0.int() }
        var tensor = TensorRef(
            name: name, layer: layer, role: role, slot: slot, slotName: slotName, shape: shape, dtype: dtype, unitAxis: unitAxis,
            path: try string(), fileIndex: try int(), trainable: try optional { try $0.bool() })
        tensor.gates = gates
        return tensor
    }

    mutating func storage() throws -> DirectStorage {
        let offset = try int()
        let count = try int()
        let type = ElementType(name: try string())
        let chunks = try optional { r -> DeflatedChunkTable in
            let shape = try r.ints()
            let chunkShape = try r.ints()
            let shuffled = try r.bool()
            let swapsBytes = try r.bool()
            let addresses = try r.ints()
            let n = try r.count()
            var sizes: [UInt32] = []
            sizes.reserveCapacity(n)
            for _ in 0..<n {
                let size = try r.unsigned()
                guard let exact = UInt32(exactly: size) else { throw WireError.malformed("chunk size \(size)") }
                sizes.append(exact)
            }
            return DeflatedChunkTable(
                shape: shape, chunkShape: chunkShape, shuffled: shuffled, swapsBytes: swapsBytes, addresses: addresses, sizes: sizes)
        }
        return DirectStorage(offset: offset, count: count, type: type, chunks: chunks)
    }
}

/// The parts of worker messages that the saves of one model repeat byte for byte (the tensor
/// list, the layers, where each tensor lies), each decoded once: a run of 300 saves of 300
/// tensors would otherwise decode 90,000 tensor descriptions, names and all, and compare each
/// save's list with the last one's to share it (``DescriptionInterner``). Bytes equal to a part
/// decoded before give the very value decoded then, so the saves share its storage and
/// `DescriptionInterner` finds it equal without comparing its elements. Decoding depends on
/// nothing but the bytes, so the value is the one decoding them again would give. The last
/// few distinct parts of each kind are kept, shared by the threads that decode.
package final class RepeatedSections<Value: Sendable>: Sendable {
    private struct Entry: Sendable {
        var bytes: [UInt8]
        var value: Value
    }

    private let kept = Mutex<[Entry]>([])
    private let capacity: Int

    package init(capacity: Int = 4) { self.capacity = capacity }

    /// The value decoded before from bytes equal to `bytes`, or `decode()`'s, kept for the next time.
    package func value(of bytes: UnsafeRawBufferPointer, decode: () throws -> Value) throws -> Value {
        guard let base = bytes.baseAddress, !bytes.isEmpty else { return try decode() }
        let found = kept.withLock { kept -> Value? in
            guard
                let index = kept.firstIndex(where: { entry in
                    entry.bytes.count == bytes.count && entry.bytes.withUnsafeBytes { memcmp($0.baseAddress!, base, bytes.count) == 0 }
                })
            else { return nil }
            let entry = kept.remove(at: index)
            kept.insert(entry, at: 0)
            return entry.value
        }
        if let found { return found }
        let value = try decode()
        let entry = Entry(bytes: Array(bytes), value: value)
        kept.withLock { kept in
            kept.insert(entry, at: 0)
            if kept.count > capacity { kept.removeLast(kept.count - capacity) }
        }
        return value
    }
}

private let repeatedTensorLists = RepeatedSections<[TensorRef]>()
private let repeatedLayerLists = RepeatedSections<[String]>()
private let repeatedStorageLists = RepeatedSections<[DirectStorage?]>()
