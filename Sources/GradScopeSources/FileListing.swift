import ElementTypes
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
    public let fileSize: Int
    public let rootAttributes: [Attribute]
    public let items: [Item]

    /// Walks `file` and describes everything in it.
    public init(file: HDF5File, withAttributes: Bool) throws {
        path = file.path
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
