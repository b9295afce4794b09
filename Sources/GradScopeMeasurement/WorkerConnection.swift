import ElementTypes
import Foundation
import GradScopeModel
import GradScopeSources
import GradScopeStatistics
import HDF5

#if canImport(Glibc)
import Glibc
#endif

/// Frames between the parent and a worker process, on the worker's stdin and
/// stdout: one byte of kind, eight bytes of little-endian payload length, the payload.
public enum WorkerFrame {
    /// Parent to worker: a `WorkerRequest` in ``BinaryCoding``.
    public static let request: UInt8 = 0x51  // "Q"
    /// Worker to parent: the object about to be read (UTF-8), so a crash can be attributed.
    public static let marker: UInt8 = 0x4D  // "M"
    /// Worker to parent: a `WorkerResponse` in ``BinaryCoding``, the end of one request.
    public static let answer: UInt8 = 0x41  // "A"
    /// Largest payload accepted (a description of a checkpoint with many thousands of tensors fits easily).
    public static let maxPayload = 1 << 30

    /// The frame's bytes.
    public static func encode(kind: UInt8, payload: Data) -> Data {
        var data = Data(capacity: 9 + payload.count)
        data.append(kind)
        withUnsafeBytes(of: UInt64(payload.count).littleEndian) { data.append(contentsOf: $0) }
        data.append(payload)
        return data
    }

    /// Writes all of `data` to `fd`; false when the other end is gone.
    @discardableResult
    public static func write(_ data: Data, to fd: Int32) -> Bool {
        data.withUnsafeBytes { raw -> Bool in
            guard let base = raw.baseAddress else { return true }
            var done = 0
            while done < raw.count {
                let n = Glibc.write(fd, base + done, raw.count - done)
                if n > 0 {
                    done += n
                } else if n < 0 && errno == EINTR {
                    continue
                } else {
                    return false
                }
            }
            return true
        }
    }
}

/// Reads frames from a descriptor, optionally with a deadline.
public struct FrameReader {
    public let fd: Int32
    private var buffer = [UInt8]()
    private var start = 0
    /// Where each `read` lands before it joins `buffer`, reused across reads.
    private var scratch = [UInt8](repeating: 0, count: 1 << 16)

    public init(fd: Int32) { self.fd = fd }

    public enum Outcome {
        case frame(UInt8, Data)
        case end
        case timedOut
        case malformed
    }

    /// The next frame; `.end` when the writer closed (or died), `.timedOut` at `deadline`.
    public mutating func next(deadline: Double?) -> Outcome {
        while true {
            let available = buffer.count - start
            if available >= 9 {
                let kind = buffer[start]
                var length: UInt64 = 0
                for i in 0..<8 { length |= UInt64(buffer[start + 1 + i]) << (8 * UInt64(i)) }
                guard length <= UInt64(WorkerFrame.maxPayload) else { return .malformed }
                let total = 9 + Int(length)
                if available >= total {
                    let payload = Data(buffer[(start + 9)..<(start + total)])
                    start += total
                    if start == buffer.count {
                        buffer.removeAll(keepingCapacity: true)
                        start = 0
                    }
                    return .frame(kind, payload)
                }
            }
            if let deadline {
                let remaining = deadline - Self.now()
                if remaining <= 0 { return .timedOut }
                var descriptor = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
                let ready = poll(&descriptor, 1, Int32(min(remaining * 1000 + 1, 60_000)))
                if ready == 0 { continue }
                if ready < 0 && errno != EINTR { return .end }
                if ready < 0 { continue }
            }
            if start > 0 && start == buffer.count {
                buffer.removeAll(keepingCapacity: true)
                start = 0
            }
            let n = scratch.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
            if n > 0 {
                buffer.append(contentsOf: scratch[0..<n])
            } else if n < 0 && errno == EINTR {
                continue
            } else {
                return .end
            }
        }
    }

    public static func now() -> Double {
        var t = timespec()
        clock_gettime(CLOCK_MONOTONIC, &t)
        return Double(t.tv_sec) + Double(t.tv_nsec) * 1e-9
    }
}

/// One long-lived worker process that answers requests one at a time.
/// When it crashes or overruns its time limit it is gone; the pool starts another.
package final class WorkerConnection {
    private let process: Process
    private let input: FileHandle
    private var reader: FrameReader
    package private(set) var alive = true

    /// How a request ended.
    package enum Reply {
        case answer(Data)
        /// The worker died or hung; `lastObject` is the last object it announced.
        case died(signal: String?, status: Int32, timedOut: Bool, lastObject: String?)
    }

    package init(executable: String, arguments: [String]) throws {
        process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        let stdin = Pipe(), stdout = Pipe()
        process.standardInput = stdin
        process.standardOutput = stdout
        process.standardError = FileHandle.nullDevice
        try process.run()
        input = stdin.fileHandleForWriting
        reader = FrameReader(fd: stdout.fileHandleForReading.fileDescriptor)
        // Keep the read end alive as long as this connection.
        outputHandle = stdout.fileHandleForReading
    }

    private let outputHandle: FileHandle

    /// Sends one request and waits for its answer, at most `timeout` seconds.
    package func send(_ request: Data, timeout: Double) -> Reply {
        let deadline = FrameReader.now() + timeout
        var lastObject: String?
        if !Self.writeWithoutSIGPIPE(WorkerFrame.encode(kind: WorkerFrame.request, payload: request), to: input.fileDescriptor) {
            return finish(timedOut: false, lastObject: nil)
        }
        while true {
            switch reader.next(deadline: deadline) {
            case .frame(WorkerFrame.marker, let payload):
                lastObject = String(decoding: payload, as: UTF8.self)
            case .frame(WorkerFrame.answer, let payload):
                return .answer(payload)
            case .frame, .malformed, .end:
                return finish(timedOut: false, lastObject: lastObject)
            case .timedOut:
                return finish(timedOut: true, lastObject: lastObject)
            }
        }
    }

    /// Writes to a worker that may have died: SIGPIPE is blocked on this thread
    /// for the write (and one raised by it is taken back), so a dead worker is
    /// a failed write here, not the end of the parent. Ignoring SIGPIPE process-wide
    /// instead would make a write to a closed stdout (`gradscope scan … | head`)
    /// an error where a command-line tool should simply stop.
    package static func writeWithoutSIGPIPE(_ data: Data, to fd: Int32) -> Bool {
        var pipeSignal = sigset_t()
        sigemptyset(&pipeSignal)
        sigaddset(&pipeSignal, SIGPIPE)
        var previous = sigset_t()
        pthread_sigmask(SIG_BLOCK, &pipeSignal, &previous)
        let written = WorkerFrame.write(data, to: fd)
        if !written {
            var none = timespec()
            _ = sigtimedwait(&pipeSignal, nil, &none)
        }
        pthread_sigmask(SIG_SETMASK, &previous, nil)
        return written
    }

    /// Ends a worker that died or hung: kills it if needed and reports how it ended.
    private func finish(timedOut: Bool, lastObject: String?) -> Reply {
        alive = false
        if process.isRunning {
            if timedOut {
                kill(process.processIdentifier, SIGKILL)
            } else {
                // It closed its output: give it a moment to exit, then make sure.
                let limit = FrameReader.now() + 2
                while process.isRunning && FrameReader.now() < limit { usleep(1000) }
                if process.isRunning { kill(process.processIdentifier, SIGKILL) }
            }
        }
        process.waitUntilExit()
        try? input.close()
        let signaled = process.terminationReason == .uncaughtSignal
        let status = process.terminationStatus
        let name = signaled ? ChildProcess.name(ofSignal: status) : nil
        return .died(signal: timedOut ? nil : name, status: status, timedOut: timedOut, lastObject: lastObject)
    }

    /// Asks the worker to exit by ending its input (an idle worker is blocked
    /// reading it and exits at once). Call ``waitForExit()`` after closing every
    /// worker, so they wind down together.
    package func close() {
        guard alive else { return }
        alive = false
        try? input.close()
    }

    /// Waits for a closed worker to exit (killing it after 5 s), so that its
    /// time and memory are accounted to this process, as `time` and `wait` expect.
    package func waitForExit() {
        let limit = FrameReader.now() + 5
        while process.isRunning && FrameReader.now() < limit { usleep(200) }
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
    }
}
