import ElementTypes
import Foundation
import GradScopeModel
import HDF5
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// How checkpoints are read.
public struct LoadOptions: Sendable {
    /// Force a layout instead of detecting it.
    public var layout: LayoutKind?
    public var open: OpenOptions

    public init(layout: LayoutKind? = nil, open: OpenOptions = OpenOptions()) {
        self.layout = layout
        self.open = open
    }
}

/// An error that makes a file unusable as a checkpoint, with the reason.
public struct CheckpointError: Error, CustomStringConvertible, Sendable {
    public let file: String
    public let reason: String
    public var description: String { "\(file): \(reason)" }

    public init(file: String, reason: String) {
        self.file = file
        self.reason = reason
    }
}

/// Turns a file into checkpoints: detects its layout and reads its tensors,
/// roles, layers and step metadata.
public enum CheckpointLoader {
    /// Group names that hold one step each in a multi-step file (`/step_100`).
    package static func stepGroupNumber(_ name: String) -> Int? {
        let lower = name.lowercased()
        for prefix in ["global_step", "iteration", "checkpoint", "step", "iter", "ckpt", "epoch"] where lower.hasPrefix(prefix) {
            var rest = lower.dropFirst(prefix.count)
            if rest.first == "_" || rest.first == "-" { rest = rest.dropFirst() }
            if !rest.isEmpty, rest.allSatisfy({ $0.isASCII && $0.isNumber }) { return Int(rest.prefix(18)) }
        }
        return nil
    }

    /// Describes the checkpoint(s) in `path`: one for an ordinary file, several for a
    /// file holding one group per step.
    public static func load(_ path: String, options: LoadOptions = LoadOptions()) throws -> [Checkpoint] {
        try open(path, options: options).map(\.checkpoint)
    }

    /// Opens the checkpoint(s) in `path` with the first source that recognises it
    /// (``CheckpointSources``), described: stamped, and with the direct storage of their tensors.
    public static func open(_ path: String, options: LoadOptions = LoadOptions()) throws -> [OpenCheckpoint] {
        try refuseIrregular(path)
        let head = FileIdentity.head(path)
        let source = CheckpointSources.all.first { $0.recognises(path: path, head: head) } ?? CheckpointSources.hdf5
        return try source.open(path, options: options).map(marked)
    }

    /// A checkpoint described, its recurrent kernels' gates marked (``RecurrentGates``).
    private static func marked(_ opened: OpenCheckpoint) -> OpenCheckpoint {
        var copy = opened.described()
        RecurrentGates.mark(&copy.checkpoint.tensors)
        return copy
    }

    /// Refuses, before anything opens it, a path that is neither a regular file nor a
    /// directory: a named pipe would block the open until a writer comes, a device may
    /// never end.
    package static func refuseIrregular(_ path: String) throws {
        if let kind = FileProbe.irregularKind(path) {
            throw CheckpointError(file: path, reason: irregularReason(kind))
        }
    }

    /// Opens a regular file for reading by offset: a path that is not one is refused before it is
    /// opened, and the open descriptor is checked again (the path may have been swapped). Returns the
    /// descriptor, which the caller closes, and the file's size and modification time.
    package static func openRegularFile(_ path: String) throws -> (descriptor: Int32, size: Int, mtime: Double) {
        try refuseIrregular(path)
        let fd = Glibc.open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw CheckpointError(file: path, reason: "cannot open: \(String(cString: strerror(errno)))") }
        var status = stat()
        guard fstat(fd, &status) == 0, status.st_mode & S_IFMT == S_IFREG else {
            close(fd)
            throw CheckpointError(file: path, reason: "not a regular file: only regular files are read")
        }
        let (size, mtime) = FileIdentity.of(status)
        return (fd, size, mtime)
    }

    /// Why a named pipe, socket or device is not read.
    package static func irregularReason(_ kind: String) -> String {
        "\(kind), not a regular file: only regular files are read"
    }

    /// An HDF5 file: one checkpoint, or one per step group.
    package static func loadHDF5(_ path: String, options: LoadOptions) throws -> [OpenCheckpoint] {
        let url = URL(fileURLWithPath: path)
        let modified = FileIdentity.modificationDate(path)
        let file = try HDF5File.open(path, options: options.open)
        var checkpoints = try load(file: file, source: path, optimizerHint: nil, modified: modified, options: options)
        for index in checkpoints.indices { assignStep(&checkpoints[index].checkpoint, fileStem: url.deletingPathExtension().lastPathComponent) }
        return checkpoints
    }

    /// A step for a checkpoint whose file holds none (no step attribute, no
    /// optimizer counter): a number labelled as a step in the file name, else the
    /// file's `epoch` attribute, else a number labelled as an epoch in the name,
    /// else the name's last plain integer.
    package static func assignStep(_ checkpoint: inout Checkpoint, fileStem: String) {
        guard checkpoint.metadata.step == nil else { return }
        let named = LayoutSupport.stepInFileName(fileStem)
        if let named, named.isStep {
            checkpoint.metadata.step = named.number
            checkpoint.metadata.stepSource = .fileName
            checkpoint.metadata.nameKey = named.key
        } else if let epoch = checkpoint.metadata.epoch, epoch >= 0, epoch < 1_000_000_000_000_000 {
            checkpoint.metadata.step = epoch
            checkpoint.metadata.stepSource = .epoch
        } else if let named {
            checkpoint.metadata.step = named.number
            checkpoint.metadata.stepSource = named.isEpoch ? .epoch : .fileName
            checkpoint.metadata.nameKey = named.key
            if named.isEpoch { checkpoint.metadata.epoch = named.number }
        }
    }

    /// Reads the checkpoint(s) in an HDF5 file image held in memory (a fuzzer's
    /// input, a member of an archive). `name` is used in errors and sources.
    public static func load(image: [UInt8], name: String, options: LoadOptions = LoadOptions()) throws -> [Checkpoint] {
        try open(image: image, name: name, options: options).map(\.checkpoint)
    }

    /// Opens the checkpoint(s) in an HDF5 file image held in memory.
    public static func open(image: [UInt8], name: String, options: LoadOptions = LoadOptions()) throws -> [OpenCheckpoint] {
        let file = try HDF5File.open(image: image, name: name, options: options.open)
        return try load(file: file, source: name, optimizerHint: nil, modified: nil, options: options).map { opened in
            var copy = opened
            RecurrentGates.mark(&copy.checkpoint.tensors)
            return copy
        }
    }

    /// The shard files a sharded Keras save's `.weights.json` names, in order.
    public static func shardFiles(of manifest: String) throws -> [String] {
        guard let data = FileManager.default.contents(atPath: manifest),
            let json = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any],
            let map = json["weight_map"] as? [String: Any]
        else {
            throw CheckpointError(file: manifest, reason: "a .weights.json without a weight_map: not a sharded Keras save")
        }
        var names: [String] = []
        for value in map.values {
            if let name = value as? String { names.append(name) }
            if let list = value as? [String] { names.append(contentsOf: list) }
        }
        let directory = (manifest as NSString).deletingLastPathComponent
        return Array(Set(names)).sorted(by: numericAwareLess).map { name in
            // Shard names are plain file names next to the manifest; anything else would reach outside it.
            let base = (name as NSString).lastPathComponent
            return (directory as NSString).appendingPathComponent(base)
        }
    }

    /// A sharded Keras 3 save: a `.weights.json` map and `_NNNNN.weights.h5` shards, read as one step.
    package static func loadSharded(_ path: String, options: LoadOptions) throws -> OpenCheckpoint {
        let modified = FileIdentity.modificationDate(path)
        let shards = try shardFiles(of: path)
        guard !shards.isEmpty else { throw CheckpointError(file: path, reason: "the weight map names no shard files") }
        var opened: [(file: HDF5File, entries: [Entry])] = []
        for shard in shards {
            let file = try HDF5File.open(shard, options: options.open)
            opened.append((file, try file.walk()))
        }
        let (metadata, tensors, skipped, notes, layers) = Keras3Layout.read(shards: opened, root: "/", source: path, optimizerHint: nil)
        guard !tensors.isEmpty else { throw CheckpointError(file: path, reason: "no tensors in the shards of this sharded save") }
        var checkpoint = Checkpoint(
            source: path, file: path, layout: .keras3, metadata: metadata, tensors: tensors,
            layers: layers.isEmpty ? orderLayers(tensors) : layers, skipped: skipped,
            notes: notes + ["sharded save: \(shards.count) shard file(s) read as one step"], modified: modified)
        assignStep(&checkpoint, fileStem: String((path as NSString).lastPathComponent.dropLast(".weights.json".count)))
        return OpenCheckpoint(checkpoint, files: opened.map(\.file))
    }

    /// A `.keras` zip: `model.weights.h5` read from memory, the optimizer's class from `config.json`.
    package static func loadKerasArchive(_ path: String, options: LoadOptions) throws -> OpenCheckpoint {
        let modified = FileIdentity.modificationDate(path)
        let archive: ZipArchive
        do {
            archive = try ZipArchive(contentsOf: URL(fileURLWithPath: path))
        } catch {
            throw CheckpointError(file: path, reason: "a zip archive that cannot be read (\(Failures.plain(error)))")
        }
        let bytes: [UInt8]
        do {
            guard let weights = try archive.contents(of: "model.weights.h5") else {
                if archive.members.contains(where: { $0.name == "model.weights.npz" }) {
                    throw CheckpointError(file: path, reason: "a .keras archive whose weights are a NumPy .npz, not HDF5: not supported")
                }
                if archive.members.contains(where: { $0.name == "data.pkl" || $0.name.hasSuffix("/data.pkl") }) {
                    throw CheckpointError(
                        file: path, reason: "a zip holding a data.pkl beside entries torch.save does not write: not read as a torch.save archive")
                }
                throw CheckpointError(file: path, reason: "a zip archive without model.weights.h5: not a Keras checkpoint")
            }
            bytes = weights
        } catch let error as CheckpointError {
            throw error
        } catch {
            throw CheckpointError(file: path, reason: Failures.plain(error))
        }
        var optimizer: String?
        var frozenLayers: Set<String> = []
        if let config = try? archive.contents(of: "config.json"),
            let json = LayoutSupport.json(String(decoding: config, as: UTF8.self))
        {
            if let compile = json["compile_config"] as? [String: Any] {
                optimizer = LayoutSupport.optimizerClass(
                    fromTrainingConfig: String(decoding: (try? JSONSerialization.data(withJSONObject: compile)) ?? Data(), as: UTF8.self))
            }
            frozenLayers = LayoutSupport.nonTrainableLayers(inConfig: json)
        }
        let file = try HDF5File.open(image: bytes, name: path + "/model.weights.h5", options: options.open)
        let checkpoints = try load(
            file: file, source: path, optimizerHint: optimizer, modified: modified, options: options,
            nonTrainableLayers: frozenLayers)
        guard var first = checkpoints.first else { throw CheckpointError(file: path, reason: "no tensors") }
        assignStep(&first.checkpoint, fileStem: URL(fileURLWithPath: path).deletingPathExtension().lastPathComponent)
        return first
    }

    package static func load(
        file: HDF5File, source: String, optimizerHint: String?, modified: Date?, options: LoadOptions,
        nonTrainableLayers: Set<String> = []
    ) throws -> [OpenCheckpoint] {
        let entries = try file.walk()
        let rootGroups = entries.filter { $0.depth == 1 }
        let stepGroups = rootGroups.compactMap { entry -> (Entry, Int)? in
            guard case .group = entry.kind, let step = stepGroupNumber(entry.name) else { return nil }
            return (entry, step)
        }
        if !stepGroups.isEmpty && stepGroups.count == rootGroups.filter({ if case .group = $0.kind { return true } else { return false } }).count {
            var result: [OpenCheckpoint] = []
            for (group, step) in stepGroups {
                var checkpoint = try read(
                    file: file, entries: entries, root: group.path, source: source + ":" + group.path,
                    optimizerHint: optimizerHint, modified: modified, options: options,
                    nonTrainableLayers: nonTrainableLayers)
                if checkpoint.checkpoint.metadata.step == nil {
                    checkpoint.checkpoint.metadata.step = step
                    // `/epoch_3` numbers an epoch, not optimizer updates.
                    let isEpoch = group.name.lowercased().hasPrefix("epoch")
                    checkpoint.checkpoint.metadata.stepSource = isEpoch ? .epoch : .groupName
                    if isEpoch { checkpoint.checkpoint.metadata.epoch = step }
                }
                result.append(checkpoint)
            }
            return result
        }
        return [
            try read(
                file: file, entries: entries, root: "/", source: source, optimizerHint: optimizerHint,
                modified: modified, options: options, nonTrainableLayers: nonTrainableLayers)
        ]
    }

    /// Detects the layout of the group at `root`.
    public static func detectLayout(file: HDF5File, entries: [Entry], root: String) -> LayoutKind {
        HDF5Layouts.detect(
            LayoutInput(
                file: file, entries: entries, root: root, source: file.path, optimizerHint: nil,
                nonTrainableLayers: [], forced: false)
        ).kind
    }

    package static func read(
        file: HDF5File, entries: [Entry], root: String, source: String, optimizerHint: String?,
        modified: Date?, options: LoadOptions, nonTrainableLayers: Set<String> = []
    ) throws -> OpenCheckpoint {
        let diskPath = source.hasSuffix(":" + root) && root != "/" ? String(source.dropLast(root.count + 1)) : source
        let input = LayoutInput(
            file: file, entries: entries, root: root, source: source, optimizerHint: optimizerHint,
            nonTrainableLayers: nonTrainableLayers, forced: options.layout != nil)
        let reader = options.layout.map(HDF5Layouts.layout) ?? HDF5Layouts.detect(input)
        let layout = reader.kind
        let reading = try reader.read(input)
        let (metadata, tensors, skipped, notes) = (reading.metadata, reading.tensors, reading.skipped, reading.notes)
        var layers = reading.layers
        guard !tensors.isEmpty else {
            throw CheckpointError(file: source, reason: "no floating-point tensors found (read as the \(layout.rawValue) layout): not a checkpoint")
        }
        if layers.isEmpty && (layout == .native || layout == .generic) {
            if let addresses = reading.addresses, addresses.count == tensors.count {
                layers = orderLayers(tensors, addresses: addresses)
            } else {
                layers = orderLayers(
                    tensors,
                    createdAt: Dictionary(
                        entries.compactMap { entry in entry.address.map { (entry.path, $0) } },
                        uniquingKeysWith: { a, _ in a }))
            }
        } else if layers.isEmpty {
            layers = orderLayers(tensors)
        } else {
            let known = Set(layers)
            layers.append(contentsOf: orderLayers(tensors).filter { !known.contains($0) })
        }
        let checkpoint = Checkpoint(
            source: source, file: diskPath, layout: layout, metadata: metadata, tensors: tensors, layers: layers,
            skipped: skipped, notes: notes, modified: modified)
        return OpenCheckpoint(checkpoint, files: [file])
    }

    /// Layers in depth order, from the names and the order the weights were written.
    /// A name says little of depth (`classifier` sorts before `input_proj`), but h5py
    /// and the exporters write a `state_dict` in its own order, module registration
    /// order, which is the forward order of a sequential model, and libhdf5 mostly
    /// allocates each new object header after the previous ones. Mostly: freed
    /// metadata space is reused, so addresses are only used to order siblings that
    /// the name cannot: at each level of the dotted or slashed name, siblings are
    /// ordered by the highest address among their tensors (a later object may reuse
    /// freed space below, an earlier one never lies above), and then siblings whose
    /// names differ only in their numbers (`blocks.0` ... `blocks.11`, `conv1`,
    /// `conv2`) are put back in the order of those numbers within the places they
    /// hold. Without addresses: the listing order.
    package static func orderLayers(_ tensors: [TensorRef], createdAt: [String: UInt64]) -> [String] {
        orderLayers(tensors, addresses: tensors.map { $0.role == .weight ? createdAt[$0.path] ?? 0 : 0 })
    }

    /// The same, with each tensor's address given beside it (0: unknown). The order depends only on
    /// each tensor's layer, whether it is a weight and a weight's address, which the saves of a run
    /// repeat file after file: the answers for the last few such lists are remembered (``LayerOrders``).
    package static func orderLayers(_ tensors: [TensorRef], addresses: [UInt64]) -> [String] {
        let key = LayerOrders.Key(tensors, addresses: addresses)
        if let known = LayerOrders.shared.order(for: key) { return known }
        let order = orderLayersAfresh(tensors, addresses: addresses)
        LayerOrders.shared.remember(order, for: key)
        return order
    }

    private static func orderLayersAfresh(_ tensors: [TensorRef], addresses createdAt: [UInt64]) -> [String] {
        let listed = orderLayers(tensors)
        // A layer's place is the highest address among its tensors: an object written later may land
        // lower by reusing freed space, but one written earlier never sits above what followed it.
        var address: [String: UInt64] = [:]
        for (index, tensor) in tensors.enumerated() where tensor.role == .weight {
            let value = createdAt[index]
            guard value > 0 else { continue }
            address[tensor.layer] = max(address[tensor.layer] ?? 0, value)
        }
        guard !address.isEmpty else { return listed }
        final class Node {
            package var children: [String: Node] = [:]
            package var layers: [String] = []
            package var highest: UInt64 = 0
            package var firstListed = Int.max
        }
        let root = Node()
        for (position, layer) in listed.enumerated() {
            var node = root
            node.highest = max(node.highest, address[layer] ?? 0)
            for part in layer.split(whereSeparator: { $0 == "." || $0 == "/" }).map(String.init) {
                let child = node.children[part] ?? Node()
                node.children[part] = child
                node = child
                node.highest = max(node.highest, address[layer] ?? 0)
                node.firstListed = min(node.firstListed, position)
            }
            node.layers.append(layer)
        }
        /// The name with every run of digits as one `#`: `blocks.7` and `blocks.100` are one family.
        func skeleton(_ name: String) -> String {
            var result = ""
            for character in name {
                let digit = character.isASCII && character.isNumber
                if !digit { result.append(character) } else if result.last != "#" { result.append("#") }
            }
            return result
        }
        var order: [String] = []
        func visit(_ node: Node) {
            order.append(contentsOf: node.layers)
            // Siblings by address (`conv1`, `bn1`, `conv2`, `bn2` interleave as written), then the members
            // of each family of names that differ only in their numbers put back in numeric order within
            // the places the family holds (`blocks.3` written after `blocks.1` even where space was reused).
            var slots = node.children.keys.sorted { a, b in
                let na = node.children[a]!, nb = node.children[b]!
                // Layers without an address go last, in listing order.
                let ka = na.highest == 0 ? UInt64.max : na.highest, kb = nb.highest == 0 ? UInt64.max : nb.highest
                return (ka, na.firstListed) < (kb, nb.firstListed)
            }
            for family in Dictionary(grouping: slots.indices, by: { skeleton(slots[$0]) }).values where family.count > 1 {
                let members = family.map { slots[$0] }.sorted(by: numericAwareLess)
                for (slot, name) in zip(family.sorted(), members) { slots[slot] = name }
            }
            for name in slots { if let child = node.children[name] { visit(child) } }
        }
        visit(root)
        return order.count == listed.count ? order : listed
    }

    /// Layers in the order their weights appear (file order), which is also the
    /// numeric order of numbered names (`head.2` before `head.10`).
    package static func orderLayers(_ tensors: [TensorRef]) -> [String] {
        var seen = Set<String>()
        var order: [String] = []
        let weights = tensors.filter { $0.role == .weight }
        for tensor in (weights.isEmpty ? tensors : weights) where !seen.contains(tensor.layer) {
            seen.insert(tensor.layer)
            order.append(tensor.layer)
        }
        return order
    }
}

/// The layer orders last worked out (``CheckpointLoader/orderLayers(_:addresses:)``), by everything
/// they depend on: a run's saves list the same tensors at the same addresses, so each save after the
/// first is a comparison of two lists. A list that differs in anything is ordered afresh.
package final class LayerOrders: Sendable {
    package static let shared = LayerOrders()
    /// Lists remembered at most (a folder of a few models, each with a structure of its own).
    package static let capacity = 4

    /// What an order depends on: each tensor's layer, whether it is a weight, and a weight's address.
    package struct Key: Equatable, Sendable {
        let layers: [String]
        let weights: [Bool]
        let addresses: [UInt64]

        package init(_ tensors: [TensorRef], addresses: [UInt64]) {
            layers = tensors.map(\.layer)
            weights = tensors.map { $0.role == .weight }
            self.addresses = zip(tensors, addresses).map { $0.role == .weight ? $1 : 0 }
        }
    }

    private let entries = Mutex<[(key: Key, order: [String])]>([])

    package init() {}

    package func order(for key: Key) -> [String]? {
        entries.withLock { entries in entries.first { $0.key == key }?.order }
    }

    package func remember(_ order: [String], for key: Key) {
        entries.withLock { entries in
            if entries.contains(where: { $0.key == key }) { return }
            entries.append((key, order))
            if entries.count > Self.capacity { entries.removeFirst(entries.count - Self.capacity) }
        }
    }
}
