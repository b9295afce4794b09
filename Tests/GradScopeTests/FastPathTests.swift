import ElementTypes
import Foundation
import GradScopeDiagnosis
import GradScopeMeasurement
import GradScopeModel
import GradScopeRendering
import GradScopeSources
import GradScopeStatistics
import HDF5
import HDF5Writer
import TestSupport
import Testing

/// The direct-read, threaded path and the streamed path must agree with a
/// straightforward computation on the same data.
@Suite("Fast paths agree with the straightforward computation")
struct FastPathTests {
    @Test("direct + threaded, streamed contiguous and streamed gzip give the same statistics and drift")
    func pathsAgree() throws {
        let dir = try TemporaryDirectory()
        var noise = SplitMix64(state: 5)
        let count = 300_000
        let a = noise.normals(count, std: 0.05)
        let b = a.map { $0 + noise.normal() * 1e-3 }
        for (name, gzip) in [("plain", false), ("gzip", true)] {
            for (step, values) in [(1, a), (2, b)] {
                let w = try HDF5Writer(creating: dir.path("\(name)-\(step).h5"))
                try w.setAttribute("format", .string("gradscope/1", .variableUTF8), at: "/")
                try w.setAttribute("step", .int(Int64(step)), at: "/")
                if gzip {
                    try w.write("/weights/w", values, shape: [600, 500], as: .float32, chunks: [64, 500], gzip: 1)
                } else {
                    try w.write("/weights/w", values, shape: [600, 500], as: .float32)
                }
            }
        }
        var small = MeasureOptions()
        small.blockElements = 10_000
        small.threads = 2
        var results: [(TensorStats, DriftStats)] = []
        for name in ["plain", "gzip"] {
            let first = try #require(try CheckpointLoader.open(dir.path("\(name)-1.h5")).first)
            let second = try #require(try CheckpointLoader.open(dir.path("\(name)-2.h5")).first)
            let tensor = try #require(second.checkpoint.weight(named: "w")), earlier = try #require(first.checkpoint.weight(named: "w"))
            if name == "plain" { #expect(try second.data(for: tensor).contiguous() != nil) }
            results.append(try TensorMeasurer.statsAndDrift(of: tensor, in: second, previous: earlier, in: first, options: small))
        }
        // Straightforward computation on the float32 values.
        let fa = a.map { Double(Float($0)) }, fb = b.map { Double(Float($0)) }
        let mean = fb.reduce(0, +) / Double(count)
        let std = (fb.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / Double(count)).squareRoot()
        let norm = fb.reduce(0) { $0 + $1 * $1 }.squareRoot()
        let delta = zip(fa, fb).reduce(0) { $0 + ($1.1 - $1.0) * ($1.1 - $1.0) }.squareRoot()
        let normA = fa.reduce(0) { $0 + $1 * $1 }.squareRoot()
        let changed = zip(fa, fb).filter { $0 != $1 }.count
        for (stats, drift) in results {
            #expect(stats.count == count)
            #expect(abs((stats.mean ?? 0) - mean) <= 1e-12)
            #expect(abs((stats.std ?? 0) - std) / std <= 1e-9)
            #expect(abs((stats.l2Norm ?? 0) - norm) / norm <= 1e-9)
            #expect(stats.min == fb.min())
            #expect(stats.max == fb.max())
            #expect(abs((drift.relativeChange ?? 0) - delta / normA) <= 1e-9)
            #expect(drift.changed == changed)
            #expect(stats.unitNorms?.count == 600)
        }
        // Counts, extremes, quantiles and histograms are exact whatever the path; sums differ in the last bits only.
        let (direct, streamed) = (results[0].0, results[1].0)
        #expect(direct.histogram == streamed.histogram)
        #expect(direct.log2Histogram == streamed.log2Histogram)
        #expect(direct.p1 == streamed.p1 && direct.p50 == streamed.p50 && direct.p99 == streamed.p99)
        #expect(results[0].1.changed == results[1].1.changed)
        #expect(results[0].1.signFlips == results[1].1.signFlips)
    }
}
