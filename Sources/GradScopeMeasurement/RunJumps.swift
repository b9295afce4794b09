import GradScopeModel

/// Saves after which a run's weights are another run's: every matrix jumps to values unrelated to
/// the save before.
///
/// Two independent initialisations (or two trainings from them) of an n-element matrix are
/// near-orthogonal: their cosine is about N(0, 1/n), so |cos| < 3/√n (three standard deviations).
/// Training between two saves of one run moves a matrix along, its cosine with the save before
/// near 1; an explosion changes its norm by orders of magnitude. So a jump is counted at a save
/// where every matrix of at least ``minimumElements`` elements present in both saves (at least two
/// of them) has |cos| below 3/√n while its norm stays within a factor of 2. The cosine comes from
/// the compact numbers: with a = ‖W₁‖, b = ‖W₂‖ and d = ‖W₂ − W₁‖ = relative change · a,
/// cos = (a² + b² − d²) / (2ab).
package enum RunJumps {
    /// Matrices smaller than this are not evidence: 3/√64 = 0.375 is already a loose bound.
    package static let minimumElements = 64

    /// Indices of the records whose weights are unrelated to the record before's.
    package static func unrelatedSaves(_ run: RunMeasurements) -> [Int] {
        let records = run.records
        guard records.count >= 2 else { return [] }
        return (1..<records.count).filter { unrelated(records[$0], after: records[$0 - 1]) }
    }

    /// Whether `record`'s weights are unrelated to `before`'s (the save just before it).
    /// Reads the tables' numbers in place (``MeasurementTable/normsAndChange(at:)``): this runs for
    /// every save of every scan, twice.
    package static func unrelated(_ record: StepRecord, after before: StepRecord) -> Bool {
        var matrices = 0
        let table = record.tensors, earlierTable = before.tensors
        let descriptors = table.layout.descriptors, earlierDescriptors = earlierTable.layout.descriptors
        for t in descriptors.indices where descriptors[t].role == .weight && descriptors[t].shape.count >= 2 {
            let current = table.normsAndChange(at: t)
            guard current.count >= minimumElements, let e = earlierTable.layout.index[descriptors[t].key],
                earlierDescriptors[e].shape == descriptors[t].shape, let a = earlierTable.normsAndChange(at: e).l2Norm,
                let b = current.l2Norm, let relative = current.relativeChange, a > 0, b > 0, a.isFinite, b.isFinite, relative.isFinite
            else { continue }
            matrices += 1
            let d = relative * a
            let cosine = (a * a + b * b - d * d) / (2 * a * b)
            let bound = 3 / Double(current.count).squareRoot()
            if abs(cosine) >= bound || max(a, b) / min(a, b) > 2 { return false }
        }
        return matrices >= 2
    }
}
