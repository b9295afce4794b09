import Foundation
import TestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The built binary at the edges: paths that are not regular files, children that must
/// die with their parent, errors in plain words, unusable runs, thresholds out of range.
@Suite("The gradscope command at the edges", .serialized)
struct RobustnessCommandTests {
    /// How a run of the binary ended.
    typealias Output = CommandOutput

    /// The binary built next to the tests, or `GRADSCOPE_BINARY`.
    func binary(sourceLocation: SourceLocation = #_sourceLocation) throws -> String {
        try #require(GradScopeBinary.path, "\(GradScopeBinary.notFoundMessage)", sourceLocation: sourceLocation)
    }

    /// Runs the binary with `arguments`, killing it after `limit` seconds so that a
    /// command that hangs fails the test instead of stopping the suite.
    func run(
        _ arguments: [String], environment: [String: String] = [:], limit: Double = 60,
        sourceLocation: SourceLocation = #_sourceLocation
    ) throws -> Output {
        try GradScopeBinary.run(try binary(sourceLocation: sourceLocation), arguments, environment: environment, limit: limit)
    }

    /// Live (not zombie) processes whose environment holds `marker`, other than `except`.
    static func processes(marked marker: String, except: Int32? = nil) -> [Int32] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
        return names.compactMap(Int32.init).filter { pid in
            guard pid != except, let environ = FileManager.default.contents(atPath: "/proc/\(pid)/environ") else { return false }
            guard let status = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
                let close = status.lastIndex(of: ")"), status[close...].dropFirst(2).first != "Z"
            else { return false }
            return environ.range(of: Data(marker.utf8)) != nil
        }
    }

    @Test("a named pipe is refused at once with its reason: inspect, ls and scan neither hang nor wait for a timeout")
    func namedPipeRefused() throws {
        let dir = try TemporaryDirectory()
        let fifo = dir.path("pipe.h5")
        #expect(mkfifo(fifo, 0o600) == 0)
        for command in ["inspect", "ls", "scan"] {
            let output = try run([command, fifo, "--quiet"].filter { command != "ls" || $0 != "--quiet" }, limit: 20)
            #expect(!output.timedOut, "\(command) hung on a named pipe")
            #expect(output.status == 2, "\(command): \(output.status)")
            #expect(output.stderr == "gradscope: \(fifo): a named pipe (FIFO), not a regular file: only regular files are read\n", "\(command)")
        }

        // In a run directory, the pipe is listed as skipped at once; the other steps are read.
        let run = try TemporaryDirectory()
        for name in ["step_000000.h5", "step_000060.h5", "step_000120.h5"] {
            try FileManager.default.copyItem(atPath: samplePath("healthy") + "/" + name, toPath: run.path(name))
        }
        #expect(mkfifo(run.path("step_000180.h5"), 0o600) == 0)
        let scan = try self.run(["scan", run.url.path, "--format", "json", "--quiet", "--timeout", "30"], limit: 25)
        #expect(!scan.timedOut && scan.seconds < 20, "scan waited \(scan.seconds) s for a named pipe")
        let object = try #require(try JSONSerialization.jsonObject(with: Data(scan.stdout.utf8)) as? [String: Any])
        #expect((object["steps"] as? [Int]) == [0, 60, 120])
        let skipped = try #require(object["skipped"] as? [[String: Any]])
        #expect(
            skipped.contains {
                ($0["item"] as? String)?.hasSuffix("step_000180.h5") == true && ($0["reason"] as? String)?.contains("named pipe") == true
            })
    }

    /// A command that will hang on a file (fault injection), to be killed mid-run.
    struct Interrupted: CustomTestStringConvertible, Sendable {
        var command: String
        var signal: Int32
        var testDescription: String { "\(command) killed with \(signal == SIGKILL ? "SIGKILL" : signal == SIGTERM ? "SIGTERM" : "signal \(signal)")" }
    }

    @Test(
        "no child process outlives its parent: scan's workers and inspect's supervised child, killed mid-run",
        arguments: [
            Interrupted(command: "scan", signal: SIGTERM), Interrupted(command: "scan", signal: SIGKILL),
            Interrupted(command: "scan", signal: SIGINT), Interrupted(command: "scan", signal: SIGHUP),
            Interrupted(command: "inspect", signal: SIGTERM), Interrupted(command: "inspect", signal: SIGKILL),
        ])
    func childrenDieWithParent(_ case: Interrupted) throws {
        let marker = "GRADSCOPE_TEST_ORPHAN_MARK=\(UUID().uuidString)"
        let markerParts = marker.split(separator: "=", maxSplits: 1).map(String.init)
        let arguments =
            `case`.command == "scan"
            ? ["scan", samplePath("healthy"), "--jobs", "2", "--quiet", "--timeout", "300", "--no-cache"]
            : ["inspect", samplePath("healthy") + "/step_000300.h5"]
        let process = Process()
        process.executableURL = URL(fileURLWithPath: try binary())
        process.arguments = arguments
        var env = ProcessInfo.processInfo.environment
        env["GRADSCOPE_FAULT_INJECTION"] = "hang:step_000300"
        env["GRADSCOPE_TIMEOUT"] = "300"
        env[markerParts[0]] = markerParts[1]
        process.environment = env
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        let parent = process.processIdentifier
        defer {
            // Whatever the outcome, leave nothing behind.
            for pid in Self.processes(marked: marker) { kill(pid, SIGKILL) }
        }
        // Wait until the children are started (scan: its workers; inspect: its supervised child).
        let wanted = `case`.command == "scan" ? 2 : 1
        let start = Date()
        while Self.processes(marked: marker, except: parent).count < wanted && Date().timeIntervalSince(start) < 20 {
            usleep(50_000)
        }
        let children = Self.processes(marked: marker, except: parent)
        #expect(children.count >= wanted, "the children were not started: \(children)")
        // Let the hung file be reached, then interrupt the parent.
        usleep(500_000)
        #expect(process.isRunning, "the command ended before it could be interrupted: nothing was tested")
        kill(parent, `case`.signal)
        let signalled = Date()
        while process.isRunning && Date().timeIntervalSince(signalled) < 10 { usleep(20_000) }
        let status =
            (try? String(contentsOfFile: "/proc/\(parent)/status", encoding: .utf8))?.split(separator: "\n").filter {
                $0.hasPrefix("Sig") || $0.hasPrefix("State")
            } ?? []
        #expect(!process.isRunning, "the command did not end on \(`case`.testDescription) \(status)")
        if process.isRunning { kill(parent, SIGKILL) }
        process.waitUntilExit()
        var left = Self.processes(marked: marker)
        let ended = Date()
        while !left.isEmpty && Date().timeIntervalSince(ended) < 5 {
            usleep(50_000)
            left = Self.processes(marked: marker)
        }
        #expect(left.isEmpty, "processes left running after \(`case`.testDescription): \(left)")
    }

    /// Words of Foundation's that must never reach the user.
    static let foundationWords = [
        "NSCocoaErrorDomain", "Error Domain", "Code=", "The operation could not be completed", "doesn’t exist", "doesn't exist",
    ]

    /// Expects exit code 2 and one line on stderr that names `path`, holds `words` and none of Foundation's.
    func expectOneLine(
        _ output: Output, naming path: String, saying words: String, sourceLocation: SourceLocation = #_sourceLocation
    ) {
        #expect(output.status == 2, "exit \(output.status): \(output.stderr)", sourceLocation: sourceLocation)
        let lines = output.stderr.split(separator: "\n", omittingEmptySubsequences: false).dropLast()
        #expect(lines.count == 1, "not one line: \(output.stderr)", sourceLocation: sourceLocation)
        #expect(output.stderr.hasPrefix("gradscope: \(path): "), "\(output.stderr)", sourceLocation: sourceLocation)
        #expect(output.stderr.contains(words), "\(output.stderr)", sourceLocation: sourceLocation)
        for raw in Self.foundationWords {
            #expect(!output.stderr.contains(raw), "Foundation's words: \(output.stderr)", sourceLocation: sourceLocation)
        }
    }

    @Test("errors about the output, the config file and missing files say what happened to which path, in plain words")
    func plainWords() throws {
        let dir = try TemporaryDirectory()
        let run = samplePath("healthy")
        try FileManager.default.createDirectory(atPath: dir.path("out"), withIntermediateDirectories: false)
        expectOneLine(
            try self.run(["report", run, "-o", dir.path("out"), "--quiet"]), naming: dir.path("out"),
            saying: "cannot write the report: it is a directory")
        let nowhere = dir.path("missing/report.html")
        expectOneLine(
            try self.run(["report", run, "-o", nowhere, "--quiet"]), naming: nowhere,
            saying: "cannot write the report: the directory \(dir.path("missing")) does not exist")

        try Data("{\"collapse_factor\": 100,".utf8).write(to: URL(fileURLWithPath: dir.path("bad.json")))
        expectOneLine(
            try self.run(["scan", run, "--quiet", "--config", dir.path("bad.json")]), naming: dir.path("bad.json"),
            saying: "the config file is not valid JSON")
        expectOneLine(
            try self.run(["inspect", run + "/step_000060.h5", "--config", dir.path("none.json")]), naming: dir.path("none.json"),
            saying: "cannot read the config file: no such file")
        expectOneLine(
            try self.run(["scan", run, "--quiet", "--config", dir.path("out")]), naming: dir.path("out"),
            saying: "cannot read the config file: is a directory")

        for command in ["inspect", "ls"] {
            expectOneLine(try self.run([command, dir.path("absent.h5")]), naming: dir.path("absent.h5"), saying: "no such file")
        }
        expectOneLine(try self.run(["scan", dir.path("absent"), "--quiet"]), naming: dir.path("absent"), saying: "no such file or directory")

        // libhdf5's words follow the plain ones, not replace them.
        let whole = try Data(contentsOf: URL(fileURLWithPath: run + "/step_000060.h5"))
        try whole.prefix(30_000).write(to: URL(fileURLWithPath: dir.path("cut.h5")))
        let size = whole.count.formatted(.number.grouping(.automatic).locale(Locale(identifier: "en_US")))
        let cut = try self.run(["inspect", dir.path("cut.h5")])
        expectOneLine(cut, naming: dir.path("cut.h5"), saying: "truncated: 30,000 of \(size) bytes")
        #expect(cut.stderr.contains("(libhdf5: truncated file"), "\(cut.stderr)")
    }

    @Test("an empty or unusable run fails first: exit 2, one line, nothing on stdout, no report file written")
    func unusableRunFailsFirst() throws {
        let empty = try TemporaryDirectory()
        let unusable = try TemporaryDirectory()
        FileManager.default.createFile(atPath: unusable.path("step_1.h5"), contents: Data())
        FileManager.default.createFile(atPath: unusable.path("step_2.h5"), contents: Data("not hdf5\n".utf8))
        let cases: [(TemporaryDirectory, String)] = [
            (empty, "no checkpoint could be read: the directory holds no files"),
            (unusable, "no checkpoint could be read: 2 files skipped (\(unusable.path("step_1.h5")): empty file"),
        ]
        for (dir, words) in cases {
            for format in ["table", "json", "csv"] {
                let scan = try run(["scan", dir.url.path, "--format", format])
                expectOneLine(scan, naming: dir.url.path, saying: words)
                #expect(scan.stdout.isEmpty, "scan --format \(format) printed before failing: \(scan.stdout.prefix(300))")
            }
            let target = dir.path("report.html")
            let report = try run(["report", dir.url.path, "-o", target])
            expectOneLine(report, naming: dir.url.path, saying: words)
            #expect(!FileManager.default.fileExists(atPath: target), "report wrote \(target) for a run with no checkpoint")
            #expect(report.stdout.isEmpty)
        }
    }

    @Test(
        "every threshold value out of range, not a number or not a threshold is exit 2 and one line, never a crash",
        arguments: [
            "plateau_min_saves=1e19", "plateau_min_saves=-1", "collapse_factor=nan", "collapse_factor=inf", "collapse_factor=-inf",
            "update_ratio_high=-0.5", "collapse_factor=ten", "collapse_factor=", "collapse_factor", "no_such_threshold=1",
            "dead_units_warning_fraction=5", "vanishing_persistence=1.5", "collapse_factor=0.5", "exploding_growth=1e400",
        ])
    func thresholdOutOfRange(_ item: String) throws {
        for command in ["scan", "inspect"] {
            let target = command == "scan" ? samplePath("healthy") : samplePath("healthy") + "/step_000060.h5"
            let output = try run([command, target, "--quiet", "--threshold", item])
            #expect(output.status == 2, "\(command) --threshold \(item): exit \(output.status)")
            #expect(output.stdout.isEmpty)
            let lines = output.stderr.split(separator: "\n")
            #expect(lines.count == 1, "\(command) --threshold \(item): \(output.stderr)")
            #expect(output.stderr.hasPrefix("gradscope: --threshold \(item): "), "\(output.stderr)")
        }
        // The same value from a config file: one line naming the file.
        let parts = item.split(separator: "=", maxSplits: 1).map(String.init)
        if parts.count == 2, let value = Double(parts[1]), value.isFinite {
            let dir = try TemporaryDirectory()
            try Data("{\"\(parts[0])\": \(parts[1])}".utf8).write(to: URL(fileURLWithPath: dir.path("t.json")))
            expectOneLine(
                try run(["scan", samplePath("healthy"), "--quiet", "--config", dir.path("t.json")]), naming: dir.path("t.json"),
                saying: parts[0])
        }
    }
}

/// The README's two commands and CI install the Python tools' packages into the virtual
/// environment .venv/ only: Debian 12's own python3 refuses `pip install` outside one (PEP 668).
@Suite("The scripts keep Python packages in .venv/")
struct PythonEnvironmentScriptTests {
    func script(_ path: String) throws -> String {
        try String(contentsOf: packageRoot.appendingPathComponent(path), encoding: .utf8)
    }

    @Test("quickstart.sh, test.sh and .ci/run use Tools/python-env.sh and never pip-install into the system's python3")
    func scriptsUseTheVirtualEnvironment() throws {
        for path in ["Tools/quickstart.sh", "Tools/test.sh", ".ci/run"] {
            let text = try script(path)
            let commands = text.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.hasPrefix("#") }
            #expect(commands.contains(". Tools/python-env.sh"), "\(path) does not source Tools/python-env.sh")
            #expect(commands.contains("ensure_python_env"), "\(path) does not make the environment")
            #expect(!commands.contains { $0.contains("python3 -m pip") || $0.hasPrefix("pip ") }, "\(path) installs into the system's python3")
        }
        let test = try script("Tools/test.sh")
        #expect(test.contains("\"$PYTHON\" -m pytest -q Tools"), "pytest does not run in the environment")
        #expect(try script(".ci/run").hasSuffix("./Tools/test.sh\n"), ".ci/run does not end with the README's test command")

        let environment = try script("Tools/python-env.sh")
        #expect(environment.contains("VENV_DIR=\".venv\""))
        #expect(environment.contains("python3 -m venv --clear \"$VENV_DIR\""))
        #expect(environment.contains("\"$PYTHON\" -m pip install"))
        #expect(environment.contains("apt-get install -y python3-venv"))
        #expect(try script(".gitignore").split(separator: "\n").contains(".venv/"))
    }

    @Test("Tools/python-env.sh makes a working .venv/ when python3 has venv, and leaves a complete one alone")
    func environmentIsMade() throws {
        // A stand-in python3 whose venv module writes a fake environment: nothing is downloaded.
        let dir = try TemporaryDirectory()
        let bin = dir.path("bin")
        try FileManager.default.createDirectory(atPath: bin, withIntermediateDirectories: true)
        let fake = """
            #!/bin/sh
            # python3 -c …: has ensurepip and venv. python3 -m venv --clear DIR: a python that has pip and, once
            # "installed", numpy, h5py and pytest.
            if [ "$1" = "-c" ]; then exit 0; fi
            if [ "$1" = "-m" ] && [ "$2" = "venv" ]; then
                mkdir -p "$4/bin"
                printf '%s\\n' '#!/bin/sh' 'd=$(dirname "$0")' \\
                    'if [ "$1" = "-m" ] && [ "$2" = "pip" ] && [ "$3" = "install" ]; then echo "$@" >> "$d/installed"; exit 0; fi' \\
                    'if [ "$1" = "-m" ] && [ "$2" = "pip" ]; then exit 0; fi' \\
                    'if [ "$1" = "-c" ]; then [ -f "$d/installed" ]; exit $?; fi' > "$4/bin/python"
                chmod +x "$4/bin/python"
                exit 0
            fi
            echo "error: externally-managed-environment" >&2
            exit 1
            """
        FileManager.default.createFile(atPath: bin + "/python3", contents: Data(fake.utf8), attributes: [.posixPermissions: 0o755])
        let work = dir.path("repo")
        try FileManager.default.createDirectory(atPath: work + "/Tools", withIntermediateDirectories: true)
        try FileManager.default.copyItem(
            atPath: packageRoot.appendingPathComponent("Tools/python-env.sh").path, toPath: work + "/Tools/python-env.sh")
        func ensure() throws -> (Int32, String) {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: "/bin/bash")
            process.arguments = ["-c", "set -euo pipefail; . Tools/python-env.sh; ensure_python_env; echo \"$PYTHON\""]
            process.currentDirectoryURL = URL(fileURLWithPath: work)
            process.environment = ["PATH": bin + ":/usr/bin:/bin", "HOME": dir.url.path]
            let out = Pipe()
            process.standardOutput = out
            process.standardError = FileHandle.nullDevice
            try process.run()
            let text = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            process.waitUntilExit()
            return (process.terminationStatus, text)
        }
        let (status, output) = try ensure()
        #expect(status == 0, "\(output)")
        #expect(output.hasSuffix(".venv/bin/python\n"), "\(output)")
        let installed = try String(contentsOfFile: work + "/.venv/bin/installed", encoding: .utf8)
        #expect(installed.contains("numpy h5py pytest"), "\(installed)")
        // A second run finds everything in place and installs nothing more.
        let (again, _) = try ensure()
        #expect(again == 0)
        #expect(try String(contentsOfFile: work + "/.venv/bin/installed", encoding: .utf8) == installed)
    }
}
