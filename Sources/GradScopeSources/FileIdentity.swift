import ElementTypes
import Foundation
import GradScopeModel
import HDF5

#if canImport(Glibc)
import Glibc
#endif

/// Size and modification time of a file (0, 0 when it cannot be read), from
/// `stat`, the same way for a path and for an open descriptor.
package enum FileIdentity {
    package static func of(_ path: String) -> (Int, Double) {
        var info = stat()
        guard stat(path, &info) == 0 else { return (0, 0) }
        return of(info)
    }

    package static func of(descriptor fd: Int32) -> (Int, Double) {
        var info = stat()
        guard fstat(fd, &info) == 0 else { return (0, 0) }
        return of(info)
    }

    package static func of(_ info: stat) -> (Int, Double) {
        (Int(info.st_size), Double(info.st_mtim.tv_sec) + Double(info.st_mtim.tv_nsec) / 1e9)
    }
}
