import ElementTypes
import Foundation
import GradScopeDiagnosis
import GradScopeKernels
import GradScopeMeasurement
import GradScopeModel
import GradScopeRendering
import GradScopeSources
import GradScopeStatistics
import TestSupport
import Testing

/// The chunk kernels: every copy this machine can run (the dispatched one, and each
/// instruction set's own copy, so that on an AVX-512 machine the AVX2 copy is tested
/// too) against the baseline copy and against a direct float64 computation, on the
/// same data.
@Suite("SIMD chunk kernels")
struct KernelTests {
    /// A copy of the kernels under test, with the name the messages give it.
    struct Copy: CustomStringConvertible, @unchecked Sendable {
        let name: String
        let table: gs_kernel_table
        var description: String { name }

        func summarize(
            _ p: UnsafePointer<Float>, _ n: Int, _ center: Double, _ counts: UnsafeMutablePointer<UInt32>?,
            _ out: inout gs_float_summary
        ) -> Bool {
            table.summarize(p, Int64(n), center, counts, &out)
        }

        func drift(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ n: Int, _ out: inout gs_drift_sums) -> Bool {
            table.drift(a, b, Int64(n), &out)
        }
    }

    /// The dispatched kernels, then every instruction set's copy that this build has and
    /// this CPU runs (the baseline itself is the reference).
    static let copies: [Copy] = {
        var result = [
            Copy(
                name: "dispatched (\(String(cString: gs_kernels_isa())))",
                table: gs_kernel_table(
                    isa: gs_kernels_isa(), summarize: gs_summarize_finite_f32,
                    count_keys: gs_count_keys_f32, drift: gs_drift_finite_f32,
                    squares_zeros: gs_squares_zeros_f32, sum_counts: gs_sum_counts, drift_norms: gs_drift_norms_finite_f32,
                    summarize_drift: gs_summarize_drift_finite_f32))
        ]
        for isa in ["avx2+fma", "avx512"] {
            if let table = gs_kernels_for_isa(isa) { result.append(Copy(name: isa, table: table.pointee)) }
        }
        return result
    }()

    /// Lengths around the block sizes of the copies (16 values for 32-byte vectors, 32 for
    /// 64-byte ones) and the lag of the sparse path's key ring, n < 16 and n = 1 among them.
    static let lengths = [1, 2, 7, 8, 15, 16, 17, 31, 32, 33, 47, 63, 64, 65, 95, 97, 100, 129, 2047, 2048, 2049]

    /// Chunks of awkward lengths and contents: zeros of both signs (dense enough for the
    /// sparse path of the sketch counts, or only at the start), subnormals, a large common
    /// offset, an outlier first, huge and tiny magnitudes.
    static func chunks() -> [[Float]] {
        var random = SplitMix64(seed: 77)
        var result: [[Float]] = []
        for n in lengths {
            result.append((0..<n).map { _ in Float(random.gaussian()) })
            result.append((0..<n).map { i in i % 3 == 0 ? 0 : (i % 3 == 1 ? -0.0 : Float(random.gaussian()) * 1e-40) })
            result.append((0..<n).map { _ in Float(1000 + 0.01 * random.gaussian()) })
            var outlier = (0..<n).map { _ in Float(random.gaussian()) }
            outlier[0] = 3e19
            result.append(outlier)
            result.append((0..<n).map { i in i % 2 == 0 ? 3e38 : -1e-30 })
            // Half zeros of either sign at random places; nine in ten zeros, most of them -0.
            result.append((0..<n).map { _ in random.next() % 2 == 0 ? (random.next() % 2 == 0 ? 0 : -0.0) : Float(random.gaussian()) })
            result.append((0..<n).map { _ in random.next() % 10 == 0 ? Float(random.gaussian()) : (random.next() % 4 == 0 ? 0 : -0.0) })
            // Zeros in the first 64 values only, then dense; dense first, then zeros.
            result.append((0..<n).map { i in i < 64 ? (i % 2 == 0 ? 0 : -0.0) : Float(random.gaussian()) })
            result.append((0..<n).map { i in i < 64 ? Float(random.gaussian()) : 0 })
            // Subnormals and zeros only: keys 0 to 15 and 0x8000 onwards, where zeros' keys are redirected.
            result.append(
                (0..<n).map { i in
                    i % 4 == 0 ? 0 : Float(bitPattern: UInt32(truncatingIfNeeded: random.next()) & 0x800F_FFFF)
                })
        }
        return result
    }

    static func close(_ a: Double, _ b: Double, _ relative: Double) -> Bool {
        a == b || (a - b).magnitude <= relative * max(a.magnitude, b.magnitude)
    }

    @Test("the dispatched copy is the widest this CPU runs, and every copy it can run is offered")
    func instructionSets() {
        // Which version runs here is reported, so a run on a machine without AVX2 says so.
        let isa = String(cString: gs_kernels_isa())
        #expect(["avx512", "avx2+fma", "baseline"].contains(isa))
        #expect(gs_kernels_for_isa("baseline") != nil)
        #expect(gs_kernels_for_isa("sse9") == nil)
        if let table = gs_kernels_for_isa(isa) { #expect(String(cString: table.pointee.isa) == isa) }
        if isa == "avx512" { #expect(gs_kernels_for_isa("avx2+fma") != nil) }
        if isa == "baseline" { #expect(gs_kernels_for_isa("avx2+fma") == nil && gs_kernels_for_isa("avx512") == nil) }
        #expect(Self.copies.count >= 1)
    }

    @Test(
        "moments, extremes, zero counts and sketch keys agree with the baseline copy and with direct sums",
        arguments: copies)
    func summarize(copy: Copy) {
        for values in Self.chunks() {
            values.withUnsafeBufferPointer { buffer in
                let p = buffer.baseAddress!, n = buffer.count
                // The centres the accumulator passes: none (a median of three of the chunk's values) or the running
                // mean of the chunks before, here that of this chunk rounded to float32. (A centre
                // far from a chunk's values costs that chunk digits, a loss that is negligible
                // against the whole tensor's sums, which the TensorStats tests check.)
                let chunkMean = values.map(Double.init).reduce(0, +) / Double(values.count)
                var direct = [UInt32](repeating: 0, count: 65536)
                for x in values { direct[Int(x.bitPattern >> 16)] += 1 }
                for center in [Double.nan, Double(Float(chunkMean))] {
                    var best = gs_float_summary(), base = gs_float_summary(), plain = gs_float_summary()
                    var bestCounts = [UInt32](repeating: 0, count: 65536), baseCounts = bestCounts
                    let bestOK = bestCounts.withUnsafeMutableBufferPointer { copy.summarize(p, n, center, $0.baseAddress, &best) }
                    let baseOK = baseCounts.withUnsafeMutableBufferPointer { gs_summarize_baseline(p, Int64(n), center, $0.baseAddress, &base) }
                    #expect(bestOK && baseOK, "\(copy): n \(n)")
                    #expect(bestCounts == baseCounts, "\(copy): n \(n) first \(values[0])")
                    #expect(bestCounts == direct, "\(copy): n \(n) first \(values[0])")
                    // Without the counts, the same summary.
                    #expect(copy.summarize(p, n, center, nil, &plain))
                    #expect(plain.zeros == best.zeros && plain.min == best.min && plain.max == best.max)
                    #expect(plain.mean == best.mean && plain.m2 == best.m2 && plain.sumSquares == best.sumSquares)
                    #expect(best.zeros == base.zeros && best.zeros == Int64(values.filter { $0 == 0 }.count))
                    #expect(best.min == Double(values.min()!) && best.max == Double(values.max()!))
                    #expect(best.min == base.min && best.max == base.max)
                    let doubles = values.map(Double.init)
                    let mean = doubles.reduce(0, +) / Double(values.count)
                    let m2 = doubles.reduce(0) { $0 + ($1 - mean) * ($1 - mean) }
                    let squares = doubles.reduce(0) { $0 + $1 * $1 }
                    for summary in [best, base] {
                        #expect(Self.close(summary.mean, mean, 1e-12), "\(copy): mean of \(n) values, center \(center)")
                        #expect(Self.close(summary.sumSquares, squares, 1e-12), "\(copy): n \(n) center \(center) first \(values[0])")
                        // M2 is a difference: compared with the scale of the data around the shift.
                        #expect((summary.m2 - m2).magnitude <= 1e-12 * max(m2, squares * 1e-6) + 1e-300)
                    }
                }
            }
        }
    }

    @Test("sketch counts add to a table that already holds counts, on either path", arguments: copies)
    func countsAccumulate(copy: Copy) {
        var random = SplitMix64(seed: 79)
        let dense = (0..<2048).map { _ in Float(random.gaussian()) }
        let sparse = (0..<2048).map { _ in random.next() % 3 == 0 ? Float(random.gaussian()) : (random.next() % 2 == 0 ? 0 : -0.0) }
        var counts = (0..<65536).map { _ in UInt32(truncatingIfNeeded: random.next() % 5) }
        var expected = counts
        for values in [dense, sparse, sparse, dense] {
            for x in values { expected[Int(x.bitPattern >> 16)] &+= 1 }
            values.withUnsafeBufferPointer { buffer in
                var summary = gs_float_summary()
                let ok = counts.withUnsafeMutableBufferPointer { copy.summarize(buffer.baseAddress!, buffer.count, .nan, $0.baseAddress, &summary) }
                #expect(ok)
            }
        }
        #expect(counts == expected, "\(copy)")
        // gs_count_keys_f32 and the copies' count_keys add the same keys.
        var keyCounts = [UInt32](repeating: 0, count: 65536), baseKeyCounts = keyCounts
        sparse.withUnsafeBufferPointer { buffer in
            keyCounts.withUnsafeMutableBufferPointer { copy.table.count_keys(buffer.baseAddress, 2047, $0.baseAddress) }
            baseKeyCounts.withUnsafeMutableBufferPointer { gs_count_keys_baseline(buffer.baseAddress, 2047, $0.baseAddress) }
        }
        #expect(keyCounts == baseKeyCounts)
    }

    @Test("a NaN or an infinity sends a chunk to the checked path in every copy, keys still counted", arguments: copies)
    func nonFinite(copy: Copy) {
        for bad in [Float.nan, .infinity, -.infinity] {
            for n in [1, 5, 16, 17, 40, 70, 2048] {
                for position in Set([0, n / 2, n - 1]) {
                    // Dense, and with enough zeros for the sparse path of the counts.
                    for zeroEvery in [0, 2] {
                        var values = (0..<n).map { i in zeroEvery > 0 && i % zeroEvery == 0 ? 0 : Float(i) - 3 }
                        values[position] = bad
                        values.withUnsafeBufferPointer { buffer in
                            var summary = gs_float_summary()
                            var counts = [UInt32](repeating: 0, count: 65536), baseCounts = counts
                            let best = counts.withUnsafeMutableBufferPointer {
                                copy.summarize(buffer.baseAddress!, n, .nan, $0.baseAddress, &summary)
                            }
                            let base = baseCounts.withUnsafeMutableBufferPointer {
                                gs_summarize_baseline(buffer.baseAddress, Int64(n), .nan, $0.baseAddress, &summary)
                            }
                            #expect(!best && !base, "\(copy): \(bad) at \(position) of \(n)")
                            var direct = [UInt32](repeating: 0, count: 65536)
                            for x in values { direct[Int(x.bitPattern >> 16)] += 1 }
                            #expect(counts == direct && counts == baseCounts, "\(copy): \(bad) at \(position) of \(n)")
                            var pair = gs_drift_sums()
                            let other = [Float](repeating: 1, count: n)
                            other.withUnsafeBufferPointer { b in
                                #expect(!copy.drift(buffer.baseAddress!, b.baseAddress!, n, &pair), "\(copy): \(bad) at \(position) of \(n)")
                                #expect(!copy.drift(b.baseAddress!, buffer.baseAddress!, n, &pair))
                                #expect(!gs_drift_baseline(b.baseAddress, buffer.baseAddress, Int64(n), &pair))
                            }
                        }
                    }
                }
            }
        }
    }

    /// Pairs for the drift sums: small changes, unchanged values, sign flips, zeros of both
    /// signs against each other and against values, subnormals whose float32 product would
    /// underflow to zero, and huge values.
    static func pairs(_ n: Int, _ random: inout SplitMix64) -> [(a: [Float], b: [Float])] {
        let a = (0..<n).map { i in i % 5 == 0 ? Float(0) : Float(random.gaussian()) }
        let b = a.enumerated().map { i, x in i % 4 == 0 ? x : (i % 7 == 0 ? -x : x + Float(1e-3 * random.gaussian())) }
        let zeros: [Float] = [0, -0.0]
        let signedZeros = (0..<n).map { _ in zeros[Int(random.next() % 2)] }
        let mixed = (0..<n).map { i in i % 3 == 0 ? zeros[Int(random.next() % 2)] : Float(random.gaussian()) }
        let subnormalA = (0..<n).map { _ in Float(bitPattern: UInt32(truncatingIfNeeded: random.next()) & 0x800F_FFFF) }
        let subnormalB = (0..<n).map { _ in Float(bitPattern: UInt32(truncatingIfNeeded: random.next()) & 0x800F_FFFF) }
        let huge = (0..<n).map { i in Float(random.gaussian()) * (i % 2 == 0 ? 1e37 : 1e-38) }
        let hugeOther = huge.map { -$0 * 0.5 }
        return [(a, b), (signedZeros, mixed), (mixed, signedZeros), (subnormalA, subnormalB), (subnormalA, mixed), (huge, hugeOther)]
    }

    @Test("drift sums and counts agree with the baseline copy and with direct sums", arguments: copies)
    func drift(copy: Copy) {
        var random = SplitMix64(seed: 78)
        for n in Self.lengths + [4099] {
            for (a, b) in Self.pairs(n, &random) {
                a.withUnsafeBufferPointer { pa in
                    b.withUnsafeBufferPointer { pb in
                        var best = gs_drift_sums(), base = gs_drift_sums()
                        #expect(copy.drift(pa.baseAddress!, pb.baseAddress!, n, &best), "\(copy): n \(n)")
                        #expect(gs_drift_baseline(pa.baseAddress, pb.baseAddress, Int64(n), &base))
                        let x = a.map(Double.init), y = b.map(Double.init)
                        let changed = zip(a, b).filter { $0.bitPattern != $1.bitPattern }.count
                        // The definition of a sign flip: a negative float64 product.
                        let flips = zip(x, y).filter { $0 * $1 < 0 }.count
                        let deltas = zip(x, y).map { $1 - $0 }
                        for sums in [best, base] {
                            #expect(sums.changed == Int64(changed) && sums.signFlips == Int64(flips), "\(copy): n \(n) first \(a[0]) \(b[0])")
                            #expect(Self.close(sums.squaresA, x.reduce(0) { $0 + $1 * $1 }, 1e-12))
                            #expect(Self.close(sums.squaresB, y.reduce(0) { $0 + $1 * $1 }, 1e-12))
                            #expect(Self.close(sums.squaresDelta, deltas.reduce(0) { $0 + $1 * $1 }, 1e-12))
                            // The dot product may cancel: compared with the scale of its terms.
                            let dot = zip(x, y).reduce(0) { $0 + $1.0 * $1.1 }
                            let scale = zip(x, y).reduce(0) { $0 + ($1.0 * $1.1).magnitude }
                            #expect((sums.dot - dot).magnitude <= 1e-12 * scale, "\(copy): n \(n)")
                            #expect(sums.maxAbsDelta == deltas.map(\.magnitude).max())
                        }
                    }
                }
            }
        }
    }

    @Test("the drift's norms alone are the full drift's sums to the bit; a NaN or an infinity is refused", arguments: copies)
    func driftNorms(copy: Copy) {
        var random = SplitMix64(seed: 79)
        for n in Self.lengths + [4099] {
            for (a, b) in Self.pairs(n, &random) {
                a.withUnsafeBufferPointer { pa in
                    b.withUnsafeBufferPointer { pb in
                        var full = gs_drift_sums(), norms = gs_drift_sums(), base = gs_drift_sums()
                        #expect(copy.drift(pa.baseAddress!, pb.baseAddress!, n, &full))
                        #expect(copy.table.drift_norms(pa.baseAddress, pb.baseAddress, Int64(n), &norms), "\(copy): n \(n)")
                        #expect(gs_drift_norms_baseline(pa.baseAddress, pb.baseAddress, Int64(n), &base))
                        #expect(norms.squaresA.bitPattern == full.squaresA.bitPattern, "\(copy): n \(n)")
                        #expect(
                            norms.squaresB.bitPattern == full.squaresB.bitPattern && norms.squaresDelta.bitPattern == full.squaresDelta.bitPattern)
                        #expect(norms.changed == full.changed && norms.dot == 0 && norms.signFlips == 0 && norms.maxAbsDelta == 0)
                        #expect(base.changed == full.changed && Self.close(base.squaresDelta, full.squaresDelta, 1e-12))
                    }
                }
            }
            var a = (0..<n).map { _ in Float(random.gaussian()) }
            let b = a.map { $0 + 1e-3 }
            for bad in [Float.nan, .infinity, -.infinity] {
                a[n / 2] = bad
                var sums = gs_drift_sums()
                #expect(!copy.table.drift_norms(a, b, Int64(n), &sums), "\(copy): \(bad) in \(n)")
                #expect(!copy.table.drift_norms(b, a, Int64(n), &sums))
            }
        }
    }

    /// Every copy, the baseline's own included (its one pass is its two kernels).
    static let copiesAndBaseline = copies + [Copy(name: "baseline", table: gs_kernels_for_isa("baseline")!.pointee)]

    @Test(
        "one pass for a chunk's summary and its drift gives each kernel's results to the bit, keys and refusals included",
        arguments: copiesAndBaseline)
    func summarizeWithDrift(copy: Copy) {
        var random = SplitMix64(seed: 80)
        // The chunks as the later values, each against a changed copy of itself; the drift's pairs too.
        var cases: [(a: [Float], b: [Float])] = Self.chunks().map { b in
            (b.enumerated().map { i, x in i % 3 == 0 ? x : x * (1 + Float(1e-3 * random.gaussian())) }, b)
        }
        for n in Self.lengths + [4099] { cases += Self.pairs(n, &random) }
        // A NaN or an infinity in either version, at the start, the middle or the end.
        for bad in [Float.nan, .infinity, -.infinity] {
            for n in [1, 33, 2048] {
                let b = (0..<n).map { _ in Float(random.gaussian()) }
                for at in Set([0, n / 2, n - 1]) {
                    var withBad = b
                    withBad[at] = bad
                    cases += [(withBad, b), (b, withBad)]
                }
            }
        }
        var separateCounts = [UInt32](repeating: 0, count: 65536), fusedCounts = separateCounts
        for (a, b) in cases {
            for center in [Double.nan, 0.25] {
                for counting in [false, true] {
                    separateCounts.withUnsafeMutableBufferPointer { separateTable in
                        fusedCounts.withUnsafeMutableBufferPointer { fusedTable in
                            a.withUnsafeBufferPointer { pa in
                                b.withUnsafeBufferPointer { pb in
                                    let n = b.count
                                    var summary = gs_float_summary(), fused = gs_float_summary()
                                    var drift = gs_drift_sums(), fusedDrift = gs_drift_sums()
                                    var fusedDriftFinite = false
                                    let finite = copy.table.summarize(
                                        pb.baseAddress, Int64(n), center, counting ? separateTable.baseAddress : nil, &summary)
                                    let driftFinite = copy.table.drift_norms(pa.baseAddress, pb.baseAddress, Int64(n), &drift)
                                    let fusedFinite = copy.table.summarize_drift(
                                        pb.baseAddress, pa.baseAddress, Int64(n), center, counting ? fusedTable.baseAddress : nil, &fused,
                                        &fusedDrift, &fusedDriftFinite)
                                    #expect(fusedFinite == finite && fusedDriftFinite == driftFinite, "\(copy): n \(n) first \(a[0]) \(b[0])")
                                    if finite {
                                        #expect(
                                            fused.zeros == summary.zeros && fused.minMagnitudeBits == summary.minMagnitudeBits
                                                && fused.min.bitPattern == summary.min.bitPattern && fused.max.bitPattern == summary.max.bitPattern,
                                            "\(copy): n \(n)")
                                        #expect(
                                            fused.mean.bitPattern == summary.mean.bitPattern && fused.m2.bitPattern == summary.m2.bitPattern
                                                && fused.sumSquares.bitPattern == summary.sumSquares.bitPattern, "\(copy): n \(n)")
                                    }
                                    if driftFinite {
                                        #expect(
                                            fusedDrift.squaresA.bitPattern == drift.squaresA.bitPattern
                                                && fusedDrift.squaresB.bitPattern == drift.squaresB.bitPattern
                                                && fusedDrift.squaresDelta.bitPattern == drift.squaresDelta.bitPattern, "\(copy): n \(n)")
                                        #expect(
                                            fusedDrift.changed == drift.changed && fusedDrift.signFlips == 0 && fusedDrift.dot == 0
                                                && fusedDrift.maxAbsDelta == 0)
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        // The keys of every chunk, finite or not, counted alike.
        #expect(fusedCounts == separateCounts, "\(copy)")
        #expect(separateCounts.reduce(0) { $0 + Int($1) } == cases.reduce(0) { $0 + 2 * $1.b.count })
    }

    @Test("squares and zero counts agree with the baseline copy and with direct sums", arguments: copies)
    func squaresZeros(copy: Copy) {
        for values in Self.chunks() {
            values.withUnsafeBufferPointer { buffer in
                let n = Int64(buffer.count)
                var q = 0.0, z: Int64 = 0, qBase = 0.0, zBase: Int64 = 0
                copy.table.squares_zeros(buffer.baseAddress, n, &q, &z)
                gs_squares_zeros_baseline(buffer.baseAddress, n, &qBase, &zBase)
                #expect(z == zBase && z == Int64(values.filter { $0 == 0 }.count), "\(copy): n \(n)")
                let direct = values.reduce(0) { $0 + Double($1) * Double($1) }
                #expect(Self.close(q, qBase, 1e-12) && Self.close(q, direct, 1e-12), "\(copy): n \(n)")
            }
        }
    }

    @Test("count sums agree with the baseline copy and with direct sums, past 32-bit totals", arguments: copies)
    func countSums(copy: Copy) {
        var random = SplitMix64(seed: 12)
        var counts = (0..<300).map { _ in UInt32(truncatingIfNeeded: random.next()) }
        counts[7] = .max
        counts.withUnsafeBufferPointer { buffer in
            guard let base = buffer.baseAddress else { return }
            for start in [0, 1, 5] {
                for n in [0, 1, 15, 16, 31, 32, 33, 63, 64, 65, 100, 250] + Self.lengths.filter { $0 <= 295 } {
                    let direct = counts[start..<(start + n)].reduce(UInt64(0)) { $0 + UInt64($1) }
                    #expect(copy.table.sum_counts(base + start, Int64(n)) == direct, "\(copy): \(start) + \(n)")
                    #expect(gs_sum_counts_baseline(base + start, Int64(n)) == direct)
                }
            }
        }
        #expect(counts[0..<20].reduce(UInt64(0)) { $0 + UInt64($1) } > UInt64(UInt32.max))
    }
}
