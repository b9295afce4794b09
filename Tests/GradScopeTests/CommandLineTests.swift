import ElementTypes
import Foundation
import GradScopeDiagnosis
import GradScopeMeasurement
import GradScopeModel
import GradScopeRendering
import GradScopeSources
import GradScopeStatistics
import HDF5
import TestSupport
import Testing

/// End-to-end: the built binary, its exit codes, its JSON, its errors.
/// A test fails, saying where it looked, when the binary is missing (see `GradScopeBinary`).
@Suite("The gradscope command", .serialized)
struct CommandLineTests {
    /// The binary built next to the tests, or `GRADSCOPE_BINARY`.
    func binary(sourceLocation: SourceLocation = #_sourceLocation) throws -> String {
        try #require(GradScopeBinary.path, "\(GradScopeBinary.notFoundMessage)", sourceLocation: sourceLocation)
    }

    typealias Output = CommandOutput

    func run(
        _ arguments: [String], environment: [String: String] = [:],
        sourceLocation: SourceLocation = #_sourceLocation
    ) throws -> Output {
        try GradScopeBinary.run(try binary(sourceLocation: sourceLocation), arguments, environment: environment)
    }

    func json(_ text: String) throws -> [String: Any] {
        let object = try JSONSerialization.jsonObject(with: Data(text.utf8))
        return try #require(object as? [String: Any])
    }

    @Test(
        "a file cut after it was described is skipped; the next step keeps its tensors and loses only its drift",
        arguments: [true, false])
    func fileCutBetweenPhases(isolated: Bool) throws {
        // One scan engine: with worker processes or in this process, the same outcome.
        let dir = try TemporaryDirectory()
        try SeriesMeasurerTests.writeMixedRun(dir, steps: 4)
        let victim = dir.path("step_0020.h5")
        let isolation = isolated ? IsolationOptions(executable: try binary(), jobs: 2) : nil
        let (report, measurements) = try Analysis.scan(
            dir.url.path, isolation: isolation,
            loadProgress: { finished, total, _, _ in
                // Every file has been described: cut one before it is measured.
                if finished == total { truncate(victim, 4096) }
            })
        #expect(report.skipped.contains { $0.item.hasSuffix("step_0020.h5") && $0.reason.contains("changed while the run was being scanned") })
        #expect(measurements.steps == [0, 10, 30])
        let after = try #require(measurements.records.last)
        #expect(after.weight("big")?.drift == nil && after.weight("gz")?.drift == nil, "no drift from a step that could not be read")
        #expect(after.weight("gz")?.stats.count == 3000 && after.weight("big")?.stats.count == 300_000)
        #expect(measurements.records[1].weight("gz")?.drift != nil)
    }

    @Test("scan gives the same JSON with worker processes and with --no-isolation, whole or with --select")
    func isolatedAndInProcessAgree() throws {
        let dir = try TemporaryDirectory()
        try SeriesMeasurerTests.writeMixedRun(dir, steps: 6)
        for extra in [[], ["--select", "big|gz"]] {
            let isolated = try run(["scan", dir.url.path, "--format", "json", "--quiet"] + extra)
            let inProcess = try run(["scan", dir.url.path, "--format", "json", "--quiet", "--no-isolation"] + extra)
            #expect(!isolated.crashed && isolated.status == inProcess.status)
            #expect(isolated.stdout == inProcess.stdout, "\(extra)")
            let report = try json(isolated.stdout)
            #expect((report["skipped"] as? [Any])?.isEmpty == true, "\(report["skipped"] ?? "")")
            let timeline = try #require(report["timeline"] as? [[String: Any]])
            let names = Set(timeline.compactMap { $0["name"] as? String })
            #expect(extra.isEmpty ? names.isSuperset(of: ["big", "d64", "gz", "grow"]) : names == ["big", "gz"], "\(names)")
        }
    }

    @Test("output to a pipe closed early ends the command quietly, as with any Unix tool")
    func closedPipe() throws {
        let executable = try binary()
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/bash")
        // `true` exits at once, long before the scan writes its 160 KB of JSON.
        process.arguments = [
            "-c", "\"$0\" scan \"$1\" --format json --no-cache | true; exit ${PIPESTATUS[0]}", executable, samplePath("vanishing-sigmoid"),
        ]
        let err = Pipe()
        process.standardError = err
        try process.run()
        let stderr = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        // Ended by SIGPIPE (128 + 13) or finished before noticing; never a crash report.
        #expect(process.terminationStatus == 141 || process.terminationStatus == 0, "status \(process.terminationStatus)")
        #expect(!stderr.contains("Fatal error") && !stderr.contains("crashed"), "\(stderr.prefix(300))")
    }

    @Test("scan --format json follows the contract")
    func scanJSON() throws {
        let output = try run(["scan", samplePath("frozen-layer"), "--format", "json"])
        #expect(output.status == 0)
        let object = try json(output.stdout)
        for key in ["findings", "steps", "skipped", "not_checked", "verdict"] { #expect(object[key] != nil, "\(key)") }
        let findings = try #require(object["findings"] as? [[String: Any]])
        #expect(!findings.isEmpty)
        for finding in findings {
            for key in ["kind", "severity", "tensor", "layer", "first_step", "last_step", "message", "evidence"] {
                #expect(finding.keys.contains(key), "\(key)")
            }
            #expect(FindingKind(rawValue: finding["kind"] as? String ?? "") != nil)
            #expect(Severity(rawValue: finding["severity"] as? String ?? "") != nil)
        }
        #expect((object["steps"] as? [Int])?.first == 0)
    }

    @Test("exit codes follow --fail-on")
    func exitCodes() throws {
        #expect(try run(["scan", samplePath("frozen-layer"), "--quiet"]).status == 0)
        #expect(try run(["scan", samplePath("frozen-layer"), "--fail-on", "warning", "--quiet"]).status == 1)
        #expect(try run(["scan", samplePath("exploding-nan"), "--quiet"]).status == 1)
        #expect(try run(["scan", samplePath("healthy"), "--fail-on", "warning", "--quiet"]).status == 0)
        #expect(try run(["scan", "--no-such-flag", samplePath("healthy")]).status == 2)
    }

    @Test("bad input: one line on stderr naming the file, exit code 2, no crash")
    func badInput() throws {
        let dir = try TemporaryDirectory()
        FileManager.default.createFile(atPath: dir.path("text.h5"), contents: Data("hello\n".utf8))
        FileManager.default.createFile(atPath: dir.path("empty.h5"), contents: Data())
        let sample = try Data(contentsOf: URL(fileURLWithPath: samplePath("healthy") + "/step_000060.h5"))
        try sample.prefix(sample.count / 2).write(to: URL(fileURLWithPath: dir.path("cut.h5")))
        for name in ["text.h5", "empty.h5", "cut.h5", "missing.h5"] {
            for command in ["inspect", "ls"] {
                let output = try run([command, dir.path(name)])
                #expect(!output.crashed, "\(command) \(name)")
                #expect(output.status == 2, "\(command) \(name): \(output.status)")
                let lines = output.stderr.split(separator: "\n")
                #expect(lines.count == 1, "\(command) \(name): \(output.stderr)")
                #expect(lines.first?.contains(name) == true)
            }
        }
        #expect(try run(["inspect", dir.url.path]).status == 2)
        let empty = try TemporaryDirectory()
        let scan = try run(["scan", empty.url.path, "--quiet"])
        #expect(scan.status == 2)
    }

    @Test("a worker that crashes or hangs costs only its file")
    func isolation() throws {
        let crash = try run(
            ["scan", samplePath("healthy"), "--format", "json", "--quiet"],
            environment: ["GRADSCOPE_FAULT_INJECTION": "crash:step_000360"])
        #expect(!crash.crashed)
        let crashed = try json(crash.stdout)
        #expect((crashed["steps"] as? [Int])?.contains(360) == false)
        #expect((crashed["steps"] as? [Int])?.count == 12)
        let skipped = try #require(crashed["skipped"] as? [[String: Any]])
        #expect(
            skipped.contains {
                ($0["item"] as? String)?.hasSuffix("step_000360.h5") == true && ($0["reason"] as? String)?.contains("malformed") == true
            })

        // An answer cut short: an error naming the file, the other saves kept.
        let cut = try run(
            ["scan", samplePath("healthy"), "--format", "json", "--quiet", "--no-cache"],
            environment: ["GRADSCOPE_FAULT_INJECTION": "truncate:step_000360"])
        #expect(!cut.crashed)
        let cutRun = try json(cut.stdout)
        #expect((cutRun["steps"] as? [Int])?.contains(360) == false)
        #expect((cutRun["steps"] as? [Int])?.count == 12)
        let cutSkipped = try #require(cutRun["skipped"] as? [[String: Any]])
        #expect(
            cutSkipped.contains {
                ($0["item"] as? String)?.hasSuffix("step_000360.h5") == true
                    && ($0["reason"] as? String)?.contains("could not be decoded") == true
            })

        let hang = try run(
            ["scan", samplePath("healthy"), "--format", "json", "--quiet", "--timeout", "2"],
            environment: ["GRADSCOPE_FAULT_INJECTION": "hang:step_000420"])
        let hung = try json(hang.stdout)
        #expect((hung["steps"] as? [Int])?.contains(420) == false)
        let hangSkipped = try #require(hung["skipped"] as? [[String: Any]])
        #expect(hangSkipped.contains { ($0["reason"] as? String)?.contains("timed out after 2 s") == true })
    }

    @Test("inspect and diff in every format")
    func inspectAndDiff() throws {
        let file = samplePath("dead-relu") + "/step_000600.h5"
        let table = try run(["inspect", file])
        #expect(table.status == 0)
        #expect(table.stdout.contains("2.weight"))
        let inspected = try json(try run(["inspect", file, "--format", "json"]).stdout)
        let tensors = try #require(inspected["tensors"] as? [[String: Any]])
        #expect(tensors.contains { $0["name"] as? String == "2.weight" && $0["role"] as? String == "gradient" })
        #expect(tensors.allSatisfy { $0["stats"] != nil && $0["path"] != nil && $0["dtype"] != nil })
        let csv = try run(["inspect", file, "--format", "csv", "--select", "^2\\."])
        #expect(csv.stdout.split(separator: "\n").first?.hasPrefix("name,layer,role") == true)
        #expect(csv.stdout.split(separator: "\n").dropFirst().allSatisfy { $0.hasPrefix("2.") })

        let a = samplePath("frozen-layer") + "/step_000100.h5", b = samplePath("frozen-layer") + "/step_000600.h5"
        let diff = try json(try run(["diff", a, b, "--format", "json"]).stdout)
        let drifts = try #require(diff["tensors"] as? [[String: Any]])
        #expect(drifts.first { $0["name"] as? String == "net.2.weight" }?["status"] as? String == "frozen")
        #expect((diff["findings"] as? [[String: Any]])?.contains { $0["kind"] as? String == "frozen" } == true)
    }

    @Test("ls prints the tree of real Keras and hand-written files")
    func list() throws {
        let keras = try run(["ls", samplePath("keras-weights-h5") + "/step_000000.weights.h5"])
        #expect(keras.status == 0)
        #expect(keras.stdout.contains("layers/"))
        #expect(keras.stdout.contains("vars/"))
        if let statedict = corpusFile("torch-h5/mcnn-shtechA-statedict.h5") {
            let output = try run(["ls", "--attrs", statedict])
            #expect(output.stdout.contains("DME.branch1.0.conv.weight   [16, 1, 9, 9]"))
        }
        if let legacy = corpusFile("keras-legacy/k2.3.1-adam-checkpoint.hdf5") {
            let output = try run(["ls", "--attrs", legacy])
            #expect(output.stdout.contains("@layer_names = [\"dense_1\", \"dense_2\", \"dense_3\"]"))
        }
    }

    @Test("no colour when piped or with NO_COLOR")
    func noColour() throws {
        let output = try run(["scan", samplePath("frozen-layer"), "--quiet"])
        #expect(!output.stdout.contains("\u{1B}["))
        #expect(output.stderr.isEmpty)
    }

    @Test("a folder with one file of each of two layouts gets the same layout in every process (hash order is per process)")
    func layoutTieAcrossProcesses() throws {
        let path = samplePath("keras-mixed-precision-final")
        for _ in 0..<5 {
            let output = try run(["scan", path, "--format", "json", "--no-isolation"])
            #expect(output.status == 0 || output.status == 1, "\(output.stderr)")
            #expect(try json(output.stdout)["layout"] as? String == "keras-legacy")
        }
    }

}
