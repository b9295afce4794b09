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
        if starts([0x80]) && head.count > 1 && head[1] <= 5 { return "it is a Python pickle: a PyTorch checkpoint saved with torch.save" }
        return nil
    }

    /// The error's message, with a file that is not HDF5 named for what it is where its bytes tell.
    public static func message(_ error: HDF5Error) -> String {
        guard error.reason == .notHDF5, let handle = FileHandle(forReadingAtPath: error.file) else { return error.message }
        let head = [UInt8]((try? handle.read(upToCount: 8)) ?? Data())
        try? handle.close()
        guard let content = foreignContent(head: head) else { return error.message }
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
        return String(describing: error)
    }

    /// `FILE: reason` for one line on stderr.
    public static func describe(_ error: Error) -> String {
        if let error = error as? HDF5Error {
            let message = self.message(error)
            if let object = error.object { return "\(error.file): \(object): \(message)" }
            return "\(error.file): \(message)"
        }
        return String(describing: error)
    }
}
