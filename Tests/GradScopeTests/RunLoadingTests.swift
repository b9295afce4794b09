import ElementTypes
import Foundation
import GradScopeDiagnosis
import GradScopeMeasurement
import GradScopeModel
import GradScopeRendering
import GradScopeSources
import GradScopeStatistics
import HDF5
import HDF5Writer
import TestSupport
import Testing

@Suite("Runs: step discovery, ordering and skipped files")
struct RunLoadingTests {
    func writeNative(_ path: String, step: Int?, value: Double = 0.1) throws {
        let w = try HDF5Writer(creating: path)
        try w.setAttribute("format", .string("gradscope/1", .variableUTF8), at: "/")
        if let step { try w.setAttribute("step", .int(Int64(step)), at: "/") }
        try w.write("/weights/fc.weight", [Double](repeating: value, count: 4), shape: [2, 2])
    }

    @Test("files are ordered by the step inside them, not by name")
    func ordering() throws {
        let dir = try TemporaryDirectory()
        try writeNative(dir.path("b.h5"), step: 10)
        try writeNative(dir.path("a.h5"), step: 200)
        try writeNative(dir.path("c.h5"), step: 9)
        let run = try RunLoader.load(dir.url.path)
        #expect(run.steps == [9, 10, 200])
        #expect(run.checkpoints.map { ($0.source as NSString).lastPathComponent } == ["c.h5", "b.h5", "a.h5"])
    }

    @Test("without a step attribute the last number in the file name is the step")
    func fileNameSteps() throws {
        let dir = try TemporaryDirectory()
        try writeNative(dir.path("ckpt-epoch3-step100.h5"), step: nil)
        try writeNative(dir.path("ckpt-epoch3-step20.h5"), step: nil)
        let run = try RunLoader.load(dir.url.path)
        #expect(run.steps == [20, 100])
        #expect(run.checkpoints.allSatisfy { $0.metadata.stepSource == .fileName })
    }

    @Test("step numbers in file names: labelled steps first, then epochs, never decimals or metrics")
    func fileNameStepParsing() {
        func parse(_ stem: String) -> String {
            guard let found = LayoutSupport.stepInFileName(stem) else { return "none" }
            return "\(found.number)" + (found.isStep ? " step" : found.isEpoch ? " epoch" : "")
        }
        // Keras's documented ModelCheckpoint pattern, weights.{epoch:02d}-{val_loss:.2f}.
        #expect(parse("weights.03-0.45") == "3")
        #expect(parse("model.12-1.37.weights") == "12")
        #expect(parse("ckpt-epoch3-step1200") == "1200 step")
        #expect(parse("epoch=2-step=400") == "400 step")
        #expect(parse("model_global_step_9000") == "9000 step")
        #expect(parse("iter-500_loss0.123") == "500 step")
        #expect(parse("checkpoint_epoch_7") == "7 epoch")
        #expect(parse("model_ep05_acc97") == "5 epoch")
        #expect(parse("run_lr1e-4_00300") == "300")
        #expect(parse("ckpt-000500") == "500")
        #expect(parse("resnet50-0003") == "3")
        #expect(parse("model_05_0.123") == "5")
        #expect(parse("best_model") == "none")
        #expect(parse("loss0.25") == "none")
        // Hashes and UUIDs are identifiers; Keras's {batch} is the batch within the epoch, not a step.
        #expect(parse("ckpt-043b27b6") == "none")
        #expect(parse("ckpt-epoch02-batch0010") == "2 epoch")
        #expect(LayoutSupport.stepInFileName("model_20240501-235730")?.key == [20240501, 235730])
        #expect(LayoutSupport.stepInFileName("gru-02-0010")?.key == [2, 10])
    }

    @Test("names whose numbers repeat or disagree with the order of all their numbers: ordered by all of them, nothing dropped")
    func fileNameTuples() throws {
        // Keras save_freq=N with {epoch}-{batch}: the batch restarts every epoch.
        let keras = try TemporaryDirectory()
        let kerasNames = ["gru-01-0010.h5", "gru-01-0020.h5", "gru-02-0010.h5", "gru-02-0020.h5", "gru-10-0010.h5"]
        for (index, name) in kerasNames.reversed().enumerated() { try writeNative(keras.path(name), step: nil, value: Double(index)) }
        let kerasRun = try RunLoader.load(keras.url.path)
        #expect(kerasRun.checkpoints.map { ($0.source as NSString).lastPathComponent } == kerasNames)
        #expect(kerasRun.steps == [0, 1, 2, 3, 4])
        #expect(kerasRun.skipped.isEmpty)
        #expect(RunMeasurer.measure(kerasRun).stepsCountUpdates == false)

        // Time stamps across midnight: the time of day alone would put the second day first.
        let stamped = try TemporaryDirectory()
        let stampedNames = ["model_20240501-235730.h5", "model_20240501-235945.h5", "model_20240502-000030.h5", "model_20240502-000245.h5"]
        for name in stampedNames { try writeNative(stamped.path(name), step: nil) }
        #expect(try RunLoader.load(stamped.url.path).checkpoints.map { ($0.source as NSString).lastPathComponent } == stampedNames)

        // Hash names: no numbers at all, so the files' modification times order them, and none is dropped.
        let hashed = try TemporaryDirectory()
        let hashNames = ["ckpt-d9c2825f.h5", "ckpt-043b27b6.h5", "ckpt-4510bdf8.h5"]
        for (index, name) in hashNames.enumerated() {
            try writeNative(hashed.path(name), step: nil)
            try FileManager.default.setAttributes(
                [.modificationDate: Date(timeIntervalSince1970: 1_700_000_000 + Double(index) * 60)],
                ofItemAtPath: hashed.path(name))
        }
        let hashedRun = try RunLoader.load(hashed.url.path)
        #expect(hashedRun.checkpoints.map { ($0.source as NSString).lastPathComponent } == hashNames)
        #expect(hashedRun.skipped.isEmpty)

        // A copy of one save (`step_300.bak`) keeps the real steps, the copy dropped as before.
        let copied = try TemporaryDirectory()
        for name in ["step_100.h5", "step_200.h5", "step_300.h5", "step_300.bak"] { try writeNative(copied.path(name), step: nil) }
        let copiedRun = try RunLoader.load(copied.url.path)
        #expect(copiedRun.steps == [100, 200, 300])
        #expect(copiedRun.skipped.filter { $0.reason.contains("duplicate step 300") }.count == 1)

        // UUIDs and overlong digit runs are no steps; a label glued to its number still is.
        #expect(LayoutSupport.stepInFileName("ckpt-f47ac10b-58cc-4372-a567-0e02b2c3d479") == nil)
        #expect(LayoutSupport.stepInFileName("run_1000000000000000000") == nil)
        #expect(LayoutSupport.stepInFileName("model_e00100")?.number == 100)
        #expect(LayoutSupport.stepInFileName("model_best_0010")?.number == 10)
    }

    @Test("a multi-step file with /epoch_N groups counts epochs, not updates, and epoch 0 is not the initialisation")
    func epochGroups() throws {
        let dir = try TemporaryDirectory()
        let path = dir.path("run.h5")
        do {
            let w = try HDF5Writer(creating: path)
            for epoch in 0..<3 { try w.write("/epoch_\(epoch)/fc.weight", [Double](repeating: 5, count: 4), shape: [2, 2]) }
        }
        let run = try RunLoader.load(path)
        #expect(run.steps == [0, 1, 2])
        #expect(run.checkpoints.allSatisfy { $0.metadata.stepSource == .epoch })
        let measurements = RunMeasurer.measure(run)
        #expect(measurements.stepsCountUpdates == false)
        #expect(measurements.startsAtInitialisation == false)
    }

    @Test("Keras ModelCheckpoint names order the run by epoch, and epochs are not taken for optimizer steps")
    func kerasCheckpointNames() throws {
        let dir = try TemporaryDirectory()
        // val_loss falls as training goes on: the last number would put the run backwards.
        for (epoch, loss) in [(1, "0.69"), (2, "0.52"), (3, "0.31"), (10, "0.12")] {
            try writeNative(dir.path(String(format: "weights.%02d-%@.h5", epoch, loss)), step: nil, value: Double(epoch))
        }
        let run = try RunLoader.load(dir.url.path)
        #expect(run.steps == [1, 2, 3, 10])
        #expect(run.checkpoints.allSatisfy { $0.metadata.stepSource == .fileName })
        #expect(RunMeasurer.measure(run).stepsCountUpdates == false)

        let labelled = try TemporaryDirectory()
        for step in [100, 200] { try writeNative(labelled.path("model_step_\(step).h5"), step: nil) }
        #expect(RunMeasurer.measure(try RunLoader.load(labelled.url.path)).stepsCountUpdates)
    }

    @Test("an epoch attribute orders files that hold no step")
    func epochAttribute() throws {
        let dir = try TemporaryDirectory()
        for (name, epoch) in [("final.h5", 3), ("a.h5", 1), ("b.h5", 2)] {
            let w = try HDF5Writer(creating: dir.path(name))
            try w.setAttribute("epoch", .int(Int64(epoch)), at: "/")
            try w.write("/fc.weight", [Double](repeating: 0.1, count: 4), shape: [2, 2])
        }
        let run = try RunLoader.load(dir.url.path)
        #expect(run.steps == [1, 2, 3])
        #expect(run.checkpoints.map { ($0.source as NSString).lastPathComponent } == ["a.h5", "b.h5", "final.h5"])
        #expect(run.checkpoints.allSatisfy { $0.metadata.stepSource == .epoch })
        #expect(RunMeasurer.measure(run).stepsCountUpdates == false)
    }

    @Test("a Keras CSVLogger file beside the checkpoints gives them their loss, and the plateau at ln 2 is found")
    func csvLoggerLoss() throws {
        let dir = try TemporaryDirectory()
        var noise = SplitMix64(state: 21)
        var log = "epoch,accuracy,loss,val_accuracy,val_loss\n"
        for epoch in 0..<8 {
            // ModelCheckpoint's {epoch} counts from 1, CSVLogger's epoch column from 0.
            let name = String(format: "weights.%02d-0.69.h5", epoch + 1)
            let w = try HDF5Writer(creating: dir.path(name))
            try w.write("/fc1.weight", noise.normals(64, std: 0.3), shape: [8, 8])
            try w.write("/out.weight", noise.normals(8, std: 0.3), shape: [1, 8])
            log += "\(epoch),0.5,\(0.6931 + 0.001 * Double(epoch % 2)),0.5,0.6932\n"
        }
        try Data(log.utf8).write(to: URL(fileURLWithPath: dir.path("training.log")))
        let run = try RunLoader.load(dir.url.path)
        #expect(run.checkpoints.allSatisfy { $0.metadata.loss != nil })
        #expect(run.notes.contains { $0.contains("training.log") })
        #expect(!run.skipped.contains { $0.item.hasSuffix("training.log") })
        let (report, _) = try Analysis.scan(dir.url.path)
        #expect(report.findings(.lossPlateau).first?.severity == .error)
        #expect(report.findings(.lossPlateau).first?.evidence["classes"] == .int(2))

        // Not a loss log: no loss column. It is skipped as before.
        let other = try TemporaryDirectory()
        try writeNative(other.path("step_1.h5"), step: 1)
        try Data("epoch,accuracy\n0,0.5\n".utf8).write(to: URL(fileURLWithPath: other.path("metrics.csv")))
        let otherRun = try RunLoader.load(other.url.path)
        #expect(otherRun.skipped.contains { $0.item.hasSuffix("metrics.csv") })
        #expect(LossLog.parse("step\tloss\n100\t0.5\n200\tnan\n", file: "x.tsv")?.rows.map(\.number) == [100, 200])
        #expect(LossLog.parse("no,header\n1,2\n", file: "x.csv") == nil)
        // A byte-order mark before the header (Excel's CSV UTF-8), Windows line ends.
        #expect(LossLog.parse("\u{FEFF}epoch,loss\r\n0,0.7\r\n1,0.6\r\n", file: "x.csv")?.rows.map(\.loss) == [0.7, 0.6])

        // A log indexed by step is not matched to files whose numbers are epochs.
        let epochs = try TemporaryDirectory()
        for epoch in 1...3 { try writeNative(epochs.path(String(format: "weights.%02d.h5", epoch)), step: nil) }
        try Data("step,loss\n1,0.9\n2,0.8\n3,0.7\n".utf8).write(to: URL(fileURLWithPath: epochs.path("metrics.csv")))
        let epochRun = try RunLoader.load(epochs.url.path)
        #expect(epochRun.checkpoints.allSatisfy { $0.metadata.loss == nil })
        #expect(epochRun.notes.contains { $0.contains("cannot be matched") })
    }

    @Test("files that are not checkpoints are skipped with a reason, the others still read")
    func skipped() throws {
        let dir = try TemporaryDirectory()
        try writeNative(dir.path("step_1.h5"), step: 1)
        try writeNative(dir.path("step_2.h5"), step: 2)
        FileManager.default.createFile(atPath: dir.path("notes.h5"), contents: Data("just text\n".utf8))
        FileManager.default.createFile(atPath: dir.path("empty.h5"), contents: Data())
        FileManager.default.createFile(atPath: dir.path(".step_3.h5.tmp"), contents: Data([0x89, 0x48]))
        FileManager.default.createFile(atPath: dir.path("config.json"), contents: Data("{}".utf8))
        let data = try Data(contentsOf: URL(fileURLWithPath: dir.path("step_2.h5")))
        try data.prefix(data.count / 3).write(to: URL(fileURLWithPath: dir.path("step_4.h5")))
        try FileManager.default.createDirectory(atPath: dir.path("logs"), withIntermediateDirectories: true)
        try FileManager.default.createSymbolicLink(atPath: dir.path("loop.h5"), withDestinationPath: dir.path("loop.h5"))
        let run = try RunLoader.load(dir.url.path)
        #expect(run.steps == [1, 2])
        func reason(_ name: String) -> String? { run.skipped.first { ($0.item as NSString).lastPathComponent == name }?.reason }
        #expect(reason("notes.h5")?.contains("not an HDF5 file") == true)
        #expect(reason("empty.h5")?.contains("empty") == true)
        #expect(reason(".step_3.h5.tmp")?.contains("temporary") == true)
        #expect(reason("config.json") != nil)
        #expect(reason("step_4.h5")?.contains("truncated") == true)
        #expect(reason("logs")?.contains("directory") == true)
        #expect(reason("loop.h5") != nil)
    }

    @Test("duplicate steps and foreign HDF5 files are reported")
    func duplicatesAndForeign() throws {
        let dir = try TemporaryDirectory()
        try writeNative(dir.path("a.h5"), step: 5)
        try writeNative(dir.path("b.h5"), step: 5)
        try writeNative(dir.path("c.h5"), step: 6)
        let run = try RunLoader.load(dir.url.path)
        #expect(run.steps == [5, 6])
        #expect(run.skipped.contains { $0.reason.contains("duplicate step 5") })
        if let netcdf = corpusFile("other-hdf5/noaa-cloud-top-height.nc") {
            do {
                _ = try CheckpointLoader.load(netcdf)
                Issue.record("a netCDF file loaded as a checkpoint")
            } catch let error as CheckpointError {
                #expect(error.reason.contains("netCDF"))
            }
        }
    }

    @Test("tensor changes are told at the steps where the list changes, and only there")
    func tensorChangesAtTheirSteps() {
        func tensor(_ name: String, _ shape: [Int], _ role: TensorRole = .weight, _ dtype: ElementType = .float32) -> TensorRef {
            TensorRef(name: name, layer: name, role: role, shape: shape, dtype: dtype, unitAxis: nil, path: "/" + name)
        }
        func save(_ step: Int, _ tensors: [TensorRef]) -> Checkpoint {
            Checkpoint(source: "s\(step)", layout: .generic, metadata: StepMetadata(step: step), tensors: tensors, layers: [])
        }
        let base = [tensor("a", [2]), tensor("b", [3])]
        let reordered = [tensor("b", [3]), tensor("a", [2])]
        let grown = base + [tensor("c", [1])]
        let reshaped = [tensor("a", [4]), tensor("b", [3]), tensor("c", [1])]
        let retyped = [tensor("a", [4], .weight, .float64), tensor("b", [3]), tensor("c", [1])]
        let steps = [base, base, reordered, grown, grown, reshaped, retyped, [tensor("a", [4], .weight, .float64)]]
        let notes = RunLoader.tensorChanges(steps.enumerated().map { save(($0.offset + 1) * 10, $0.element) })
        #expect(
            notes == [
                "step 40: 1 tensor(s) appear: weight:c", "step 60: 1 tensor(s) change shape or dtype: weight:a",
                "step 70: 1 tensor(s) change shape or dtype: weight:a", "step 80: 2 tensor(s) disappear: weight:b, weight:c",
            ])
        #expect(RunLoader.tensorChanges([save(1, base), save(2, base), save(3, base)]).isEmpty)
    }

    @Test("saves sharing one described tensor list and saves with copies of it are grouped by model alike")
    func modelGroupsWithSharedLists() {
        func tensor(_ name: String, _ shape: [Int]) -> TensorRef {
            TensorRef(name: name, layer: name, role: .weight, shape: shape, dtype: .float32, unitAxis: nil, path: "/" + name)
        }
        func save(_ step: Int, _ tensors: [TensorRef]) -> Checkpoint {
            Checkpoint(source: "s\(step)", layout: .generic, metadata: StepMetadata(step: step), tensors: tensors, layers: [])
        }
        let modelA = [tensor("a1", [4, 3]), tensor("a2", [3]), tensor("a3", [3, 2])]
        let modelB = [tensor("b1", [5, 5]), tensor("b2", [5]), tensor("b3", [5, 1])]
        // The same contents in storage of their own, as a save described on its own would have them.
        let copyOfA = modelA.map { tensor($0.name, $0.shape) }
        let headReplaced = [modelA[0], modelA[1], tensor("a3", [3, 7])]
        let saves = [save(1, modelA), save(2, modelB), save(3, modelA), save(4, modelB), save(5, copyOfA), save(6, modelA), save(7, headReplaced)]
        let groups = RunLoader.modelGroups(saves.shuffled())
        #expect(groups.map { $0.map(\.source) } == [["s1", "s3", "s5", "s6", "s7"], ["s2", "s4"]])
        // A list shared by every save of one model, after another model's saves: still its own group.
        let later = RunLoader.modelGroups([save(1, modelB), save(2, modelA), save(3, modelA), save(4, modelB)])
        #expect(later.map { $0.map(\.source) } == [["s1", "s4"], ["s2", "s3"]])
    }

    @Test("tensors that appear or change shape between steps are noted, not fatal")
    func changingTensors() throws {
        let dir = try TemporaryDirectory()
        try writeNative(dir.path("s1.h5"), step: 1)
        do {
            let w = try HDF5Writer(creating: dir.path("s2.h5"))
            try w.setAttribute("format", .string("gradscope/1", .variableUTF8), at: "/")
            try w.setAttribute("step", .int(2), at: "/")
            try w.write("/weights/fc.weight", [Double](repeating: 0.1, count: 6), shape: [3, 2])
            try w.write("/weights/extra.weight", [1, 2], shape: [2])
        }
        let run = try RunLoader.load(dir.url.path)
        #expect(run.steps == [1, 2])
        #expect(run.notes.contains { $0.contains("appear") && $0.contains("extra.weight") })
        #expect(run.notes.contains { $0.contains("change shape") })
        let measurements = RunMeasurer.measure(run)
        #expect(measurements.records.count == 2)
        #expect(measurements.records[1].weight("fc.weight")?.drift == nil)
    }

    @Test("equally common layouts in one folder: the file first by name decides, the same every time")
    func layoutTieIsStable() throws {
        let path = samplePath("keras-mixed-precision-final")
        for _ in 0..<6 {
            let run = try RunLoader.load(path)
            #expect(run.checkpoints.map(\.layout) == [.kerasLegacy])
            #expect(run.checkpoints.first?.source.hasSuffix("final.h5") == true)
            #expect(run.notes.contains { $0.hasPrefix("mixed layouts in one run (1 keras-legacy, 1 keras3); analysed the keras-legacy files") })
        }
    }

}
