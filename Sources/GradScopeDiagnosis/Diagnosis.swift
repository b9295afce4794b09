import Foundation
import ElementTypes
import GradScopeModel
import GradScopeSources
import GradScopeStatistics
import GradScopeMeasurement

/// The result of running every detector over a run's measurements.
public struct Diagnosis: Sendable {
    /// Findings, most severe first, then by onset step.
    public var findings: [Finding]
    public var notChecked: [NotChecked]
    /// One line a person reads first.
    public var verdict: String

    /// The highest severity found, if any.
    public var worst: Severity? { findings.map(\.severity).max() }
}

/// Runs the detectors and puts their findings together.
public enum Diagnoser {
    public static func diagnose(_ run: RunMeasurements, thresholds: Thresholds = Thresholds(),
                                detectors: [any Detector] = allDetectors) -> Diagnosis {
        var findings: [Finding] = []
        var notChecked: [NotChecked] = []
        for detector in detectors {
            let outcome = detector.detect(run, thresholds: thresholds)
            findings.append(contentsOf: outcome.findings)
            if let reason = outcome.notChecked { notChecked.append(NotChecked(kind: detector.kind, reason: reason)) }
        }
        findings = linkPlateauEvidence(findings)
        findings.sort { a, b in
            if a.severity != b.severity { return a.severity > b.severity }
            let stepA = a.firstStep ?? Int.max, stepB = b.firstStep ?? Int.max
            if stepA != stepB { return stepA < stepB }
            return (a.tensor ?? "") < (b.tensor ?? "")
        }
        return Diagnosis(findings: findings, notChecked: notChecked, verdict: verdict(findings, run: run, notChecked: notChecked))
    }

    /// A loss plateau's evidence names the layers found dead, frozen or collapsing upstream.
    package static func linkPlateauEvidence(_ findings: [Finding]) -> [Finding] {
        let upstreamKinds: Set<FindingKind> = [.deadUnits, .frozen, .collapsing, .zeroGradient, .vanishingGradient, .poorInit]
        let upstream = findings.filter { upstreamKinds.contains($0.kind) && $0.severity >= .warning }
        guard !upstream.isEmpty else { return findings }
        return findings.map { finding in
            guard finding.kind == .lossPlateau else { return finding }
            var copy = finding
            copy.evidence["upstream"] = .list(upstream.prefix(10).map { .string("\($0.kind.rawValue): \($0.tensor ?? $0.layer ?? "")") })
            copy.explanation += " Found upstream: " + upstream.prefix(5).map { "\($0.kind.rawValue) in \($0.tensor ?? $0.layer ?? "the model")" }.joined(separator: "; ") + "."
            return copy
        }
    }

    /// "2 problems: layer `head.3` collapsing toward zero since step 200; loss at ln 2 from step 0 to 1900".
    package static func verdict(_ findings: [Finding], run: RunMeasurements, notChecked: [NotChecked]) -> String {
        let serious = findings.filter { $0.severity >= .warning }
        let saves = run.records.count
        if saves == 0 { return "Nothing could be read: no checkpoint in \(run.source) was usable (see skipped)." }
        guard !serious.isEmpty else {
            var notesText: [String] = []
            var seenNotes = Set<String>()
            for finding in findings {
                let key = finding.kind.rawValue + "|" + (finding.layer ?? finding.tensor ?? "")
                guard !seenNotes.contains(key) else { continue }
                seenNotes.insert(key)
                notesText.append(phrase(finding))
            }
            let info = notesText.isEmpty ? "" : "; noted: " + notesText.prefix(3).joined(separator: "; ") + (notesText.count > 3 ? "; …" : "")
            let unchecked = notChecked.isEmpty ? "" : "; \(notChecked.count) check(s) could not run for lack of data"
            return "No problems found in \(saves) saved step(s)\(info)\(unchecked)."
        }
        // One phrase per kind and layer, so a collapsing model is one line, not one per tensor.
        var phrases: [String] = []
        var seen = Set<String>()
        for finding in serious {
            let subject = finding.layer ?? finding.tensor ?? ""
            let key = finding.kind.rawValue + "|" + subject
            guard !seen.contains(key) else { continue }
            seen.insert(key)
            phrases.append(phrase(finding))
        }
        let shown = phrases.prefix(4).joined(separator: "; ")
        let more = phrases.count > 4 ? "; and \(phrases.count - 4) more" : ""
        return "\(phrases.count) problem\(phrases.count == 1 ? "" : "s"): \(shown)\(more)."
    }

    package static func phrase(_ finding: Finding) -> String {
        let layer = finding.layer.map { "layer `\($0)`" } ?? finding.tensor.map { "`\($0)`" } ?? "the model"
        let since = finding.firstStep.map { " since step \($0)" } ?? ""
        switch finding.kind {
        case .nanInf: return "NaN/Inf\(finding.firstStep.map { " from step \($0)" } ?? "") (first in `\(finding.tensor ?? "the loss")`)"
        case .frozen: return finding.severity == .info ? "\(layer) not trained (frozen)" : "\(layer) frozen (never changes)"
        case .zeroGradient: return "\(layer) gets zero gradient (dead path)"
        case .deadUnits:
            if case .int(let dead)? = finding.evidence["dead_units"], case .int(let units)? = finding.evidence["units"] {
                return "\(layer) has \(dead)/\(units) dead units\(since)"
            }
            return "\(layer) has dead units\(since)"
        case .collapsing: return "\(layer) collapsing toward zero output\(since)"
        case .lossPlateau:
            let k: String
            if case .int(let classes)? = finding.evidence["classes"] { k = classes == 2 ? "ln 2" : "ln \(classes)" } else { k = "ln K" }
            return "loss at \(k) from step \(finding.firstStep ?? 0) to \(finding.lastStep ?? 0)"
        case .vanishingGradient: return "gradients vanish toward the input\(since)"
        case .explodingGradient: return "gradients explode\(finding.firstStep.map { " at step \($0)" } ?? "")"
        case .updateRatio: return "\(layer) update ratio out of the healthy band\(since)"
        case .poorInit: return "\(layer) poorly initialised"
        }
    }
}
