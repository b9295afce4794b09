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
    /// `HDF5`, `torch` for a torch.save archive, or `safetensors` for a safetensors file (its tensors listed as datasets of the root).
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
    public static func read(_ path: String, withAttributes: Bool, options: OpenOptions = OpenOptions()) throws -> FileListing {
        try CheckpointLoader.refuseIrregular(path)
        var head: [UInt8] = []
        if let handle = FileHandle(forReadingAtPath: path) {
            head = [UInt8]((try? handle.read(upToCount: 8)) ?? Data())
            try? handle.close()
        }
        if path.lowercased().hasSuffix(".safetensors") || SafetensorsFile.looksLike(path, head: head) {
            return FileListing(safetensors: try SafetensorsFile(path: path), withAttributes: withAttributes)
        }
        if TorchArchiveSource().recognises(path: path, head: head) {
            return FileListing(safetensors: try TorchArchive.read(path).0, withAttributes: withAttributes, format: "torch")
        }
        return try FileListing(file: try HDF5File.open(path, options: options), withAttributes: withAttributes)
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
