import GradScopeKernels

/// How the flat (row-major) elements of a tensor map to *units*: the output
/// neurons of a dense layer or the filters of a convolution.
///
/// Per-unit statistics (``TensorStats/unitNorms``, ``DriftStats/unitRelativeChange``)
/// group the elements of a tensor by unit. The flat index `i` of an element is
/// its position in the row-major (C order) storage of the tensor.
///
/// - ``none``: no per-unit statistics are computed.
/// - ``leading(units:innerSize:)``: unit-major storage, as in PyTorch weights
///   `[out, in, kh, kw]`. Element `i` belongs to unit `i / innerSize`, where
///   `innerSize` is the product of all dimensions after the first. Elements with
///   `i >= units * innerSize` (only possible if more data is supplied than the
///   shape describes) are not attributed to any unit.
/// - ``trailing(units:)``: unit-minor storage, as in Keras/TensorFlow weights
///   `[kh, kw, in, out]`. Element `i` belongs to unit `i % units`.
/// - ``leadingGated(units:gates:innerSize:)``: a recurrent layer's gate blocks
///   stacked along the leading axis, as in PyTorch's LSTM `weight_ih_l0`
///   `[4·hidden, in]`: row `r = i / innerSize` belongs to unit `r % units`, so a
///   unit gathers its row in every gate. (The Keras form `[in, 4·hidden]` needs
///   no case of its own: ``trailing(units:)`` with `units = hidden` maps column
///   `g·hidden + j` to unit `j`.)
///
/// Degenerate layouts never trap: a negative unit count is treated as zero, a
/// non-positive `innerSize` attributes no element to any unit, and elements
/// given at negative flat offsets are not attributed to any unit.
public enum UnitLayout: Sendable, Hashable {
    /// No per-unit statistics.
    case none
    /// Unit-major layout: element `i` belongs to unit `i / innerSize`.
    case leading(units: Int, innerSize: Int)
    /// Unit-minor layout: element `i` belongs to unit `i % units`.
    case trailing(units: Int)
    /// Gate blocks along the leading axis: element `i` belongs to unit `(i / innerSize) % units`,
    /// for rows below `units · gates`.
    case leadingGated(units: Int, gates: Int, innerSize: Int)

    /// The layout for a tensor of the given shape whose units run along `unitAxis`.
    ///
    /// - `unitAxis == 0` gives ``leading(units:innerSize:)`` with
    ///   `units = shape[0]` and `innerSize = shape[1] * ... * shape[rank - 1]`.
    /// - `unitAxis == shape.count - 1` gives ``trailing(units:)`` with
    ///   `units = shape[rank - 1]`.
    /// - A rank below 2, a `nil` axis, any other axis, or a shape whose element
    ///   count overflows `Int` gives ``none``.
    ///
    /// Negative dimensions are treated as zero.
    public static func forShape(_ shape: [Int], unitAxis: Int?) -> UnitLayout {
        forShape(shape, unitAxis: unitAxis, gates: nil)
    }

    /// The layout for a tensor whose unit axis holds `gates` blocks of `shape[unitAxis] / gates`
    /// units each (a recurrent layer: LSTM 4, GRU 3): a unit is one hidden unit, all its gates
    /// together. `gates` of nil or 1, or one that does not divide the axis, gives the plain layout.
    public static func forShape(_ shape: [Int], unitAxis: Int?, gates: Int?) -> UnitLayout {
        guard let axis = unitAxis, shape.count >= 2 else { return .none }
        let gates = gates ?? 1
        let gated = gates > 1 && axis >= 0 && axis < shape.count && shape[axis] > 0 && shape[axis] % gates == 0
        if axis == 0 {
            var inner = 1
            for dimension in shape.dropFirst() {
                let (product, overflow) = inner.multipliedReportingOverflow(by: Swift.max(0, dimension))
                if overflow { return .none }
                inner = product
            }
            if gated { return .leadingGated(units: shape[0] / gates, gates: gates, innerSize: inner) }
            return .leading(units: Swift.max(0, shape[0]), innerSize: inner)
        }
        if axis == shape.count - 1 {
            return .trailing(units: gated ? shape[axis] / gates : Swift.max(0, shape[axis]))
        }
        return .none
    }

    /// The number of units, or `nil` for ``none``. Negative counts read as zero.
    public var unitCount: Int? {
        switch self {
        case .none: return nil
        case .leading(let units, _): return Swift.max(0, units)
        case .trailing(let units): return Swift.max(0, units)
        case .leadingGated(let units, _, _): return Swift.max(0, units)
        }
    }
}

/// The normalized form of a ``UnitLayout`` used by the streaming kernels.
package struct StatsUnitMap: Sendable, Equatable {
    package enum Kind: Sendable, Equatable {
        case none
        case leading
        case trailing
    }

    package let kind: Kind
    /// Number of units (never negative); 0 for `.none`.
    package let units: Int
    /// Elements per unit for `.leading`; 0 otherwise.
    package let innerSize: Int
    /// For `.leading`: rows per unit (gate blocks of a recurrent layer; 1 otherwise). Row `r` belongs
    /// to unit `r % units`, for rows below `units · gates`.
    package let gates: Int

    package init(_ layout: UnitLayout) {
        switch layout {
        case .none:
            kind = .none
            units = 0
            innerSize = 0
            gates = 1
        case .leading(let units, let innerSize):
            kind = .leading
            self.units = Swift.max(0, units)
            self.innerSize = innerSize
            gates = 1
        case .leadingGated(let units, let gates, let innerSize):
            kind = .leading
            self.units = Swift.max(0, units)
            self.innerSize = innerSize
            self.gates = Swift.max(1, gates)
        case .trailing(let units):
            kind = .trailing
            self.units = Swift.max(0, units)
            innerSize = 0
            gates = 1
        }
    }

    package var isActive: Bool { kind != .none }

    /// Splits the block of flat indices `[offset, offset + count)` into runs and
    /// calls `body(firstUnit, start, length)` for each; `start` is the position
    /// of the run inside the block. For `.leading` every element of a run belongs
    /// to `firstUnit`; for `.trailing` the run is part of one row, and its
    /// elements belong to the consecutive units `firstUnit ..< firstUnit + length`.
    /// Unattributed elements are skipped.
    @inline(__always)
    package func forEachRun(offset: Int, count: Int, _ body: (Int, Int, Int) -> Void) {
        guard kind != .none, units > 0, count > 0 else { return }
        // Elements at negative flat indices are not attributed.
        let first = offset >= 0 ? 0 : (offset > -count ? -offset : count)
        switch kind {
        case .none:
            return
        case .leading:
            guard innerSize > 0 else { return }
            var i = first
            while i < count {
                let flat = offset &+ i
                if flat < 0 { return }  // the flat index wrapped around Int.max
                let row = flat / innerSize
                if row >= units &* gates { return }
                let run = Swift.min(count &- i, innerSize &- flat % innerSize)
                body(gates == 1 ? row : row % units, i, run)
                i &+= run
            }
        case .trailing:
            var unit = (offset &+ first) % units
            if unit < 0 { unit &+= units }
            var i = first
            while i < count {
                let run = Swift.min(units &- unit, count &- i)
                body(unit, i, run)
                i &+= run
                unit = 0
            }
        }
    }
}

/// How the flat (row-major) elements of a kernel map to its *input* units: element `i` belongs to
/// input unit `(i / stride) % units`. A PyTorch `[out, in, k...]` kernel has its inputs on axis 1
/// (`stride` = ∏k, 1 for a matrix); a Keras `[k..., in, out]` kernel on axis rank − 2 (`stride` =
/// out). Only exact zeros are counted per input unit: an input unit all of whose elements are zero
/// in a weight gradient received an input that was zero on every example that carried gradient.
package struct InputUnitMap: Sendable, Equatable {
    package let units: Int
    package let stride: Int

    package init(units: Int, stride: Int) {
        self.units = Swift.max(0, units)
        self.stride = Swift.max(0, stride)
    }

    /// The input units of a kernel of `shape` whose output units run along `unitAxis` (0: PyTorch,
    /// rank − 1: Keras); nil for a rank below 2, another axis, or a shape that overflows.
    package static func forKernel(shape: [Int], unitAxis: Int?) -> InputUnitMap? {
        guard let axis = unitAxis, shape.count >= 2, shape.allSatisfy({ $0 >= 0 }) else { return nil }
        let inputAxis: Int
        if axis == 0 {
            inputAxis = 1
        } else if axis == shape.count - 1 {
            inputAxis = shape.count - 2
        } else {
            return nil
        }
        var stride = 1
        for dimension in shape[(inputAxis + 1)...] {
            let (product, overflow) = stride.multipliedReportingOverflow(by: dimension)
            if overflow { return nil }
            stride = product
        }
        return InputUnitMap(units: shape[inputAxis], stride: stride)
    }

    /// Adds the exact zeros (±0; NaN is not zero) of the block `p[0..<n]`, whose first element has flat
    /// index `offset`, to `zeros[unit]`.
    @inline(__always)
    package func countZeros<T: BinaryFloatingPoint>(_ p: UnsafePointer<T>, count n: Int, offset: Int, into zeros: UnsafeMutablePointer<Int>) {
        guard units > 0, stride > 0, offset >= 0, n > 0 else { return }
        var i = 0
        if stride == 1 {
            // A row of units at a time, without a branch per value (the compiler vectorises it).
            var unit = offset % units
            while i < n {
                let run = Swift.min(n &- i, units &- unit)
                let values = p + i, counts = zeros + unit
                for k in 0..<run { counts[k] &+= values[k] == 0 ? 1 : 0 }
                i &+= run
                unit = 0
            }
            return
        }
        while i < n {
            let flat = offset &+ i
            let run = Swift.min(n &- i, stride &- flat % stride)
            let unit = (flat / stride) % units
            var z = 0
            for j in i..<(i &+ run) where p[j] == 0 { z &+= 1 }
            zeros[unit] &+= z
            i &+= run
        }
    }
}
