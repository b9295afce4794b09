import ElementTypes
import GradScopeMeasurement
import GradScopeModel
import GradScopeStatistics

/// Two layers of the simple chain: the consumer's input is the producer's output, unit for unit
/// (through an elementwise activation, dropout or pooling at most). For a linear layer y = W x + b
/// the weight gradient is dL/dW = Σ over examples of g xᵀ, so the consumer's input unit j (a column
/// of a PyTorch [out, in] matrix, an input channel of a convolution, a row of a Keras [in, out]
/// kernel) is exactly zero in its weight gradient when the producer's unit j outputs zero on every
/// example that carries gradient, while the consumer's bias gradient (Σ g) is not zero.
package struct ChainLink: Sendable, Equatable {
    package var producer: String
    package var producerKernel: String
    package var consumer: String
    package var consumerKernel: String
    /// The producer's output units, the consumer's input units.
    package var units: Int
}

/// The pairs of layers the neighbour rule applies to (docs/DETECTORS.md, "Evidence from neighbours"),
/// and the evidence of each. A link needs, from the names and shapes the run establishes:
///
/// - two layers next to each other in depth order among the layers that hold weights, each holding
///   exactly one matrix or kernel: a normalisation layer between them (its own parameters), a
///   recurrent cell (two kernels) or an attention block breaks the chain;
/// - the same parent module (`blocks.0.fc1` → `blocks.0.fc2`, `0` → `2`, `dense` → `dense_1`):
///   a residual connection adds the input of a block to its output, so the first layer of the next
///   block (`blocks.1.fc1`) reads a sum, not the last layer's output alone;
/// - as many consumer inputs as producer units, in the same layout (PyTorch or Keras): a flatten
///   or a concatenation between them changes the count;
/// - no name marking attention, a recurrent cell, an embedding or a shortcut branch.
package enum LayerChain {
    /// Name parts that put a layer outside the simple chain.
    package static let breakingMarks = [
        "attn", "attention", "query", "key", "value", "q_proj", "k_proj", "v_proj", "qkv", "out_proj", "mha", "lstm", "gru", "rnn",
        "recurrent", "embed", "shortcut", "downsample", "skip", "residual", "concat",
    ]

    /// Whether a name marks a layer the simple chain does not run through.
    package static func breaks(_ name: String) -> Bool {
        let lower = name.lowercased()
        return breakingMarks.contains { lower.contains($0) } || DetectorSupport.isEmbedding(name) || DetectorSupport.isNormalizationName(name)
    }

    /// The module a layer belongs to: its name up to the last `.` or `/`.
    package static func parent(_ layer: String) -> Substring {
        guard let cut = layer.lastIndex(where: { $0 == "." || $0 == "/" }) else { return "" }
        return layer[..<cut]
    }

    /// The links of the run, input first.
    package static func links(_ run: RunMeasurements) -> [ChainLink] {
        var kernels: [String: [TensorMeasurement]] = [:]
        var weighted = Set<String>()
        for key in run.indexedWeightKeys {
            guard let weight = run.indexedLast(key) else { continue }
            weighted.insert(weight.layer)
            if DetectorSupport.isKernel(weight) { kernels[weight.layer, default: []].append(weight) }
        }
        let layers = run.layers.filter { weighted.contains($0) }
        var links: [ChainLink] = []
        for (producer, consumer) in zip(layers, layers.dropFirst()) {
            guard let a = kernels[producer], a.count == 1, let b = kernels[consumer], b.count == 1, let first = a.first,
                let second = b.first, parent(producer) == parent(consumer), !breaks(producer), !breaks(consumer),
                !breaks(first.name), !breaks(second.name)
            else { continue }
            // The same layout: both PyTorch (units first) or both Keras (units last).
            let torch = first.unitAxis == 0 && second.unitAxis == 0
            let keras = first.unitAxis == first.shape.count - 1 && second.unitAxis == second.shape.count - 1
            guard torch || keras, let units = TensorNames.units(shape: first.shape, unitAxis: first.unitAxis), units >= 1,
                InputUnitMap.forKernel(shape: second.shape, unitAxis: second.unitAxis)?.units == units
            else { continue }
            links.append(
                ChainLink(producer: producer, producerKernel: first.name, consumer: consumer, consumerKernel: second.name, units: units))
        }
        return links
    }

    /// What shows a link's producer outputs: the consumer kernel's gradient, or without saved
    /// gradients its optimizer's second moment (Adam's v is a running average of g², exactly zero
    /// where every gradient so far was), with the consumer's bias of the same kind.
    package struct Evidence {
        /// The consumer kernel's input units, save by save.
        package var inputs: UnitWindow
        /// The consumer kernel's tensor (gradient or second moment) and its bias's.
        package var kernel: TensorKey
        package var bias: TensorKey?
        /// "the weight gradient" or "the optimizer's second moment (exp_avg_sq)".
        package var what: String
        package var fromMoments: Bool
    }

    package static func evidence(_ run: RunMeasurements, _ link: ChainLink) -> Evidence? {
        if run.hasGradients {
            let kernel = TensorKey.gradient(link.consumerKernel)
            guard let window = run.unitWindows.first(where: { $0.key == kernel && $0.source == .inputs }) else { return nil }
            let bias = run.indexedKeys(role: .gradient).first { key in
                TensorNames.isBias(key.name) && run.indexedLast(key)?.layer == link.consumer
            }
            return Evidence(inputs: window, kernel: kernel, bias: bias, what: "the weight gradient", fromMoments: false)
        }
        let moments = DetectorSupport.secondMomentKeys(run)
        guard let kernel = moments.first(where: { $0.name == link.consumerKernel }),
            let window = run.unitWindows.first(where: { $0.key == kernel && $0.source == .inputs })
        else { return nil }
        let bias = moments.first { key in TensorNames.isBias(key.name) && run.indexedLast(key)?.layer == link.consumer }
        let slot = run.indexedLast(kernel)?.slotName ?? "v"
        return Evidence(inputs: window, kernel: kernel, bias: bias, what: "the optimizer's second moment (\(slot))", fromMoments: true)
    }

    /// What a kernel's input units are called: "columns" of a PyTorch matrix, "rows" of a Keras one,
    /// "channels" of a convolution.
    package static func inputWord(_ run: RunMeasurements, kernel: TensorKey) -> String {
        guard let measurement = run.indexedLast(kernel) else { return "units" }
        if measurement.shape.count > 2 { return "channels" }
        return measurement.unitAxis == 0 ? "columns" : "rows"
    }

    /// Whether a tensor holds a nonzero element.
    package static func nonzero(_ measurement: TensorMeasurement) -> Bool {
        measurement.stats.count > 0 && measurement.stats.zeros < measurement.stats.count
    }
}
