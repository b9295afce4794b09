import ElementTypes
import Foundation
import GradScopeModel
import HDF5

#if canImport(Glibc)
import Glibc
#endif

/// A safetensors file: an 8-byte little-endian header length N, N bytes of JSON naming every
/// tensor's `dtype`, `shape` and `data_offsets` (relative to the end of the header), then the
/// tensors' bytes, little-endian. Also a sharded save: `model.safetensors.index.json`, whose
/// `weight_map` names the shard file of every tensor, read as one step.
struct SafetensorsSource: CheckpointSource {
    var name: String { "safetensors" }

    func recognises(path: String, head: [UInt8]) -> Bool {
        if path.hasSuffix(".safetensors.index.json") || path.lowercased().hasSuffix(".safetensors") { return true }
        return SafetensorsFile.looksLike(path, head: head)
    }

    func open(_ path: String, options: LoadOptions) throws -> [OpenCheckpoint] {
        if path.hasSuffix(".safetensors.index.json") {
            let shards = try SafetensorsFile.shardFiles(of: path)
            let files = try shards.map { try SafetensorsFile(path: $0) }
            return [try SafetensorsFile.checkpoint(files, source: path, weightMap: try SafetensorsFile.weightMap(of: path))]
        }
        return [try SafetensorsFile.checkpoint([try SafetensorsFile(path: path)], source: path, weightMap: nil)]
    }
}

/// A dtype of the safetensors format: its name, its width, and what gradscope reads it as.
struct SafetensorsDType: Sendable, Equatable {
    let name: String
    /// Bits per element (sub-byte types exist in the format: F4, F6).
    let bits: Int
    /// Whether gradscope converts it to numbers.
    let supported: Bool

    /// Every dtype the format defines, by name.
    static let all: [String: SafetensorsDType] = {
        let list: [(String, Int, Bool)] = [
            ("BOOL", 8, true), ("U8", 8, true), ("I8", 8, true), ("F8_E5M2", 8, true), ("F8_E4M3", 8, true),
            ("I16", 16, true), ("U16", 16, true), ("F16", 16, true), ("BF16", 16, true),
            ("I32", 32, true), ("U32", 32, true), ("F32", 32, true),
            ("I64", 64, true), ("U64", 64, true), ("F64", 64, true),
            ("F8_E8M0", 8, false), ("F4", 4, false), ("F6_E2M3", 6, false), ("F6_E3M2", 6, false), ("C64", 64, false),
        ]
        return Dictionary(uniqueKeysWithValues: list.map { ($0.0, SafetensorsDType(name: $0.0, bits: $0.1, supported: $0.2)) })
    }()

    /// Bytes per element (whole bytes only: the types gradscope reads).
    var byteSize: Int { bits / 8 }

    /// The element type the rest of gradscope knows it as.
    var elementType: ElementType {
        switch name {
        case "F64": return .float64
        case "F32": return .float32
        case "F16": return .float16
        case "BF16": return .bfloat16
        case "F8_E5M2", "F8_E4M3", "F8_E8M0", "F4", "F6_E2M3", "F6_E3M2": return .otherFloat(bits: bits)
        case "BOOL": return .bool
        case "C64": return .complex(bytes: 8)
        default:
            let signed = name.hasPrefix("I")
            return .integer(bits: bits, signed: signed)
        }
    }

    /// Whether values need `Double` to be held exactly.
    var needsDouble: Bool { name == "F64" || name == "I32" || name == "U32" || name == "I64" || name == "U64" }
}

/// One tensor as a safetensors header describes it, validated against its file.
struct SafetensorsEntry: Sendable {
    let name: String
    let dtype: SafetensorsDType
    let shape: [Int]
    let count: Int
    /// Byte range relative to the end of the header.
    let begin: Int
    let end: Int
}

/// An open safetensors file with its validated header. Read by offset (`pread`), never whole.
final class SafetensorsFile: Sendable {
    let path: String
    let size: Int
    let mtime: Double
    /// The offset of the first data byte: 8 + N.
    let dataStart: Int
    /// The tensors, in the order of their bytes.
    let entries: [SafetensorsEntry]
    let byName: [String: Int]
    /// `__metadata__`: strings only.
    let metadata: [String: String]
    private let descriptor: Int32

    /// The largest header read: larger ones are refused before anything is allocated.
    static let maxHeader = 100 * 1024 * 1024
    /// The deepest nesting of JSON arrays and objects accepted (a header needs 3).
    static let maxNesting = 64

    /// Whether `head` (the first 8 bytes of `path`) is a plausible header length followed by `{`.
    static func looksLike(_ path: String, head: [UInt8]) -> Bool {
        guard head.count == 8 else { return false }
        let length = head.enumerated().reduce(UInt64(0)) { $0 | UInt64($1.element) << (8 * UInt64($1.offset)) }
        let (size, _) = FileIdentity.of(path)
        guard length >= 2, length <= UInt64(maxHeader), size >= 8, length <= UInt64(size - 8) else { return false }
        let start = FileIdentity.head(path, count: 9)
        return start.count == 9 && start[8] == UInt8(ascii: "{")
    }

    /// Opens `path` and validates its header; every violation is a ``CheckpointError`` naming the file and the reason.
    init(path: String) throws {
        func refuse(_ reason: String) -> CheckpointError { CheckpointError(file: path, reason: "not a valid safetensors file: " + reason) }
        // A shard named by an index, or a file given to `ls`, may be a named pipe: never block on it.
        let (fd, size, mtime) = try CheckpointLoader.openRegularFile(path)
        var keep = false
        defer { if !keep { close(fd) } }
        guard size >= 8 else { throw refuse("\(size) bytes, shorter than the 8-byte header length") }
        var lengthBytes = [UInt8](repeating: 0, count: 8)
        try lengthBytes.withUnsafeMutableBytes {
            try HDF5File.readFully(fd, at: 0, count: 8, into: $0.baseAddress!, path: path, object: "header length")
        }
        let length = lengthBytes.enumerated().reduce(UInt64(0)) { $0 | UInt64($1.element) << (8 * UInt64($1.offset)) }
        guard length >= 2 else { throw refuse("header length \(length) is too small to hold a JSON object") }
        guard length <= UInt64(size - 8) else { throw refuse("header length \(length) runs past the end of the file (\(size) bytes)") }
        guard length <= UInt64(Self.maxHeader) else { throw refuse("header length \(length) is over the \(Self.maxHeader / 1024 / 1024) MB limit") }
        let headerLength = Int(length)
        var header = [UInt8](repeating: 0, count: headerLength)
        try header.withUnsafeMutableBytes {
            try HDF5File.readFully(fd, at: 8, count: headerLength, into: $0.baseAddress!, path: path, object: "header")
        }
        let json = try Self.parseObject(header, what: "header", refuse: refuse)
        let dataSize = size - 8 - headerLength

        var metadata: [String: String] = [:]
        var entries: [SafetensorsEntry] = []
        for (name, value) in json {
            if name == "__metadata__" {
                guard let map = value as? [String: Any] else { throw refuse("__metadata__ is not a JSON object") }
                for (key, item) in map { if let text = item as? String { metadata[key] = text } }
                continue
            }
            guard let description = value as? [String: Any] else { throw refuse("tensor \(name) is not described by a JSON object") }
            guard let dtypeName = description["dtype"] as? String else { throw refuse("tensor \(name) has no dtype") }
            guard let dtype = SafetensorsDType.all[dtypeName] else { throw refuse("tensor \(name) has an unknown dtype \(dtypeName)") }
            guard let shapeList = description["shape"] as? [Any] else { throw refuse("tensor \(name) has no shape list") }
            var shape: [Int] = []
            for item in shapeList {
                guard let dimension = Self.integer(item) else { throw refuse("tensor \(name) has a shape that is not a list of integers") }
                guard dimension >= 0 else { throw refuse("tensor \(name) has a negative dimension \(dimension)") }
                shape.append(dimension)
            }
            var count = 1
            for dimension in shape {
                let (product, overflow) = count.multipliedReportingOverflow(by: dimension)
                guard !overflow else { throw refuse("tensor \(name): shape \(shape) overflows") }
                count = product
            }
            let (bits, overflow) = count.multipliedReportingOverflow(by: dtype.bits)
            guard !overflow else { throw refuse("tensor \(name): shape \(shape) overflows") }
            guard bits % 8 == 0 else { throw refuse("tensor \(name): \(count) elements of \(dtypeName) are not a whole number of bytes") }
            guard let offsets = description["data_offsets"] as? [Any], offsets.count == 2,
                let begin = Self.integer(offsets[0]), let end = Self.integer(offsets[1])
            else { throw refuse("tensor \(name) has no data_offsets pair of integers") }
            guard begin >= 0, begin <= end else { throw refuse("tensor \(name) has data_offsets [\(begin), \(end)] that do not form a range") }
            guard end <= dataSize else {
                throw refuse("tensor \(name) has data_offsets [\(begin), \(end)] outside the file (\(dataSize) data bytes)")
            }
            guard end - begin == bits / 8 else {
                throw refuse("tensor \(name) holds \(end - begin) bytes, but shape \(shape) of \(dtypeName) needs \(bits / 8)")
            }
            entries.append(SafetensorsEntry(name: name, dtype: dtype, shape: shape, count: count, begin: begin, end: end))
        }
        entries.sort { ($0.begin, $0.end, $0.name) < ($1.begin, $1.end, $1.name) }
        for (previous, next) in zip(entries, entries.dropFirst()) where next.begin < previous.end {
            throw refuse(
                "tensors \(previous.name) and \(next.name) overlap (data_offsets \(previous.begin)..<\(previous.end) and \(next.begin)..<\(next.end))"
            )
        }
        self.path = path
        self.size = size
        self.mtime = mtime
        self.dataStart = 8 + headerLength
        self.entries = entries
        self.byName = Dictionary(entries.enumerated().map { ($0.element.name, $0.offset) }, uniquingKeysWith: { a, _ in a })
        self.metadata = metadata
        self.descriptor = fd
        keep = true
    }

    /// A file whose tensors another format located (a torch.save archive's stored entries):
    /// `entries` hold absolute byte ranges in the file (`dataStart` 0), already validated.
    init(path: String, descriptor: Int32, size: Int, mtime: Double, entries: [SafetensorsEntry], metadata: [String: String]) {
        self.path = path
        self.size = size
        self.mtime = mtime
        self.dataStart = 0
        self.entries = entries
        self.byName = Dictionary(entries.enumerated().map { ($0.element.name, $0.offset) }, uniquingKeysWith: { a, _ in a })
        self.metadata = metadata
        self.descriptor = descriptor
    }

    deinit { close(descriptor) }

    /// Parses `bytes` as one JSON object after checking it is UTF-8 and not nested deeper than ``maxNesting``.
    static func parseObject(_ bytes: [UInt8], what: String, refuse: (String) -> CheckpointError) throws -> [String: Any] {
        guard String(validating: bytes, as: UTF8.self) != nil else { throw refuse("the \(what) is not valid UTF-8") }
        guard bytes.first(where: { !($0 == 0x20 || $0 == 0x0A || $0 == 0x0D || $0 == 0x09) }) == UInt8(ascii: "{") else {
            throw refuse("the \(what) is not a JSON object")
        }
        var depth = 0
        var strings = JSONStringTracker()
        for byte in bytes where !strings.isInString(byte) {
            switch byte {
            case UInt8(ascii: "{"), UInt8(ascii: "["):
                depth += 1
                if depth > maxNesting { throw refuse("the \(what) nests JSON deeper than \(maxNesting) levels") }
            case UInt8(ascii: "}"), UInt8(ascii: "]"): depth -= 1
            default: break
            }
        }
        guard let object = (try? JSONSerialization.jsonObject(with: Data(bytes))) as? [String: Any] else {
            throw refuse("the \(what) is not a valid JSON object")
        }
        return object
    }

    /// A JSON number that is an integer that fits exactly (negative ones included, for the message).
    static func integer(_ value: Any) -> Int? {
        guard let number = value as? NSNumber else { return nil }
        let double = number.doubleValue
        guard double.isFinite, double == double.rounded(), abs(double) <= 9_007_199_254_740_992 else { return nil }
        return Int(exactly: double)
    }

    /// Reads `count` bytes at `offset` from the start of the data into `buffer`.
    func readData(at offset: Int, count: Int, into buffer: UnsafeMutableRawPointer, object: String) throws {
        try HDF5File.readFully(descriptor, at: dataStart + offset, count: count, into: buffer, path: path, object: object)
    }

    /// The `weight_map` of a sharded save's index: tensor name to shard file name.
    static func weightMap(of index: String) throws -> [String: String] {
        func refuse(_ reason: String) -> CheckpointError { CheckpointError(file: index, reason: "not a valid safetensors index: " + reason) }
        let (size, _) = FileIdentity.of(index)
        guard size <= maxHeader else { throw refuse("\(size) bytes, over the \(maxHeader / 1024 / 1024) MB limit") }
        guard let data = FileManager.default.contents(atPath: index) else { throw CheckpointError(file: index, reason: "cannot be read") }
        let json = try parseObject([UInt8](data), what: "index", refuse: refuse)
        guard let map = json["weight_map"] as? [String: Any] else { throw refuse("no weight_map object") }
        var result: [String: String] = [:]
        for (tensor, file) in map {
            guard let file = file as? String, !file.isEmpty else { throw refuse("the weight_map entry of \(tensor) is not a file name") }
            result[tensor] = file
        }
        guard !result.isEmpty else { throw refuse("the weight_map names no shard files") }
        return result
    }

    /// The shard files a sharded save's index names, next to it, in numeric-aware order.
    static func shardFiles(of index: String) throws -> [String] {
        let directory = (index as NSString).deletingLastPathComponent
        // Shard names are plain file names next to the index; anything else would reach outside it.
        return Set(try weightMap(of: index).values).map { ($0 as NSString).lastPathComponent }.sorted(by: numericAwareLess)
            .map { (directory as NSString).appendingPathComponent($0) }
    }

    /// The checkpoint of one file, or of the shards of one sharded save (`weightMap` given).
    static func checkpoint(
        _ files: [SafetensorsFile], source: String, weightMap: [String: String]?, layout: LayoutKind = .safetensors, extraNotes: [String] = [],
        extraSkipped: [SkippedItem] = [], mapOptimizerState: Bool = true
    ) throws -> OpenCheckpoint {
        let formatName = layout == .torch ? "torch.save archive" : "safetensors"
        var seen: [String: Int] = [:]
        for (index, file) in files.enumerated() {
            for entry in file.entries {
                if let other = seen[entry.name] {
                    throw CheckpointError(file: source, reason: "tensor \(entry.name) is stored in two shards, \(files[other].path) and \(file.path)")
                }
                seen[entry.name] = index
            }
        }
        if let weightMap {
            for (tensor, shard) in weightMap.sorted(by: { $0.key < $1.key }) {
                guard let index = seen[tensor], (files[index].path as NSString).lastPathComponent == (shard as NSString).lastPathComponent else {
                    throw CheckpointError(file: source, reason: "the weight_map puts tensor \(tensor) in \(shard), which does not hold it")
                }
            }
        }
        var combined: [String: String] = [:]
        for file in files { combined.merge(file.metadata) { a, _ in a } }
        var metadata = StepMetadata()
        metadata.framework = combined["framework"] ?? (layout == .torch ? "pytorch" : "safetensors")
        metadata.optimizer = combined["optimizer"]
        func number(_ keys: [String]) -> Double? {
            keys.lazy.compactMap { combined[$0].flatMap { Double($0.trimmingCharacters(in: .whitespaces)) } }.first
        }
        if let step = number(["step", "global_step"]), step.isFinite, step >= 0, step < 1e15, step == step.rounded() {
            metadata.step = Int(step)
            metadata.stepSource = .attribute
        }
        if let epoch = number(["epoch"]), epoch.isFinite, epoch >= 0, epoch < 1e15 { metadata.epoch = Int(epoch) }
        metadata.loss = number(["loss", "train_loss"])
        metadata.learningRate = number(["lr", "learning_rate"])
        let keras = (metadata.framework ?? "").lowercased().contains("keras")

        var tensors: [TensorRef] = []
        var addresses: [UInt64] = []
        var skipped: [SkippedItem] = extraSkipped
        var optimizerSteps: Int?
        for (index, file) in files.enumerated() {
            for (position, entry) in file.entries.enumerated() {
                let item = source + ":" + entry.name
                guard entry.dtype.supported else {
                    skipped.append(SkippedItem(item: item, kind: .notAnalysed, reason: "unsupported dtype \(entry.dtype.name)"))
                    continue
                }
                func value() -> Double? {
                    guard entry.count == 1 else { return nil }
                    var result = [Double](repeating: 0, count: 1)
                    let data = SafetensorsTensor(file: file, entry: entry)
                    guard
                        (try? result.withUnsafeMutableBufferPointer({
                            try data.read(TensorBlock(offset: 0, count: 1, start: [], extent: []), into: $0)
                        })) != nil
                    else { return nil }
                    return result[0]
                }
                if !entry.name.contains("/") && entry.shape.isEmpty {
                    if let value = value(), value.isFinite {
                        switch entry.name.lowercased() {
                        case "step", "global_step", "iteration", "iter":
                            if metadata.step == nil, value >= 0, value < 1e15 {
                                metadata.step = Int(value)
                                metadata.stepSource = .attribute
                            }
                        case "loss", "train_loss": if metadata.loss == nil { metadata.loss = value }
                        case "lr", "learning_rate": if metadata.learningRate == nil { metadata.learningRate = value }
                        case "epoch": if metadata.epoch == nil, value >= 0, value < 1e15 { metadata.epoch = Int(value) }
                        default: break
                        }
                    }
                    skipped.append(SkippedItem(item: item, kind: .metadata, reason: "scalar, read as metadata"))
                    continue
                }
                switch GenericLayout.classify(
                    relative: entry.name, path: entry.name, shape: entry.shape, type: entry.dtype.elementType, keras: keras,
                    optimizer: metadata.optimizer)
                {
                case .tensor(var tensor):
                    tensor.fileIndex = index
                    tensors.append(tensor)
                    // The order tensors were saved in: their bytes' order in a safetensors file; in a
                    // torch.save archive the pickle's order (its storages are stored sorted by key as text).
                    addresses.append(UInt64(index) << 48 + UInt64(layout == .torch ? position : entry.begin) + 1)
                case .optimizerCounter(let isStep):
                    if isStep, let value = value(), value.isFinite, value >= 0, value < 1e15 { optimizerSteps = max(optimizerSteps ?? 0, Int(value)) }
                    skipped.append(SkippedItem(item: item, kind: .metadata, reason: "optimizer setting or counter, read as metadata"))
                case .skipped(let kind, let reason):
                    skipped.append(SkippedItem(item: item, kind: kind, reason: reason))
                }
            }
        }
        guard !tensors.isEmpty else {
            throw CheckpointError(file: source, reason: "no floating-point tensors found (read as \(formatName)): not a checkpoint")
        }
        if metadata.step == nil, let optimizerSteps, optimizerSteps > 0 {
            metadata.step = optimizerSteps
            metadata.stepSource = .optimizerIterations
        }
        var notes: [String] = extraNotes
        if !mapOptimizerState {
            // The caller matches the optimizer's indices to the parameters itself (a Trainer folder).
        } else if GenericLayout.mapIndexedOptimizerState(&tensors, addresses: addresses) {
            notes.append("optimizer state stored by parameter index matched to the parameters in the order they were written, checked by shape")
        } else if tensors.contains(where: { $0.role == .optimizer && $0.name.split(separator: "/").last.flatMap({ Int($0) }) != nil }) {
            notes.append(
                "optimizer state stored by parameter index could not be matched to the parameters by shape (the optimizer may hold only some of them): it is listed under its indices and not used by the detectors"
            )
        }
        if !keras { notes.append("\(formatName): units read along axis 0, as PyTorch stores weights ([out, in, ...])") }
        if files.count > 1 || weightMap != nil { notes.append("sharded save: \(files.count) shard file(s) read as one step") }
        let layers = CheckpointLoader.orderLayers(
            tensors, createdAt: Dictionary(zip(tensors.map(\.path), addresses).map { ($0.0, $0.1) }, uniquingKeysWith: { a, _ in a }))
        let modified = FileIdentity.modificationDate(source)
        var checkpoint = Checkpoint(
            source: source, file: source, layout: layout, metadata: metadata, tensors: tensors, layers: layers,
            skipped: skipped, notes: notes, modified: modified)
        var stem = (source as NSString).lastPathComponent
        for suffix in [".safetensors.index.json", ".safetensors", ".pt", ".pth", ".bin", ".ckpt"] where stem.hasSuffix(suffix) {
            stem = String(stem.dropLast(suffix.count))
            break
        }
        CheckpointLoader.assignStep(&checkpoint, fileStem: stem)
        return OpenCheckpoint(checkpoint, tensors: SafetensorsTensors(files: files, source: source))
    }
}

/// The open files of a safetensors checkpoint (several for a sharded save).
struct SafetensorsTensors: TensorSource {
    let files: [SafetensorsFile]
    let source: String

    func data(for tensor: TensorRef) throws -> any TensorData {
        guard files.indices.contains(tensor.fileIndex), let index = files[tensor.fileIndex].byName[tensor.path] else {
            throw CheckpointError(file: source, reason: "\(tensor.path): no such tensor in this checkpoint")
        }
        let file = files[tensor.fileIndex]
        return SafetensorsTensor(file: file, entry: file.entries[index])
    }

    /// F32 and F64 tensors of the file opened by path (a single-file save), at 8 + N + begin.
    func storage(of tensor: TensorRef, in file: String) -> DirectStorage? {
        guard tensor.fileIndex == 0, let first = files.first, first.path == file, let index = first.byName[tensor.path] else { return nil }
        let entry = first.entries[index]
        guard entry.dtype.name == "F32" || entry.dtype.name == "F64" else { return nil }
        return DirectStorage(offset: first.dataStart + entry.begin, count: entry.count, type: entry.dtype.elementType)
    }

    func stamp(of file: String) -> FileStamp? {
        files.first { $0.path == file }.map { FileStamp(size: $0.size, mtime: $0.mtime) }
    }

    var isMemoryImage: Bool { false }
}

/// The F32 or F64 bytes of one safetensors tensor, read by offset.
struct SafetensorsContiguous: ContiguousTensor {
    let file: SafetensorsFile
    let entry: SafetensorsEntry
    var type: ElementType { entry.dtype.elementType }
    var count: Int { entry.count }

    func read<T>(_ range: Range<Int>, into buffer: UnsafeMutableBufferPointer<T>) throws {
        let size = entry.dtype.byteSize
        guard MemoryLayout<T>.size == size, range.lowerBound >= 0, range.upperBound <= count, buffer.count >= range.count,
            let base = buffer.baseAddress
        else {
            throw CheckpointError(file: file.path, reason: "\(entry.name): a direct read of elements \(range) does not fit its buffer")
        }
        try file.readData(
            at: entry.begin + range.lowerBound * size, count: range.count * size, into: UnsafeMutableRawPointer(base), object: entry.name)
    }
}

/// One tensor of a safetensors file: F32/F64 read by offset, every other supported dtype read in
/// blocks and converted to `Float` or `Double`.
struct SafetensorsTensor: TensorData {
    let file: SafetensorsFile
    let entry: SafetensorsEntry

    var shape: [Int] { entry.shape }
    var needsDouble: Bool { entry.dtype.needsDouble }

    func checkReadable() throws {
        guard entry.dtype.supported else { throw CheckpointError(file: file.path, reason: "\(entry.name): unsupported dtype \(entry.dtype.name)") }
    }

    func contiguous() -> (any ContiguousTensor)? {
        #if _endian(little)
        guard entry.dtype.name == "F32" || entry.dtype.name == "F64" else { return nil }
        return SafetensorsContiguous(file: file, entry: entry)
        #else
        return nil
        #endif
    }

    func blocks(blockElements: Int) -> [TensorBlock] {
        guard entry.count > 0 else { return [] }
        return BlockPlan(shape: entry.shape, chunkShape: nil, blockElements: max(blockElements, 1)).map {
            TensorBlock(offset: $0.offset, count: $0.count, start: $0.hyperslabStart, extent: $0.hyperslabExtent)
        }
    }

    func read<T: HDF5Real>(_ block: TensorBlock, into buffer: UnsafeMutableBufferPointer<T>) throws {
        try checkReadable()
        guard block.offset >= 0, block.count >= 0, block.offset + block.count <= max(entry.count, 1), buffer.count >= block.count else {
            throw CheckpointError(file: file.path, reason: "\(entry.name): a read of \(block.count) elements at \(block.offset) does not fit")
        }
        guard block.count > 0 else { return }
        let size = entry.dtype.byteSize
        var raw = [UInt8](repeating: 0, count: block.count * size)
        try raw.withUnsafeMutableBytes {
            try file.readData(at: entry.begin + block.offset * size, count: block.count * size, into: $0.baseAddress!, object: entry.name)
        }
        raw.withUnsafeBytes { bytes in SafetensorsConversion.convert(bytes, dtype: entry.dtype.name, count: block.count, into: buffer) }
    }

    func stream<T: HDF5Real>(as type: T.Type, blockElements: Int, _ body: (UnsafeBufferPointer<T>, Int) throws -> Void) throws {
        try checkReadable()
        let planned = blocks(blockElements: blockElements)
        var buffer = [T](repeating: 0, count: planned.map(\.count).max() ?? 0)
        for block in planned {
            try buffer.withUnsafeMutableBufferPointer { pointer in
                try read(block, into: pointer)
                try body(UnsafeBufferPointer(rebasing: pointer[0..<block.count]), block.offset)
            }
        }
    }
}

/// Little-endian safetensors elements converted to `Float` or `Double`.
enum SafetensorsConversion {
    /// F8_E4M3 (the "fn" variant: no infinities, S.1111.111 is NaN) as `Float`, by bit pattern.
    static let e4m3: [Float] = (0..<256).map { code in
        let sign: Float = code & 0x80 != 0 ? -1 : 1
        let exponent = (code >> 3) & 0xF, mantissa = code & 0x7
        if exponent == 0xF && mantissa == 0x7 { return .nan }
        if exponent == 0 { return sign * Float(mantissa) / 8 * Float(sign: .plus, exponent: -6, significand: 1) }
        return sign * (1 + Float(mantissa) / 8) * Float(sign: .plus, exponent: exponent - 7, significand: 1)
    }

    /// Converts `count` elements of `dtype` from `bytes` into `buffer`.
    static func convert<T: HDF5Real>(_ bytes: UnsafeRawBufferPointer, dtype: String, count: Int, into buffer: UnsafeMutableBufferPointer<T>) {
        func each<S>(_ stored: S.Type, _ convert: (S) -> T) {
            let size = MemoryLayout<S>.size
            for index in 0..<count { buffer[index] = convert(bytes.loadUnaligned(fromByteOffset: index * size, as: S.self)) }
        }
        switch dtype {
        case "F32": each(UInt32.self) { T(Float(bitPattern: UInt32(littleEndian: $0))) }
        case "F64": each(UInt64.self) { T(Double(bitPattern: UInt64(littleEndian: $0))) }
        case "F16": each(UInt16.self) { T(Float(Float16(bitPattern: UInt16(littleEndian: $0)))) }
        case "BF16": each(UInt16.self) { T(Float(bitPattern: UInt32(UInt16(littleEndian: $0)) << 16)) }
        case "F8_E5M2": each(UInt8.self) { T(Float(Float16(bitPattern: UInt16($0) << 8))) }
        case "F8_E4M3": each(UInt8.self) { T(e4m3[Int($0)]) }
        case "BOOL": each(UInt8.self) { $0 == 0 ? 0 : 1 }
        case "U8": each(UInt8.self) { T($0) }
        case "I8": each(Int8.self) { T($0) }
        case "U16": each(UInt16.self) { T(UInt16(littleEndian: $0)) }
        case "I16": each(Int16.self) { T(Int16(littleEndian: $0)) }
        case "U32": each(UInt32.self) { T(UInt32(littleEndian: $0)) }
        case "I32": each(Int32.self) { T(Int32(littleEndian: $0)) }
        case "U64": each(UInt64.self) { T(UInt64(littleEndian: $0)) }
        case "I64": each(Int64.self) { T(Int64(littleEndian: $0)) }
        default: for index in 0..<count { buffer[index] = .nan }
        }
    }
}

/// Follows a JSON text byte by byte and tells which bytes belong to string literals, so that
/// whoever scans the text for structure or tokens skips what is quoted.
struct JSONStringTracker {
    private var inString = false
    private var escaped = false

    /// Whether `byte`, the next byte of the text, belongs to a string literal (its quotes included).
    mutating func isInString(_ byte: UInt8) -> Bool {
        if inString {
            if escaped {
                escaped = false
            } else if byte == UInt8(ascii: "\\") {
                escaped = true
            } else if byte == UInt8(ascii: "\"") {
                inString = false
            }
            return true
        }
        if byte == UInt8(ascii: "\"") {
            inString = true
            return true
        }
        return false
    }
}
