import ElementTypes
import Foundation
import GradScopeDiagnosis
import GradScopeMeasurement
import GradScopeModel
import GradScopeRendering
import GradScopeSources
import GradScopeStatistics
import TestSupport

/// Straightforward reference computations over a whole array.
struct StatsReference {
    var count = 0
    var finiteCount = 0
    var zeros = 0
    var nan = 0
    var posInf = 0
    var negInf = 0
    var mean: Double?
    var std: Double?
    var min: Double?
    var max: Double?
    var maxAbs: Double?
    var l2Norm: Double?
    /// Finite values, ascending.
    var sorted: [Double] = []
    var log2Counts: [Int: Int] = [:]

    init(_ values: [Double]) {
        count = values.count
        var finite: [Double] = []
        for x in values {
            if x.isNaN {
                nan += 1
            } else if x == .infinity {
                posInf += 1
            } else if x == -.infinity {
                negInf += 1
            } else {
                finite.append(x)
                if x == 0 {
                    zeros += 1
                } else {
                    log2Counts[Int(x.exponent), default: 0] += 1
                }
            }
        }
        finiteCount = finite.count
        guard !finite.isEmpty else { return }
        let n = Double(finite.count)
        // Two-pass mean and variance with compensated sums.
        let m0 = Self.compensatedSum(finite) / n
        let correction = Self.compensatedSum(finite.map { $0 - m0 }) / n
        let m = m0 + correction
        mean = m
        sorted = finite.sorted()
        min = sorted.first
        max = sorted.last
        let largest = finite.map { $0.magnitude }.max() ?? 0
        maxAbs = largest
        // Squares are taken of values divided by a power of two near the largest
        // magnitude, so they neither overflow nor underflow.
        let scale = largest > 0 ? Double(sign: .plus, exponent: largest.exponent, significand: 1) : 1
        std = scale * (Self.compensatedSum(finite.map { (($0 - m) / scale) * (($0 - m) / scale) }) / n).squareRoot()
        l2Norm = scale * Self.compensatedSum(finite.map { ($0 / scale) * ($0 / scale) }).squareRoot()
    }

    init(_ values: [Float]) {
        self.init(values.map { Double($0) })
    }

    /// Nearest-rank quantile: the value of rank `ceil(n * percent / 100)`.
    func quantile(percent: Int) -> Double? {
        guard !sorted.isEmpty else { return nil }
        let rank = Swift.max(1, Int((Double(sorted.count) * Double(percent) / 100).rounded(.up)))
        return sorted[Swift.min(rank, sorted.count) - 1]
    }

    static func compensatedSum(_ values: [Double]) -> Double {
        var sum = 0.0
        var compensation = 0.0
        for x in values {
            let t = sum + x
            if sum.magnitude >= x.magnitude {
                compensation += (sum - t) + x
            } else {
                compensation += (x - t) + sum
            }
            sum = t
        }
        return sum + compensation
    }
}

/// Reference per-unit L2 norms and zero counts.
func statsReferenceUnitNorms(_ values: [Double], layout: UnitLayout) -> (norms: [Double], zeros: [Int])? {
    guard let units = layout.unitCount else { return nil }
    var squares = [Double](repeating: 0, count: units)
    var zeros = [Int](repeating: 0, count: units)
    for (i, x) in values.enumerated() where x.isFinite {
        let unit: Int
        switch layout {
        case .none: return nil
        case .leading(_, let inner): unit = i / inner
        case .trailing(let u): unit = i % u
        case .leadingGated(let u, let gates, let inner):
            guard i / inner < u * gates else { continue }
            unit = (i / inner) % u
        }
        guard unit < units else { continue }
        squares[unit] += x * x
        if x == 0 { zeros[unit] += 1 }
    }
    return (squares.map { $0.squareRoot() }, zeros)
}

/// Feeds `values` to `accumulator` in blocks whose sizes cycle through `blockSizes`.
func statsAddInBlocks(_ values: [Float], to accumulator: inout StatsAccumulator, blockSizes: [Int], startOffset: Int = 0) {
    values.withUnsafeBufferPointer { buffer in
        var i = 0
        var k = 0
        while i < buffer.count {
            let n = Swift.min(blockSizes[k % blockSizes.count], buffer.count - i)
            accumulator.add(UnsafeBufferPointer(rebasing: buffer[i..<i + n]), at: startOffset + i)
            i += n
            k += 1
        }
    }
}

func statsAddInBlocks(_ values: [Double], to accumulator: inout StatsAccumulator, blockSizes: [Int], startOffset: Int = 0) {
    values.withUnsafeBufferPointer { buffer in
        var i = 0
        var k = 0
        while i < buffer.count {
            let n = Swift.min(blockSizes[k % blockSizes.count], buffer.count - i)
            accumulator.add(UnsafeBufferPointer(rebasing: buffer[i..<i + n]), at: startOffset + i)
            i += n
            k += 1
        }
    }
}

/// `|a - b| <= relative * |b| + absolute`; two nils also match.
func statsClose(_ a: Double?, _ b: Double?, relative: Double, absolute: Double = 0) -> Bool {
    switch (a, b) {
    case (nil, nil):
        return true
    case let (x?, y?):
        return (x - y).magnitude <= relative * y.magnitude + absolute
    default:
        return false
    }
}

/// Gaussian `Float32` data with a sprinkling of special values, deterministic for a seed.
func statsMixedFloatData(count: Int, seed: UInt64, mean: Double = 0.01, scale: Double = 0.05) -> [Float] {
    var random = SplitMix64(seed: seed)
    var values = (0..<count).map { _ in Float(mean + scale * random.gaussian()) }
    let specials: [Float] = [
        .nan, .nan, .infinity, .infinity, -.infinity, 0, -0.0, 0,
        Float.leastNonzeroMagnitude, -Float.leastNonzeroMagnitude * 7, Float(bitPattern: 0x0000_FFFF),
        Float(bitPattern: 0x0001_0000), Float.leastNormalMagnitude, -Float(bitPattern: 0x0040_0000),
    ]
    for special in specials where count > 0 {
        values[random.index(below: count)] = special
    }
    return values
}
