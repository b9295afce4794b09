import Foundation
import Testing

@testable import HDF5

@Suite("libhdf5 build facts")
struct LibraryTests {
    /// The thread-safety answer agrees with the build settings libhdf5 installs next to itself
    /// (Debian's `libhdf5-dev` ships them), so files are described on several threads only when
    /// libhdf5 holds its own lock.
    @Test func threadSafetyMatchesTheBuildSettings() throws {
        let candidates = [
            "/usr/lib/x86_64-linux-gnu/hdf5/serial/libhdf5.settings",
            "/usr/lib/aarch64-linux-gnu/hdf5/serial/libhdf5.settings",
        ]
        guard let path = candidates.first(where: { FileManager.default.fileExists(atPath: $0) }) else { return }
        let settings = try String(contentsOfFile: path, encoding: .utf8)
        let line = try #require(settings.split(separator: "\n").first { $0.contains("Threadsafety:") })
        let built = line.split(separator: ":").last.map { $0.trimmingCharacters(in: .whitespaces) } == "yes"
        #expect(Library.isThreadSafe == built)
    }
}
