import Foundation
#if canImport(Glibc)
import Glibc
#endif

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
        let process = Process()
        process.executableURL = URL(fileURLWithPath: currentExecutable())
        process.arguments = Array(CommandLine.arguments.dropFirst())
        var environment = ProcessInfo.processInfo.environment
        environment[marker] = "1"
        process.environment = environment
        let stdout = Pipe(), stderr = Pipe()
        process.standardOutput = stdout
        process.standardError = stderr
        process.standardInput = FileHandle.nullDevice
        let finished = DispatchSemaphore(value: 0)
        process.terminationHandler = { _ in finished.signal() }
        do {
            try process.run()
        } catch {
            return
        }
        let output = Captured(), errors = Captured()
        let readers = DispatchGroup()
        readers.enter()
        Thread.detachNewThread {
            output.data = stdout.fileHandleForReading.readDataToEndOfFile()
            readers.leave()
        }
        readers.enter()
        Thread.detachNewThread {
            errors.data = stderr.fileHandleForReading.readDataToEndOfFile()
            readers.leave()
        }
        var timedOut = false
        if finished.wait(timeout: .now() + timeout) == .timedOut {
            timedOut = true
            process.terminate()
            if finished.wait(timeout: .now() + 2) == .timedOut {
                kill(process.processIdentifier, SIGKILL)
                finished.wait()
            }
        }
        readers.wait()
        let subject = files.joined(separator: ", ")
        if timedOut {
            FileHandle.standardError.write(Data("gradscope: \(subject): timed out after \(Int(timeout)) s (the HDF5 library may be looping on a malformed file)\n".utf8))
            exit(2)
        }
        if process.terminationReason == .uncaughtSignal {
            let signal = process.terminationStatus
            let name = signal == SIGSEGV ? "SIGSEGV" : signal == SIGABRT ? "SIGABRT" : signal == SIGBUS ? "SIGBUS" : "signal \(signal)"
            FileHandle.standardError.write(Data("gradscope: \(subject): malformed: the HDF5 library failed reading it (\(name))\n".utf8))
            exit(2)
        }
        FileHandle.standardOutput.write(output.data)
        FileHandle.standardError.write(errors.data)
        exit(process.terminationStatus)
    }
}

final class Captured: @unchecked Sendable {
    var data = Data()
}
