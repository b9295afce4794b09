import CHDF5
import Synchronization

extension HDF5File {
    /// The links directly inside the group at `groupPath`, in numeric-aware name order.
    /// Soft, external and user-defined links are listed with their targets, never followed.
    /// The corresponding C function is `H5Literate`.
    public func children(of groupPath: String) throws -> [Entry] {
        let depth = groupPath == "/" ? 1 : groupPath.split(separator: "/").count + 1
        var visited = Set<haddr_t>()
        if let native, let listed = try? nativeListGroup(native, groupPath, depth: depth, visited: &visited, aliases: [:]) {
            return listed.map { $0.entry }
        }
        visited = []
        Library.ensure()
        return try listGroup(groupPath, depth: depth, visited: &visited, aliases: [:]).map { $0.entry }
    }

    /// Every object in the file, depth first, each group's children in
    /// numeric-aware order. Hard-link cycles and second names are listed as
    /// `.alias`; groups that cannot be read are listed as `.unreadable` and
    /// the walk goes on; depth and object count are bounded by `ReadLimits`.
    public func walk() throws -> [Entry] {
        if let native {
            // Answered from the parsed metadata alone: the same for every file given that parse (``ParseMemo``).
            if let known = native.derived.walk.withLock({ $0 }) { return known }
            var result: [Entry] = []
            let root = haddr_t(native.rootAddress)
            var visited: Set<haddr_t> = [root]
            var firstPath: [haddr_t: String] = [root: "/"]
            do {
                try walkGroup("/", depth: 1, native: native, visited: &visited, firstPath: &firstPath, into: &result)
                native.derived.walk.withLock { $0 = result }
                return result
            } catch is NativeFormatError {}
        }
        Library.ensure()
        var result: [Entry] = []
        var visited = Set<haddr_t>()
        var firstPath: [haddr_t: String] = [:]
        if let rootAddress = objectAddress("/") {
            visited.insert(rootAddress)
            firstPath[rootAddress] = "/"
        }
        try walkGroup("/", depth: 1, native: nil, visited: &visited, firstPath: &firstPath, into: &result)
        return result
    }

    private struct Listed {
        package var entry: Entry
        package var address: haddr_t?
    }

    private func walkGroup(
        _ path: String, depth: Int, native: NativeMetadata?, visited: inout Set<haddr_t>,
        firstPath: inout [haddr_t: String], into result: inout [Entry]
    ) throws {
        let limits = options.limits
        if depth > limits.maxDepth {
            result.append(
                Entry(
                    name: "…", path: joinObjectPath(path, "…"), depth: depth,
                    kind: .truncatedListing(reason: "nesting deeper than \(limits.maxDepth) levels, not listed")))
            return
        }
        let listed: [Listed]
        do {
            if let native {
                listed = try nativeListGroup(native, path, depth: depth, visited: &visited, aliases: firstPath)
            } else {
                listed = try listGroup(path, depth: depth, visited: &visited, aliases: firstPath)
            }
        } catch let error as HDF5Error {
            if path == "/" { throw error }
            result.append(
                Entry(
                    name: "…", path: joinObjectPath(path, "…"), depth: depth,
                    kind: .unreadable(reason: "group cannot be listed: \(error.message)")))
            return
        }
        for item in listed {
            if let address = item.address, firstPath[address] == nil { firstPath[address] = item.entry.path }
        }
        for item in listed {
            if result.count >= limits.maxObjects {
                result.append(
                    Entry(
                        name: "…", path: joinObjectPath(path, "…"), depth: depth,
                        kind: .truncatedListing(reason: "more than \(limits.maxObjects) objects, the rest not listed")))
                return
            }
            result.append(item.entry)
            if item.address != nil, case .group = item.entry.kind {
                try walkGroup(item.entry.path, depth: depth + 1, native: native, visited: &visited, firstPath: &firstPath, into: &result)
            }
        }
    }

    /// `listGroup` answered from the natively read metadata: the same entries, kinds, aliases and order.
    private func nativeListGroup(
        _ native: NativeMetadata, _ path: String, depth: Int, visited: inout Set<haddr_t>, aliases: [haddr_t: String]
    ) throws -> [Listed] {
        guard let address = native.resolve(path), let group = native.objects[address], case .group = group.kind else {
            throw NativeFormatError("not a group reached through hard links")
        }
        var listed: [Listed] = []
        listed.reserveCapacity(group.links.count)
        for position in LinkOrders.shared.order(of: group.links) {
            let link = group.links[position]
            let childPath = joinObjectPath(path, link.name)
            switch link.target {
            case .hard(let stored):
                let address = haddr_t(stored)
                if visited.contains(address) {
                    let target = aliases[address] ?? "an object listed earlier"
                    listed.append(Listed(entry: Entry(name: link.name, path: childPath, depth: depth, kind: .alias(of: target)), address: nil))
                    continue
                }
                visited.insert(address)
                guard let object = native.objects[stored] else { throw NativeFormatError("object not read") }
                listed.append(
                    Listed(entry: Entry(name: link.name, path: childPath, depth: depth, kind: object.kind, address: stored), address: address))
            case .soft(let target):
                listed.append(Listed(entry: Entry(name: link.name, path: childPath, depth: depth, kind: .softLink(target: target)), address: nil))
            case .external(let file, let object):
                listed.append(
                    Listed(
                        entry: Entry(name: link.name, path: childPath, depth: depth, kind: .externalLink(file: file, object: object)), address: nil))
            case .userDefined:
                listed.append(Listed(entry: Entry(name: link.name, path: childPath, depth: depth, kind: .userDefinedLink), address: nil))
            }
        }
        return listed
    }

    private final class IterationState {
        package var names: [(String, H5L_info_t)] = []
        package var limit: Int
        package var overflow = false
        package init(limit: Int) { self.limit = limit }
    }

    /// Lists one group's links with their kinds; marks objects seen before as aliases.
    private func listGroup(
        _ path: String, depth: Int, visited: inout Set<haddr_t>,
        aliases: [haddr_t: String]
    ) throws -> [Listed] {
        let gid = H5Gopen2(handle.id, path, linkAccess.id)
        guard gid >= 0 else { throw failure(path, "cannot open group") }
        let group = Handle(gid, .group)
        let state = IterationState(limit: options.limits.maxObjects)
        var index: hsize_t = 0
        let status = withExtendedLifetime(state) { () -> herr_t in
            let context = Unmanaged.passUnretained(state).toOpaque()
            return H5Literate(
                group.id, H5_INDEX_NAME, H5_ITER_NATIVE, &index,
                { _, name, info, data in
                    guard let name, let info, let data else { return 0 }
                    let state = Unmanaged<IterationState>.fromOpaque(data).takeUnretainedValue()
                    if state.names.count >= state.limit {
                        state.overflow = true
                        return 1
                    }
                    state.names.append((String(cString: name), info.pointee))
                    return 0
                }, context)
        }
        if status < 0 && state.names.isEmpty {
            throw failure(path, "cannot list group")
        }
        _ = Library.errorMessages()
        var listed: [Listed] = []
        for (name, info) in state.names.sorted(by: { numericAwareLess($0.0, $1.0) }) {
            let childPath = joinObjectPath(path, name)
            switch info.type {
            case H5L_TYPE_HARD:
                let address = info.u.address
                if visited.contains(address) {
                    let target = aliases[address] ?? "an object listed earlier"
                    listed.append(Listed(entry: Entry(name: name, path: childPath, depth: depth, kind: .alias(of: target)), address: nil))
                    continue
                }
                visited.insert(address)
                var oinfo = H5O_info_t()
                if H5Oget_info_by_name2(group.id, name, &oinfo, UInt32(H5O_INFO_BASIC), linkAccess.id) < 0 {
                    let reason = Library.errorSummary() ?? "object header cannot be read"
                    listed.append(Listed(entry: Entry(name: name, path: childPath, depth: depth, kind: .unreadable(reason: reason)), address: nil))
                    continue
                }
                let kind: Entry.Kind
                switch oinfo.type {
                case H5O_TYPE_GROUP: kind = .group
                case H5O_TYPE_DATASET: kind = .dataset
                case H5O_TYPE_NAMED_DATATYPE: kind = .namedType
                default: kind = .unreadable(reason: "unknown object type")
                }
                listed.append(Listed(entry: Entry(name: name, path: childPath, depth: depth, kind: kind, address: UInt64(address)), address: address))
            case H5L_TYPE_SOFT:
                let target =
                    linkValue(group: group.id, name: name, size: info.u.val_size).map { bytes -> String in
                        String(decoding: bytes.prefix { $0 != 0 }, as: UTF8.self)
                    } ?? "?"
                listed.append(Listed(entry: Entry(name: name, path: childPath, depth: depth, kind: .softLink(target: target)), address: nil))
            case H5L_TYPE_EXTERNAL:
                var file = "?", object = "?"
                if var bytes = linkValue(group: group.id, name: name, size: info.u.val_size) {
                    var flags: UInt32 = 0
                    var filePointer: UnsafePointer<CChar>?
                    var objectPointer: UnsafePointer<CChar>?
                    bytes.withUnsafeMutableBytes { raw in
                        if H5Lunpack_elink_val(raw.baseAddress, raw.count, &flags, &filePointer, &objectPointer) >= 0 {
                            if let filePointer { file = String(cString: filePointer) }
                            if let objectPointer { object = String(cString: objectPointer) }
                        }
                    }
                }
                listed.append(
                    Listed(entry: Entry(name: name, path: childPath, depth: depth, kind: .externalLink(file: file, object: object)), address: nil))
            default:
                listed.append(Listed(entry: Entry(name: name, path: childPath, depth: depth, kind: .userDefinedLink), address: nil))
            }
        }
        if state.overflow {
            listed.append(
                Listed(
                    entry: Entry(
                        name: "…", path: joinObjectPath(path, "…"), depth: depth,
                        kind: .truncatedListing(reason: "more than \(options.limits.maxObjects) links in one group, the rest not listed")),
                    address: nil))
        }
        _ = Library.errorMessages()
        return listed
    }

    private func linkValue(group: hid_t, name: String, size: Int) -> [UInt8]? {
        guard size > 0, size <= 1 << 16 else { return nil }
        var bytes = [UInt8](repeating: 0, count: size + 1)
        let status = bytes.withUnsafeMutableBytes { raw in
            H5Lget_val(group, name, raw.baseAddress, size, linkAccess.id)
        }
        return status >= 0 ? bytes : nil
    }

    /// The object's address, used to recognise hard-link cycles.
    package func objectAddress(_ path: String) -> haddr_t? {
        var info = H5O_info_t()
        guard H5Oget_info_by_name2(handle.id, path, &info, UInt32(H5O_INFO_BASIC), linkAccess.id) >= 0 else {
            _ = Library.errorMessages()
            return nil
        }
        return info.addr
    }

    /// What the object at `path` is, without following soft or external links
    /// anywhere along the path. Returns nil when there is nothing there.
    public func kind(of path: String) -> Entry.Kind? {
        if let native, let answer = native.kind(of: path) { return answer }
        Library.ensure()
        let components = path.split(separator: "/", omittingEmptySubsequences: true).map(String.init)
        if components.isEmpty { return .group }
        var prefix = ""
        for (position, component) in components.enumerated() {
            prefix += "/" + component
            var info = H5L_info_t()
            guard H5Lget_info(handle.id, prefix, &info, linkAccess.id) >= 0 else {
                _ = Library.errorMessages()
                return nil
            }
            let isLast = position == components.count - 1
            switch info.type {
            case H5L_TYPE_HARD:
                if isLast {
                    var oinfo = H5O_info_t()
                    guard H5Oget_info_by_name2(handle.id, prefix, &oinfo, UInt32(H5O_INFO_BASIC), linkAccess.id) >= 0 else {
                        return .unreadable(reason: Library.errorSummary() ?? "object header cannot be read")
                    }
                    switch oinfo.type {
                    case H5O_TYPE_GROUP: return .group
                    case H5O_TYPE_DATASET: return .dataset
                    case H5O_TYPE_NAMED_DATATYPE: return .namedType
                    default: return .unreadable(reason: "unknown object type")
                    }
                }
            case H5L_TYPE_SOFT:
                if isLast { return .softLink(target: "?") }
                return nil
            case H5L_TYPE_EXTERNAL:
                if isLast { return .externalLink(file: "?", object: "?") }
                return nil
            default:
                return isLast ? .userDefinedLink : nil
            }
        }
        return nil
    }

    /// Whether a hard-linked group or dataset exists at `path`.
    public func exists(_ path: String) -> Bool {
        switch kind(of: path) {
        case .group?, .dataset?: return true
        default: return false
        }
    }
}

/// The numeric-aware order of a group's links (`blocks.2` before `blocks.10`), remembered for the
/// last few lists of names: the saves of a run hold groups of the same names, each sorted once.
/// A list is the same only when every name is the same bytes, in the same place.
package final class LinkOrders: Sendable {
    package static let shared = LinkOrders()
    /// Lists remembered at most (a run's saves hold a few groups each).
    package static let capacity = 16
    /// Lists shorter than this are sorted each time (as cheap as comparing them).
    static let shortest = 8

    private let entries = Mutex<[(names: [String], order: [Int])]>([])

    /// The positions of `links` in numeric-aware order of their names.
    func order(of links: [NativeLink]) -> [Int] {
        guard links.count >= Self.shortest else { return Self.sorted(links) }
        let known = entries.withLock { entries in
            entries.first { entry in
                entry.names.count == links.count && links.indices.allSatisfy { sameBytes(entry.names[$0], links[$0].name) }
            }?.order
        }
        if let known { return known }
        let order = Self.sorted(links)
        let names = links.map(\.name)
        entries.withLock { entries in
            entries.append((names, order))
            if entries.count > Self.capacity { entries.removeFirst(entries.count - Self.capacity) }
        }
        return order
    }

    static func sorted(_ links: [NativeLink]) -> [Int] {
        // A stable sort of the positions: the order sorting the links themselves gives.
        links.indices.sorted { numericAwareLess(links[$0].name, links[$1].name) }
    }
}
