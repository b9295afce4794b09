import Foundation
import GradScope

/// Runs a single-file command (inspect, diff, ls) in a child process, so that a
/// file that makes libhdf5 crash or hang still ends in one line naming the file
/// and exit code 2 instead of a crash. The child is this program with the same
/// arguments; its output is passed through when it ends normally.
enum Supervisor {
    static let marker = "GRADSCOPE_SUPERVISED"

    /// Seconds the command may take (GRADSCOPE_TIMEOUT, default 600).
    static var timeout: Double {
        ProcessInfo.processInfo.environment["GRADSCOPE_TIMEOUT"].flatMap(Double.init).map { max($0, 1) } ?? 600
    }

    /// Returns only when no child process could be started; the caller then runs the command itself.
    static func run(files: [String]) {
        var environment = ProcessInfo.processInfo.environment
        environment[marker] = "1"
        let child = ChildProcess(
            executable: currentExecutable(), arguments: Array(CommandLine.arguments.dropFirst()),
            environment: environment, timeout: timeout)
        guard let result = try? child.run() else { return }
        let subject = files.joined(separator: ", ")
        if result.timedOut {
            FileHandle.standardError.write(
                Data("gradscope: \(subject): timed out after \(Int(timeout)) s (the HDF5 library may be looping on a malformed file)\n".utf8))
            exit(2)
        }
        if result.signaled {
            FileHandle.standardError.write(Data("gradscope: \(subject): malformed: the HDF5 library failed reading it (\(result.signalName))\n".utf8))
            exit(2)
        }
        FileHandle.standardOutput.write(result.stdout)
        FileHandle.standardError.write(result.stderr)
        exit(result.status)
    }
}
