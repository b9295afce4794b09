import Foundation
import GradScopeKernels
import Testing
@testable import GradScope
import TestSupport

/// The chunk kernels: the version this machine runs (AVX2 + FMA where the CPU has them)
/// against the baseline copy and against a direct float64 computation, on the same data.
@Suite("SIMD chunk kernels")
struct KernelTests {
    /// Chunks of awkward lengths and contents: zeros of both signs, subnormals, a large
    /// common offset, an outlier first, huge and tiny magnitudes.
    static func chunks() -> [[Float]] {
        var random = SplitMix64(seed: 77)
        var result: [[Float]] = []
        for n in [1, 7, 8, 15, 16, 17, 31, 100, 2047, 2048] {
            result.append((0..<n).map { _ in Float(random.gaussian()) })
            result.append((0..<n).map { i in i % 3 == 0 ? 0 : (i % 3 == 1 ? -0.0 : Float(random.gaussian()) * 1e-40) })
            result.append((0..<n).map { _ in Float(1000 + 0.01 * random.gaussian()) })
            var outlier = (0..<n).map { _ in Float(random.gaussian()) }
            outlier[0] = 3e19
            result.append(outlier)
            result.append((0..<n).map { i in i % 2 == 0 ? 3e38 : -1e-30 })
        }
        return result
    }

    static func close(_ a: Double, _ b: Double, _ relative: Double) -> Bool {
        a == b || (a - b).magnitude <= relative * max(a.magnitude, b.magnitude)
    }

    @Test("moments, extremes, zero counts and sketch keys agree with the baseline copy and with direct sums")
    func summarize() {
        // Which version runs here is reported, so a run on a machine without AVX2 says so.
        let isa = String(cString: gs_kernels_isa())
        #expect(isa == "avx2+fma" || isa == "baseline")
        for values in Self.chunks() {
            values.withUnsafeBufferPointer { buffer in
                let p = buffer.baseAddress!, n = Int64(buffer.count)
                // The centres the accumulator passes: none (a median of three of the chunk's values) or the running
                // mean of the chunks before, here that of this chunk rounded to float32. (A centre
                // far from a chunk's values costs that chunk digits, a loss that is negligible
                // against the whole tensor's sums, which the TensorStats tests check.)
                let chunkMean = values.map(Double.init).reduce(0, +) / Double(values.count)
                for center in [Double.nan, Double(Float(chunkMean))] {
                    var best = gs_float_summary(), base = gs_float_summary()
                    var bestCounts = [UInt32](repeating: 0, count: 65536), baseCounts = bestCounts
                    let bestOK = bestCounts.withUnsafeMutableBufferPointer { gs_summarize_finite_f32(p, n, center, $0.baseAddress, &best) }
                    let baseOK = baseCounts.withUnsafeMutableBufferPointer { gs_summarize_baseline(p, n, center, $0.baseAddress, &base) }
                    #expect(bestOK && baseOK)
                    #expect(bestCounts == baseCounts)
                    var direct = [UInt32](repeating: 0, count: 65536)
                    for x in values { direct[Int(x.bitPattern >> 16)] += 1 }
                    #expect(bestCounts == direct)
                    #expect(best.zeros == base.zeros && best.zeros == Int64(values.filter { $0 == 0 }.count))
                    #expect(best.min == Double(values.min()!) && best.max == Double(values.max()!))
                    #expect(best.min == base.min && best.max == base.max)
                    let doubles = values.map(Double.init)
                    let mean = doubles.reduce(0, +) / Double(values.count)
                    let m2 = doubles.reduce(0) { $0 + ($1 - mean) * ($1 - mean) }
                    let squares = doubles.reduce(0) { $0 + $1 * $1 }
                    for summary in [best, base] {
                        #expect(Self.close(summary.mean, mean, 1e-12), "mean of \(values.count) values, center \(center)")
                        #expect(Self.close(summary.sumSquares, squares, 1e-12), "n \(values.count) center \(center) first \(values[0])")
                        // M2 is a difference: compared with the scale of the data around the shift.
                        #expect((summary.m2 - m2).magnitude <= 1e-12 * max(m2, squares * 1e-6) + 1e-300)
                    }
                }
            }
        }
    }

    @Test("a NaN or an infinity sends a chunk to the checked path in both versions, keys still counted")
    func nonFinite() {
        for bad in [Float.nan, .infinity, -.infinity] {
            var values = (0..<40).map { Float($0) }
            values[33] = bad
            values.withUnsafeBufferPointer { buffer in
                var summary = gs_float_summary()
                var counts = [UInt32](repeating: 0, count: 65536), baseCounts = counts
                let best = counts.withUnsafeMutableBufferPointer { gs_summarize_finite_f32(buffer.baseAddress, 40, .nan, $0.baseAddress, &summary) }
                let base = baseCounts.withUnsafeMutableBufferPointer { gs_summarize_baseline(buffer.baseAddress, 40, .nan, $0.baseAddress, &summary) }
                #expect(!best && !base)
                #expect(counts.reduce(0, +) == 40 && counts == baseCounts)
                var pair = gs_drift_sums()
                let other = [Float](repeating: 1, count: 40)
                other.withUnsafeBufferPointer { b in
                    #expect(!gs_drift_finite_f32(buffer.baseAddress, b.baseAddress, 40, &pair))
                    #expect(!gs_drift_baseline(b.baseAddress, buffer.baseAddress, 40, &pair))
                }
            }
        }
    }

    @Test("drift sums and counts agree with the baseline copy and with direct sums")
    func drift() {
        var random = SplitMix64(seed: 78)
        for n in [1, 8, 15, 16, 17, 33, 2048, 2049] {
            let a = (0..<n).map { i in i % 5 == 0 ? Float(0) : Float(random.gaussian()) }
            let b = a.enumerated().map { i, x in i % 4 == 0 ? x : (i % 7 == 0 ? -x : x + Float(1e-3 * random.gaussian())) }
            a.withUnsafeBufferPointer { pa in
                b.withUnsafeBufferPointer { pb in
                    var best = gs_drift_sums(), base = gs_drift_sums()
                    #expect(gs_drift_finite_f32(pa.baseAddress, pb.baseAddress, Int64(n), &best))
                    #expect(gs_drift_baseline(pa.baseAddress, pb.baseAddress, Int64(n), &base))
                    let x = a.map(Double.init), y = b.map(Double.init)
                    let changed = zip(a, b).filter { $0.bitPattern != $1.bitPattern }.count
                    let flips = zip(x, y).filter { $0 * $1 < 0 }.count
                    let deltas = zip(x, y).map { $1 - $0 }
                    for sums in [best, base] {
                        #expect(sums.changed == Int64(changed) && sums.signFlips == Int64(flips))
                        #expect(Self.close(sums.squaresA, x.reduce(0) { $0 + $1 * $1 }, 1e-12))
                        #expect(Self.close(sums.squaresB, y.reduce(0) { $0 + $1 * $1 }, 1e-12))
                        #expect(Self.close(sums.squaresDelta, deltas.reduce(0) { $0 + $1 * $1 }, 1e-12))
                        #expect(Self.close(sums.dot, zip(x, y).reduce(0) { $0 + $1.0 * $1.1 }, 1e-12))
                        #expect(sums.maxAbsDelta == deltas.map(\.magnitude).max())
                    }
                    var q = 0.0, z: Int64 = 0, qBase = 0.0, zBase: Int64 = 0
                    gs_squares_zeros_f32(pa.baseAddress, Int64(n), &q, &z)
                    gs_squares_zeros_baseline(pa.baseAddress, Int64(n), &qBase, &zBase)
                    #expect(z == zBase && z == Int64(a.filter { $0 == 0 }.count))
                    #expect(Self.close(q, qBase, 1e-12) && Self.close(q, x.reduce(0) { $0 + $1 * $1 }, 1e-12))
                }
            }
        }
    }
}
