import Foundation

/// Which findings of a growing run are new (`gradscope watch`): each scan of the run diagnoses it
/// whole again, and a finding already shown must not be shown again when its numbers change
/// (its message's figures, its last step) or when its first step moves (a new save before it,
/// a detector's onset refined by more saves).
///
/// A finding is identified by its kind, its tensor and its layer, and, among the findings of the
/// same kind about the same tensor, by its place in step order (a second, separate episode is a
/// new finding). A finding shown before is shown again only when it became more severe.
package struct FindingTracker: Sendable {
    private var shown: [String: Severity] = [:]

    package init() {}

    /// What one finding is, for ``FindingTracker``.
    package static func identities(_ findings: [Finding]) -> [String] {
        var seen: [String: Int] = [:]
        var keys = Array(repeating: "", count: findings.count)
        // Step order within one kind and tensor; findings without a step first, in report order.
        let order = findings.indices.sorted { a, b in
            let stepA = findings[a].firstStep ?? Int.min, stepB = findings[b].firstStep ?? Int.min
            return stepA != stepB ? stepA < stepB : a < b
        }
        for index in order {
            let finding = findings[index]
            let base = "\(finding.kind.rawValue)\u{1F}\(finding.tensor ?? "")\u{1F}\(finding.layer ?? "")"
            let ordinal = seen[base, default: 0]
            seen[base] = ordinal + 1
            keys[index] = "\(base)\u{1F}\(ordinal)"
        }
        return keys
    }

    /// The findings not shown before, and those now more severe than when shown (`escalated`),
    /// in the order given; marks them shown.
    package mutating func take(_ findings: [Finding]) -> [(finding: Finding, escalated: Bool)] {
        var result: [(finding: Finding, escalated: Bool)] = []
        for (finding, key) in zip(findings, Self.identities(findings)) {
            if let before = shown[key] {
                if finding.severity > before {
                    shown[key] = finding.severity
                    result.append((finding, true))
                }
                continue
            }
            shown[key] = finding.severity
            result.append((finding, false))
        }
        return result
    }

    /// How many distinct findings were shown.
    package var count: Int { shown.count }

    /// How many of them are at `severity` now (as last shown).
    package func count(at severity: Severity) -> Int { shown.values.filter { $0 == severity }.count }
}
