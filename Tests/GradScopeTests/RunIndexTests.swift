import Foundation
import GradScopeDiagnosis
import GradScopeMeasurement
import GradScopeModel
import GradScopeStatistics
import TestSupport
import Testing

/// The detectors' memoized look-ups answer as the run's own, and only for the run they were made for.
@Suite("Run index")
struct RunIndexTests {
    @Test func indexedLookUpsEqualTheRunsOwn() throws {
        let directory = try TemporaryDirectory()
        var fixture = SyntheticRun()
        fixture.frozenLayers = [1]
        try fixture.write(to: directory.url.path)
        let (_, run) = try Analysis.scan(directory.url.path)
        func same(_ a: [(step: Int, measurement: TensorMeasurement)], _ b: [(step: Int, measurement: TensorMeasurement)]) -> Bool {
            a.count == b.count
                && zip(a, b).allSatisfy {
                    $0.step == $1.step && $0.measurement.key == $1.measurement.key && $0.measurement.stats == $1.measurement.stats
                }
        }
        #expect(!run.weightKeys.isEmpty)
        #expect(run.weightKeys.contains { key in run.driftSeries(key).contains { $0.drift != nil } })
        // The run's own series keep the histograms the index's leave out.
        #expect(run.weightKeys.contains { key in run.series(key).contains { !$0.measurement.stats.log2Histogram.counts.isEmpty } })
        var other = run
        other.records.removeLast()
        RunIndex.with(run) {
            #expect(RunIndex.current?.describes(run) == true)
            #expect(RunIndex.current?.describes(other) == false)
            for role in [TensorRole.weight, .gradient, .activation, .optimizer] {
                // Twice: computed, then remembered.
                #expect(run.indexedKeys(role: role) == run.keys(role: role))
                #expect(run.indexedKeys(role: role) == run.keys(role: role))
            }
            for key in run.weightKeys + run.keys(role: .gradient) {
                // The index's series leave the log2 histograms empty; all else is the run's own.
                #expect(same(run.indexedSeries(key), run.series(key, log2: false)))
                #expect(same(run.indexedSeries(key), run.series(key, log2: false)))
                #expect(run.indexedSeries(key).allSatisfy { $0.measurement.stats.log2Histogram.counts.isEmpty })
                #expect(
                    same(
                        run.series(key, log2: false),
                        run.series(key).map { point in
                            var compact = point.measurement
                            compact.stats.log2Histogram = Log2Histogram(minExponent: 0, counts: [], zeros: compact.stats.zeros)
                            return (point.step, compact)
                        }))
                // The drifts alone, without building the measurements.
                let drifts = run.driftSeries(key)
                #expect(drifts.map(\.step) == run.series(key).map(\.step))
                #expect(drifts.map(\.drift) == run.series(key).map(\.measurement.drift))
                // First and last without building the series.
                #expect(run.indexedLast(key)?.stats == run.indexedSeries(key).last?.measurement.stats)
                #expect(run.indexedFirst(key)?.stats == run.indexedSeries(key).first?.measurement.stats)
                #expect(run.indexedLast(key)?.name == key.name)
                // Another run is never answered from this run's index.
                #expect(same(other.indexedSeries(key), other.series(key, log2: false)))
                #expect(other.indexedSeries(key).count == run.series(key).count - 1)
                #expect(other.indexedLast(key)?.stats == other.series(key, log2: false).last?.measurement.stats)
            }
        }
        #expect(RunIndex.current == nil)
    }
}
