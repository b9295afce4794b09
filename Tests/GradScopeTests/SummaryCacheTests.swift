import Foundation
import GradScope
import TestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The cache of measured saves (``SummaryCache``): a re-scan reads only new or changed files and
/// gives the JSON a scan without the cache gives.
@Suite("The cache of measured saves")
struct SummaryCacheTests {
    /// A copy of the first `count` files of a sample run in `directory` (all when nil).
    static func copy(_ run: String, first count: Int? = nil, to directory: TemporaryDirectory) throws {
        let names = try FileManager.default.contentsOfDirectory(atPath: samplePath(run)).sorted()
        for name in names.prefix(count ?? names.count) where !FileManager.default.fileExists(atPath: directory.path(name)) {
            try FileManager.default.copyItem(atPath: samplePath(run) + "/" + name, toPath: directory.path(name))
        }
    }

    /// The run scanned with `cache`: its JSON and the saves measured and taken from the cache.
    static func scan(_ path: String, cache: SummaryCache?) throws -> (json: String, measured: Int, cached: Int) {
        let models = try ScanEngine.scanModels(path, cache: cache)
        let report = Analysis.report(models, thresholds: Thresholds(), select: nil).0
        return (try JSONRenderer().render(report), models.measuredSaves, models.cachedSaves)
    }

    static func entries(_ cache: SummaryCache) -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: cache.directory)) ?? []).filter { $0.hasSuffix(".gscache") }.sorted()
    }

    @Test("a re-scan reads only the new saves, then none; a changed file is read again, with the save after it")
    func incremental() throws {
        let run = try TemporaryDirectory(), store = try TemporaryDirectory()
        let cache = SummaryCache(directory: store.path("cache"), minimumTensorElements: 0)
        try Self.copy("healthy", first: 8, to: run)
        let first = try Self.scan(run.url.path, cache: cache)
        #expect((first.measured, first.cached) == (8, 0))
        #expect(Self.entries(cache).count == 8)
        let again = try Self.scan(run.url.path, cache: cache)
        #expect((again.measured, again.cached) == (0, 8))
        #expect(again.json == first.json)

        // Five new saves: only they are read.
        try Self.copy("healthy", to: run)
        let grown = try Self.scan(run.url.path, cache: cache)
        #expect((grown.measured, grown.cached) == (5, 8))
        #expect(grown.json == (try Self.scan(run.url.path, cache: nil)).json)

        // A file written again (a new modification time): it is read, and the save after it (its drift).
        let names = try FileManager.default.contentsOfDirectory(atPath: run.url.path).sorted()
        var times = [timespec(tv_sec: 1_700_000_000, tv_nsec: 0), timespec(tv_sec: 1_700_000_000, tv_nsec: 0)]
        #expect(utimensat(AT_FDCWD, run.path(names[3]), &times, 0) == 0)
        let changed = try Self.scan(run.url.path, cache: cache)
        #expect((changed.measured, changed.cached) == (2, 11))
        #expect(changed.json == grown.json)
    }

    @Test("saves of small tensors are measured at every scan, never cached: for them a hit costs more than reading")
    func smallTensorsNotKept() throws {
        let run = try TemporaryDirectory(), store = try TemporaryDirectory()
        try Self.copy("healthy", first: 4, to: run)
        let cache = SummaryCache(directory: store.path("cache"))
        #expect(cache.minimumTensorElements == SummaryCache.defaultMinimumTensorElements)
        let first = try Self.scan(run.url.path, cache: cache), again = try Self.scan(run.url.path, cache: cache)
        #expect((first.measured, again.measured, again.cached) == (4, 4, 0))
        #expect(Self.entries(cache).isEmpty && again.json == first.json)
        // The same saves are kept once the bar is below their tensors' mean size.
        let loaded = try RunLoader.load(run.url.path)
        let mean = loaded.checkpoints.map { c in c.tensors.reduce(0) { $0 + $1.count } / c.tensors.count }.min() ?? 0
        #expect(mean > 0 && mean < SummaryCache.defaultMinimumTensorElements)
        let lower = SummaryCache(directory: store.path("lower"), minimumTensorElements: mean)
        _ = try Self.scan(run.url.path, cache: lower)
        #expect(Self.entries(lower).count == 4)
    }

    @Test("corrupt and foreign entries are ignored, the saves measured and the entries written again")
    func untrustedEntries() throws {
        let run = try TemporaryDirectory(), store = try TemporaryDirectory()
        let cache = SummaryCache(directory: store.path("cache"), minimumTensorElements: 0)
        try Self.copy("dead-relu", to: run)
        let first = try Self.scan(run.url.path, cache: cache)
        let entries = Self.entries(cache)
        #expect(entries.count == first.measured && first.measured > 4)
        let paths = entries.map { cache.directory + "/" + $0 }
        // One flipped byte, one cut, one another save's entry, one not an entry at all.
        var flipped = try Data(contentsOf: URL(fileURLWithPath: paths[0]))
        flipped[flipped.count - 20] ^= 0x01
        try flipped.write(to: URL(fileURLWithPath: paths[0]))
        let whole = try Data(contentsOf: URL(fileURLWithPath: paths[1]))
        try whole.prefix(whole.count / 2).write(to: URL(fileURLWithPath: paths[1]))
        try FileManager.default.removeItem(atPath: paths[2])
        try FileManager.default.copyItem(atPath: paths[3], toPath: paths[2])
        try Data("PK\u{3}\u{4} not an entry".utf8).write(to: URL(fileURLWithPath: paths[3]))
        let rescanned = try Self.scan(run.url.path, cache: cache)
        #expect((rescanned.measured, rescanned.cached) == (4, first.measured - 4))
        #expect(rescanned.json == first.json)
        // Written again: the next scan reads nothing.
        #expect(try Self.scan(run.url.path, cache: cache).measured == 0)
    }

    @Test("the size cap evicts the entries used longest ago first")
    func sizeCap() throws {
        let run = try TemporaryDirectory(), store = try TemporaryDirectory()
        let cache = SummaryCache(directory: store.path("cache"), minimumTensorElements: 0)
        try Self.copy("healthy", to: run)
        _ = try Self.scan(run.url.path, cache: cache)
        let entries = Self.entries(cache)
        #expect(entries.count == 13)
        // Last used in the order of their names, one second apart.
        var sizes: [String: Int] = [:]
        for (position, name) in entries.enumerated() {
            let path = cache.directory + "/" + name
            var times = [timespec(tv_sec: 1_700_000_000 + position, tv_nsec: 0), timespec(tv_sec: 1_700_000_000 + position, tv_nsec: 0)]
            #expect(utimensat(AT_FDCWD, path, &times, 0) == 0)
            sizes[name] = Int((try FileManager.default.attributesOfItem(atPath: path)[.size] as? NSNumber)?.intValue ?? 0)
        }
        let newest = Array(entries.suffix(5))
        let capped = SummaryCache(directory: cache.directory, limit: newest.reduce(0) { $0 + (sizes[$1] ?? 0) }, minimumTensorElements: 0)
        capped.trim()
        #expect(Self.entries(capped) == newest)
    }

    @Test("a cache that cannot be written, or lies inside the run, is not used; the scan goes on and the run is untouched")
    func unusable() throws {
        let run = try TemporaryDirectory(), store = try TemporaryDirectory()
        try Self.copy("frozen-layer", to: run)
        func listing() throws -> [String] {
            try FileManager.default.contentsOfDirectory(atPath: run.url.path).sorted().map { name in
                let (size, time) = (try FileManager.default.attributesOfItem(atPath: run.path(name)))
                    .reduce(into: (0, 0.0)) { result, item in
                        if item.key == .size { result.0 = (item.value as? NSNumber)?.intValue ?? 0 }
                        if item.key == .modificationDate { result.1 = (item.value as? Date)?.timeIntervalSince1970 ?? 0 }
                    }
                return "\(name) \(size) \(time)"
            }
        }
        let before = try listing()
        let plain = try Self.scan(run.url.path, cache: nil)
        // Under a regular file: no directory can be made there (whoever runs the tests).
        FileManager.default.createFile(atPath: store.path("file"), contents: Data("x".utf8))
        let blocked = SummaryCache(directory: store.path("file/cache"), minimumTensorElements: 0)
        #expect(try Self.scan(run.url.path, cache: blocked).json == plain.json)
        #expect(blocked.note?.contains("cannot write") == true, "\(blocked.note ?? "no note")")
        let inside = SummaryCache(directory: run.path("cache"), minimumTensorElements: 0)
        #expect(try Self.scan(run.url.path, cache: inside).json == plain.json)
        #expect(inside.note?.contains("inside the run") == true, "\(inside.note ?? "no note")")
        #expect(try listing() == before)
        // A cache in use never writes beside the run's files either.
        let used = SummaryCache(directory: store.path("used"), minimumTensorElements: 0)
        _ = try Self.scan(run.url.path, cache: used)
        #expect(!Self.entries(used).isEmpty && used.note == nil)
        #expect(try listing() == before)
    }

    @Test("the default directory: $XDG_CACHE_HOME/gradscope, else ~/.cache/gradscope")
    func defaultDirectory() {
        #expect(SummaryCache.defaultDirectory(environment: ["XDG_CACHE_HOME": "/x", "HOME": "/h"]) == "/x/gradscope")
        #expect(SummaryCache.defaultDirectory(environment: ["XDG_CACHE_HOME": "relative", "HOME": "/h"]) == "/h/.cache/gradscope")
        #expect(SummaryCache.defaultDirectory(environment: ["HOME": "/h"]) == "/h/.cache/gradscope")
        #expect(SummaryCache.defaultDirectory(environment: [:]) == nil)
    }
}
