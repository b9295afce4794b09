import ElementTypes
import Foundation

/// Where a step number came from.
public enum StepSource: String, Sendable, Codable {
    /// A root attribute such as `step`, `global_step` or `iteration`.
    case attribute
    /// The optimizer's iteration counter saved in the file (Keras).
    case optimizerIterations = "optimizer-iterations"
    /// The last integer in the file name.
    case fileName = "file-name"
    /// The name of the group holding the step in a multi-step file.
    case groupName = "group-name"
    /// An epoch number (an `epoch` attribute, or a number labelled as an epoch in
    /// the file name): it orders the saves but does not count optimizer updates.
    case epoch
    /// Nothing said; the step is the file's position in the run.
    case position
    /// A Hugging Face Trainer save's global step: `global_step` in its `trainer_state.json`, else
    /// the number of its `checkpoint-<step>` folder, which the Trainer names after the same count.
    case trainerGlobalStep = "trainer-global-step"
}

/// What a checkpoint says about its step.
public struct StepMetadata: Sendable, Equatable, Codable {
    public var step: Int?
    public var stepSource: StepSource?
    public var loss: Double?
    public var learningRate: Double?
    public var framework: String?
    /// The optimizer's class, when the file names it (`Adam`, `SGD`).
    public var optimizer: String?
    public var epoch: Int?
    /// When the step was read from the file name: every number the name holds, in
    /// order, which orders the run when the step alone cannot (LayoutSupport.stepInFileName).
    public var nameKey: [Int]?

    public init(
        step: Int? = nil, stepSource: StepSource? = nil, loss: Double? = nil, learningRate: Double? = nil,
        framework: String? = nil, optimizer: String? = nil, epoch: Int? = nil
    ) {
        self.step = step
        self.stepSource = stepSource
        self.loss = loss
        self.learningRate = learningRate
        self.framework = framework
        self.optimizer = optimizer
        self.epoch = epoch
    }
}

/// Something in a file that was not used, with the reason.
public struct SkippedItem: Sendable, Equatable, Codable {
    /// A file path, or `file:object` for an object inside a file.
    public var item: String
    /// What kind of skip it is: code decides by this, never by the words of `reason`.
    public var kind: SkipKind
    /// The reason in words, for people.
    public var reason: String

    public init(item: String, kind: SkipKind = .notAnalysed, reason: String) {
        self.item = item
        self.kind = kind
        self.reason = reason
    }

    private enum CodingKeys: String, CodingKey { case item, kind, reason }

    public init(from decoder: Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        item = try container.decode(String.self, forKey: .item)
        kind = try container.decodeIfPresent(SkipKind.self, forKey: .kind) ?? .notAnalysed
        reason = try container.decode(String.self, forKey: .reason)
    }
}

/// Why something was not used, as code tells skips apart.
public enum SkipKind: String, Sendable, Equatable, Codable, CaseIterable {
    /// Read as the step's metadata (a scalar setting or counter) rather than analysed as a
    /// tensor: part of the checkpoint, so not listed among a run's skipped items.
    case metadata
    /// Not something gradscope analyses: scalars and strings, groups outside the layout, links
    /// (never followed), files of other kinds, directories, hidden and temporary files.
    case notAnalysed = "not-analysed"
    /// Could not be read: unreadable, malformed or truncated, refused by a limit, crashed or hung
    /// the library, or changed while the run was being scanned.
    case unreadable
    /// Left out in favour of another: a duplicate step, a second loss log, a file of another layout
    /// or without a step in a run whose other files have one.
    case superseded
}
