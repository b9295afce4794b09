import ElementTypes
import GradScopeModel
import HDF5

/// Matches anonymous optimizer slots to the weights they belong to, by
/// position, checking shapes as it goes.
///
/// Keras stores optimizer state positionally: Keras 3 interleaves each
/// variable's slots (kernel m, kernel v, bias m, bias v, ...); Keras 1 and 2
/// store blocks (every first moment, then every second moment). Weights that
/// are not trainable have no slots, so matching walks the weights in order
/// and skips those whose shape does not fit, which also finds them.
package enum OptimizerMatching {
    package struct Candidate {
        package let shape: [Int]
        /// False when the weight is known not to be trainable (BatchNorm moving statistics).
        package let mayBeTrainable: Bool
    }

    package struct Assignment: Equatable {
        /// Index into the slot list.
        package let slot: Int
        /// Index into the weight list.
        package let weight: Int
        /// Position of the slot within its variable's slots (0 = first slot kind).
        package let kind: Int
    }

    /// Matches `slots` (shapes, in file order) to `weights` with `perVariable`
    /// slots each. Returns nil when the shapes do not line up.
    package static func match(slots: [[Int]], weights: [Candidate], perVariable: Int, blocked: Bool, inOrder: Bool = true) -> [Assignment]? {
        guard perVariable > 0, !slots.isEmpty, slots.count % perVariable == 0 else { return nil }
        let variables = slots.count / perVariable
        guard variables <= weights.count else { return nil }
        var groups: [[Int]] = []
        for variable in 0..<variables {
            var group: [Int] = []
            for kind in 0..<perVariable {
                group.append(blocked ? kind * variables + variable : variable * perVariable + kind)
            }
            guard group.allSatisfy({ slots[$0] == slots[group[0]] }) else { return nil }
            groups.append(group)
        }
        var assignments: [Assignment] = []
        var pointer = 0
        var taken = [Bool](repeating: false, count: weights.count)
        for group in groups {
            let shape = slots[group[0]]
            if !inOrder { pointer = 0 }
            while pointer < weights.count && (taken[pointer] || !(weights[pointer].mayBeTrainable && weights[pointer].shape == shape)) {
                pointer += 1
            }
            guard pointer < weights.count else { return nil }
            taken[pointer] = true
            for (kind, slot) in group.enumerated() {
                assignments.append(Assignment(slot: slot, weight: pointer, kind: kind))
            }
            pointer += 1
        }
        return assignments
    }

    /// Tries each plausible number of slots per variable, the optimizer's own first.
    /// When no count lines up in file order (writers whose variable order is not
    /// the file's), falls back to giving each variable's slots to the first
    /// unmatched weight of the same shape; `inOrder` is then false.
    package static func matchAny(
        slots: [[Int]], weights: [Candidate], preferred: [Int], blocked: Bool
    )
        -> (perVariable: Int, assignments: [Assignment], inOrder: Bool)?
    {
        var counts: [Int] = []
        for perVariable in preferred + [2, 1, 3] where !counts.contains(perVariable) { counts.append(perVariable) }
        for inOrder in [true, false] {
            for perVariable in counts {
                if let assignments = match(slots: slots, weights: weights, perVariable: perVariable, blocked: blocked, inOrder: inOrder) {
                    return (perVariable, assignments, inOrder)
                }
            }
        }
        return nil
    }

    /// Slots per variable and their names, for an optimizer class (lower-cased).
    package static func slotNames(forOptimizer name: String?) -> [String]? {
        guard let name = name?.lowercased() else { return nil }
        if name.contains("adamax") { return ["m", "u"] }
        if name.contains("adam") || name.contains("nadam") || name.contains("lamb") { return ["momentum", "velocity"] }
        if name.contains("rmsprop") { return ["velocity"] }
        if name.contains("adagrad") { return ["accumulator"] }
        if name.contains("adadelta") { return ["accumulated_grad", "accumulated_delta_var"] }
        if name.contains("lion") { return ["momentum"] }
        if name.contains("ftrl") { return ["accumulator", "linear"] }
        if name.contains("sgd") { return ["momentum"] }
        return nil
    }
}
