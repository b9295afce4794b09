import Foundation
import GradScopeDiagnosis
import GradScopeMeasurement
import GradScopeModel
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
                #expect(same(run.indexedSeries(key), run.series(key)))
                #expect(same(run.indexedSeries(key), run.series(key)))
                // Another run is never answered from this run's index.
                #expect(same(other.indexedSeries(key), other.series(key)))
                #expect(other.indexedSeries(key).count == run.series(key).count - 1)
            }
        }
        #expect(RunIndex.current == nil)
    }
}
