import ArgumentParser
import Foundation
import GradScope
import HDF5

@main
struct GradscopeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gradscope",
        abstract: "Find what went wrong in a training run, from its HDF5 checkpoints.",
        discussion: """
            gradscope reads checkpoints saved as HDF5 (Keras .weights.h5, .keras and legacy .h5 files, \
            PyTorch state_dicts written with h5py, and the native layout its exporters write) and tells \
            you which layers are frozen, collapsing, dead, vanishing or exploding, where NaN first \
            appeared, and whether the loss sits at ln 2.

            Start here:
              gradscope scan RUN_DIR              what went wrong in a run, and since when
              gradscope scan RUN_DIR --explain    the same, explained: causes, what to try
              gradscope inspect CHECKPOINT.h5     every tensor of one file
              gradscope diff A.h5 B.h5            what changed between two saves
            """,
        version: GradScopeVersion.string,
        subcommands: [
            ScanCommand.self, InspectCommand.self, DiffCommand.self, ListCommand.self, WorkerCommand.self, ReportCommand.self, MergeCommand.self,
            WatchCommand.self,
        ]
    )
}

extension GradscopeCommand {
    /// The subcommands that measure a run's saves (``ProcessStart/runWithAllocatorCache()``).
    static let runCommands: Set<String> = ["scan", "report", "watch"]

    /// Parses and runs; usage errors exit with code 2 (README, "Exit codes"), not ArgumentParser's 64.
    static func main() {
        // The commands that measure whole runs on every core run under a larger cache of freed blocks
        // per thread (allocating then takes no lock); the others start as they are.
        if let first = CommandLine.arguments.dropFirst().first, Self.runCommands.contains(first) {
            ProcessStart.runWithAllocatorCache()
        }
        acceptEndingSignals()
        StatsAccumulator.prepareAllocator(
            heaps: ProcessStart.heaps(
                arguments: CommandLine.arguments, cores: ProcessInfo.processInfo.activeProcessorCount, commands: runCommands))
        do {
            var command = try parseAsRoot()
            if let files = supervisedFiles(command) { Supervisor.run(files: files) }
            if ProcessInfo.processInfo.environment[Supervisor.marker] != nil {
                ChildProcess.exitWhenParentEnds()
                limitMemory()
                for file in inputFiles(command) ?? [] { injectFault(for: file) }
            }
            try command.run()
        } catch {
            if exitCode(for: error) == .validationFailure {
                FileHandle.standardError.write(Data((usageLine(message: message(for: error), full: fullMessage(for: error)) + "\n").utf8))
                Foundation.exit(2)
            }
            exit(withError: error)
        }
    }
}

/// The input files of a command that reads files in this process (inspect,
/// diff, ls), which is therefore run under a supervisor; nil for the others.
func supervisedFiles(_ command: ParsableCommand) -> [String]? {
    if ProcessInfo.processInfo.environment[Supervisor.marker] != nil { return nil }
    return inputFiles(command)
}

/// The input files of inspect, diff and ls; nil for the other commands.
func inputFiles(_ command: ParsableCommand) -> [String]? {
    switch command {
    case let inspect as InspectCommand: return [inspect.file]
    case let diff as DiffCommand: return [diff.a, diff.b]
    case let list as ListCommand: return [list.file]
    default: return nil
    }
}

/// A usage error as one line: `gradscope: message; see 'gradscope scan --help'`, the pointer to
/// help taken from ArgumentParser's full message (which would add a usage block of its own).
func usageLine(message: String, full: String) -> String {
    let hint = full.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }.first { $0.hasPrefix("See '") }
    let pointer = hint.map { "; see " + $0.dropFirst(4).replacingOccurrences(of: " for more information.", with: "") } ?? ""
    let text = message.trimmingCharacters(in: .whitespacesAndNewlines).replacingOccurrences(of: "\n", with: " ")
    return "gradscope: \(text)\(pointer)"
}

/// Prints `gradscope: message` on stderr and exits with code 2.
func exitWithInputError(_ error: Error) -> Never {
    let text = Failures.describe(error)
    FileHandle.standardError.write(Data("gradscope: \(text)\n".utf8))
    Foundation.exit(2)
}

/// Unblocks SIGTERM, SIGINT and SIGHUP, which a process inherits blocked when its starter
/// had them blocked (a signal mask survives exec): gradscope then ends when asked to, and its
/// children with it. Signals its starter set to be ignored (nohup) stay ignored.
func acceptEndingSignals() {
    var ending = sigset_t()
    sigemptyset(&ending)
    for signal in [SIGTERM, SIGINT, SIGHUP] { sigaddset(&ending, signal) }
    pthread_sigmask(SIG_UNBLOCK, &ending, nil)
}
