import Dispatch
import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// How one run of the binary ended.
public struct CommandOutput: Sendable {
    public var status: Int32
    public var stdout: String
    public var stderr: String
    /// Ended by a signal it did not handle: a crash (the test's kill after `limit` is `timedOut` instead).
    public var crashed: Bool
    /// Killed by the test because it ran past its limit.
    public var timedOut: Bool
    public var seconds: Double

    public init(status: Int32, stdout: String, stderr: String, crashed: Bool, timedOut: Bool, seconds: Double = 0) {
        self.status = status
        self.stdout = stdout
        self.stderr = stderr
        self.crashed = crashed
        self.timedOut = timedOut
        self.seconds = seconds
    }
}

extension GradScopeBinary {
    /// Runs `binary` with `arguments` as a user would from a script: `NO_COLOR=1`, standard input
    /// empty, output to files (so a long output cannot stall it), and none of the caller's
    /// `GRADSCOPE_` variables nor `COLUMNS` (output that is not a terminal has no width then), its
    /// cache of measured saves in a scratch directory of its own (`XDG_CACHE_HOME`),
    /// `environment` added last. A run past `limit` seconds is killed, so a command that hangs
    /// fails its test instead of stopping the suite.
    public static func run(
        _ binary: String, _ arguments: [String], environment: [String: String] = [:], limit: Double = 120
    ) throws -> CommandOutput {
        let scratch = try TemporaryDirectory()
        let outPath = scratch.path("stdout"), errPath = scratch.path("stderr")
        _ = FileManager.default.createFile(atPath: outPath, contents: nil)
        _ = FileManager.default.createFile(atPath: errPath, contents: nil)
        let out = try FileHandle(forWritingTo: URL(fileURLWithPath: outPath))
        let err = try FileHandle(forWritingTo: URL(fileURLWithPath: errPath))
        defer {
            try? out.close()
            try? err.close()
        }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: binary)
        process.arguments = arguments
        var inherited = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("GRADSCOPE_") && $0.key != "COLUMNS" }
        inherited["NO_COLOR"] = "1"
        // The cache of measured saves goes to this run's own scratch directory, never the user's.
        inherited["XDG_CACHE_HOME"] = scratch.path("cache")
        process.environment = inherited.merging(environment) { _, given in given }
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = out
        process.standardError = err
        let start = Date()
        let finished = DispatchSemaphore(value: 0)
        process.terminationHandler = { _ in finished.signal() }
        try process.run()
        let timedOut = finished.wait(timeout: .now() + limit) == .timedOut
        if timedOut {
            kill(process.processIdentifier, SIGKILL)
            finished.wait()
        }
        return CommandOutput(
            status: process.terminationStatus,
            stdout: (try? String(contentsOfFile: outPath, encoding: .utf8)) ?? "",
            stderr: (try? String(contentsOfFile: errPath, encoding: .utf8)) ?? "",
            crashed: !timedOut && process.terminationReason == .uncaughtSignal, timedOut: timedOut,
            seconds: Date().timeIntervalSince(start))
    }
}
