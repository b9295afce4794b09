/// One link in an HDF5 file's tree, as a walk finds it.
public struct Entry: Sendable, Equatable {
    /// What the link leads to, or why it is not followed.
    public enum Kind: Sendable, Equatable {
        case group
        case dataset
        /// A committed (named) datatype.
        case namedType
        /// A hard link to an object already listed at `of` (a second name, or a cycle).
        case alias(of: String)
        /// A soft link, not followed by default.
        case softLink(target: String)
        /// An external link into another file, never followed by default.
        case externalLink(file: String, object: String)
        case userDefinedLink
        /// An object the walk could not read (a corrupt header, a group that cannot be listed).
        case unreadable(reason: String)
        /// Children past the depth or object-count limit, not listed.
        case truncatedListing(reason: String)
    }

    /// The link's name within its group.
    public let name: String
    /// The absolute object path, `/layers/dense/vars/0`.
    public let path: String
    /// Nesting depth: 1 for children of the root.
    public let depth: Int
    public let kind: Kind
    /// The object's address in the file, for hard-linked objects. Files are
    /// written front to back, so addresses follow the order objects were created.
    public let address: UInt64?

    public init(name: String, path: String, depth: Int, kind: Kind, address: UInt64? = nil) {
        self.name = name
        self.path = path
        self.depth = depth
        self.kind = kind
        self.address = address
    }

    /// Why a link is listed but not followed, or nil when it is an ordinary object.
    public var notFollowedReason: String? {
        switch kind {
        case .softLink(let target): return "soft link to \(target), not followed"
        case .externalLink(let file, let object): return "external link to \(file):\(object), not followed: it reaches outside this file"
        case .userDefinedLink: return "user-defined link, not followed"
        case .unreadable(let reason): return reason
        case .truncatedListing(let reason): return reason
        default: return nil
        }
    }
}

/// Splits `/a/b/c` into its parent `/a/b` and its name `c`.
public func splitObjectPath(_ path: String) -> (parent: String, name: String) {
    guard let slash = path.lastIndex(of: "/") else { return ("/", path) }
    let parent = String(path[..<slash])
    return (parent.isEmpty ? "/" : parent, String(path[path.index(after: slash)...]))
}

/// Joins a group path and a child name.
public func joinObjectPath(_ parent: String, _ name: String) -> String {
    let root = parent == "/" || parent.isEmpty
    // Built in one buffer of the right size (`a + "/" + b` makes an intermediate string).
    var path = ""
    path.reserveCapacity((root ? 0 : parent.utf8.count) + 1 + name.utf8.count)
    if !root { path += parent }
    path += "/"
    path += name
    return path
}

/// Orders names the way a person counts: `vars/2` before `vars/10`,
/// `step_9` before `step_10`. Runs of digits compare by value, the rest by
/// Unicode scalar value; ties fall back to plain string order.
///
/// Compares the UTF-8 bytes, allocating nothing (sorting a group of a few hundred
/// names calls this thousands of times per file): ASCII digits are single bytes that
/// never occur inside a multi-byte sequence, and UTF-8's byte order is the order of
/// the scalar values, so this is the same order as comparing scalar by scalar.
public func numericAwareLess(_ lhs: String, _ rhs: String) -> Bool {
    var left = lhs, right = rhs
    let decided: Bool? = left.withUTF8 { a in right.withUTF8 { b in numericAwareOrder(a, b) } }
    return decided ?? (lhs < rhs)
}

/// The order of two UTF-8 names by ``numericAwareLess(_:_:)``, or nil when they tie
/// (equal but for leading zeros), for the caller's fallback to string order.
private func numericAwareOrder(_ left: UnsafeBufferPointer<UInt8>, _ right: UnsafeBufferPointer<UInt8>) -> Bool? {
    @inline(__always) func isDigit(_ byte: UInt8) -> Bool { byte &- 0x30 < 10 }
    var i = 0, j = 0
    while i < left.count && j < right.count {
        let a = left[i], b = right[j]
        if isDigit(a) && isDigit(b) {
            var endA = i, endB = j
            while endA < left.count, isDigit(left[endA]) { endA += 1 }
            while endB < right.count, isDigit(right[endB]) { endB += 1 }
            // Compare by value: strip leading zeros, then length, then digits.
            var sa = i, sb = j
            while sa < endA - 1 && left[sa] == 0x30 { sa += 1 }
            while sb < endB - 1 && right[sb] == 0x30 { sb += 1 }
            let lenA = endA - sa, lenB = endB - sb
            if lenA != lenB { return lenA < lenB }
            for k in 0..<lenA where left[sa + k] != right[sb + k] {
                return left[sa + k] < right[sb + k]
            }
            i = endA
            j = endB
            continue
        }
        if a != b { return a < b }
        i += 1
        j += 1
    }
    // One name ran out first (the shorter sorts first), or both did together: a tie.
    if (left.count - i == 0) != (right.count - j == 0) { return left.count - i == 0 }
    return nil
}
