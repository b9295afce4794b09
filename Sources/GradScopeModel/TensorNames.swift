import ElementTypes

/// What a tensor's name and shape say about it, for the readers (depth order) and the detectors alike.
public enum TensorNames {
    /// A bias by name: the last component of the name starts or ends with `bias` (`bias`, `bias_hh_l0`,
    /// `recurrent_bias`, `bias:0`), or it is the weight of a layer named for biases (`user_biases.weight`,
    /// a per-user bias table of matrix factorisation, zeros at initialisation).
    public static func isBias(_ name: String) -> Bool {
        let parts = name.lowercased().split(whereSeparator: { $0 == "." || $0 == "/" }).map(String.init)
        let last = parts.last ?? ""
        let bare = last.hasSuffix(":0") ? String(last.dropLast(2)) : last
        if bare.hasPrefix("bias") || bare.hasSuffix("bias") { return true }
        guard parts.count >= 2, ["weight", "kernel", "embeddings"].contains(bare) else { return false }
        let layer = parts[parts.count - 2]
        return layer.hasSuffix("bias") || layer.hasSuffix("biases")
    }

    /// Number of output units of a kernel: its unit axis's length (the first for a vector).
    /// A recurrent layer's kernel holds `gates` blocks of units (LSTM 4, GRU 3): its units are its hidden units.
    public static func units(shape: [Int], unitAxis: Int?, gates: Int? = nil) -> Int? {
        guard shape.count >= 2 else { return shape.first }
        let along = unitAxis == shape.count - 1 ? shape.last : shape.first
        guard let along, let gates, gates > 1, along % gates == 0 else { return along }
        return along / gates
    }
}
