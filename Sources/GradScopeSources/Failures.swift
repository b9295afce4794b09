import Foundation
import GradScopeModel
import HDF5

/// Failures in the words a person training a model needs: what a file that is not a
/// checkpoint is (the HDF5 layer names only the container, not which framework writes it).
public enum Failures {
    /// What the first bytes of a file that is not HDF5 say it is, for people who train models.
    public static func foreignContent(head: [UInt8]) -> String? {
        func starts(_ bytes: [UInt8]) -> Bool { head.count >= bytes.count && Array(head.prefix(bytes.count)) == bytes }
        if starts([0x50, 0x4b, 0x03, 0x04]) || starts([0x50, 0x4b, 0x05, 0x06]) {
            return "it is a zip archive: a .keras file, a PyTorch .pt/.pth file or a NumPy .npz"
        }
        if starts([0x80]) && head.count > 1 && head[1] <= 5 {
            return
                "it is a Python pickle: a PyTorch checkpoint saved with torch.save in the format before PyTorch 1.6 (a raw pickle, not a zip archive): re-save it with torch.save in a current PyTorch"
        }
        return nil
    }

    /// The error's message, with a file that is not HDF5 named for what it is where its bytes tell.
    public static func message(_ error: HDF5Error) -> String {
        guard error.reason == .notHDF5, let content = foreignContent(head: FileIdentity.head(error.file)) else { return error.message }
        return "not an HDF5 file (\(content))"
    }

    /// Why a file or object could not be used, for the skipped list: the message, after the
    /// object when there is one. Content libhdf5 rejected is named malformed, as the isolation
    /// names a file that crashed it.
    public static func reason(for error: Error) -> String {
        if let error = error as? HDF5Error {
            var message = self.message(error)
            if error.reason == .corrupt && !message.hasPrefix("malformed") { message = "malformed: \(message)" }
            if let object = error.object { return "\(object): \(message)" }
            return message
        }
        if let error = error as? CheckpointError { return error.reason }
        return plain(error)
    }

    /// A Foundation error (reading or writing a file, parsing JSON) in plain words, without
    /// Foundation's domain and code: "no such file", "permission denied", "is a directory",
    /// "not valid JSON (…)". Any other error is described as it describes itself.
    public static func plain(_ error: Error) -> String {
        if error is HDF5Error || error is CheckpointError { return reason(for: error) }
        let nsError = error as NSError
        if nsError.domain == NSPOSIXErrorDomain { return posixWords(Int32(nsError.code)) }
        if let underlying = nsError.userInfo[NSUnderlyingErrorKey] as? NSError, underlying.domain == NSPOSIXErrorDomain {
            return posixWords(Int32(underlying.code))
        }
        guard nsError.domain == NSCocoaErrorDomain else { return String(describing: error) }
        switch nsError.code {
        case NSFileNoSuchFileError, NSFileReadNoSuchFileError: return "no such file"
        case NSFileReadNoPermissionError, NSFileWriteNoPermissionError: return "permission denied"
        case NSFileWriteOutOfSpaceError: return "no space left on the device"
        case NSFileWriteVolumeReadOnlyError: return "the file system is read-only"
        case NSFileReadTooLargeError: return "too large to read"
        case NSPropertyListReadCorruptError:
            // What JSONSerialization throws for text that is not JSON; its own words say where.
            if let detail = nsError.userInfo[NSDebugDescriptionErrorKey] as? String, !detail.isEmpty {
                return "not valid JSON (\(lowercasingFirst(detail).trimmingCharacters(in: CharacterSet(charactersIn: "."))))"
            }
            return "not valid JSON"
        case NSFileReadUnknownError, NSFileReadCorruptFileError: return "could not be read"
        case NSFileWriteUnknownError: return "could not be written"
        default: return "failed (Foundation error \(nsError.code))"
        }
    }

    /// An errno value in plain words: strerror's, lower-cased ("no such file or directory").
    public static func posixWords(_ code: Int32) -> String {
        lowercasingFirst(String(cString: strerror(code)))
    }

    /// `text` with its first letter lower-cased, for a reason that follows a colon.
    static func lowercasingFirst(_ text: String) -> String {
        guard let first = text.first else { return text }
        return first.lowercased() + text.dropFirst()
    }

    /// Why `path` cannot be read as a file, when a look at it says why before opening it: it is
    /// missing, a directory, a named pipe, socket or device; nil when it is a regular file.
    public static func unreadablePath(_ path: String) -> String? {
        var info = stat()
        if stat(path, &info) != 0 { return posixWords(errno) }
        switch info.st_mode & S_IFMT {
        case S_IFREG: return nil
        case S_IFDIR: return "is a directory, not a file"
        default: return "\(FileProbe.describeKind(info.st_mode)), not a regular file: only regular files are read"
        }
    }

    /// `FILE: reason` for one line on stderr.
    public static func describe(_ error: Error) -> String {
        if let error = error as? HDF5Error {
            let message = self.message(error)
            if let object = error.object { return "\(error.file): \(object): \(message)" }
            return "\(error.file): \(message)"
        }
        if error is CheckpointError { return String(describing: error) }
        return plain(error)
    }
}
