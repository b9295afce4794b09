import ElementTypes
import Foundation
import GradScopeModel
import HDF5

/// What a checkpoint's step number means: whether it counts optimizer updates, and whether
/// the first save is the initialisation.
public enum StepCounting {
    /// Whether a checkpoint's step number counts optimizer updates: a step
    /// attribute, the optimizer's counter, or a number the file or group name
    /// labels as a step (`step_1200`, `iter-500`). Epochs, the files' order and
    /// unlabelled numbers (`ckpt-3` may count saves, Keras's
    /// `weights.{epoch:02d}.h5` counts epochs) do not, so per-step rates are not
    /// derived from them.
    public static func countsUpdates(_ checkpoint: Checkpoint) -> Bool {
        switch checkpoint.metadata.stepSource {
        case .attribute?, .optimizerIterations?, .trainerGlobalStep?: return true
        case .fileName?:
            let stem = URL(fileURLWithPath: checkpoint.source).deletingPathExtension().lastPathComponent
            return LayoutSupport.stepInFileName(stem)?.isStep ?? false
        case .groupName?:
            let name = (checkpoint.source.split(separator: "/").last.map(String.init) ?? "").lowercased()
            return !name.hasPrefix("epoch") && !name.hasPrefix("ckpt") && !name.hasPrefix("checkpoint")
        case .epoch?, .position?, nil:
            return false
        }
    }

    /// Whether the first save's step is known to be the state before training:
    /// step 0 read from the file or its name, not an epoch (`epoch_0` is saved
    /// after the first epoch) and not a position in the run.
    public static func startsAtInitialisation(_ checkpoint: Checkpoint) -> Bool {
        guard checkpoint.metadata.step == 0 else { return false }
        switch checkpoint.metadata.stepSource {
        case .attribute?, .optimizerIterations?, .fileName?, .groupName?, .trainerGlobalStep?: return true
        case .epoch?, .position?, nil: return false
        }
    }
}
