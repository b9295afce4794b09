import Foundation
import GradScopeStatistics
import TestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The commands that measure runs run themselves again under a larger per-thread cache of freed
/// blocks (`glibc.malloc.tcache_count`, which glibc reads only when a program starts).
@Suite("Running under the allocator's larger cache", .serialized)
struct AllocatorCacheTests {
    @Test("the tunables: added to those the environment sets, never over a count the user set, never cut short")
    func tunables() {
        let setting = "glibc.malloc.tcache_count=2000"
        #expect(ProcessStart.allocatorTunables(adding: nil) == setting)
        #expect(ProcessStart.allocatorTunables(adding: "") == setting)
        #expect(ProcessStart.allocatorTunables(adding: "glibc.malloc.arena_max=2") == "glibc.malloc.arena_max=2:" + setting)
        #expect(ProcessStart.allocatorTunables(adding: "glibc.malloc.tcache_count=7") == nil)
        #expect(ProcessStart.allocatorTunables(adding: "glibc.malloc.check=3:glibc.malloc.tcache_count=0") == nil)
        #expect(ProcessStart.allocatorTunables(adding: String(repeating: "x", count: 5000)) == nil)
    }

    @Test("a few heaps for the scans whose files workers describe, one for a process that describes files itself")
    func heaps() {
        let commands: Set<String> = ["scan", "report", "watch"]
        #expect(ProcessStart.heaps(arguments: ["gradscope", "scan", "run"], cores: 2, commands: commands) == 4)
        #expect(ProcessStart.heaps(arguments: ["gradscope", "watch", "run"], cores: 6, commands: commands) == 6)
        #expect(ProcessStart.heaps(arguments: ["gradscope", "report", "run", "--output", "r.html"], cores: 64, commands: commands) == 8)
        #expect(ProcessStart.heaps(arguments: ["gradscope", "scan", "run", "--no-isolation"], cores: 2, commands: commands) == 1)
        #expect(ProcessStart.heaps(arguments: ["gradscope", "inspect", "a.h5"], cores: 2, commands: commands) == 1)
        #expect(ProcessStart.heaps(arguments: ["gradscope", "worker"], cores: 16, commands: commands) == 1)
        #expect(ProcessStart.heaps(arguments: ["gradscope"], cores: 2, commands: commands) == 1)
    }

    /// The environment a process started its current program with, from /proc: its entries, one a line.
    /// (glibc ends each tunable's value in place when it reads GLIBC_TUNABLES, so one of several
    /// tunables shows as a line of its own.)
    static func environment(of pid: Int32) throws -> [String] {
        let handle = try #require(FileHandle(forReadingAtPath: "/proc/\(pid)/environ"))
        defer { try? handle.close() }
        let data = try handle.readToEnd() ?? Data()
        return data.split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
    }

    @Test("watch runs itself again under the cache, in the same process, once; a count the user set is left as it is")
    func runsAgain() throws {
        let binary = try #require(GradScopeBinary.path, "\(GradScopeBinary.notFoundMessage)")
        let dir = try TemporaryDirectory()
        let setting = "glibc.malloc.tcache_count=2000"
        for (given, again) in [(nil, true), ("glibc.malloc.arena_max=1", true), ("glibc.malloc.tcache_count=16", false)] as [(String?, Bool)] {
            let watch = try WatchProcess(
                binary, ["watch", dir.path("not-yet"), "--interval", "5"], environment: given.map { ["GLIBC_TUNABLES": $0] } ?? [:])
            defer { watch.kill() }
            try watch.wait(for: "does not exist yet")
            // Its program's environment: the one it was run again with, in the process the test started.
            let lines = try Self.environment(of: watch.process.processIdentifier)
            let text = lines.joined(separator: "\n")
            #expect(lines.contains("GRADSCOPE_ALLOCATOR_CACHE=1") == again, "\(given ?? "none"): \(text)")
            #expect(text.contains(setting) == again && lines.filter { $0.hasPrefix("GLIBC_TUNABLES=") }.count == 1)
            if let given { #expect(text.contains("GLIBC_TUNABLES=" + given), "the user's tunables are kept") }
            kill(watch.process.processIdentifier, SIGINT)
            #expect(try watch.waitForExit() == 0)
            #expect(watch.stdout.contains("stopped by Ctrl-C"), "\(watch.stdout)")
        }
    }

    @Test("a scan run again under the cache and one that is not say the same, isolated and not")
    func sameScan() throws {
        let binary = try #require(GradScopeBinary.path, "\(GradScopeBinary.notFoundMessage)")
        for name in ["healthy", "dead-relu"] {
            for extra in [[], ["--no-isolation"]] {
                let arguments = ["scan", samplePath(name), "--format", "json", "--no-cache"] + extra
                let again = try GradScopeBinary.run(binary, arguments)
                let asIs = try GradScopeBinary.run(binary, arguments, environment: ["GRADSCOPE_ALLOCATOR_CACHE": "1"])
                #expect(again.status == asIs.status && !again.crashed)
                #expect(again.stdout == asIs.stdout && again.stdout.contains("\"findings\""), "\(name) \(extra)")
            }
        }
    }

    @Test("started by naming the dynamic loader, scan (isolated and not) and inspect run as they are, their workers too")
    func throughTheLoader() throws {
        let binary = try #require(GradScopeBinary.path, "\(GradScopeBinary.notFoundMessage)")
        let loaders = ["/lib64/ld-linux-x86-64.so.2", "/lib/ld-linux-aarch64.so.1"].filter { FileManager.default.isExecutableFile(atPath: $0) }
        guard let loader = loaders.first else { return }
        let file = try #require(try FileManager.default.contentsOfDirectory(atPath: samplePath("healthy")).sorted().first { $0.hasSuffix(".h5") })
        for arguments in [
            ["scan", samplePath("healthy"), "--format", "json", "--no-cache"],
            ["scan", samplePath("healthy"), "--format", "json", "--no-cache", "--no-isolation"],
            ["inspect", samplePath("healthy") + "/" + file, "--format", "json"],
        ] {
            let direct = try GradScopeBinary.run(binary, arguments)
            let loaded = try GradScopeBinary.run(loader, [binary] + arguments)
            #expect(direct.status == 0 && loaded.status == direct.status && loaded.stderr.isEmpty, "\(arguments): \(loaded.stderr)")
            #expect(loaded.stdout == direct.stdout && !loaded.stdout.isEmpty, "\(arguments)")
        }
    }
}
