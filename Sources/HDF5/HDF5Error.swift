/// An error from reading (or writing) an HDF5 file.
///
/// Every error names the file, the object inside it when there is one, and
/// what went wrong, in words taken from libhdf5's own error stack where the
/// library reported the failure.
public struct HDF5Error: Error, CustomStringConvertible, Sendable, Equatable {
    /// What kind of failure this is; callers branch on it, people read `message`.
    public enum Reason: String, Sendable, Equatable, Codable {
        case notFound = "not-found"
        case isDirectory = "is-directory"
        case permissionDenied = "permission-denied"
        case empty = "empty"
        case notHDF5 = "not-hdf5"
        case truncated = "truncated"
        case incomplete = "incomplete"
        case locked = "locked"
        case corrupt = "corrupt"
        case unsupported = "unsupported"
        case refused = "refused"
        case tooLarge = "too-large"
        case io = "io"
        case library = "library"
    }

    /// The file's path as the caller gave it.
    public let file: String
    /// The HDF5 object path (`/layers/dense/vars/0`), when the failure concerns one.
    public let object: String?
    public let reason: Reason
    /// A human-readable account of the failure, ending with libhdf5's message when it gave one.
    public let message: String

    public init(file: String, object: String? = nil, reason: Reason, message: String) {
        self.file = file
        self.object = object
        self.reason = reason
        self.message = message
    }

    /// `FILE: OBJECT: message`, or `FILE: message` for file-level failures.
    public var description: String {
        if let object { return "\(file): \(object): \(message)" }
        return "\(file): \(message)"
    }
}
