import ElementTypes
import Foundation
import GradScopeModel
import HDF5

#if canImport(Glibc)
import Glibc
#endif

/// A torch.save zip archive (`.pt`, `.pth`, `.bin`, Lightning `.ckpt`): `<prefix>/data.pkl`, a
/// pickle read by ``TorchPickle`` (nothing executed), names the tensors; each tensor's bytes are
/// a stored entry `<prefix>/data/<key>`, read by offset from the archive.
package struct TorchArchiveSource: CheckpointSource {
    package init() {}

    package var name: String { "torch" }

    package func recognises(path: String, head: [UInt8]) -> Bool {
        guard ZipArchive.isZip(Data(head.prefix(4))) else { return false }
        guard let handle = FileHandle(forReadingAtPath: path) else { return false }
        defer { try? handle.close() }
        let (size, _) = FileIdentity.of(path)
        guard let directory = try? ZipDirectory(fd: handle.fileDescriptor, size: size, path: path, checkNames: false) else { return false }
        return TorchArchive.prefix(of: directory) != nil
    }

    package func open(_ path: String, options: LoadOptions) throws -> [OpenCheckpoint] { [try TorchArchive.open(path)] }
}

/// Reading a torch.save archive into a checkpoint.
enum TorchArchive {
    /// The largest `data.pkl` read (it holds names and shapes, never tensor bytes).
    static let maxPickle = 256 * 1024 * 1024
    /// The longest dict key walked (state_dict names are far shorter).
    static let maxKey = 4096
    /// The most bytes of tensor names built from one pickle.
    static let maxNameBytes = 64 * 1024 * 1024
    /// Top-level keys whose value is the model's state_dict.
    static let modelKeys: Set<String> = ["model", "state_dict", "model_state_dict", "module", "net", "network"]

    /// The archive's `<prefix>` when its entries are those of a torch.save archive.
    static func prefix(of directory: ZipDirectory) -> String? {
        let pickles = directory.entries.filter { $0.name.hasSuffix("/data.pkl") && $0.name.split(separator: "/").count == 2 }
        guard pickles.count == 1 else { return nil }
        let prefix = String(pickles[0].name.dropLast("/data.pkl".count))
        let known = [
            "data.pkl", "byteorder", "version", ".data/version", ".data/serialization_id", ".format_version", ".storage_alignment", "constants.pkl",
        ]
        for entry in directory.entries where !ZipDirectory.climbs(entry.name) {
            guard entry.name.hasPrefix(prefix + "/") else { return nil }
            let rest = entry.name.dropFirst(prefix.count + 1)
            guard known.contains(String(rest)) || (rest.hasPrefix("data/") && rest.count > 5) || rest.hasPrefix("code/") || rest.hasPrefix(".data/")
            else {
                return nil
            }
        }
        return prefix
    }

    /// Opens `path` as a checkpoint; every refusal names the file and the reason.
    static func open(_ path: String) throws -> OpenCheckpoint {
        let (file, notes, skipped, _) = try read(path)
        return try SafetensorsFile.checkpoint([file], source: path, weightMap: nil, layout: .torch, extraNotes: notes, extraSkipped: skipped)
    }

    /// Opens `path` and reads its pickle: its tensors located in the archive (as a file of
    /// contiguous tensors), notes, the tensors left out with the reason, and the parameter groups
    /// of an `optimizer.state_dict()` (bare or under a model dict's optimizer key).
    static func read(_ path: String) throws -> (SafetensorsFile, [String], [SkippedItem], [TorchParamGroup]) {
        func refuse(_ reason: String) -> CheckpointError { CheckpointError(file: path, reason: "refused torch.save archive: " + reason) }
        let (fd, size, mtime) = try CheckpointLoader.openRegularFile(path)
        var keep = false
        defer { if !keep { close(fd) } }
        let directory = try ZipDirectory(fd: fd, size: size, path: path)
        guard let prefix = prefix(of: directory) else { throw refuse("no <name>/data.pkl entry, or entries outside it") }
        if directory.byName[prefix + "/constants.pkl"] != nil || directory.entries.contains(where: { $0.name.hasPrefix(prefix + "/code/") }) {
            throw CheckpointError(
                file: path, reason: "a TorchScript module saved with torch.jit.save, not read: save the model's state_dict with torch.save")
        }
        func contents(_ name: String, limit: Int) throws -> [UInt8]? {
            guard let index = directory.byName[name] else { return nil }
            let entry = directory.entries[index]
            guard entry.method == 0 else { throw refuse("entry \(name) is compressed; torch.save stores its entries uncompressed") }
            guard entry.size <= limit else { throw refuse("entry \(name) is \(entry.size) bytes, over the \(limit / 1024 / 1024) MB limit") }
            var bytes = [UInt8](repeating: 0, count: entry.size)
            if entry.size > 0 {
                try bytes.withUnsafeMutableBytes {
                    try HDF5File.readFully(fd, at: entry.dataOffset, count: entry.size, into: $0.baseAddress!, path: path, object: name)
                }
            }
            return bytes
        }
        if let order = try contents(prefix + "/byteorder", limit: 64) {
            let text = String(decoding: order, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
            guard text == "little" else {
                throw CheckpointError(file: path, reason: "a torch.save archive in \(text)-endian byte order: not supported")
            }
        }
        guard let pickle = try contents(prefix + "/data.pkl", limit: maxPickle) else { throw refuse("no data.pkl") }
        // Holds every container of the pickle until the walk below is done (then frees them one by one).
        let arena = PickleArena()
        defer { withExtendedLifetime(arena) {} }
        let root: PickleValue
        do {
            root = try TorchPickle.load(pickle, arena: arena)
        } catch let refusal as TorchPickle.Refusal {
            throw refuse("data.pkl: " + refusal.reason)
        }

        // Flatten: tensors by slash-joined path, top-level numbers as metadata.
        var found: [(String, PickleTensor)] = []
        var metadata: [String: String] = [:]
        var lightning = false
        func key(_ value: PickleValue) -> String? {
            switch value {
            case .string(let text): return text
            case .int(let number): return String(number)
            default: return nil
            }
        }
        var visits = 0
        var nameBytes = 0
        // Paths are kept as components and joined only for tensors, whose names are bounded in total:
        // a shared value reached a million times must not build a million long strings.
        func walk(_ value: PickleValue, _ path: [String], depth: Int) throws {
            guard depth <= TorchPickle.maxNesting else { throw refuse("data.pkl nests deeper than \(TorchPickle.maxNesting) levels") }
            visits += 1
            // Values shared through the memo are reached once per reference: a few hundred bytes can name 2^90 of them.
            guard visits <= TorchPickle.maxVisits else { throw refuse("data.pkl refers to more than \(TorchPickle.maxVisits) values") }
            switch value {
            case .tensor(let tensor):
                let name = path.joined(separator: "/")
                nameBytes += name.utf8.count
                guard nameBytes <= maxNameBytes else {
                    throw refuse("data.pkl names tensors with more than \(maxNameBytes / 1024 / 1024) MB of names")
                }
                found.append((name, tensor))
            case .dict(let dict):
                for (k, v) in dict.items {
                    guard let name = key(k) else { continue }
                    guard name.utf8.count <= maxKey else { throw refuse("data.pkl has a key of \(name.utf8.count) bytes, over \(maxKey)") }
                    try walk(v, path + [name], depth: depth + 1)
                }
            case .list(let list):
                for (index, item) in list.items.enumerated() { try walk(item, path + [String(index)], depth: depth + 1) }
            case .tuple(let box):
                for (index, item) in box.items.enumerated() { try walk(item, path + [String(index)], depth: depth + 1) }
            default: break
            }
        }
        guard case .dict(let top) = root else { throw refuse("data.pkl holds no dict of tensors") }
        for (k, v) in top.items {
            guard let name = key(k) else { continue }
            guard name.utf8.count <= maxKey else { throw refuse("data.pkl has a key of \(name.utf8.count) bytes, over \(maxKey)") }
            switch v {
            case .int(let number): metadata[name] = String(number)
            case .float(let number): metadata[name] = String(number)
            default:
                if name == "optimizer_states" || name == "pytorch-lightning_version" { lightning = true }
                try walk(v, modelKeys.contains(name) ? [] : [name], depth: 1)
            }
        }
        // The learning rate of the first param group, when nothing else gives it.
        for optimizerKey in ["optimizer", "optimizer_state_dict", "optimizer_states"] where metadata["lr"] == nil {
            var group: PickleValue? = top[optimizerKey]
            if case .list(let list)? = group { group = list.items.first }
            if case .dict(let optimizer)? = group, case .list(let groups)? = optimizer["param_groups"], case .dict(let first)? = groups.items.first {
                if case .float(let lr)? = first["lr"] { metadata["lr"] = String(lr) }
            }
        }
        if metadata["step"] == nil, let global = metadata["global_step"] { metadata["step"] = global }
        var paramGroups: [TorchParamGroup] = []
        for optimizerKey in ["", "optimizer", "optimizer_state_dict"] where paramGroups.isEmpty {
            var optimizer: PickleValue? = .dict(top)
            if !optimizerKey.isEmpty { optimizer = top[optimizerKey] }
            guard case .dict(let dict)? = optimizer, case .list(let groups)? = dict["param_groups"] else { continue }
            for case .dict(let group) in groups.items {
                guard case .list(let params)? = group["params"] else { continue }
                let indices = params.items.compactMap { item -> Int? in if case .int(let number) = item { return number } else { return nil } }
                var decay: Double?
                switch group["weight_decay"] {
                case .float(let value)?: decay = value
                case .int(let value)?: decay = Double(value)
                default: break
                }
                paramGroups.append(TorchParamGroup(params: indices, weightDecay: decay))
            }
        }

        var entries: [SafetensorsEntry] = []
        var skipped: [SkippedItem] = []
        var seen: Set<String> = []
        for (name, tensor) in found {
            guard let dtypeName = TorchPickle.storageTypes[tensor.storageType], let dtype = SafetensorsDType.all[dtypeName] else { continue }
            guard !name.isEmpty, seen.insert(name).inserted else { continue }
            guard let index = directory.byName[prefix + "/data/" + tensor.key] else {
                throw refuse("tensor \(name): its storage \(tensor.key) is not in the archive")
            }
            let entry = directory.entries[index]
            guard entry.method == 0 else { throw refuse("entry \(entry.name) is compressed; tensor data is read only from stored entries") }
            let (storageBytes, overflow) = tensor.storageCount.multipliedReportingOverflow(by: dtype.byteSize)
            guard !overflow, entry.size >= storageBytes else {
                throw refuse("tensor \(name): storage \(tensor.key) holds \(entry.size) bytes, shorter than its \(tensor.storageCount) elements")
            }
            var count = 1
            for dimension in tensor.shape {
                let (product, overflow) = count.multipliedReportingOverflow(by: dimension)
                guard !overflow else { throw refuse("tensor \(name): shape \(tensor.shape) overflows") }
                count = product
            }
            // Row-major contiguous views only; a strided view of a storage is not one run of bytes.
            var expected = 1
            var contiguous = true
            for (dimension, stride) in zip(tensor.shape, tensor.stride).reversed() {
                if dimension > 1 && stride != expected { contiguous = false }
                expected *= dimension
            }
            guard contiguous else {
                skipped.append(SkippedItem(item: path + ":" + name, kind: .notAnalysed, reason: "a strided view of its storage, not read"))
                continue
            }
            guard tensor.offset <= tensor.storageCount, count <= tensor.storageCount - tensor.offset else {
                throw refuse("tensor \(name): elements \(tensor.offset)..<\(tensor.offset + count) lie outside its storage of \(tensor.storageCount)")
            }
            let begin = entry.dataOffset + tensor.offset * dtype.byteSize
            entries.append(
                SafetensorsEntry(name: name, dtype: dtype, shape: tensor.shape, count: count, begin: begin, end: begin + count * dtype.byteSize))
        }
        let file = SafetensorsFile(path: path, descriptor: fd, size: size, mtime: mtime, entries: entries, metadata: metadata)
        keep = true
        var notes: [String] = []
        if lightning { notes.append("PyTorch Lightning checkpoint: state_dict and optimizer_states read") }
        return (file, notes, skipped, paramGroups)
    }
}

/// One parameter group of a PyTorch `optimizer.state_dict()`: the indices its `state` is keyed
/// by, in the group's order, and its weight decay.
struct TorchParamGroup: Sendable, Equatable {
    let params: [Int]
    let weightDecay: Double?
}
