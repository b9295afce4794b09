import Dispatch
import Foundation
import GradScopeDiagnosis
import GradScopeModel
import GradScopeSources
import HDF5
import HDF5Writer
import TestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// `gradscope watch`: which files of a run being written wait, which findings are new, and the
/// command itself as a real process following a run that grows.
@Suite("gradscope watch", .serialized)
struct WatchTests {
    // MARK: - new findings

    func finding(_ kind: FindingKind, _ tensor: String?, first: Int?, severity: Severity = .warning, message: String = "m") -> Finding {
        Finding(
            kind: kind, severity: severity, tensor: tensor, layer: "l1", firstStep: first, lastStep: first, message: message, evidence: [:],
            explanation: "")
    }

    @Test("a finding is new once: not again when its message's numbers change or its first step moves; again when more severe")
    func findingsOnce() {
        var tracker = FindingTracker()
        let first = tracker.take([finding(.frozen, "l1.weight", first: 100, message: "frozen since 100, 3 saves")])
        #expect(first.count == 1 && first[0].escalated == false)
        // The run grew: other numbers, an earlier onset, a new finding beside it.
        let second = tracker.take([
            finding(.nanInf, "l2.bias", first: 400, severity: .error),
            finding(.frozen, "l1.weight", first: 0, message: "frozen since 0, 7 saves"),
        ])
        #expect(second.map(\.finding.kind) == [.nanInf])
        // Unchanged: nothing new.
        #expect(tracker.take([finding(.frozen, "l1.weight", first: 0), finding(.nanInf, "l2.bias", first: 400, severity: .error)]).isEmpty)
        // The same finding, now an error: shown again, as escalated.
        let worse = tracker.take([finding(.frozen, "l1.weight", first: 0, severity: .error)])
        #expect(worse.count == 1 && worse[0].escalated)
        // A second, separate episode of the same kind on the same tensor is a finding of its own.
        let episodes = tracker.take([
            finding(.frozen, "l1.weight", first: 0, severity: .error), finding(.frozen, "l1.weight", first: 900),
        ])
        #expect(episodes.map(\.finding.firstStep) == [900])
        #expect(tracker.count == 3 && tracker.count(at: .error) == 2)
    }

    @Test("findings are told apart by kind, tensor and layer, run-level ones too")
    func identities() {
        let keys = FindingTracker.identities([
            finding(.frozen, "a", first: 0), finding(.collapsing, "a", first: 0), finding(.frozen, "b", first: 0),
            finding(.lossPlateau, nil, first: 0), finding(.lossPlateau, nil, first: 50),
        ])
        #expect(Set(keys).count == 5)
    }

    // MARK: - files still being written

    @Test("write locks are read from /proc/locks; a waiter's line holds none")
    func locks() {
        let text = """
            1: FLOCK  ADVISORY  WRITE 1777 fe:00:16343894 0 EOF
            2: POSIX  ADVISORY  READ 1800 fe:00:99 0 EOF
            3: OFDLCK ADVISORY  WRITE -1 08:1a:12 0 EOF
            4: -> FLOCK  ADVISORY  WRITE 1900 fe:00:555 0 EOF
            garbage
            """
        let keys = HDF5WriteState.parseLocks(text)
        #expect(
            keys == [
                HDF5WriteState.LockKey(major: 0xfe, minor: 0, inode: 16_343_894), HDF5WriteState.LockKey(major: 8, minor: 0x1a, inode: 12),
            ])
    }

    @Test("an HDF5 file cut short says so in its superblock (end of file beyond its size); the whole file does not")
    func superblockEnd() throws {
        let dir = try TemporaryDirectory()
        let sample = samplePath("exploding-nan") + "/step_000006.h5"
        let bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: sample)))
        let read: ([UInt8]) -> (Int, Int) -> [UInt8]? = { file in
            { offset, count in offset + count <= file.count ? Array(file[offset..<(offset + count)]) : nil }
        }
        #expect(HDF5WriteState.superblockSaysOpen(size: bytes.count, read: read(bytes)) == nil)
        let half = Array(bytes.prefix(bytes.count / 2))
        let reason = try #require(HDF5WriteState.superblockSaysOpen(size: half.count, read: read(half)))
        #expect(reason.contains("not closed yet"))
        // Not HDF5 at all: nothing to say (the reader will).
        #expect(HDF5WriteState.superblockSaysOpen(size: 64, read: read([UInt8](repeating: 7, count: 64))) == nil)
        // On disk: a recent half copy is still being written; an old one is left to the reader.
        let path = dir.path("half.h5")
        try Data(half).write(to: URL(fileURLWithPath: path))
        let now = Date().timeIntervalSince1970
        #expect(HDF5WriteState.stillWriting(path, writeLocked: [], now: now) != nil)
        #expect(HDF5WriteState.stillWriting(path, writeLocked: [], now: now + HDF5WriteState.staleAfter + 1) == nil)
        #expect(HDF5WriteState.stillWriting(sample, writeLocked: [], now: now) == nil)
    }

    @Test("an HDF5 file a writer holds open waits (its lock or its superblock), and is complete once closed")
    func heldOpen() throws {
        let dir = try TemporaryDirectory()
        try Self.syntheticRun(steps: [0, 100]).write(to: dir.url.path)
        Self.age(dir.url.path)
        let open = dir.path("step_000200.h5")
        var writer: HDF5Writer? = try HDF5Writer(creating: open)
        try writer?.write("/weights/l0.weight", [Double](repeating: 1, count: 4096), shape: [64, 64])
        let watcher = RunWatcher(path: dir.url.path)
        let now = Date().timeIntervalSince1970 + 5  // past the settling time of a new file
        let look = watcher.look(now: now)
        #expect(Set(look.complete.keys) == ["step_000000.h5", "step_000100.h5"])
        let pending = try #require(look.pending.first)
        #expect(pending.name == "step_000200.h5")
        #expect(pending.reason.contains("write lock") || pending.reason.contains("superblock"), "\(pending.reason)")
        #expect(look.changed)
        _ = watcher.scanned(look, skipped: [], now: now)
        withExtendedLifetime(writer) {}
        writer = nil  // closes the file, which changes it: one more look, then it is complete
        let closing = watcher.look(now: Date().timeIntervalSince1970 + 5)
        #expect(closing.pending.map(\.name) == ["step_000200.h5"] && closing.pending[0].reason == "changed since the last look")
        let later = watcher.look(now: Date().timeIntervalSince1970 + 5)
        #expect(later.pending.isEmpty, "\(later.pending)")
        #expect(later.complete.keys.contains("step_000200.h5") && later.changed)
    }

    @Test("hidden and temporary names are saves in progress, never entries; a rename into place is a change")
    func temporaryNames() throws {
        let dir = try TemporaryDirectory()
        try Self.syntheticRun(steps: [0, 100, 200]).write(to: dir.url.path)
        try FileManager.default.moveItem(atPath: dir.path("step_000200.h5"), toPath: dir.path(".step_000200.h5.tmp"))
        try Data("x".utf8).write(to: URL(fileURLWithPath: dir.path("step_000300.h5.part")))
        Self.age(dir.url.path)
        let watcher = RunWatcher(path: dir.url.path)
        let first = watcher.look(now: Date().timeIntervalSince1970)
        #expect(Set(first.complete.keys) == ["step_000000.h5", "step_000100.h5"] && first.pending.isEmpty)
        _ = watcher.scanned(first, skipped: [], now: Date().timeIntervalSince1970)
        #expect(!watcher.look(now: Date().timeIntervalSince1970).changed)
        try FileManager.default.moveItem(atPath: dir.path(".step_000200.h5.tmp"), toPath: dir.path("step_000200.h5"))
        let renamed = watcher.look(now: Date().timeIntervalSince1970)
        #expect(renamed.changed && renamed.complete.keys.contains("step_000200.h5"))
        // The links folder holds exactly the complete entries, and the scan reads them.
        let target = try watcher.scanPath(for: renamed)
        #expect(Set(try FileManager.default.contentsOfDirectory(atPath: target)) == ["step_000000.h5", "step_000100.h5", "step_000200.h5"])
        let (report, _) = try Analysis.scan(target)
        #expect(report.steps == [0, 100, 200])
        watcher.removeLinks()
        #expect(!FileManager.default.fileExists(atPath: target))
    }

    @Test("a file that cannot be read while it changed a moment ago is retried, not skipped; an old one is skipped")
    func recentFailureRetried() throws {
        let dir = try TemporaryDirectory()
        try Self.syntheticRun(steps: [0, 100]).write(to: dir.url.path)
        try Data([UInt8](repeating: 0, count: 4096)).write(to: URL(fileURLWithPath: dir.path("step_000200.safetensors")))
        Self.age(dir.url.path, seconds: 5)
        let watcher = RunWatcher(path: dir.url.path)
        let now = Date().timeIntervalSince1970
        let look = watcher.look(now: now)
        #expect(look.complete.count == 3)
        let (report, _) = try Analysis.scan(try watcher.scanPath(for: look))
        let bad = try #require(report.skipped.first { $0.item.hasSuffix("step_000200.safetensors") })
        #expect(bad.kind == .unreadable)
        #expect(watcher.scanned(look, skipped: report.skipped, now: now).isEmpty, "changed 5 s ago: retried later")
        let retry = watcher.look(now: now + 1)
        #expect(retry.pending.map(\.name) == ["step_000200.safetensors"] && !retry.changed)
        // Old enough: read again, and reported.
        let old = watcher.look(now: now + RunWatcher.recentFailure)
        #expect(old.changed && old.pending.isEmpty)
        let kept = watcher.scanned(old, skipped: report.skipped, now: now + RunWatcher.recentFailure)
        #expect(kept.count == 1 && kept[0].item == dir.url.path + "/step_000200.safetensors")
    }

    // MARK: - the command

    @Test("watch --once: the first line, each finding once with its step, the summary; --fail-on sets the exit code")
    func once() throws {
        let binary = try #require(GradScopeBinary.path, "\(GradScopeBinary.notFoundMessage)")
        let dir = try TemporaryDirectory()
        try Self.syntheticRun(steps: Array(stride(from: 0, through: 600, by: 100)), frozen: true).write(to: dir.url.path)
        Self.age(dir.url.path)
        let plain = try GradScopeBinary.run(binary, ["watch", dir.url.path, "--once", "--no-isolation"])
        #expect(plain.status == 0, "\(plain.stderr)")
        let lines = plain.stdout.split(separator: "\n").map(String.init)
        #expect(lines.first == "watching \(dir.url.path) every 10 s, until Ctrl-C")
        let frozen = lines.filter { $0.contains(" frozen l1.") }
        #expect(frozen.count == 2 && frozen.allSatisfy { $0.hasPrefix("step ") && $0.contains(" warning frozen ") }, "\(lines)")
        #expect(lines.last?.hasPrefix("looked once after ") == true && lines.last?.contains("7 saves up to step 600") == true)
        let failing = try GradScopeBinary.run(binary, ["watch", dir.url.path, "--once", "--fail-on", "warning", "-q"])
        #expect(failing.status == 1)
        #expect(failing.stdout.contains("stopped at a finding at warning or above (--fail-on warning)"))
        #expect(failing.stderr.isEmpty, "quiet: no status lines")
        let notReached = try GradScopeBinary.run(binary, ["watch", dir.url.path, "--once", "--fail-on", "error"])
        #expect(notReached.status == 0)
        let bad = try GradScopeBinary.run(binary, ["watch", dir.url.path, "--interval", "0"])
        #expect(bad.status == 2 && bad.stderr.contains("--interval"))
    }

    @Test("a file its writer holds open is waited for, not listed as skipped")
    func openFileNotSkipped() throws {
        let binary = try #require(GradScopeBinary.path, "\(GradScopeBinary.notFoundMessage)")
        let dir = try TemporaryDirectory()
        try Self.syntheticRun(steps: [0, 100, 200]).write(to: dir.url.path)
        Self.age(dir.url.path)
        let writer = try HDF5Writer(creating: dir.path("step_000300.h5"))
        try writer.write("/weights/l0.weight", [Double](repeating: 1, count: 512), shape: [32, 16])
        Self.age(dir.url.path)
        let output = try GradScopeBinary.run(binary, ["watch", dir.url.path, "--once"])
        withExtendedLifetime(writer) {}
        #expect(output.status == 0)
        #expect(!output.stdout.contains("skipped"), "\(output.stdout)")
        #expect(output.stderr.contains("waiting for step_000300.h5"), "\(output.stderr)")
        #expect(output.stdout.contains("3 saves up to step 200") && output.stdout.contains("1 file still being written"))
    }

    @Test("a growing run: new files and renames picked up, a file written in two halves waited for, findings once; SIGTERM ends it cleanly")
    func growingRun() throws {
        let binary = try #require(GradScopeBinary.path, "\(GradScopeBinary.notFoundMessage)")
        let staging = try TemporaryDirectory(), dir = try TemporaryDirectory()
        try Self.syntheticRun(steps: Array(stride(from: 0, through: 600, by: 100)), frozen: true).write(to: staging.url.path)
        func name(_ step: Int) -> String { String(format: "step_%06d.h5", step) }
        for step in [0, 100] { try FileManager.default.moveItem(atPath: staging.path(name(step)), toPath: dir.path(name(step))) }
        Self.age(dir.url.path)
        let watch = try WatchProcess(binary, ["watch", dir.url.path, "--interval", "0.3", "--no-isolation"])
        defer { watch.kill() }
        try watch.wait(for: "scanned 2 save(s)")
        // Written in place in two halves, the second a few looks later.
        let whole = try Data(contentsOf: URL(fileURLWithPath: staging.path(name(200))))
        try whole.prefix(whole.count / 2).write(to: URL(fileURLWithPath: dir.path(name(200))))
        try watch.wait(for: "not closed yet")
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: dir.path(name(200))))
        try handle.seekToEnd()
        try handle.write(contentsOf: whole.suffix(from: whole.count / 2))
        try handle.close()
        try watch.wait(for: "scanned 3 save(s)")
        // The rest arrive by rename, as an atomic save does.
        for step in [300, 400, 500, 600] {
            try FileManager.default.moveItem(atPath: staging.path(name(step)), toPath: dir.path(".\(name(step)).tmp"))
            try FileManager.default.moveItem(atPath: dir.path(".\(name(step)).tmp"), toPath: dir.path(name(step)))
        }
        try watch.wait(for: "scanned 7 save(s)")
        kill(watch.process.processIdentifier, SIGTERM)
        let status = try watch.waitForExit()
        #expect(status == 0 && watch.process.terminationReason == .exit)
        let lines = watch.stdout.split(separator: "\n").map(String.init)
        #expect(lines.first?.hasPrefix("watching ") == true)
        #expect(lines.last?.hasPrefix("stopped by SIGTERM after ") == true && lines.last?.contains("7 saves up to step 600") == true, "\(lines)")
        let findingLines = lines.filter { $0.hasPrefix("step ") }
        // Each (kind, tensor) printed once although the run was scanned at least 3 times.
        let identities = findingLines.map { line in line.split(separator: ":")[0].split(separator: " ").dropFirst(3).joined(separator: " ") }
        #expect(Set(identities).count == identities.count, "\(findingLines)")
        #expect(findingLines.contains { $0.contains(" frozen l1.weight") }, "\(lines)")
        #expect(!watch.stdout.contains("skipped"), "the half-written file is never reported as skipped")
    }

    @Test("Ctrl-C (SIGINT) ends watch with exit code 0 and one line of summary")
    func interrupt() throws {
        let binary = try #require(GradScopeBinary.path, "\(GradScopeBinary.notFoundMessage)")
        let dir = try TemporaryDirectory()
        let watch = try WatchProcess(binary, ["watch", dir.path("not-yet"), "--interval", "5"])
        defer { watch.kill() }
        try watch.wait(for: "does not exist yet")
        kill(watch.process.processIdentifier, SIGINT)
        let started = Date()
        #expect(try watch.waitForExit() == 0)
        #expect(Date().timeIntervalSince(started) < 3, "woken from its sleep, not at the next look")
        #expect(watch.stdout.hasSuffix("no save read, no finding\n") && watch.stdout.contains("stopped by Ctrl-C"), "\(watch.stdout)")
    }

    // MARK: - helpers

    static func syntheticRun(steps: [Int], frozen: Bool = false) -> SyntheticRun {
        var run = SyntheticRun()
        run.widths = [8, 16, 4]
        run.steps = steps
        if frozen { run.frozenLayers = [1] }
        return run
    }

    /// Sets every file's modification time `seconds` back (past the settling time of a new file).
    static func age(_ directory: String, seconds: Double = 60) {
        let date = Date(timeIntervalSinceNow: -seconds)
        for name in (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? [] {
            try? FileManager.default.setAttributes([.modificationDate: date], ofItemAtPath: (directory as NSString).appendingPathComponent(name))
        }
    }
}

/// The binary running in the background, its output collected in files, for a test to wait on.
final class WatchProcess {
    let process = Process()
    private let scratch: TemporaryDirectory
    private let ended = DispatchSemaphore(value: 0)

    init(_ binary: String, _ arguments: [String], environment added: [String: String] = [:]) throws {
        scratch = try TemporaryDirectory()
        FileManager.default.createFile(atPath: scratch.path("out"), contents: nil)
        FileManager.default.createFile(atPath: scratch.path("err"), contents: nil)
        process.executableURL = URL(fileURLWithPath: binary)
        process.arguments = arguments
        var environment = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("GRADSCOPE_") && $0.key != "COLUMNS" }
        environment["NO_COLOR"] = "1"
        process.environment = environment.merging(added) { _, given in given }
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = try FileHandle(forWritingTo: URL(fileURLWithPath: scratch.path("out")))
        process.standardError = try FileHandle(forWritingTo: URL(fileURLWithPath: scratch.path("err")))
        process.terminationHandler = { [ended] _ in ended.signal() }
        try process.run()
    }

    var stdout: String { (try? String(contentsOfFile: scratch.path("out"), encoding: .utf8)) ?? "" }
    var stderr: String { (try? String(contentsOfFile: scratch.path("err"), encoding: .utf8)) ?? "" }

    struct Timeout: Error, CustomStringConvertible {
        var description: String
    }

    /// Waits until stdout or stderr holds `text`.
    func wait(for text: String, seconds: Double = 60) throws {
        let deadline = Date(timeIntervalSinceNow: seconds)
        while Date() < deadline {
            if stdout.contains(text) || stderr.contains(text) { return }
            if !process.isRunning { break }
            usleep(50_000)
        }
        throw Timeout(description: "no \"\(text)\" after \(seconds) s; stdout: \(stdout) stderr: \(stderr)")
    }

    /// Waits for the process to end; its exit status.
    func waitForExit(seconds: Double = 30) throws -> Int32 {
        if ended.wait(timeout: .now() + seconds) == .timedOut {
            throw Timeout(description: "still running after \(seconds) s; stdout: \(stdout)")
        }
        ended.signal()
        return process.terminationStatus
    }

    /// Kills it if still running (a failed test must not leave it behind).
    func kill() {
        if process.isRunning { Glibc.kill(process.processIdentifier, SIGKILL) }
    }
}
