import Foundation
import GradScopeMeasurement
import GradScopeModel

/// What `--select` shows of an analysis. The whole run (file, pair of files) is always
/// diagnosed: a detector judges a tensor against the others (a layer is frozen only if the
/// rest trained, gradients vanish only relative to the later layers), so leaving tensors out
/// before the diagnosis would change its findings. The selection then keeps, for the view,
/// the tensors whose name matches and the findings about them; findings about the model as a
/// whole (the loss) concern every tensor and are kept.
package struct Selection {
    /// The pattern a tensor's name must match (anywhere in the name).
    package let pattern: NSRegularExpression

    package init(_ pattern: NSRegularExpression) { self.pattern = pattern }

    /// Whether a tensor name matches.
    package func matches(_ name: String) -> Bool {
        pattern.firstMatch(in: name, range: NSRange(name.startIndex..., in: name)) != nil
    }

    /// Whether a finding is shown: its tensor matches, or (a finding about a layer) any of
    /// `names` in its layer matches, or it is about the model as a whole.
    package func keeps(_ finding: Finding, layers: [String: [String]]) -> Bool {
        if let tensor = finding.tensor { return matches(tensor) || (finding.layer.map { matches($0) } ?? false) }
        if let layer = finding.layer { return matches(layer) || (layers[layer] ?? []).contains(where: matches) }
        return true
    }

    /// The note that says what the view holds: how many tensors matched, and findings left out.
    package func note(matched: Int, of total: Int, shownFindings: Int, allFindings: Int) -> String {
        let hidden = allFindings - shownFindings
        let left = hidden > 0 ? "; \(hidden) finding\(hidden == 1 ? "" : "s") about other tensors not shown" : ""
        if matched == 0 {
            return
                "--select '\(pattern.pattern)' matches none of the \(total) tensors, so none is shown; the whole run was diagnosed\(left)"
        }
        return "--select '\(pattern.pattern)' shows \(matched) of \(total) tensors; the whole run was diagnosed\(left)"
    }
}

extension Selection {
    /// Every tensor name of a run, and the names in each layer.
    package static func names(_ run: RunMeasurements) -> (all: [String], layers: [String: [String]]) {
        var seen = Set<String>()
        var all: [String] = []
        var layers: [String: [String]] = [:]
        for record in run.records {
            for measurement in record.ordered where seen.insert(measurement.name).inserted {
                all.append(measurement.name)
                layers[measurement.layer, default: []].append(measurement.name)
            }
        }
        return (all, layers)
    }

    /// The verdict when no tensor matches: it names the pattern, not the run's findings.
    package func nothingMatches(findings: Int) -> String {
        "No tensor matches --select '\(pattern.pattern)': nothing to show (the whole run was diagnosed: \(findings) finding\(findings == 1 ? "" : "s"))."
    }
}

extension ScanReport {
    /// The report narrowed to what `selection` shows: the matching tensors' timelines and the findings
    /// about them (``Selection``), its verdict on those, and a note saying so.
    package mutating func show(_ selection: Selection, measurements: RunMeasurements) {
        let (names, layers) = Selection.names(measurements)
        let all = findings.count
        findings = Story.keeping(findings) { selection.keeps($0, layers: layers) }
        story = Story.events(findings, phrase: Diagnoser.phrase)
        timeline = timeline.filter { selection.matches($0.name) }
        activations = activations.filter { selection.matches($0.name) }
        let matched = names.filter(selection.matches).count
        verdict =
            matched == 0
            ? selection.nothingMatches(findings: all)
            : Diagnoser.verdict(findings, run: measurements, notChecked: notChecked)
        notes.append(selection.note(matched: matched, of: names.count, shownFindings: findings.count, allFindings: all))
    }
}
