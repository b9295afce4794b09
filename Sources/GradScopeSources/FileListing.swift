import ElementTypes
import Foundation
import GradScopeModel
import HDF5

/// The tree of one HDF5 file, as `gradscope ls` shows it: every group,
/// dataset and link, with each dataset's shape, type, layout and size, and
/// optionally every attribute decoded.
public struct FileListing: Sendable {
    public struct Item: Sendable {
        public let entry: Entry
        public let dataset: DatasetInfo?
        /// Why the dataset could not be described or must not be read, if so.
        public let problem: String?
        public let attributes: [Attribute]
    }

    public let path: String
    /// `HDF5`, `torch` for a torch.save archive, `safetensors` for a safetensors file (its tensors listed as datasets of the
    /// root), or `trainer-folder` for a Hugging Face Trainer save (each tensor file a group holding its tensors).
    public let format: String
    public let fileSize: Int
    public let rootAttributes: [Attribute]
    public let items: [Item]

    /// Walks `file` and describes everything in it.
    public init(file: HDF5File, withAttributes: Bool) throws {
        path = file.path
        format = "HDF5"
        fileSize = file.size
        rootAttributes = withAttributes ? ((try? file.attributes(at: "/")) ?? []) : []
        var items: [Item] = []
        for entry in try file.walk() {
            var info: DatasetInfo?
            var problem = entry.notFollowedReason
            if case .dataset = entry.kind {
                do {
                    let described = try file.datasetInfo(entry.path)
                    info = described
                    problem = described.refusal(limits: file.options.limits, followLinks: file.options.followLinks)
                    if problem == nil, !described.allocated, described.elementCount > 0 {
                        problem = "no data written"
                    }
                    if problem == nil, let missing = described.filters.first(where: { !$0.available }) {
                        problem = "filter \(missing.name) not available"
                    }
                } catch let error as HDF5Error {
                    problem = error.message
                }
            }
            var attributes: [Attribute] = []
            if withAttributes {
                switch entry.kind {
                case .group, .dataset, .namedType:
                    attributes = (try? file.attributes(at: entry.path)) ?? []
                default:
                    break
                }
            }
            items.append(Item(entry: entry, dataset: info, problem: problem, attributes: attributes))
        }
        self.items = items
    }
}

extension FileListing {
    /// Lists `path`: a safetensors file's tensors (in the order of their bytes, each a contiguous
    /// little-endian dataset of the root, its `__metadata__` as root attributes), else an HDF5 file's tree.
    /// A Trainer save folder (`checkpoint-500/`) lists its tensor files (``init(trainerFolder:model:withAttributes:)``);
    /// any other directory is refused with the files or folders to list instead.
    public static func read(_ path: String, withAttributes: Bool, options: OpenOptions = OpenOptions()) throws -> FileListing {
        if TrainerFolder.isDirectory(path) {
            if let model = TrainerFolder.modelFile(in: path) {
                return try FileListing(trainerFolder: path, model: model, withAttributes: withAttributes)
            }
            let names = ((try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []).sorted(by: numericAwareLess)
            let saves = names.filter {
                TrainerFolder.checkpointNumber($0) != nil && TrainerFolder.isDirectory((path as NSString).appendingPathComponent($0))
            }
            if let first = saves.first, let last = saves.last {
                let which = saves.count == 1 ? first : "\(first) … \(last)"
                throw CheckpointError(
                    file: path,
                    reason:
                        "a Trainer output directory: ls lists one save, give one of its \(saves.count) checkpoint folder(s) (\(which)) or a file in one (scan reads the directory as a run)"
                )
            }
            throw CheckpointError(
                file: path,
                reason:
                    "a directory: ls lists one checkpoint file (HDF5, safetensors, torch.save) or one Trainer checkpoint folder (scan reads a directory as a run)"
            )
        }
        try CheckpointLoader.refuseIrregular(path)
        let head = FileIdentity.head(path)
        if path.lowercased().hasSuffix(".safetensors") || SafetensorsFile.looksLike(path, head: head) {
            return FileListing(safetensors: try SafetensorsFile(path: path), withAttributes: withAttributes)
        }
        if TorchArchiveSource().recognises(path: path, head: head) {
            return FileListing(safetensors: try TorchArchive.read(path).0, withAttributes: withAttributes, format: "torch")
        }
        return try FileListing(file: try HDF5File.open(path, options: options), withAttributes: withAttributes)
    }

    /// Lists a Hugging Face Trainer save: each tensor file it holds (the model's, every shard of a sharded
    /// model, and `optimizer.pt`) as a group of depth 1 named after the file, holding that file's tensors as
    /// `ls` lists the file alone (offsets within that file). An `optimizer.pt` that cannot be read is listed
    /// with the reason; a model file that cannot be read fails the listing.
    init(trainerFolder folder: String, model: String, withAttributes: Bool) throws {
        var files = model.hasSuffix(".index.json") ? try SafetensorsFile.shardFiles(of: model) : [model]
        let optimizer = (folder as NSString).appendingPathComponent("optimizer.pt")
        if TrainerFolder.isRegularFile(optimizer) { files.append(optimizer) }
        var items: [Item] = []
        var size = 0
        for file in files {
            let name = (file as NSString).lastPathComponent
            let listing: FileListing
            if file == optimizer {
                // optimizer.pt is a torch.save archive, or it is listed with the reason it is not one.
                do {
                    listing = FileListing(safetensors: try TorchArchive.read(file).0, withAttributes: withAttributes, format: "torch")
                } catch {
                    let reason = (error as? CheckpointError)?.reason ?? Failures.reason(for: error)
                    items.append(Item(entry: Entry(name: name, path: name, depth: 1, kind: .group), dataset: nil, problem: reason, attributes: []))
                    continue
                }
            } else {
                listing = try FileListing.read(file, withAttributes: withAttributes)
            }
            size += listing.fileSize
            items.append(
                Item(entry: Entry(name: name, path: name, depth: 1, kind: .group), dataset: nil, problem: nil, attributes: listing.rootAttributes))
            for item in listing.items {
                let entry = Entry(name: item.entry.name, path: name + "/" + item.entry.path, depth: item.entry.depth + 1, kind: item.entry.kind)
                items.append(Item(entry: entry, dataset: item.dataset, problem: item.problem, attributes: item.attributes))
            }
        }
        path = folder
        format = "trainer-folder"
        fileSize = size
        rootAttributes = []
        self.items = items
    }

    /// Lists a file of contiguous tensors: a safetensors file, or a torch.save archive's tensors (`format` "torch").
    init(safetensors file: SafetensorsFile, withAttributes: Bool, format: String = "safetensors") {
        path = file.path
        self.format = format
        fileSize = file.size
        rootAttributes = withAttributes ? file.metadata.sorted { $0.key < $1.key }.map { Attribute(string: $0.key, $0.value) } : []
        items = file.entries.map { entry in
            let info = DatasetInfo(
                contiguous: entry.name, shape: entry.shape, type: entry.dtype.elementType, byteOrder: entry.dtype.bits > 8 ? .little : .none,
                storageSize: entry.end - entry.begin, dataOffset: file.dataStart + entry.begin)
            return Item(
                entry: Entry(name: entry.name, path: entry.name, depth: 1, kind: .dataset), dataset: info,
                problem: entry.dtype.supported ? nil : "unsupported dtype \(entry.dtype.name)", attributes: [])
        }
    }
}
