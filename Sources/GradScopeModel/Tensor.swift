import ElementTypes

/// What a tensor is to training.
public enum TensorRole: String, Sendable, Codable, CaseIterable {
    case weight, gradient, optimizer, activation
}

/// What an optimizer slot holds, whatever the framework calls it.
public enum OptimizerSlot: String, Sendable, Codable {
    /// Adam's m / exp_avg / momentum (Keras 3): an exponential average of the gradient.
    case firstMoment = "first_moment"
    /// Adam's v / exp_avg_sq / velocity (Keras 3 Adam), RMSprop's mean square: an average of the squared gradient.
    case secondMoment = "second_moment"
    /// AMSGrad's running maximum of the second moment (vhat, max_exp_avg_sq).
    case maxSecondMoment = "max_second_moment"
    /// SGD's momentum buffer (momentum_buffer, momentum, moment).
    case momentum
    /// Adagrad or Adadelta accumulators and other state.
    case accumulator
    case other
}

/// The layouts gradscope reads.
public enum LayoutKind: String, Sendable, Codable, CaseIterable {
    /// The layout the exporters in Tools/ write (`format = "gradscope/1"`).
    case native
    /// Keras 3 `.weights.h5` and `.keras`.
    case keras3
    /// Legacy Keras `.h5`: full models and `save_weights` files of every Keras version.
    case kerasLegacy = "keras-legacy"
    /// Any other HDF5 file, e.g. a PyTorch state_dict written with h5py.
    case generic
    /// A safetensors file (or a sharded save with `model.safetensors.index.json`), named as a PyTorch `state_dict`.
    case safetensors
    /// A torch.save zip archive (`.pt`, `.pth`, `.bin`, Lightning `.ckpt`), read without Python.
    case torch
}

/// One tensor of a checkpoint: where it is stored and what it means.
public struct TensorRef: Sendable, Equatable, Codable {
    /// The parameter's name (`head.3.weight`, `dense_1/kernel`). A gradient or
    /// optimizer slot has the name of the parameter it belongs to.
    public var name: String
    /// The layer the parameter belongs to (`head.3`, `dense_1`).
    public var layer: String
    public var role: TensorRole
    /// For optimizer state: what the slot holds, and the framework's own name for it.
    public var slot: OptimizerSlot?
    public var slotName: String?
    public var shape: [Int]
    public var dtype: ElementType
    /// The axis that indexes units (neurons, filters): 0 for PyTorch's [out, in, ...],
    /// the last for Keras's [..., in, out]; nil for vectors and scalars.
    public var unitAxis: Int?
    /// A recurrent layer's gate blocks along the unit axis (LSTM 4, GRU 3; nil otherwise): its
    /// units are its hidden units, `shape[unitAxis] / gates`, each all of its gates' columns.
    public var gates: Int? = nil
    /// The HDF5 object path.
    public var path: String
    /// Which of the checkpoint's files holds it (0 except for sharded saves).
    public var fileIndex: Int
    /// Whether the optimizer updates this parameter, when the file says so
    /// (Keras: a weight with optimizer slots; native: the `in_optimizer` attribute).
    public var trainable: Bool?

    public init(
        name: String, layer: String, role: TensorRole, slot: OptimizerSlot? = nil, slotName: String? = nil,
        shape: [Int], dtype: ElementType, unitAxis: Int?, path: String, fileIndex: Int = 0, trainable: Bool? = nil
    ) {
        self.name = name
        self.layer = layer
        self.role = role
        self.slot = slot
        self.slotName = slotName
        self.shape = shape
        self.dtype = dtype
        self.unitAxis = unitAxis
        self.path = path
        self.fileIndex = fileIndex
        self.trainable = trainable
    }

    /// Number of elements.
    public var count: Int { shape.reduce(1) { $0.multipliedReportingOverflow(by: $1).partialValue } }

    /// A key unique within a checkpoint: role, slot and name.
    public var key: TensorKey {
        switch role {
        case .weight: return .weight(name)
        case .gradient: return .gradient(name)
        case .activation: return .activation(name)
        case .optimizer: return .optimizer(slotName ?? slot?.rawValue ?? "?", name)
        }
    }

    /// A short label for tables: the name, with the slot for optimizer state.
    public var label: String {
        switch role {
        case .weight: return name
        case .gradient: return name + " (grad)"
        case .activation: return name + " (activation)"
        case .optimizer: return name + " (" + (slotName ?? slot?.rawValue ?? "state") + ")"
        }
    }
}

/// The unit axis PyTorch uses: weights are [out, in, ...]; vectors have none.
public func torchUnitAxis(_ shape: [Int]) -> Int? { shape.count >= 2 ? 0 : nil }

/// The unit axis Keras uses: kernels are [..., in, out]; vectors have none.
public func kerasUnitAxis(_ shape: [Int]) -> Int? { shape.count >= 2 ? shape.count - 1 : nil }

/// A tensor's identity within a checkpoint: its role, its optimizer slot, and the name of
/// the parameter it belongs to. Where a string is needed (JSON, messages between processes)
/// it is written `weight:NAME`, `gradient:NAME`, `activation:NAME` or `optimizer:SLOT:NAME`,
/// and read back from that form.
public struct TensorKey: Hashable, Comparable, Sendable, Codable, CustomStringConvertible {
    public let role: TensorRole
    /// The optimizer slot's name (the framework's own, e.g. `exp_avg_sq`), for optimizer state only.
    public let slot: String?
    public let name: String

    public init(role: TensorRole, slot: String? = nil, name: String) {
        self.role = role
        self.slot = role == .optimizer ? (slot ?? "?") : nil
        self.name = name
    }

    public static func weight(_ name: String) -> TensorKey { TensorKey(role: .weight, name: name) }
    public static func gradient(_ name: String) -> TensorKey { TensorKey(role: .gradient, name: name) }
    public static func activation(_ name: String) -> TensorKey { TensorKey(role: .activation, name: name) }
    public static func optimizer(_ slot: String, _ name: String) -> TensorKey { TensorKey(role: .optimizer, slot: slot, name: name) }

    /// The written form: `weight:NAME`, `optimizer:SLOT:NAME`.
    public var description: String {
        role == .optimizer ? "optimizer:" + (slot ?? "?") + ":" + name : role.rawValue + ":" + name
    }

    /// Reads the written form; nil for anything else.
    public init?(_ text: String) {
        guard let colon = text.firstIndex(of: ":"), let role = TensorRole(rawValue: String(text[..<colon])) else { return nil }
        let rest = text[text.index(after: colon)...]
        if role == .optimizer {
            guard let second = rest.firstIndex(of: ":") else { return nil }
            self.init(role: role, slot: String(rest[..<second]), name: String(rest[rest.index(after: second)...]))
        } else {
            self.init(role: role, name: String(rest))
        }
    }

    /// Ordered as their written forms are.
    public static func < (a: TensorKey, b: TensorKey) -> Bool { a.description < b.description }

    public init(from decoder: Decoder) throws {
        let text = try decoder.singleValueContainer().decode(String.self)
        guard let key = TensorKey(text) else {
            throw DecodingError.dataCorrupted(DecodingError.Context(codingPath: decoder.codingPath, debugDescription: "not a tensor key: \(text)"))
        }
        self = key
    }

    public func encode(to encoder: Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(description)
    }
}
