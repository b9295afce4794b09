import ElementTypes
import Foundation
import GradScopeModel
import GradScopeSources
import GradScopeStatistics
import HDF5
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// Runs a program to completion with a time limit, collecting its output:
/// the one mechanism behind scan's workers and the single-file supervisor.
public struct ChildProcess: Sendable {
    /// How a child ended.
    public struct Result: Sendable {
        public var stdout: Data
        public var stderr: Data
        /// Exit code, or the signal number when `signaled`.
        public var status: Int32
        public var signaled: Bool
        public var timedOut: Bool

        /// The signal's name: SIGSEGV, SIGABRT, SIGBUS, or "signal N".
        public var signalName: String { ChildProcess.name(ofSignal: status) }
    }

    /// SIGSEGV, SIGABRT, SIGBUS, SIGKILL, or "signal N".
    public static func name(ofSignal signal: Int32) -> String {
        switch signal {
        case SIGSEGV: return "SIGSEGV"
        case SIGABRT: return "SIGABRT"
        case SIGBUS: return "SIGBUS"
        case SIGKILL: return "SIGKILL"
        default: return "signal \(signal)"
        }
    }

    public var executable: String
    public var arguments: [String]
    public var environment: [String: String]?
    public var timeout: Double

    public init(executable: String, arguments: [String], environment: [String: String]? = nil, timeout: Double) {
        self.executable = executable
        self.arguments = arguments
        self.environment = environment
        self.timeout = timeout
    }

    /// Starts the child, writes `input` to its stdin, and waits; a child still
    /// running after `timeout` seconds is terminated, then killed. Output is read
    /// on threads of its own (Dispatch's pool grows too slowly for blocking reads).
    /// The child's stdin is a pipe held open until it ends, so a child that calls
    /// ``exitWhenParentEnds()`` dies with this process however it ends.
    public func run(input: Data? = nil) throws -> Result {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        if let environment { process.environment = environment }
        let stdin = Pipe(), stdout = Pipe(), stderr = Pipe()
        process.standardInput = stdin
        process.standardOutput = stdout
        process.standardError = stderr
        let finished = DispatchSemaphore(value: 0)
        process.terminationHandler = { _ in finished.signal() }
        try process.run()
        let output = DataBox(), errors = DataBox()
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
        if let input {
            stdin.fileHandleForWriting.write(input)
            try? stdin.fileHandleForWriting.close()
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
        if input == nil { try? stdin.fileHandleForWriting.close() }
        readers.wait()
        return Result(
            stdout: output.data, stderr: errors.data, status: process.terminationStatus,
            signaled: process.terminationReason == .uncaughtSignal, timedOut: timedOut)
    }
}

extension ChildProcess {
    /// In a child (scan's worker, the supervised inspect, diff or ls): ends this process
    /// as soon as its parent does. The parent holds the only writing end of the child's
    /// stdin pipe (Foundation's `Process` closes every other descriptor in the children it
    /// starts), and the kernel closes it when the parent ends in any way, SIGKILL
    /// included; a thread of its own waits for that hang-up, so a child stuck in libhdf5
    /// (or sleeping in an injected fault) is ended too. A stdin that is not a pipe
    /// (a terminal, /dev/null) never hangs up, and nothing happens.
    public static func exitWhenParentEnds() {
        Thread.detachNewThread {
            var descriptor = pollfd(fd: STDIN_FILENO, events: 0, revents: 0)
            while true {
                let ready = poll(&descriptor, 1, -1)
                if ready < 0 && errno == EINTR { continue }
                if ready < 0 { return }
                if descriptor.revents & Int16(POLLHUP | POLLERR) != 0 { _exit(3) }
                if descriptor.revents & Int16(POLLNVAL) != 0 { return }
            }
        }
    }
}

/// Output read on a thread of its own, kept for the thread that waits for it.
package final class DataBox: Sendable {
    private let storage = Mutex(Data())

    package var data: Data {
        get { storage.withLock { $0 } }
        set { storage.withLock { $0 = newValue } }
    }
}
