import Dispatch
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

/// How files are isolated: each is read by a worker process (this program,
/// run with the hidden `worker` command), so that a file that makes libhdf5
/// crash, abort or hang costs only that file. Several workers run at once,
/// which is also how a scan uses every core despite libhdf5's global lock.
public struct IsolationOptions: Sendable {
    /// The executable to run as a worker (this program).
    public var executable: String
    /// Arguments that make it a worker, before the request is sent on stdin.
    public var arguments: [String] = ["worker"]
    /// Seconds one file may take before its worker is killed.
    public var timeout: Double = 120
    /// Workers at once.
    public var jobs: Int = max(1, ProcessInfo.processInfo.activeProcessorCount)

    public init(executable: String, timeout: Double = 120, jobs: Int? = nil) {
        self.executable = executable
        self.timeout = timeout
        if let jobs { self.jobs = max(1, jobs) }
    }
}

/// Worker processes, kept alive across requests (starting one costs more than
/// measuring a small file), that turn their crashes and hangs into reasons.
/// A worker that crashes or hangs is replaced by a new one for the next request.
package final class WorkerPool: Sendable {
    package let options: IsolationOptions
    /// A connection has one owner at a time (the slot using it, or this list), a
    /// hand-over the compiler cannot follow, hence the unchecked wrapper.
    private let idle = Mutex<[UncheckedSendable<WorkerConnection>]>([])

    package init(options: IsolationOptions) {
        self.options = options
    }

    deinit { shutdown() }

    package enum Outcome: Sendable {
        case response(WorkerResponse)
        case failed(String)
    }

    /// Runs every request on up to `options.jobs` workers at once; `done` is
    /// called on the calling thread as each finishes.
    package func run(_ requests: [WorkerRequest], done: (Int) -> Void) -> [Outcome] {
        let results = ResultBox(count: requests.count)
        let completions = CompletionQueue()
        let slotCount = min(options.jobs, requests.count)
        let queue = IndexQueue(count: requests.count, slots: slotCount)
        let slots = DispatchGroup()
        for slot in 0..<slotCount {
            slots.enter()
            // Threads of their own: these block on a child process, and Dispatch's pool
            // (capped at the core count, grown about once a second) would stall behind them.
            Thread.detachNewThread { [self] in
                var connection = takeIdle()
                while let index = queue.next(slot: slot) {
                    switch exchange(requests[index], on: &connection) {
                    case .success(let answer):
                        // Decoded elsewhere, so the worker gets its next request at once.
                        slots.enter()
                        DispatchQueue.global().async {
                            results.set(index, Self.decode(answer))
                            completions.push(index)
                            slots.leave()
                        }
                    case .failure(let failure):
                        results.set(index, .failed(failure.reason))
                        completions.push(index)
                    }
                }
                putIdle(connection)
                slots.leave()
            }
        }
        for _ in 0..<requests.count { done(completions.pop()) }
        slots.wait()
        return results.values
    }

    /// Ends every idle worker.
    package func shutdown() {
        let workers = idle.withLock { idle in
            let workers = idle
            idle = []
            return workers
        }.map(\.value)
        for worker in workers { worker.close() }
        for worker in workers { worker.waitForExit() }
    }

    private func takeIdle() -> WorkerConnection? {
        idle.withLock { $0.popLast() }?.value
    }

    private func putIdle(_ connection: WorkerConnection?) {
        guard let connection, connection.alive else { return }
        idle.withLock { $0.append(UncheckedSendable(connection)) }
    }

    /// Why a request got no answer, in words for the skipped list.
    package struct Failure: Error {
        package var reason: String
    }

    /// Sends one request to the worker (starting one if needed) and waits for
    /// its answer, undecoded; a worker that dies or hangs is dropped.
    private func exchange(_ request: WorkerRequest, on connection: inout WorkerConnection?) -> Result<Data, Failure> {
        let input: Data
        do { input = try WorkerCoding.encode(request) } catch { return .failure(Failure(reason: "internal: \(error)")) }
        if connection?.alive != true {
            do {
                connection = try WorkerConnection(executable: options.executable, arguments: options.arguments)
            } catch {
                connection = nil
                return .failure(Failure(reason: "could not start a worker process: \(error)"))
            }
        }
        guard let worker = connection else { return .failure(Failure(reason: "could not start a worker process")) }
        switch worker.send(input, timeout: options.timeout) {
        case .answer(let data):
            return .success(data)
        case .died(let signal, let status, let timedOut, let lastObject):
            connection = nil
            let place = lastObject.map { $0 == "opening" ? " opening the file" : " reading \($0)" } ?? ""
            if timedOut {
                return .failure(
                    Failure(reason: "timed out after \(Int(options.timeout)) s\(place) (the HDF5 library may be looping on a malformed file)"))
            }
            if let signal {
                return .failure(Failure(reason: "malformed: the HDF5 library failed\(place) (the worker died with \(signal))"))
            }
            return .failure(Failure(reason: "malformed: the worker gave no result\(place) (exit code \(status))"))
        }
    }

    package static func decode(_ answer: Data) -> Outcome {
        do {
            return .response(try WorkerCoding.decode(WorkerResponse.self, from: answer))
        } catch {
            return .failed("internal: the worker's answer could not be decoded: \(error)")
        }
    }
}

/// Hands out `0..<count` once each, to several slots: each slot first works
/// through a contiguous share in order (so a worker measures neighbouring
/// steps, whose files it holds open), then takes from the end of the largest
/// share left.
package final class IndexQueue: Sendable {
    private let shares: Mutex<[Range<Int>]>

    package init(count: Int, slots: Int) {
        let slots = max(1, slots)
        shares = Mutex((0..<slots).map { slot in (count * slot / slots)..<(count * (slot + 1) / slots) })
    }

    package func next(slot: Int) -> Int? {
        shares.withLock { shares in
            if shares.indices.contains(slot), let index = shares[slot].first {
                shares[slot] = (index + 1)..<shares[slot].upperBound
                return index
            }
            guard let largest = shares.indices.max(by: { shares[$0].count < shares[$1].count }), !shares[largest].isEmpty else { return nil }
            let index = shares[largest].upperBound - 1
            shares[largest] = shares[largest].lowerBound..<index
            return index
        }
    }
}

/// Indices of finished requests, handed from worker threads to the caller:
/// the semaphore counts those waiting, the mutex guards the list.
package final class CompletionQueue: Sendable {
    private let available = DispatchSemaphore(value: 0)
    private let items = Mutex<[Int]>([])

    package func push(_ index: Int) {
        items.withLock { $0.append(index) }
        available.signal()
    }

    package func pop() -> Int {
        available.wait()
        return items.withLock { $0.removeFirst() }
    }
}

/// The outcome of each request, by index, set from whichever thread finished it;
/// a request never run reads as failed.
package final class ResultBox: Sendable {
    private let storage: Mutex<[WorkerPool.Outcome?]>
    package init(count: Int) { storage = Mutex(Array(repeating: nil, count: count)) }
    package func set(_ index: Int, _ value: WorkerPool.Outcome) {
        storage.withLock { $0[index] = value }
    }
    package var values: [WorkerPool.Outcome] {
        storage.withLock { $0.map { $0 ?? .failed("not run") } }
    }
}

/// A count shared between threads: each `increment()` returns the new total.
package final class Counter: Sendable {
    private let value = Mutex(0)
    package func increment() -> Int {
        value.withLock { value in
            value += 1
            return value
        }
    }
}
