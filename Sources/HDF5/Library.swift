import CHDF5
import Foundation
import Synchronization

/// Process-wide libhdf5 set-up, done once before the first call.
///
/// libhdf5 prints its error stack to stderr unless told not to, and loads
/// filter plugins from `HDF5_PLUGIN_PATH`. Neither is wanted by default:
/// errors are turned into `HDF5Error`s, and plugins (shared objects named by
/// the environment) are only loaded when the caller asks.
package enum Library {
    private static let setUp: Void = {
        _ = H5open()
        gs_silence_errors()
        gs_disable_plugins()
    }()

    /// Whether plugins are enabled now, held while they are switched.
    private static let pluginsEnabled = Mutex(false)

    /// Makes sure libhdf5 is initialised and silent on the calling thread.
    package static func ensure() {
        _ = setUp
        gs_silence_errors()
    }

    /// Enables or disables loading filter plugins from the environment.
    package static func setPluginsEnabled(_ enabled: Bool) {
        ensure()
        pluginsEnabled.withLock { pluginsEnabled in
            guard enabled != pluginsEnabled else { return }
            if enabled { gs_enable_plugins() } else { gs_disable_plugins() }
            pluginsEnabled = enabled
        }
    }

    /// Whether this libhdf5 was built thread-safe (its own global lock around every call), so
    /// that two threads may open and describe files at once. Debian's is; a build without it
    /// must be called from one thread at a time.
    package static let isThreadSafe: Bool = {
        ensure()
        var safe: hbool_t = false
        guard H5is_library_threadsafe(&safe) >= 0 else { return false }
        return safe
    }()

    /// Whether `H5Dget_chunk_info_by_coord` counts the user block in the addresses it gives:
    /// from libhdf5 1.14.4 on (HDF5 pull request 4236); before, they are relative to the superblock.
    package static let chunkAddressesAreAbsolute: Bool = {
        ensure()
        var major: UInt32 = 0, minor: UInt32 = 0, release: UInt32 = 0
        guard H5get_libversion(&major, &minor, &release) >= 0 else { return false }
        return (major, minor, release) >= (1, 14, 4)
    }()

    /// The descriptions on libhdf5's current error stack, innermost first.
    package static func errorMessages() -> [String] {
        var buffer = [CChar](repeating: 0, count: 4096)
        let count = buffer.withUnsafeMutableBufferPointer { pointer -> Int32 in
            gs_current_error_messages(pointer.baseAddress, pointer.count)
        }
        gs_clear_errors()
        guard count > 0 else { return [] }
        let text = buffer.withUnsafeBufferPointer { pointer -> String in
            guard let base = pointer.baseAddress else { return "" }
            return String(cString: base)
        }
        return text.split(separator: "\u{1f}").map(String.init)
    }

    /// The most useful single line of libhdf5's error stack: the innermost
    /// message that is not a generic "unable to ..." wrapper, else the innermost.
    package static func errorSummary() -> String? {
        let messages = errorMessages()
        guard !messages.isEmpty else { return nil }
        let specific = messages.first { message in
            !message.hasPrefix("unable to") && !message.hasPrefix("can't") && !message.hasPrefix("not a")
        }
        return specific ?? messages.first
    }
}

/// An open libhdf5 identifier, closed exactly once when the last reference goes.
/// Sendable as it is: the identifier never changes, and the thread-safe libhdf5
/// serialises every call made with it.
package final class Handle: Sendable {
    package enum Kind: Sendable { case file, group, dataset, attribute, datatype, dataspace, plist, object }

    package let id: hid_t
    package let kind: Kind

    package init(_ id: hid_t, _ kind: Kind) {
        self.id = id
        self.kind = kind
    }

    deinit {
        switch kind {
        case .file: H5Fclose(id)
        case .group: H5Gclose(id)
        case .dataset: H5Dclose(id)
        case .attribute: H5Aclose(id)
        case .datatype: H5Tclose(id)
        case .dataspace: H5Sclose(id)
        case .plist: H5Pclose(id)
        case .object: H5Oclose(id)
        }
    }
}
