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

/// Formats a byte count for people: `812 B`, `4.1 KB`, `1.3 GB` (powers of 1000).
public func formatBytes(_ bytes: Int) -> String {
    let units = ["B", "KB", "MB", "GB", "TB", "PB"]
    var value = Double(bytes)
    var unit = 0
    while value >= 1000 && unit < units.count - 1 {
        value /= 1000
        unit += 1
    }
    if unit == 0 { return "\(bytes) B" }
    return value >= 100 ? "\(Int(value.rounded())) \(units[unit])" : "\(formatFixed(value, digits: 1)) \(units[unit])"
}

/// `value` with exactly `digits` digits after the point.
public func formatFixed(_ value: Double, digits: Int) -> String {
    guard value.isFinite else { return value.isNaN ? "nan" : (value > 0 ? "inf" : "-inf") }
    var scale = 1.0
    for _ in 0..<digits { scale *= 10 }
    let rounded = (abs(value) * scale).rounded() / scale
    let integer = Int(rounded)
    var fraction = Int(((rounded - Double(integer)) * scale).rounded())
    var whole = integer
    if fraction >= Int(scale) { whole += 1; fraction -= Int(scale) }
    let sign = value < 0 && rounded != 0 ? "-" : ""
    if digits == 0 { return "\(sign)\(whole)" }
    var fractionText = String(fraction)
    while fractionText.count < digits { fractionText = "0" + fractionText }
    return "\(sign)\(whole).\(fractionText)"
}

/// A shape as `[64, 128]`, `scalar` for [].
public func formatShape(_ shape: [Int]) -> String {
    shape.isEmpty ? "scalar" : "[" + shape.map(String.init).joined(separator: ", ") + "]"
}
