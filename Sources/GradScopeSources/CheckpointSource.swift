import ElementTypes
import Foundation
import GradScopeModel
import HDF5

/// A kind of checkpoint file: how it is recognised and opened into checkpoints whose tensors
/// can be read (by offset where ``Checkpoint/storage`` says so, else through the source's
/// library). Adding a format is one type conforming to this and one line in ``CheckpointSources/all``.
public protocol CheckpointSource: Sendable {
    /// A short name for messages and notes (`hdf5`, `keras-archive`).
    var name: String { get }
    /// Whether `path`, whose first bytes (up to 8) are `head`, is this kind of file.
    func recognises(path: String, head: [UInt8]) -> Bool
    /// Opens the checkpoint(s) the file holds, with their tensors, roles, layers and step metadata.
    func open(_ path: String, options: LoadOptions) throws -> [OpenCheckpoint]
}

/// The checkpoint sources gradscope reads, in the order they are tried.
public enum CheckpointSources {
    /// HDF5 files in every layout (``HDF5Layouts``): the fallback, tried last.
    public static let hdf5: any CheckpointSource = HDF5Source()
    public static let all: [any CheckpointSource] = [
        TrainerFolderSource(), KerasShardedSource(), TorchArchiveSource(), KerasArchiveSource(), SafetensorsSource(), hdf5,
    ]
}

/// A sharded Keras 3 save: a `.weights.json` map and `_NNNNN.weights.h5` shards, one step.
struct KerasShardedSource: CheckpointSource {
    var name: String { "keras-sharded" }
    func recognises(path: String, head: [UInt8]) -> Bool { path.hasSuffix(".weights.json") }
    func open(_ path: String, options: LoadOptions) throws -> [OpenCheckpoint] { [try CheckpointLoader.loadSharded(path, options: options)] }
}

/// A `.keras` zip archive: `model.weights.h5` read from memory, the optimizer's class from `config.json`.
struct KerasArchiveSource: CheckpointSource {
    var name: String { "keras-archive" }
    func recognises(path: String, head: [UInt8]) -> Bool { ZipArchive.isZip(Data(head.prefix(4))) }
    func open(_ path: String, options: LoadOptions) throws -> [OpenCheckpoint] { [try CheckpointLoader.loadKerasArchive(path, options: options)] }
}

/// An HDF5 file: one checkpoint, or one per step group, in the layout ``HDF5Layouts`` recognises.
struct HDF5Source: CheckpointSource {
    var name: String { "hdf5" }
    func recognises(path: String, head: [UInt8]) -> Bool { true }
    func open(_ path: String, options: LoadOptions) throws -> [OpenCheckpoint] { try CheckpointLoader.loadHDF5(path, options: options) }
}

/// One group of an open HDF5 file, as a layout is asked to read it.
public struct LayoutInput {
    public var file: HDF5File
    public var entries: [Entry]
    /// The group holding the step (`/`, or `/step_100` in a multi-step file).
    public var root: String
    /// The path shown to people.
    public var source: String
    /// The optimizer's class when something outside the file names it (a `.keras` archive's config).
    public var optimizerHint: String?
    /// Layers a `.keras` archive's config marks `trainable: false`.
    public var nonTrainableLayers: Set<String>
    /// Whether the user forced this layout (`--layout`): a generic read then reads foreign formats too.
    public var forced: Bool
}

/// What a layout read from one group: the step's metadata, its tensors, what it left out and why,
/// notes, and the layers in depth order when the layout knows them (empty: ordered afterwards).
public struct LayoutReading {
    public var metadata: StepMetadata
    public var tensors: [TensorRef]
    public var skipped: [SkippedItem]
    public var notes: [String]
    public var layers: [String]
    /// Each tensor's address in the file (0: unknown), when the layout read them beside the tensors;
    /// nil: looked up in the file's entries by path.
    public var addresses: [UInt64]?

    public init(metadata: StepMetadata, tensors: [TensorRef], skipped: [SkippedItem], notes: [String], layers: [String] = []) {
        self.metadata = metadata
        self.tensors = tensors
        self.skipped = skipped
        self.notes = notes
        self.layers = layers
    }
}

/// One layout of HDF5 checkpoints: how a group is recognised as one, and read.
public protocol HDF5Layout: Sendable {
    var kind: LayoutKind { get }
    func recognises(_ input: LayoutInput) -> Bool
    func read(_ input: LayoutInput) throws -> LayoutReading
}

/// The HDF5 layouts, in the order they are recognised (the generic one last: it reads any file of float tensors).
public enum HDF5Layouts {
    public static let all: [any HDF5Layout] = [NativeHDF5Layout(), KerasLegacyHDF5Layout(), Keras3HDF5Layout(), GenericHDF5Layout()]

    /// The layout of `kind`.
    public static func layout(_ kind: LayoutKind) -> any HDF5Layout {
        all.first { $0.kind == kind } ?? GenericHDF5Layout()
    }

    /// The first layout that recognises `input`.
    public static func detect(_ input: LayoutInput) -> any HDF5Layout {
        all.first { $0.recognises(input) } ?? GenericHDF5Layout()
    }
}

/// The layout the exporters in Tools/ write (`format = "gradscope/1"`).
struct NativeHDF5Layout: HDF5Layout {
    var kind: LayoutKind { .native }
    func recognises(_ input: LayoutInput) -> Bool { NativeLayout.matches(input.file, root: input.root) }
    func read(_ input: LayoutInput) throws -> LayoutReading {
        let (metadata, tensors, skipped, notes) = NativeLayout.read(file: input.file, entries: input.entries, root: input.root, source: input.source)
        return LayoutReading(metadata: metadata, tensors: tensors, skipped: skipped, notes: notes)
    }
}

/// Legacy Keras `.h5`: full models and `save_weights` files of every Keras version.
struct KerasLegacyHDF5Layout: HDF5Layout {
    var kind: LayoutKind { .kerasLegacy }
    func recognises(_ input: LayoutInput) -> Bool { KerasLegacyLayout.weightsRoot(input.file, root: input.root) != nil }
    func read(_ input: LayoutInput) throws -> LayoutReading {
        guard let weightsRoot = KerasLegacyLayout.weightsRoot(input.file, root: input.root) else {
            throw CheckpointError(file: input.source, reason: "no layer_names attribute: not a legacy Keras file")
        }
        let (metadata, tensors, skipped, notes, layers) = KerasLegacyLayout.read(
            file: input.file, root: input.root, weightsRoot: weightsRoot,
            source: input.source)
        return LayoutReading(metadata: metadata, tensors: tensors, skipped: skipped, notes: notes, layers: layers)
    }
}

/// Keras 3 `.weights.h5` (and the weights inside a `.keras` archive).
struct Keras3HDF5Layout: HDF5Layout {
    var kind: LayoutKind { .keras3 }
    func recognises(_ input: LayoutInput) -> Bool { Keras3Layout.matches(input.entries, root: input.root) }
    func read(_ input: LayoutInput) throws -> LayoutReading {
        let (metadata, tensors, skipped, notes, layers) = Keras3Layout.read(
            file: input.file, entries: input.entries, root: input.root,
            source: input.source, optimizerHint: input.optimizerHint,
            nonTrainableLayers: input.nonTrainableLayers)
        return LayoutReading(metadata: metadata, tensors: tensors, skipped: skipped, notes: notes, layers: layers)
    }
}

/// Any other HDF5 file of float tensors, e.g. a PyTorch state_dict written with h5py. Files of
/// other formats (netCDF, AnnData, MATLAB) are refused unless the layout was forced.
struct GenericHDF5Layout: HDF5Layout {
    var kind: LayoutKind { .generic }
    func recognises(_ input: LayoutInput) -> Bool { true }
    func read(_ input: LayoutInput) throws -> LayoutReading {
        if !input.forced, let foreign = GenericLayout.foreignFormat(input.file, root: input.root) {
            throw CheckpointError(file: input.source, reason: "not a checkpoint: \(foreign)")
        }
        let (metadata, tensors, skipped, notes, addresses) = GenericLayout.read(
            file: input.file, entries: input.entries, root: input.root, source: input.source)
        var reading = LayoutReading(metadata: metadata, tensors: tensors, skipped: skipped, notes: notes)
        reading.addresses = addresses
        return reading
    }
}
