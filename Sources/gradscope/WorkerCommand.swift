import ArgumentParser
import Foundation
import GradScope

/// The worker process behind `scan`'s isolation: reads requests as frames on
/// stdin (see `WorkerFrame`), answers each on stdout, and before reading each
/// object sends its name, so that a crash inside libhdf5 can be attributed.
/// Serves until its input ends.
struct WorkerCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "worker", abstract: "Internal: read files for scan.", shouldDisplay: false)

    func run() throws {
        ChildProcess.exitWhenParentEnds()
        limitMemory()
        var reader = FrameReader(fd: STDIN_FILENO)
        let output = STDOUT_FILENO
        while case .frame(let kind, let payload) = reader.next(deadline: nil), kind == WorkerFrame.request {
            let response: WorkerResponse
            var path = ""
            do {
                let request = try WorkerCoding.decode(WorkerRequest.self, from: payload)
                path = request.path
                injectFault(for: request.path)
                response = Worker.handle(request) { object in
                    WorkerFrame.write(WorkerFrame.encode(kind: WorkerFrame.marker, payload: Data(object.utf8)), to: output)
                }
            } catch {
                response = WorkerResponse(error: "bad worker request: \(error)")
            }
            var answer =
                (try? WorkerCoding.encode(response))
                ?? (try? WorkerCoding.encode(WorkerResponse(error: "internal: the answer could not be encoded"))) ?? Data()
            if faultInjection(for: path) == "truncate" { answer = answer.prefix(answer.count / 2) }
            guard WorkerFrame.write(WorkerFrame.encode(kind: WorkerFrame.answer, payload: answer), to: output) else { return }
            StatsAccumulator.releaseFreeMemory()
        }
    }
}

/// The path of this executable, for starting workers: /proc/self/exe's, unless that is the dynamic
/// loader the program was started with (`ld.so ./gradscope ...`), which would take a worker's first
/// argument for its program.
func currentExecutable() -> String {
    if !ProcessStart.startedByLoader, let resolved = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe") {
        return resolved
    }
    let argument = CommandLine.arguments[0]
    if argument.hasPrefix("/") { return argument }
    return FileManager.default.currentDirectoryPath + "/" + argument
}

/// For testing isolation: GRADSCOPE_FAULT_INJECTION="crash:NAME" or "hang:NAME"
/// makes a worker (or the supervised child of inspect, diff or ls) reading a file whose
/// path contains NAME abort or hang, as a libhdf5 crash or infinite loop on a malformed
/// file would.
/// "truncate:NAME" makes a worker send only the first half of its answer about such a file, as a
/// worker cut off mid-write would.
func injectFault(for path: String) {
    switch faultInjection(for: path) {
    case "crash": abort()
    case "hang": while true { sleep(60) }
    default: return
    }
}

/// GRADSCOPE_FAULT_INJECTION as this process started with it, read once: a worker asks for every
/// file it reads, and `ProcessInfo`'s environment is a dictionary of every variable built afresh
/// on each use.
private let faultInjectionSpec: String? = getenv("GRADSCOPE_FAULT_INJECTION").map { String(cString: $0) }

/// The fault GRADSCOPE_FAULT_INJECTION asks for on `path`, if any.
func faultInjection(for path: String) -> String? {
    guard let spec = faultInjectionSpec else { return nil }
    let parts = spec.split(separator: ":", maxSplits: 1).map(String.init)
    guard parts.count == 2, !parts[1].isEmpty, path.contains(parts[1]) else { return nil }
    return parts[0]
}

/// Caps the heap of a process that reads untrusted files (GRADSCOPE_MEMORY_LIMIT_MB,
/// default 2048; one worker per core): a malformed file that makes libhdf5 allocate without bound then
/// fails in that process, not by exhausting the machine. File data in the page cache
/// does not count against it (RLIMIT_DATA covers the heap and anonymous mappings).
func limitMemory() {
    let megabytes = ProcessInfo.processInfo.environment["GRADSCOPE_MEMORY_LIMIT_MB"].flatMap(Int.init) ?? 2048
    guard megabytes > 0 else { return }
    var limit = rlimit()
    let bytes = rlim_t(megabytes) * 1024 * 1024
    limit.rlim_cur = bytes
    limit.rlim_max = bytes
    setrlimit(Int32(RLIMIT_DATA.rawValue), &limit)
}
