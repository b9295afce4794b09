import ElementTypes
import Foundation
import GradScopeModel
import HDF5

/// Finds and orders the checkpoints of a run.
public enum RunLoader {
    /// Reads a run from a directory of checkpoint files (any names, sorted by
    /// step), or from one file holding one group per step, or from a single
    /// checkpoint file (a run of one step). Files that cannot be used are
    /// listed in `skipped` with the reason; the others are still read.
    /// `progress` is called after each file with (files done, total, bytes done, total bytes).
    public static func load(
        _ path: String, options: LoadOptions = LoadOptions(),
        progress: ((Int, Int, Int, Int) -> Void)? = nil
    ) throws -> Run {
        try load(path, progress: progress) { files, done in
            files.enumerated().map { index, file in
                defer { done(index, index + 1) }
                do {
                    return .success(try CheckpointLoader.load(file, options: options))
                } catch let error as CheckpointError {
                    return .failure(error)
                } catch {
                    return .failure(CheckpointError(file: file, reason: Failures.reason(for: error)))
                }
            }
        }
    }

    /// The same, with each file read by `loadFiles` (which may read them in
    /// other processes and in parallel): it returns, for each file, its
    /// checkpoints or the reason it could not be used.
    public static func load(
        _ path: String, progress: ((Int, Int, Int, Int) -> Void)? = nil,
        loadFiles: ([String], (Int, Int) -> Void) -> [Result<[Checkpoint], CheckpointError>]
    ) throws -> Run {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
            throw CheckpointError(file: path, reason: "no such file or directory")
        }
        try CheckpointLoader.refuseIrregular(path)
        var skipped: [SkippedItem] = []
        var checkpoints: [Checkpoint] = []
        var logs: [LossLog] = []
        // A folder that is itself one Trainer save (`checkpoint-500/`, or `save_pretrained`'s output) is a run of one save.
        let singleSave = isDirectory.boolValue && TrainerFolder.isSave(path) && !hasCheckpointFolders(path)
        if isDirectory.boolValue && !singleSave {
            let files = try candidateFiles(in: path, skipped: &skipped, logs: &logs)
            let sizes = files.map {
                TrainerFolder.isDirectory($0)
                    ? TrainerFolder.byteSize($0) : FileIdentity.of($0).0
            }
            let totalBytes = sizes.reduce(0, +)
            var doneBytes = 0
            let results = loadFiles(files) { index, done in
                doneBytes += sizes[index]
                progress?(done, files.count, doneBytes, totalBytes)
            }
            for (file, result) in zip(files, results) {
                switch result {
                case .success(let loaded): checkpoints.append(contentsOf: loaded)
                case .failure(let error): skipped.append(SkippedItem(item: file, kind: .unreadable, reason: error.reason))
                }
            }
        } else {
            switch loadFiles([path], { _, _ in progress?(1, 1, 0, 0) }).first {
            case .success(let loaded)?: checkpoints = loaded
            case .failure(let error)?: throw error
            case nil: throw CheckpointError(file: path, reason: "not read")
            }
        }
        var run = assemble(source: path, checkpoints: checkpoints, skipped: skipped)
        // Trainer saves carry the run's whole training log: every logging step's loss, gradient norm and learning rate.
        run.trainingLog = TrainerFolder.trainingLog(of: run.checkpoints)
        for index in run.otherModels.indices {
            run.otherModels[index].trainingLog = TrainerFolder.trainingLog(of: run.otherModels[index].checkpoints)
        }
        // Checkpoints without a loss (Keras never saves it) take it from a training log beside them.
        if let log = logs.first, run.checkpoints.contains(where: { $0.metadata.loss == nil }), let note = log.apply(to: &run.checkpoints) {
            run.notes.append(note)
            for extra in logs.dropFirst() {
                run.skipped.append(
                    SkippedItem(
                        item: extra.file, kind: .superseded, reason: "a second loss log; only \((log.file as NSString).lastPathComponent) is used"))
            }
        }
        return run
    }

    /// Orders loaded checkpoints into a run: mixed layouts, missing and duplicate steps are reported.
    package static func assemble(source path: String, checkpoints loaded: [Checkpoint], skipped initial: [SkippedItem]) -> Run {
        var checkpoints = loaded
        var skipped = initial
        var notes: [String] = []
        for checkpoint in checkpoints {
            skipped.append(contentsOf: checkpoint.skipped.filter { $0.kind != .metadata })
        }
        guard !checkpoints.isEmpty else {
            return Run(source: path, checkpoints: [], skipped: skipped, notes: ["no checkpoint could be read"])
        }

        // Mixed layouts: keep the most common one, report the rest.
        // Among equally common layouts, the one of the file first by name (a dictionary's order
        // would change from run to run).
        let layoutCounts = Dictionary(grouping: checkpoints, by: \.layout).mapValues(\.count)
        let firstFile = { (layout: LayoutKind) in checkpoints.firstIndex { $0.layout == layout } ?? Int.max }
        if layoutCounts.count > 1,
            let main = layoutCounts.max(by: { a, b in a.value != b.value ? a.value < b.value : firstFile(a.key) > firstFile(b.key) })?.key
        {
            notes.append(
                "mixed layouts in one run (\(layoutCounts.map { "\($0.value) \($0.key.rawValue)" }.sorted().joined(separator: ", "))); analysed the \(main.rawValue) files"
            )
            for checkpoint in checkpoints where checkpoint.layout != main {
                skipped.append(
                    SkippedItem(
                        item: checkpoint.source, kind: .superseded, reason: "\(checkpoint.layout.rawValue) layout in a run of \(main.rawValue) files")
                )
            }
            checkpoints = checkpoints.filter { $0.layout == main }
        }

        // Steps: from the files, else their position; sorted by step, then by modification time.
        let missing = checkpoints.filter { $0.metadata.step == nil }
        if !missing.isEmpty {
            if missing.count == checkpoints.count {
                let byTime = checkpoints.indices.sorted { a, b in
                    (checkpoints[a].modified ?? .distantPast, checkpoints[a].source) < (
                        checkpoints[b].modified ?? .distantPast, checkpoints[b].source
                    )
                }
                for (position, index) in byTime.enumerated() {
                    checkpoints[index].metadata.step = position
                    checkpoints[index].metadata.stepSource = .position
                }
                if checkpoints.count > 1 {
                    notes.append("no step numbers in the files or their names: steps are the files' order by modification time")
                }
            } else {
                for checkpoint in missing {
                    skipped.append(
                        SkippedItem(item: checkpoint.source, kind: .superseded, reason: "no step number, in a run whose other files have one"))
                }
                checkpoints = checkpoints.filter { $0.metadata.step != nil }
            }
        }
        // Steps read from file names that repeat, or that disagree with the order of all the numbers in
        // the names (a date and a time, `gru-{epoch}-{batch}` with Keras's batch within the epoch): the
        // files are ordered by all those numbers, and their steps are their positions in that order.
        if checkpoints.count > 1, checkpoints.allSatisfy({ $0.metadata.nameKey != nil }) {
            let order = checkpoints.indices.sorted { a, b in
                let keyA = checkpoints[a].metadata.nameKey ?? [], keyB = checkpoints[b].metadata.nameKey ?? []
                if keyA != keyB { return keyA.lexicographicallyPrecedes(keyB) }
                return numericAwareLess(checkpoints[a].source, checkpoints[b].source)
            }
            let byKey = order.map { checkpoints[$0] }
            let steps = byKey.map { $0.metadata.step ?? 0 }
            let keys = byKey.map { $0.metadata.nameKey ?? [] }
            // Renumbered only when the other numbers tell the files apart: equal keys (`step_300.h5` and
            // `step_300.bak`, `ckpt-300-final.h5`) are copies of one save, and labelled steps that repeat
            // are duplicates, both dropped below as before.
            let keysSeparate = zip(keys, keys.dropFirst()).allSatisfy { $0 != $1 }
            let allLabelled = byKey.allSatisfy(StepCounting.countsUpdates)
            if keysSeparate && !allLabelled && !zip(steps, steps.dropFirst()).allSatisfy({ $0 < $1 }) {
                for (position, index) in order.enumerated() {
                    checkpoints[index].metadata.step = position
                    checkpoints[index].metadata.stepSource = .position
                }
                notes.append(
                    "the step numbers in the file names repeat or are out of order (a date and a time, or a batch number within each epoch): steps are the files' order by all the numbers in their names"
                )
            }
        }
        // Several models in one folder: each is a run of its own.
        let models = modelGroups(checkpoints)
        if models.count > 1 {
            var runs = models.map { model -> Run in
                var modelSkipped: [SkippedItem] = []
                var modelNotes: [String] = []
                let unique = ordered(model, skipped: &modelSkipped, notes: &modelNotes)
                return Run(source: path, checkpoints: unique, skipped: modelSkipped, notes: modelNotes)
            }
            let primary = newestModel(runs)
            var run = runs.remove(at: primary)
            let others = runs
            run.skipped = skipped + run.skipped
            run.notes =
                notes + [
                    "the folder holds \(models.count) different models (most tensor names or shapes differ between their saves): each is judged on its own; the table and findings are those of the model with the newest files (\(run.checkpoints.count) saves), the others are listed under models"
                ] + run.notes
            run.otherModels = others
            return run
        }
        let unique = ordered(checkpoints, skipped: &skipped, notes: &notes)
        return Run(source: path, checkpoints: unique, skipped: skipped, notes: notes)
    }

    /// One model's checkpoints sorted by step, a step saved twice kept once (the file first by name;
    /// the other listed as superseded, and the choice noted), and the tensors that come and go noted.
    package static func ordered(_ loaded: [Checkpoint], skipped: inout [SkippedItem], notes: inout [String]) -> [Checkpoint] {
        var checkpoints = loaded
        checkpoints.sort { a, b in
            let stepA = a.metadata.step ?? 0, stepB = b.metadata.step ?? 0
            if stepA != stepB { return stepA < stepB }
            return numericAwareLess(a.source, b.source)
        }
        var unique: [Checkpoint] = []
        var duplicates: [String] = []
        for checkpoint in checkpoints {
            if let last = unique.last, last.metadata.step == checkpoint.metadata.step {
                skipped.append(
                    SkippedItem(
                        item: checkpoint.source, kind: .superseded,
                        reason:
                            "duplicate step \(checkpoint.metadata.step ?? 0) (also in \(last.source)); \(last.source) is used, being first by file name"
                    ))
                duplicates.append("step \(checkpoint.metadata.step ?? 0): \(last.source) used, \(checkpoint.source) skipped")
                continue
            }
            unique.append(checkpoint)
        }
        if !duplicates.isEmpty {
            notes.append(
                "\(duplicates.count) step(s) saved in two files of the same model; the file first by name is used (a step read from a file or its name does not say which save is the later): "
                    + duplicates.prefix(3).joined(separator: "; ") + (duplicates.count > 3 ? "; and \(duplicates.count - 3) more" : ""))
        }
        notes.append(contentsOf: tensorChanges(unique))
        return unique
    }

    /// What tells a model apart: its weights' names and shapes (every tensor's when it has no weight).
    package static func signature(_ checkpoint: Checkpoint) -> Set<String> {
        let weights = checkpoint.tensors(.weight)
        return Set((weights.isEmpty ? checkpoint.tensors : weights).map { "\($0.name)|\($0.shape)" })
    }

    /// Whether two signatures are one model's: they share at least half of the larger one's tensors by
    /// name and shape (as `diff` judges two files). A model keeps its parameters across saves; a few
    /// may be added, dropped or reshaped (a head replaced for fine-tuning), not most of them.
    /// A save of one or two tensors is too small to tell: a reshaped weight there is noted as such,
    /// never read as another model.
    package static func sameModel(_ a: Set<String>, _ b: Set<String>) -> Bool {
        if min(a.count, b.count) < 3 { return true }
        let shared = a.intersection(b).count
        return shared > 0 && 2 * shared >= max(a.count, b.count)
    }

    /// The checkpoints grouped by model, in the order each model first appears (by step, then file
    /// name); a save with no tensor to compare joins the first model.
    package static func modelGroups(_ checkpoints: [Checkpoint]) -> [[Checkpoint]] {
        guard checkpoints.count > 1 else { return [checkpoints] }
        let order = checkpoints.indices.sorted { a, b in
            let stepA = checkpoints[a].metadata.step ?? 0, stepB = checkpoints[b].metadata.step ?? 0
            return stepA != stepB ? stepA < stepB : numericAwareLess(checkpoints[a].source, checkpoints[b].source)
        }
        var groups: [(reference: Set<String>, tensors: [TensorRef], members: [Checkpoint])] = []
        // Saves of one model share their described tensor list (``DescriptionInterner``): its
        // signature is built once, not once per save.
        var last: (tensors: [TensorRef], signature: Set<String>)?
        for index in order {
            let checkpoint = checkpoints[index]
            let own: Set<String>
            if let last, DescriptionInterner.same(last.tensors, checkpoint.tensors) {
                own = last.signature
            } else {
                own = signature(checkpoint)
                last = (checkpoint.tensors, own)
            }
            if own.isEmpty, !groups.isEmpty {
                groups[0].members.append(checkpoint)
                continue
            }
            // A signature is its own model's (the same list: no need to compare the sets).
            if let match = groups.firstIndex(where: { DescriptionInterner.same($0.tensors, checkpoint.tensors) || sameModel($0.reference, own) }) {
                groups[match].members.append(checkpoint)
                groups[match].reference = own
                groups[match].tensors = checkpoint.tensors
            } else {
                groups.append((own, checkpoint.tensors, [checkpoint]))
            }
        }
        return groups.map(\.members)
    }

    /// The model whose files are the newest (the run being trained now, or the one that replaced the
    /// others); among equals, the one with the most saves, then the later one.
    package static func newestModel(_ runs: [Run]) -> Int {
        func newest(_ run: Run) -> Date { run.checkpoints.compactMap(\.modified).max() ?? .distantPast }
        var best = 0
        for index in runs.indices.dropFirst() {
            let a = (newest(runs[index]), runs[index].checkpoints.count), b = (newest(runs[best]), runs[best].checkpoints.count)
            if a.0 > b.0 || (a.0 == b.0 && a.1 >= b.1) { best = index }
        }
        return best
    }

    /// Whether `directory` holds a Trainer's `checkpoint-<step>/` folders.
    static func hasCheckpointFolders(_ directory: String) -> Bool {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        return names.contains {
            TrainerFolder.checkpointNumber($0) != nil && TrainerFolder.isDirectory((directory as NSString).appendingPathComponent($0))
        }
    }

    /// Regular files in a directory, numeric-aware sorted; hidden and temporary
    /// files (a save in progress) and sub-directories are listed as skipped.
    /// Loss logs found beside the checkpoints (LossLog) go to `logs`. A Trainer
    /// output directory gives its `checkpoint-<step>/` folders instead, one save each.
    package static func candidateFiles(in directory: String, skipped: inout [SkippedItem], logs: inout [LossLog]) throws -> [String] {
        let names: [String]
        do {
            names = try FileManager.default.contentsOfDirectory(atPath: directory)
        } catch {
            throw CheckpointError(file: directory, reason: "cannot list the directory: \(Failures.plain(error))")
        }
        if names.contains(where: {
            TrainerFolder.checkpointNumber($0) != nil && TrainerFolder.isDirectory((directory as NSString).appendingPathComponent($0))
        }) {
            return trainerFolders(in: directory, names: names.sorted(by: numericAwareLess), skipped: &skipped)
        }
        var files: [String] = []
        var shardManifests: [String] = []
        for name in names.sorted(by: numericAwareLess) {
            let path = (directory as NSString).appendingPathComponent(name)
            var isDirectory: ObjCBool = false
            let exists = FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory)
            if !exists {
                skipped.append(SkippedItem(item: path, reason: "cannot be followed (a dangling or looping symbolic link)"))
                continue
            }
            if isDirectory.boolValue {
                skipped.append(SkippedItem(item: path, reason: "a directory (runs are read one directory deep)"))
                continue
            }
            if let kind = FileProbe.irregularKind(path) {
                skipped.append(SkippedItem(item: path, reason: CheckpointLoader.irregularReason(kind)))
                continue
            }
            if name.hasPrefix(".") || name.hasSuffix(".tmp") || name.hasSuffix(".part") || name.hasSuffix(".partial") {
                skipped.append(SkippedItem(item: path, reason: "a hidden or temporary file (a save still in progress?)"))
                continue
            }
            if name.hasSuffix(".weights.json") || name.hasSuffix(".safetensors.index.json") {
                shardManifests.append(path)
                continue
            }
            let lower = name.lowercased()
            if lower.hasSuffix(".log") || lower.hasSuffix(".csv") || lower.hasSuffix(".tsv"), let log = LossLog.read(path) {
                logs.append(log)
                continue
            }
            if lower.hasSuffix(".json") || lower.hasSuffix(".txt") || lower.hasSuffix(".md") || lower.hasSuffix(".log")
                || lower.hasSuffix(".csv") || lower.hasSuffix(".tsv") || lower.hasSuffix(".yaml") || lower.hasSuffix(".yml") || lower.hasSuffix(".py")
            {
                skipped.append(SkippedItem(item: path, reason: "not a checkpoint file (\((name as NSString).pathExtension))"))
                continue
            }
            files.append(path)
        }
        // A sharded save (Keras 3, safetensors) is one step: its manifest stands for its shards.
        for manifest in shardManifests {
            let safetensors = manifest.hasSuffix(".safetensors.index.json")
            guard let shards = try? (safetensors ? SafetensorsFile.shardFiles(of: manifest) : CheckpointLoader.shardFiles(of: manifest)) else {
                let what =
                    safetensors ? "a .safetensors.index.json without a valid weight_map" : "a .weights.json that is not a sharded Keras weight map"
                skipped.append(SkippedItem(item: manifest, reason: what))
                continue
            }
            let shardSet = Set(shards)
            files.removeAll { shardSet.contains($0) }
            files.append(manifest)
        }
        return files
    }

    /// The saves of a Trainer output directory: its `checkpoint-<step>/` folders, and the final
    /// model beside them when its own `trainer_state.json` puts it after the last of them; the
    /// other entries are listed as skipped.
    static func trainerFolders(in directory: String, names: [String], skipped: inout [SkippedItem]) -> [String] {
        var folders = TrainerFolder.checkpointFolders(in: directory, names: names, skipped: &skipped)
        let last = folders.compactMap { TrainerFolder.checkpointNumber(($0 as NSString).lastPathComponent) }.max() ?? -1
        var finalModel: String?
        if TrainerFolder.isSave(directory), let model = TrainerFolder.modelFile(in: directory) {
            let state = try? TrainerFolder.readState((directory as NSString).appendingPathComponent("trainer_state.json"))
            if let step = state?.globalStep, step > last {
                folders.append(directory)
            } else {
                finalModel = (model as NSString).lastPathComponent
            }
        }
        for name in names where TrainerFolder.checkpointNumber(name) == nil {
            let path = (directory as NSString).appendingPathComponent(name)
            if name == finalModel || (finalModel != nil && name.hasPrefix("model-") && name.hasSuffix(".safetensors")) {
                skipped.append(
                    SkippedItem(
                        item: path, kind: .superseded,
                        reason:
                            "the final model beside the Trainer's checkpoint folders: no trainer_state.json places it after the last of them (read it alone with inspect)"
                    ))
            } else if folders.contains(directory) && (TrainerFolder.modelNames.contains(name) || name == "optimizer.pt") {
                continue
            } else {
                let what = TrainerFolder.isDirectory(path) ? "a folder" : "a file"
                skipped.append(SkippedItem(item: path, reason: "\(what) beside the Trainer's checkpoint folders, not a save"))
            }
        }
        return folders
    }

    /// Tensors that appear, disappear or change shape between consecutive steps.
    package static func tensorChanges(_ checkpoints: [Checkpoint]) -> [String] {
        var notes: [String] = []
        guard checkpoints.count > 1 else { return notes }
        /// The same tensors in the same order, shapes and types: nothing appears, disappears or changes
        /// (the usual case, told without building a table of each save's tensors).
        // One list's storage (saves of one model share it) is the same list without comparing it.
        func sameTensors(_ a: [TensorRef], _ b: [TensorRef]) -> Bool {
            DescriptionInterner.same(a, b)
                || (a.count == b.count && zip(a, b).allSatisfy { $0.key == $1.key && $0.shape == $1.shape && $0.dtype == $1.dtype })
        }
        func table(_ index: Int) -> [TensorKey: TensorRef] {
            Dictionary(checkpoints[index].tensors.map { ($0.key, $0) }, uniquingKeysWith: { a, _ in a })
        }
        var previous: (index: Int, table: [TensorKey: TensorRef])?
        for index in 1..<checkpoints.count {
            if sameTensors(checkpoints[index - 1].tensors, checkpoints[index].tensors) { continue }
            let before = previous?.index == index - 1 ? previous!.table : table(index - 1)
            let after = table(index)
            previous = (index, after)
            let step = checkpoints[index].metadata.step ?? index
            let added = after.keys.filter { before[$0] == nil }.sorted()
            let removed = before.keys.filter { after[$0] == nil }.sorted()
            let reshaped = after.keys.filter { key in before[key].map { $0.shape != after[key]?.shape || $0.dtype != after[key]?.dtype } ?? false }
                .sorted()
            func list(_ keys: [TensorKey]) -> String {
                keys.prefix(5).map(\.description).joined(separator: ", ") + (keys.count > 5 ? " and \(keys.count - 5) more" : "")
            }
            // The first save before any update has no gradients or optimizer state yet: nothing to report.
            let onlyTrainingState = added.allSatisfy { $0.role == .gradient || $0.role == .optimizer }
            if !added.isEmpty && !(index == 1 && onlyTrainingState) { notes.append("step \(step): \(added.count) tensor(s) appear: \(list(added))") }
            if !removed.isEmpty { notes.append("step \(step): \(removed.count) tensor(s) disappear: \(list(removed))") }
            if !reshaped.isEmpty { notes.append("step \(step): \(reshaped.count) tensor(s) change shape or dtype: \(list(reshaped))") }
        }
        return notes
    }
}
