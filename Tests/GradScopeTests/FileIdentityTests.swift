import Foundation
import GradScopeSources
import TestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

@Suite("File identity: modification dates and first bytes from the system calls themselves")
struct FileIdentityTests {
    /// What Foundation answers for the same path.
    func foundationDate(_ path: String) -> Date? {
        (try? FileManager.default.attributesOfItem(atPath: path))?[.modificationDate] as? Date
    }

    @Test("modification dates are Foundation's to the bit, for fresh files, odd nanoseconds, symbolic links and every sample")
    func modificationDatesAreFoundations() throws {
        let directory = try TemporaryDirectory()
        let fresh = directory.path("fresh.h5")
        try Data([1, 2, 3]).write(to: URL(fileURLWithPath: fresh))
        var paths = [fresh]
        // Times Foundation and a sum of seconds and nanoseconds could round apart, set to the nanosecond.
        let stamps: [(Int, Int)] = [(1_700_000_000, 999_999_999), (1_234_567_890, 123_456_789), (0, 1), (2_000_000_000, 500_000_001), (86_399, 7)]
        for (index, (seconds, nanoseconds)) in stamps.enumerated() {
            let path = directory.path("stamped-\(index)")
            try Data([UInt8(index)]).write(to: URL(fileURLWithPath: path))
            var times = [
                timespec(tv_sec: seconds, tv_nsec: nanoseconds), timespec(tv_sec: seconds, tv_nsec: nanoseconds),
            ]
            #expect(utimensat(AT_FDCWD, path, &times, 0) == 0)
            paths.append(path)
        }
        let link = directory.path("link.h5")
        try FileManager.default.createSymbolicLink(atPath: link, withDestinationPath: directory.path("stamped-0"))
        paths.append(link)
        let samples = packageRoot.appendingPathComponent("SampleCheckpoints").path
        for run in try FileManager.default.contentsOfDirectory(atPath: samples) {
            let folder = (samples as NSString).appendingPathComponent(run)
            for name in (try? FileManager.default.contentsOfDirectory(atPath: folder)) ?? [] {
                paths.append((folder as NSString).appendingPathComponent(name))
            }
        }
        #expect(paths.count > 20)
        for path in paths {
            let ours = try #require(FileIdentity.modificationDate(path), "\(path)")
            let theirs = try #require(foundationDate(path), "\(path)")
            #expect(ours.timeIntervalSinceReferenceDate.bitPattern == theirs.timeIntervalSinceReferenceDate.bitPattern, "\(path)")
        }
        // The link's own date, as Foundation gives it, not its target's.
        var times = [timespec(tv_sec: 100, tv_nsec: 0), timespec(tv_sec: 100, tv_nsec: 0)]
        #expect(utimensat(AT_FDCWD, link, &times, AT_SYMLINK_NOFOLLOW) == 0)
        #expect(FileIdentity.modificationDate(link) == Date(timeIntervalSince1970: 100))
        #expect(FileIdentity.modificationDate(link) == foundationDate(link))
        #expect(FileIdentity.modificationDate(directory.path("missing")) == nil)
    }

    @Test("a file's first bytes: eight of an HDF5 file, fewer of a short one, none of a directory, a missing path or a named pipe")
    func firstBytes() throws {
        let sample = samplePath("healthy")
        let file = try #require(try FileManager.default.contentsOfDirectory(atPath: sample).sorted().first { $0.hasSuffix(".h5") })
        #expect(FileIdentity.head((sample as NSString).appendingPathComponent(file)) == [0x89, 0x48, 0x44, 0x46, 0x0d, 0x0a, 0x1a, 0x0a])
        let directory = try TemporaryDirectory()
        let short = directory.path("short")
        try Data([7, 8, 9]).write(to: URL(fileURLWithPath: short))
        #expect(FileIdentity.head(short) == [7, 8, 9])
        #expect(FileIdentity.head(short, count: 2) == [7, 8])
        let empty = directory.path("empty")
        try Data().write(to: URL(fileURLWithPath: empty))
        #expect(FileIdentity.head(empty).isEmpty)
        #expect(FileIdentity.head(directory.url.path).isEmpty)
        #expect(FileIdentity.head(directory.path("missing")).isEmpty)
        // A named pipe with no writer: answered at once, not waited on.
        let pipe = directory.path("pipe")
        #expect(mkfifo(pipe, 0o600) == 0)
        #expect(FileIdentity.head(pipe).isEmpty)
    }
}
