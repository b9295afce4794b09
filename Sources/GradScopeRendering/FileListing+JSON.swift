import ElementTypes
import GradScopeSources
import HDF5

/// The JSON form of `gradscope ls` (docs/JSON.md, "ls"): the file, its counts, its
/// root attributes and every object of its tree in walk order, each with its path
/// and depth so that the tree can be rebuilt. Every field is written, null where it
/// does not apply.
package struct FileListingJSON: Encodable {
    /// One object of the tree: a group, a dataset, a named type or a link.
    package struct Object: Encodable {
        var path: String
        var name: String
        var depth: Int
        var kind: String
        var target: String?
        var shape: [Int]?
        var dtype: String?
        var byteOrder: String?
        var layout: String?
        var chunkShape: [Int]?
        var filters: [String]?
        var size: Int?
        var problem: String?
        var attributes: [AttributeJSON]?

        enum CodingKeys: String, CodingKey {
            case path, name, depth, kind, target, shape, dtype
            case byteOrder = "byte_order"
            case layout
            case chunkShape = "chunk_shape"
            case filters, size, problem, attributes
        }

        package func encode(to encoder: Encoder) throws {
            var container = encoder.container(keyedBy: CodingKeys.self)
            try container.encode(path, forKey: .path)
            try container.encode(name, forKey: .name)
            try container.encode(depth, forKey: .depth)
            try container.encode(kind, forKey: .kind)
            try container.encode(target, forKey: .target)
            try container.encode(shape, forKey: .shape)
            try container.encode(dtype, forKey: .dtype)
            try container.encode(byteOrder, forKey: .byteOrder)
            try container.encode(layout, forKey: .layout)
            try container.encode(chunkShape, forKey: .chunkShape)
            try container.encode(filters, forKey: .filters)
            try container.encode(size, forKey: .size)
            try container.encode(problem, forKey: .problem)
            try container.encode(attributes, forKey: .attributes)
        }
    }

    /// One attribute, decoded: its values as a JSON array of numbers, strings or booleans.
    package struct AttributeJSON: Encodable {
        var name: String
        var shape: [Int]
        var type: String
        var values: AttributeValues?
        var detail: String?

        enum CodingKeys: String, CodingKey { case name, shape, type, values, detail }

        init(_ attribute: Attribute) {
            name = attribute.name
            shape = attribute.shape
            switch attribute.value {
            case .integers(let values): (type, self.values) = ("integer", .integers(values))
            case .unsignedIntegers(let values): (type, self.values) = ("unsigned-integer", .unsigned(values))
            case .floats(let values): (type, self.values) = ("float", .floats(values))
            case .strings(let values): (type, self.values) = ("string", .strings(values))
            case .bools(let values): (type, self.values) = ("bool", .bools(values))
            case .empty: (type, self.values) = ("empty", .strings([]))
            case .unsupported(let what):
                (type, self.values) = ("unsupported", nil)
                detail = what
            }
        }

        package func encode(to encoder: Encoder) throws {
            var container = encoder.container(keyedBy: CodingKeys.self)
            try container.encode(name, forKey: .name)
            try container.encode(shape, forKey: .shape)
            try container.encode(type, forKey: .type)
            try container.encode(values, forKey: .values)
            try container.encode(detail, forKey: .detail)
        }
    }

    /// An attribute's elements, of one JSON type.
    package enum AttributeValues: Encodable {
        case integers([Int64])
        case unsigned([UInt64])
        case floats([Double])
        case strings([String])
        case bools([Bool])

        package func encode(to encoder: Encoder) throws {
            var container = encoder.singleValueContainer()
            switch self {
            case .integers(let values): try container.encode(values)
            case .unsigned(let values): try container.encode(values)
            case .floats(let values): try container.encode(values)
            case .strings(let values): try container.encode(values)
            case .bools(let values): try container.encode(values)
            }
        }
    }

    var file: String
    var size: Int
    var groups: Int
    var datasets: Int
    var attributes: [AttributeJSON]?
    var objects: [Object]

    enum CodingKeys: String, CodingKey { case file, size, groups, datasets, attributes, objects }

    /// The JSON form of `listing`; attributes are written only when they were read (`--attrs`), else null.
    package init(_ listing: FileListing, showAttributes: Bool) {
        file = listing.path
        size = listing.fileSize
        datasets = listing.items.filter { $0.dataset != nil }.count
        groups = listing.items.filter { if case .group = $0.entry.kind { return true } else { return false } }.count
        attributes = showAttributes ? listing.rootAttributes.map(AttributeJSON.init) : nil
        objects = listing.items.map { item in
            var object = Object(path: item.entry.path, name: item.entry.name, depth: item.entry.depth, kind: "")
            switch item.entry.kind {
            case .group: object.kind = "group"
            case .dataset: object.kind = "dataset"
            case .namedType: object.kind = "named-type"
            case .alias(let target): (object.kind, object.target) = ("alias", target)
            case .softLink(let target): (object.kind, object.target) = ("soft-link", target)
            case .externalLink(let file, let path): (object.kind, object.target) = ("external-link", file + ":" + path)
            case .userDefinedLink: object.kind = "user-defined-link"
            case .unreadable: object.kind = "unreadable"
            case .truncatedListing: object.kind = "truncated-listing"
            }
            if let info = item.dataset {
                object.shape = info.shape
                object.dtype = info.type.description
                object.byteOrder = info.byteOrder.rawValue
                object.layout = info.layout.rawValue
                object.chunkShape = info.chunkShape
                object.filters = info.filters.map(\.name)
                object.size = info.storageSize
            }
            object.problem = item.problem
            object.attributes = showAttributes ? item.attributes.map(AttributeJSON.init) : nil
            return object
        }
    }

    package func encode(to encoder: Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(file, forKey: .file)
        try container.encode(size, forKey: .size)
        try container.encode(groups, forKey: .groups)
        try container.encode(datasets, forKey: .datasets)
        try container.encode(attributes, forKey: .attributes)
        try container.encode(objects, forKey: .objects)
    }
}

extension FileListing {
    /// The tree as the JSON of docs/JSON.md ("ls"), ending with a newline.
    public func renderJSON(showAttributes: Bool) throws -> String {
        try encodeJSON(FileListingJSON(self, showAttributes: showAttributes)) + "\n"
    }
}
