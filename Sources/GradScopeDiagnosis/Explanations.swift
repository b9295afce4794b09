import ElementTypes
import Foundation
import GradScopeMeasurement
import GradScopeModel
import GradScopeSources
import GradScopeStatistics

/// The explanation of one kind of finding, as `--explain` and the report print it: what the numbers
/// mean, likely causes, what to try. Detectors compute the few values an entry needs; the entry words
/// them. Every kind has exactly one entry in ``explanationCatalogue``.
package protocol Explanation: Sendable {
    /// The kind of finding it explains.
    static var kind: FindingKind { get }
    /// The prose.
    var text: String { get }
}

/// Every explanation, one per kind of finding.
package let explanationCatalogue: [any Explanation.Type] = [
    NanInfExplanation.self, FrozenExplanation.self, ZeroGradientExplanation.self, DeadUnitsExplanation.self,
    CollapsingExplanation.self, LossPlateauExplanation.self, VanishingGradientExplanation.self,
    ExplodingGradientExplanation.self, UpdateRatioExplanation.self, PoorInitExplanation.self,
]

/// `nan-inf`: the first save holding NaN or Inf.
package struct NanInfExplanation: Explanation {
    package static let kind = FindingKind.nanInf
    /// The step of that save; nil when the file holds no step.
    var step: Int?
    var tensors: Int
    var nanElements: Int
    var infElements: Int
    /// How many of the tensors are weights.
    var weights: Int
    /// The total gradient norm two saves before and one save before, when it had grown threefold or more.
    var blowUp: (before: Double, previous: Double)?

    package var text: String {
        let context =
            blowUp.map {
                " The total gradient norm had grown from \(formatSignificant($0.before)) to \(formatSignificant($0.previous)) over the two saves before: the values blew up."
            } ?? ""
        return """
            \(step.map { "At step \($0)" } ?? "In this file"), \(tensors) tensor(s) hold \(nanElements) NaN and \(infElements) infinite element(s) \
            (\(weights) of them weights).\(context) Once a weight is NaN, every output and gradient that \
            touches it is NaN too, so training cannot recover. Likely causes: a learning rate too high for \
            the data's scale (unscaled inputs, e.g. features in the thousands), exploding gradients, log(0) \
            or division by zero in the loss, or float16 overflow. What to try: normalise the inputs, lower the \
            learning rate, clip gradients (torch.nn.utils.clip_grad_norm_, clipnorm in Keras), use a \
            numerically stable loss (BCEWithLogitsLoss instead of sigmoid + BCELoss), and resume from the \
            last finite checkpoint\(step.map { ", before step \($0)" } ?? "").
            """
    }
}

/// `frozen`: a weight that never changed, and what to do about it for the case found. The same words
/// explain the frozen weights reported as `vanishing-gradient` because their updates underflow.
package struct FrozenExplanation: Explanation {
    package static let kind = FindingKind.frozen

    /// Why the weight does not change, as far as the saves tell.
    package enum Case: Sendable {
        /// Its gradient grows save after save: it is not in the optimizer.
        case notInOptimizer
        /// Its saved gradient is the same at every save: a leftover `.grad`.
        case staleGradient
        /// No optimizer state and no gradient: excluded from training.
        case excluded
        /// lr·max|g| below half an ulp of the weights.
        case underflow
        /// A gradient is present but never applied.
        case notApplied
        /// The learning rate is zero at every save.
        case zeroLearningRate
        /// A buffer, or a parameter that never receives a gradient.
        case buffer
        /// One of the first layers, all of which stay fixed while the later ones train.
        case frozenBackbone
        /// Nothing saved tells why.
        case unexplained
        /// It moved, then stopped: unchanged at every save from some save to the last.
        case stopped
    }

    var saves: Int
    var elements: Int
    /// The median relative change per save of the weights that do move.
    var medianOtherChange: Double?
    var found: Case

    package var text: String {
        "Between each pair of the \(saves) saves, not one of its \(elements) elements changed, while the other weights moved by a median of \(formatSignificant(medianOtherChange)) relative to their norm per save. \(advice)"
    }

    /// What to try, for the case found.
    var advice: String {
        switch found {
        case .notInOptimizer:
            return
                "Pass this parameter to the optimizer: build it from model.parameters() after the layer is created, or add a param group for it. If freezing was intended, set requires_grad=False so no gradient is computed."
        case .staleGradient:
            return
                "If this layer was frozen on purpose, nothing is wrong (set its .grad to None to stop saving the stale value). Otherwise set requires_grad=True and add it to the optimizer."
        case .excluded:
            return
                "If this layer was frozen on purpose (fine-tuning a pre-trained model), nothing is wrong. Otherwise set trainable=True before compiling (Keras), set requires_grad=True, or add it to the optimizer."
        case .underflow:
            return
                "The updates underflow the float format, so the weights cannot change even though a gradient arrives. Raise the learning rate for this layer, use an adaptive optimizer (Adam normalises the step), rescale the layer, or keep master weights in float32 if training in float16/bfloat16."
        case .notApplied:
            return
                "Check that the optimizer holds this parameter and that its learning rate is not zero; if freezing was intended, set requires_grad=False (PyTorch) or trainable=False (Keras) so no gradient is computed."
        case .zeroLearningRate:
            return "Check the learning-rate schedule: a warm-up that starts at 0, or a schedule that decays to 0, freezes every parameter."
        case .buffer:
            return
                "If this layer was frozen on purpose (fine-tuning a pre-trained model), or the tensor is a buffer, nothing is wrong. Otherwise set requires_grad=True, or add it to the optimizer."
        case .stopped:
            return
                "It changed until then and stopped: look at what happened at that save. A schedule that set this parameter group's learning rate to 0, a freeze part-way through training (requires_grad=False, trainable=False) or a gradient that stopped arriving (a dead path upstream) all do this; if the freeze was planned, nothing is wrong."
        case .frozenBackbone:
            return
                "If the backbone was frozen on purpose, nothing is wrong. If not, check that the optimizer holds these parameters and that requires_grad / trainable is set."
        case .unexplained:
            return
                "Save gradients with the gradscope exporter to see whether it receives any; check that the optimizer holds this parameter and that it is not frozen by mistake."
        }
    }
}

/// `zero-gradient`: a gradient, or the optimizer moments standing in for it, exactly zero at every save.
package struct ZeroGradientExplanation: Explanation {
    package static let kind = FindingKind.zeroGradient
    var elements: Int
    /// What was zero: "gradient", or "optimizer exp_avg and exp_avg_sq".
    var source: String
    var saves: Int
    /// The last save at which it was not zero, when it became zero during the run.
    var lastNonzero: Int? = nil

    package var text: String {
        let since =
            lastNonzero.map {
                " It was not zero at step \($0): the path died during training, at or after that save (look at what happened there: a jump of the loss or of the gradients, a learning-rate change)."
            } ?? ""
        return """
            All \(elements) elements of its \(source) are exactly 0 in \(saves) save(s).\(since) Nothing that depends on this \
            parameter reaches the loss, or the signal dies on the way: every unit of the activation after it is \
            saturated or dead (ReLU outputs all 0, sigmoid/tanh saturated), the graph is cut (.detach(), .data, \
            torch.no_grad, argmax or rounding in the forward pass), or the branch is unused (a head whose output is \
            never put into the loss). What to try: check that the layer's output is used in the loss; look for \
            detach/no_grad; inspect the activations after it; for dead ReLUs lower the learning rate or use \
            LeakyReLU/GELU; re-initialise the layer.
            """
    }
}

/// `dead-units`: a layer with units that never recover.
package struct DeadUnitsExplanation: Explanation {
    package static let kind = FindingKind.deadUnits

    /// Dead units read from the next layer's weight gradient or second moment.
    static func neighbour(consumer: String, inputs: String, percent: Int) -> String {
        """
        For a linear or convolutional layer y = W x + b, the weight gradient is the sum over examples of g xᵀ: the input \
        \(inputs) of \(consumer) that are exactly zero belong to inputs that were zero on every example that carried \
        gradient, while the others were not, so the units of this layer feeding them output nothing (a ReLU that never \
        fires, a unit whose weights and bias went to zero). \(percent)% of this layer is gone. A ReLU unit whose input is \
        negative for every example outputs 0 and passes back 0 gradient, so it can never recover. Likely causes: a \
        learning-rate spike or a learning rate too high, a large negative bias at initialisation, unnormalised inputs. What \
        to try: lower the learning rate or add warm-up, use LeakyReLU/ELU/GELU, initialise with He (Kaiming) init and \
        zero biases, add normalisation before the activation.
        """
    }
    /// Whether the units were judged over the whole later half of the run (else over its last saves).
    var wholeWindow: Bool
    var saves: Int
    var firstStep: Int
    var lastStep: Int
    var source: UnitEvidence
    /// The dead units as a rounded percentage of the layer's.
    var percent: Int
    /// Whether the saves carry step numbers (else none is named).
    var stepsKnown = true

    package var text: String {
        let evidence = source == .gradient ? "the saved gradients" : source == .activation ? "the saved activations" : "the weights' movement"
        let judged =
            saves == 1
            ? """
            Judged from one save\(stepsKnown ? " (step \(firstStep))" : "") from \(evidence): a unit silent for every example \
            of one batch may be dead or only idle on that batch; the saves after it tell which (gradscope scan on the run).
            """
            : """
            Judged over the \(wholeWindow ? "later half of the run" : "last saves of the run") (\(saves) save(s), steps \(firstStep)–\(lastStep)) from \
            \(evidence).
            """
        return """
            \(judged) A ReLU unit whose input is negative for every example outputs 0 and passes back 0 gradient, so it can never \
            recover: the capacity is simply lost. \(percent)% of this layer \(saves == 1 ? "would be" : "is") gone. Likely causes: a learning-rate spike or a \
            learning rate too high (a large update pushes the bias very negative), a large negative bias at \
            initialisation, or unnormalised inputs. What to try: lower the learning rate or add warm-up, use \
            LeakyReLU/ELU/GELU, initialise with He (Kaiming) init and zero biases, add normalisation before the activation.
            """
    }
}

/// `collapsing`: a weight norm or an output spread falling by orders of magnitude.
package struct CollapsingExplanation: Explanation {
    package static let kind = FindingKind.collapsing

    /// A layer that outputs zero for every input, read from the next layer.
    static func zeroOutput(consumer: String, inputs: String, fromMoments: Bool) -> String {
        let evidence =
            fromMoments
            ? "Adam's second moment is a running average of g², so it is exactly zero only where every gradient so far was."
            : ""
        return """
            For the next layer y = W x + b, the bias gradient is the sum of the output gradients g over the examples and the \
            weight gradient the sum of g xᵀ. The bias gradient of \(consumer) is not zero, so gradient does reach it, yet every \
            input \(inputs.dropLast()) of its weight gradient is exactly zero: every input x it received was zero, on every example. \(evidence) \
            This layer has collapsed to zero output: nothing it computes reaches the rest of the network, and no gradient \
            flows back through it (a ReLU after it passes back 0 where it outputs 0), so every layer before it receives \
            zero gradient too; those zero-gradient findings are its consequences. Likely causes: every ReLU of the layer \
            dead (a large negative bias, a learning-rate spike, an initialisation far too small or too negative), weights \
            and biases decayed to zero, or a mask or gate that zeroes the layer. What to try: re-initialise the layer (He \
            init, zero biases), lower the learning rate or add warm-up, use LeakyReLU/GELU, add normalisation before the \
            activation.
            """
    }
    /// A layer whose saved activation is exactly zero everywhere.
    static func zeroActivation(name: String, nextLayer: String?) -> String {
        let next = nextLayer.map { "the next layer, `\($0)`," } ?? "the next layer"
        return """
            Every value of the saved activation \(name) is exactly zero: every unit, on every example of the saved batch. \
            This layer has collapsed to zero output: \(next) receives nothing from it, and no gradient flows back through it \
            (a ReLU passes back 0 where it outputs 0), so the next layer's weights and every layer before it receive zero \
            gradient on such inputs; those zero-gradient findings are its consequences. Some units silent would be dead units; \
            all of them at once means the whole layer. Likely causes: every ReLU of the layer dead (a large negative bias, a \
            learning-rate spike, an initialisation far too small or too negative), weights and biases decayed to zero, or a \
            mask or gate that zeroes the layer. What to try: re-initialise the layer (He init, zero biases), lower the \
            learning rate or add warm-up, use LeakyReLU/GELU, add normalisation before the activation.
            """
    }
    /// What shrank: "weight norm ‖W‖" or "output spread (std)".
    var measure: String
    /// Orders of magnitude from the peak to the last save (infinite when it reached 0).
    var orders: Double
    /// The first save after the peak at which it had halved.
    var halvingStep: Int

    package var text: String {
        """
        The \(measure) shrank \(orders.isFinite ? "by \(formatSignificant(orders)) order(s) of magnitude" : "to exactly zero"), \
        halving by step \(halvingStep). A layer whose weights head to zero passes on less and less signal; \
        its outputs shrink toward a constant and the layers after it learn nothing from their inputs (for the last \
        layer: logits near 0, the model predicts the uniform distribution). Likely causes: weight decay (or L2) far \
        too strong for the learning rate, a gradient that consistently pushes toward zero because the layer's \
        output is not used, or a schedule that lets decay dominate. What to try: reduce weight_decay by 10–100x \
        (typical AdamW values are 0.01–0.1 with lr 1e-3, SGD 1e-4–5e-4), exclude biases and norm layers from \
        decay, and check that the layer's output actually reaches the loss.
        """
    }
}

/// `loss-plateau`: the loss held at ln K.
package struct LossPlateauExplanation: Explanation {
    package static let kind = FindingKind.lossPlateau
    var saves: Int
    /// What `saves` counts: "saves", or "logging steps" when the loss came from the training log.
    var unit = "saves"
    /// `plateau_relative_tolerance`, a fraction of ln K.
    var tolerance: Double
    /// ln K by name and value, e.g. "ln 2 = 0.693".
    var target: String
    var lossMin: Double?
    var lossMax: Double?
    /// The output bias and its mean, when every element is below 0.1 in size.
    var smallOutputBias: (name: String, mean: Double?)?
    /// The logits saved, their spread over the plateau's saves and their largest size.
    var logits: PlateauLogits?
    /// The learning rate saved over the plateau, when it was.
    var learningRate: PlateauLearningRate? = nil

    package var text: String {
        let f = formatSignificant
        var pointers: [String] = []
        if let (name, mean) = smallOutputBias {
            pointers.append(
                "the output bias \(name) sits at \(f(mean)) (pulled to 0: the best a model that has learned nothing can do)")
        }
        if let logits {
            let spread =
                logits.saves == 1 || logits.lowest == logits.highest
                ? "a spread (std) of \(f(logits.highest))"
                : "a spread (std) between \(f(logits.lowest)) and \(f(logits.highest)) (highest at step \(logits.highestStep))"
            pointers.append(
                "the saved logits (`\(logits.name)`) have \(spread) over \(logits.saves) save(s) of the plateau, |logit| at most \(f(logits.maxAbs))")
        }
        var causes =
            "a learning rate too small at the start (a long warm-up such as Noam's, or a small scale factor), weights initialised too small so the logits start at ~0"
        var tries = "a larger initial learning rate or shorter warm-up, default (Kaiming/Xavier) initialisation"
        if let learningRate {
            switch learningRate.course {
            case .spike(let value, let step, let median):
                pointers.append(
                    "the saved learning rate jumped to \(f(value)) at step \(step), \(f(value / median))× the run's median of \(f(median))")
                causes =
                    "that learning-rate jump: one step that large can push a ReLU layer's inputs below 0 for every example (its units die) or throw the output layer back to the class frequencies"
                tries = "remove the jump (or clip gradients by norm), use warm-up and a lower peak rate, default (Kaiming/Xavier) initialisation"
            case .warmUp(let from, let to, let step, let peak):
                pointers.append(
                    "the saved learning rate was \(f(from)) at step \(learningRate.firstStep) and rose to \(f(to)) by step \(step) (its peak in the run: \(f(peak))): a warm-up whose first updates are too small to move the logits"
                )
                causes =
                    "the warm-up (\(f(peak / from))× below its peak at the plateau's start), weights initialised too small so the logits start at ~0"
            case .steady(let low, let high):
                pointers.append(
                    low == high
                        ? "the saved learning rate was \(f(low)) throughout"
                        : "the saved learning rate was between \(f(low)) and \(f(high)) over the plateau")
                causes =
                    "a learning rate too small for this model (it was \(f(high)) at most here), weights initialised too small so the logits start at ~0"
                tries = "a larger learning rate, default (Kaiming/Xavier) initialisation"
            }
        }
        return """
            For \(saves) consecutive \(unit) the loss stayed within \(f(tolerance * 100))% of \(target) \
            (between \(f(lossMin)) and \(f(lossMax))). That is the loss of predicting the uniform distribution, which \
            logits that are all equal (all ~0 at initialisation) give: until the rest of the network produces a useful \
            signal, the cheapest thing the output layer can do is predict the class frequencies, so its bias is pulled \
            to 0 and the loss pins at \(target). \
            \(pointers.isEmpty ? "" : "Evidence: " + pointers.joined(separator: "; ") + ". ")\
            Likely causes: \(causes), a saturated or dead layer upstream that passes no \
            signal, or a deep stack of linear layers without normalisation. What to try: \(tries), check the layers \
            flagged below for dead or collapsing units, and plot the logits' spread over the first steps; a few thousand \
            steps at \(target) may also simply be the price of a slow start if the loss falls afterwards.
            """
    }

    /// The sentence the diagnosis adds to a plateau's explanation, naming the problems found upstream.
    static func upstream(_ findings: [Finding]) -> String {
        " Found upstream: " + findings.prefix(5).map { "\($0.kind.rawValue) in \($0.tensor ?? $0.layer ?? "the model")" }.joined(separator: "; ")
            + "."
    }
}

/// `vanishing-gradient`: the early layers' gradients orders of magnitude below the late layers'.
package struct VanishingGradientExplanation: Explanation {
    package static let kind = FindingKind.vanishingGradient
    /// The first save it held at; nil when the file holds no step.
    var step: Int?
    /// The median ‖g‖/‖W‖ of the first and of the last third of the layers.
    var early: Double
    var late: Double
    var earlyName: String
    var lateName: String
    /// Whether the loss is improving; nil when no loss was saved.
    var lossImproving: Bool?

    package var text: String {
        let lossText: String
        switch lossImproving {
        case true?: lossText = "The loss is still improving, so this is reported as information: the late layers are doing the learning."
        case false?: lossText = "The loss is not improving, which makes this the likely reason."
        case nil: lossText = "No loss was saved to tell whether training progresses regardless."
        }
        return """
            \(step.map { "At step \($0)" } ?? "In this file"), ‖g‖/‖W‖ is \(early > 0 ? formatSignificant(early) : "exactly 0 (no gradient at all)") in the first layers (from \(earlyName)) against \
            \(formatSignificant(late)) in the last ones (to \(lateName)). Each layer multiplies the backward signal by its \
            weights and its activation's derivative; a sigmoid's derivative is at most 0.25 and near 0 when saturated, so a deep \
            stack of them shrinks the gradient geometrically and the early layers stop learning. \(lossText) What to try: \
            ReLU/GELU instead of sigmoid/tanh in hidden layers, He (Kaiming) or Xavier initialisation, batch or layer \
            normalisation, residual connections, or a shallower network.
            """
    }
}

/// `exploding-gradient`: gradients large relative to their weights, from saved gradients or estimated
/// from the optimizer's second moment.
package enum ExplodingGradientExplanation: Explanation {
    package static let kind = FindingKind.explodingGradient
    /// From saved gradients; `nanStep` is the first later save holding NaN or Inf.
    case gradients(nanStep: Int?)
    /// Estimated from the second moment `slot` (named as the file names it), `ratio` times the weights' RMS.
    case secondMoment(slot: String, ratio: Double)

    package var text: String {
        switch self {
        case .gradients(let nanStep):
            let consequence = nanStep.map { " NaN follows at step \($0)." } ?? ""
            return """
                Large gradients make one update move the weights by more than their own size, the loss jumps, the next \
                gradients are larger still, and within a few steps values overflow to Inf and NaN.\(consequence) Likely causes: \
                unnormalised inputs (features in the hundreds or thousands), a learning rate too high, a deep network without \
                normalisation, or a loss with a very steep region. What to try: standardise the inputs (zero mean, unit \
                variance), clip gradients by norm (clip_grad_norm_(params, 1.0), clipnorm=1.0), lower the learning rate or add \
                warm-up, and add batch or layer normalisation.
                """
        case .secondMoment(let slot, let ratio):
            return """
                No gradients were saved, but the optimizer's second moment (\(slot)) is a running average of the \
                squared gradient, so its square root estimates the gradient's size. A gradient \(formatSignificant(ratio)) times \
                larger than the weights means the updates this layer received were far outside anything stable; an adaptive \
                optimizer divides them down, which hides the problem until the loss diverges or the layers before it stop learning. \
                Likely causes: unnormalised inputs or targets (large rewards in reinforcement learning), a loss with a steep region, a \
                learning rate too high. What to try: normalise inputs and targets, clip gradients by norm (clipnorm=1.0, \
                clip_grad_norm_), lower the learning rate, and save gradients with the gradscope exporter to see where they start.
                """
        }
    }
}

/// `update-ratio`: updates far above or far below the healthy ‖ΔW‖/‖W‖ of about 1e-3 per step.
package enum UpdateRatioExplanation: Explanation {
    package static let kind = FindingKind.updateRatio
    /// Between saves at steps `from` and `to` the weights moved by `relative` of their norm, at least `perStep` per step.
    case tooLarge(from: Int, to: Int, relative: Double, perStep: Double)
    /// The model's median update is `contrast` times this tensor's largest.
    case stuck(contrast: Double)

    package var text: String {
        switch self {
        case .tooLarge(let from, let to, let relative, let perStep):
            return """
                Between steps \(from) and \(to) the weights moved by \(formatSignificant(relative)) of \
                their norm, at least \(formatSignificant(perStep)) per step. A healthy update moves a layer by about a \
                thousandth of its norm per step; at a tenth or more the weights are being rewritten each step, the loss \
                oscillates or diverges, and ReLU units die. Likely causes: a learning rate too high for this layer (or \
                for its small initial weights), no warm-up, or exploding gradients. What to try: lower the learning rate \
                by 10x, add warm-up, clip gradients.
                """
        case .stuck(let contrast):
            return """
                This layer's updates are \(formatSignificant(contrast))x smaller than the rest of the model's: it is \
                effectively stuck. Likely causes: a much smaller learning rate in its param group, gradients that vanish \
                before reaching it, or weights so large that the same update is relatively tiny. What to try: check its \
                param group's learning rate, look at its gradient norm, and check its initial scale.
                """
        }
    }
}

/// `poor-init`: a kernel or embedding table far from the scale initialisers give, or with identical units.
package enum PoorInitExplanation: Explanation {
    package static let kind = FindingKind.poorInit
    /// Every element zero.
    case allZero
    /// Every element the same nonzero value.
    case constant
    /// A kernel with this fan-in, whose common initialisations give a standard deviation from `lower` to `upper`.
    case scale(fanIn: Int, lower: Double, upper: Double)
    /// An embedding table.
    case embedding

    package var text: String {
        switch self {
        case .allZero:
            return
                "With all-zero weights, every unit of the layer has the same output and the same gradient, so they stay identical forever (and with ReLU after a zero layer, gradients may be zero altogether). Initialise hidden layers randomly: Kaiming (He) for ReLU, Xavier (Glorot) for tanh/sigmoid. A zero-initialised final layer is a deliberate technique in some architectures."
        case .constant:
            return
                "A constant initialisation gives every unit the same output and the same gradient; gradient descent cannot tell them apart, so the layer behaves like a single unit. Initialise randomly (nn.init.kaiming_uniform_, xavier_uniform_, or the framework's default)."
        case .scale(let fanIn, let lower, let upper):
            return
                "Common initialisations give a layer with fan-in \(fanIn) a standard deviation between \(formatSignificant(lower)) (PyTorch's default) and \(formatSignificant(upper)) (He/Kaiming for ReLU), so that the variance of the signal is preserved from layer to layer (He et al. 2015; Glorot & Bengio 2010). Ten times off in either direction scales the signal tenfold per layer: too small gives near-zero outputs and a loss stuck at ln K; too large saturates tanh/sigmoid or blows up ReLU networks. Use the framework's default initialiser or nn.init.kaiming_normal_/xavier_uniform_."
        case .embedding:
            return
                "Embedding tables are commonly initialised with a standard deviation between 0.02 (BERT, GPT-2) and 1 (PyTorch's nn.Embedding default); Keras uses U(-0.05, 0.05). A table ten times smaller than the smallest of these feeds near-zero vectors to the network: the logits start at ~0 and the loss sits at ln K until the embeddings grow, which at a small or warming-up learning rate takes thousands of steps. Use the framework's default initialisation, or N(0, 0.02) for transformer-style models."
        }
    }
}
