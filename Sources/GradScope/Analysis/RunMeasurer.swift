import Foundation
import HDF5

/// Measures every tensor of every step of a run: statistics for all, drift
/// against the previous save for weights, and per-unit evidence over the
/// later half of the run (the dead-unit window). Each checkpoint's tensors
/// are read once, side by side with the previous checkpoint's weights.
public enum RunMeasurer {
    public static func measure(_ run: Run, options: MeasureOptions = MeasureOptions(),
                               progress: ((Int, Int) -> Void)? = nil) -> RunMeasurements {
        let checkpoints = run.checkpoints
        let windowStart = checkpoints.count >= 2 ? checkpoints.count / 2 : 0
        var records: [StepRecord] = []
        var windows: [String: UnitWindow] = [:]
        let gradientNames = Set(checkpoints.flatMap { $0.tensors(.gradient).map(\.name) })

        for (index, checkpoint) in checkpoints.enumerated() {
            let step = checkpoint.metadata.step ?? index
            let previous = index > 0 ? checkpoints[index - 1] : nil
            let previousTensors = previous.map { Dictionary($0.tensors.map { ($0.key, $0) }, uniquingKeysWith: { a, _ in a }) } ?? [:]
            var measurements: [String: TensorMeasurement] = [:]
            var order: [String] = []
            var failures: [SkippedItem] = []
            for tensor in checkpoint.tensors {
                do {
                    var stats: TensorStats
                    var drift: DriftStats?
                    if tensor.role == .weight, let previous, let earlier = previousTensors[tensor.key], earlier.shape == tensor.shape {
                        (stats, drift) = try TensorMeasurer.statsAndDrift(of: tensor, in: checkpoint, previous: earlier, in: previous, options: options)
                    } else {
                        stats = try TensorMeasurer.stats(of: tensor, in: checkpoint, options: options)
                    }
                    var measurement = TensorMeasurement(
                        key: tensor.key, name: tensor.name, layer: tensor.layer, role: tensor.role, slot: tensor.slot,
                        slotName: tensor.slotName, shape: tensor.shape, unitAxis: tensor.unitAxis, dtype: tensor.dtype.description, path: tensor.path,
                        trainable: tensor.trainable, stats: stats, drift: drift)
                    let unitSize = (stats.unitNorms?.count).map { units in units > 0 ? tensor.count / units : 0 } ?? 0
                    if let norms = stats.unitNorms {
                        measurement.unitCount = norms.count
                        measurement.zeroUnits = norms.filter { $0 == 0 }.count
                    }
                    if tensor.role == .activation, let zeros = stats.unitZeroCount, unitSize > 0 {
                        measurement.inactiveUnits = zeros.filter { Double($0) >= options.deadActivationFraction * Double(unitSize) }.count
                    }
                    if index >= windowStart, let units = stats.unitNorms?.count, units > 0 {
                        var alive: [Bool]?
                        var evidence: UnitEvidence?
                        switch tensor.role {
                        case .gradient:
                            alive = stats.unitNorms?.map { $0 > 0 || $0.isNaN }
                            evidence = .gradient
                        case .activation:
                            alive = stats.unitZeroCount?.map { Double($0) < options.deadActivationFraction * Double(max(unitSize, 1)) }
                            evidence = .activation
                        case .weight where !gradientNames.contains(tensor.name):
                            if let changed = drift?.unitChanged { alive = changed.map { $0 > 0 }; evidence = .movement }
                        default:
                            break
                        }
                        if let alive, let evidence, alive.count == units {
                            let key = tensor.key
                            if var window = windows[key], window.units == units {
                                for unit in 0..<units where alive[unit] { window.everAlive[unit] = true }
                                window.saves += 1
                                window.lastStep = step
                                windows[key] = window
                            } else if windows[key] == nil {
                                windows[key] = UnitWindow(key: key, name: tensor.name, layer: tensor.layer, source: evidence, units: units,
                                                          everAlive: alive, saves: 1, firstStep: step, lastStep: step)
                            }
                        }
                    }
                    // Per-unit arrays are summarised above; dropping them keeps a long run's memory small.
                    measurement.stats.unitNorms = nil
                    measurement.stats.unitZeroCount = nil
                    measurement.drift?.unitRelativeChange = nil
                    measurement.drift?.unitChanged = nil
                    measurements[tensor.key] = measurement
                    order.append(tensor.key)
                } catch {
                    failures.append(SkippedItem(item: checkpoint.source + ":" + tensor.path, reason: RunLoader.reason(for: error)))
                }
            }
            records.append(StepRecord(step: step, source: checkpoint.source, loss: checkpoint.metadata.loss,
                                      learningRate: checkpoint.metadata.learningRate, tensors: measurements, order: order,
                                      failures: failures))
            progress?(index + 1, checkpoints.count)
        }
        let last = checkpoints.last?.metadata
        return RunMeasurements(source: run.source, layout: checkpoints.last?.layout, framework: last?.framework,
                               optimizer: last?.optimizer, layers: run.layers, records: records,
                               unitWindows: windows.values.sorted { $0.key < $1.key })
    }
}
