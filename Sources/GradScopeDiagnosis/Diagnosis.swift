import ElementTypes
import Foundation
import GradScopeMeasurement
import GradScopeModel
import GradScopeSources
import GradScopeStatistics
import Synchronization

/// The result of running every detector over a run's measurements.
public struct Diagnosis: Sendable {
    /// Findings in the order they arose (``Diagnoser/ordered(_:)``).
    public var findings: [Finding]
    public var notChecked: [NotChecked]
    /// One line a person reads first.
    public var verdict: String

    /// The highest severity found, if any.
    public var worst: Severity? { findings.map(\.severity).max() }
}

/// Runs the detectors and puts their findings together.
public enum Diagnoser {
    /// Runs `detectors` (by default those of `scan`) and sorts their findings.
    public static func diagnose(
        _ run: RunMeasurements, thresholds: Thresholds = Thresholds(),
        detectors: [any Detector] = allDetectors.filter { $0.scope.contains(.run) }
    ) -> Diagnosis {
        RunIndex.with(run) {
            var (findings, notChecked) = detect(run, thresholds: thresholds, detectors: detectors)
            findings = attributeActivations(findings, run: run)
            findings = preferOwnEvidence(findings)
            findings = linkPlateauEvidence(findings)
            findings = ordered(findings)
            findings = Story.link(findings, layers: run.layers)
            return Diagnosis(findings: findings, notChecked: notChecked, verdict: verdict(findings, run: run, notChecked: notChecked))
        }
    }

    /// Findings in the order they arose: by onset step (a finding without a step last); at one step
    /// NaN/Inf first, since from that save on every other statistic of the tensors it reached is
    /// meaningless and may be its consequence; then the most severe; then by tensor. What comes first
    /// can have caused what follows, never the reverse.
    package static func ordered(_ findings: [Finding]) -> [Finding] {
        findings.enumerated().sorted { x, y in
            let a = x.element, b = y.element
            let stepA = a.firstStep ?? Int.max, stepB = b.firstStep ?? Int.max
            if stepA != stepB { return stepA < stepB }
            if (a.kind == .nanInf) != (b.kind == .nanInf) { return a.kind == .nanInf }
            if a.severity != b.severity { return a.severity > b.severity }
            if (a.tensor ?? "") != (b.tensor ?? "") { return (a.tensor ?? "") < (b.tensor ?? "") }
            return x.offset < y.offset
        }.map(\.element)
    }

    /// A saved activation belongs to the layer that produces it. The native layout names an
    /// activation by the module that outputs it; a parameter-free module (a ReLU in a Sequential)
    /// is not a layer of the model's, and applies elementwise to the output of the layer before it,
    /// keeping its units. So an activation whose module holds no weights is attributed to the
    /// nearest earlier sibling module that does (`3` after `2` in `net.2`, `net.3`) when that
    /// layer's kernel has as many units as the activation: a dead ReLU after `2` and the zero
    /// gradients of `2.weight` are one layer's problem, counted once.
    package static func attributeActivations(_ findings: [Finding], run: RunMeasurements) -> [Finding] {
        let producers = activationProducers(run)
        guard !producers.isEmpty else { return findings }
        return findings.map { finding in
            guard let tensor = finding.tensor, let layer = producers[tensor] else { return finding }
            var copy = finding
            copy.layer = layer
            return copy
        }
    }

    /// Dead units read from the next layer are the same units as those the layer's own gradient,
    /// movement or activations show: where the layer has a dead-units finding of its own, that one
    /// is kept and the neighbour's dropped.
    package static func preferOwnEvidence(_ findings: [Finding]) -> [Finding] {
        func fromNeighbour(_ finding: Finding) -> Bool {
            finding.kind == .deadUnits
                && [EvidenceValue.string("next-layer-gradient"), .string("next-layer-second-moment")].contains(finding.evidence["evidence"])
        }
        let own = Set(findings.filter { $0.kind == .deadUnits && !fromNeighbour($0) }.compactMap(\.layer))
        return findings.filter { !(fromNeighbour($0) && $0.layer.map(own.contains) == true) }
    }

    /// For each saved activation whose module holds no weights, the layer that produces it (see
    /// ``attributeActivations(_:run:)``).
    package static func activationProducers(_ run: RunMeasurements) -> [String: String] {
        let layers = Set(run.layers)
        func split(_ name: String) -> (parent: Substring, index: Int)? {
            guard let cut = name.lastIndex(where: { $0 == "." || $0 == "/" }) else { return Int(name).map { ("", $0) } }
            return Int(name[name.index(after: cut)...]).map { (name[..<cut], $0) }
        }
        var siblings: [Substring: [(index: Int, layer: String)]] = [:]
        for layer in run.layers {
            if let (parent, index) = split(layer) { siblings[parent, default: []].append((index, layer)) }
        }
        // The units of each layer's kernel, from its last measurement.
        var kernelUnits: [String: Int] = [:]
        for key in run.indexedWeightKeys {
            guard let weight = run.indexedLast(key), DetectorSupport.isKernel(weight), kernelUnits[weight.layer] == nil,
                let units = TensorNames.units(shape: weight.shape, unitAxis: weight.unitAxis, gates: weight.gates)
            else { continue }
            kernelUnits[weight.layer] = units
        }
        var producers: [String: String] = [:]
        for key in run.indexedKeys(role: .activation) {
            guard let activation = run.indexedLast(key), !layers.contains(activation.layer),
                let (parent, index) = split(activation.layer),
                let producer = siblings[parent]?.filter({ $0.index < index }).max(by: { $0.index < $1.index })?.layer,
                let units = activation.unitCount, kernelUnits[producer] == units
            else { continue }
            producers[activation.name] = producer
        }
        return producers
    }

    /// Runs `detectors`: their findings and not-checked entries in the detectors' order, as they come.
    ///
    /// The detectors are independent (each reads the measurements and the run's index, never another's
    /// findings), so on a run of many saves they run side by side on up to ``detectorThreads`` threads,
    /// sharing the index; the outcomes are put together in the detectors' order whatever order they
    /// finish in, so the result is the same as one after the other.
    package static func detect(
        _ run: RunMeasurements, thresholds: Thresholds,
        detectors: [any Detector], threads: Int? = nil
    ) -> (findings: [Finding], notChecked: [NotChecked]) {
        RunIndex.with(run) {
            let threads = min(threads ?? detectorThreads(run), detectors.count)
            let outcomes: [DetectorOutcome]
            if threads > 1, let index = RunIndex.current {
                outcomes = concurrentOutcomes(run, thresholds: thresholds, detectors: detectors, index: index, threads: threads)
            } else {
                outcomes = detectors.map { $0.detect(run, thresholds: thresholds) }
            }
            var findings: [Finding] = []
            var notChecked: [NotChecked] = []
            for (detector, outcome) in zip(detectors, outcomes) {
                findings.append(contentsOf: outcome.findings)
                if let reason = outcome.notChecked { notChecked.append(NotChecked(kind: detector.kind, reason: reason)) }
            }
            return (findings, notChecked)
        }
    }

    /// Below this many measurements (saves times tensors) the detectors run one after the other: a
    /// thread costs more than it saves.
    package static let concurrentMeasurements = 4096

    /// The threads the detectors of `run` run on: one for a small run, else one per core, at most 4.
    package static func detectorThreads(_ run: RunMeasurements) -> Int {
        let measurements = run.records.reduce(0) { $0 + $1.tensors.count }
        guard measurements >= concurrentMeasurements else { return 1 }
        return max(1, min(ProcessInfo.processInfo.activeProcessorCount, 4))
    }

    /// Each detector's outcome, in the detectors' order, from `threads` threads taking the next
    /// detector as they are free; every thread reads `index`.
    private static func concurrentOutcomes(
        _ run: RunMeasurements, thresholds: Thresholds, detectors: [any Detector], index: RunIndex, threads: Int
    ) -> [DetectorOutcome] {
        let slots = Mutex([DetectorOutcome?](repeating: nil, count: detectors.count))
        let next = Atomic<Int>(0)
        DispatchQueue.concurrentPerform(iterations: threads) { _ in
            RunIndex.$current.withValue(index) {
                while true {
                    let position = next.add(1, ordering: .relaxed).oldValue
                    guard position < detectors.count else { return }
                    let outcome = detectors[position].detect(run, thresholds: thresholds)
                    slots.withLock { $0[position] = outcome }
                }
            }
        }
        return slots.withLock { $0.map { $0 ?? DetectorOutcome() } }
    }

    /// A loss plateau's evidence names the problems found upstream, at warning or above: dead units,
    /// frozen or collapsing layers, zero or vanishing gradients, poor initialisation.
    package static func linkPlateauEvidence(_ findings: [Finding]) -> [Finding] {
        let upstreamKinds: Set<FindingKind> = [.deadUnits, .frozen, .collapsing, .zeroGradient, .vanishingGradient, .poorInit]
        let upstream = findings.filter { upstreamKinds.contains($0.kind) && $0.severity >= .warning }
        guard !upstream.isEmpty else { return findings }
        return findings.map { finding in
            guard finding.kind == .lossPlateau else { return finding }
            var copy = finding
            copy.evidence["upstream"] = .list(upstream.prefix(10).map { .string("\($0.kind.rawValue): \($0.tensor ?? $0.layer ?? "")") })
            copy.explanation += LossPlateauExplanation.upstream(upstream)
            return copy
        }
    }

    /// "2 problems: layer `head.3` collapsing toward zero output since step 200; loss at ln 2 from step 0 to 1900".
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
        // Findings linked cause -> consequences: the earliest root cause first.
        if let story = Story.verdict(Story.events(findings, phrase: phrase)) { return story }
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

    /// How the verdict names a finding: in its detector's words.
    package static func phrase(_ finding: Finding) -> String {
        DetectorRegistry.detector(for: finding.kind)?.phrase(for: finding) ?? "\(finding.kind.rawValue) in \(finding.verdictSubject)"
    }
}

extension Finding {
    /// What the verdict says a finding is about: "layer `x`", else "`tensor`", else "the model".
    package var verdictSubject: String { layer.map { "layer `\($0)`" } ?? tensor.map { "`\($0)`" } ?? "the model" }

    /// The finding without its links to others.
    package var unlinked: Finding {
        var copy = self
        copy.causedBy = nil
        return copy
    }

    /// " since step N" for a finding bound to a step, else nothing.
    package var verdictSince: String { firstStep.map { " since step \($0)" } ?? "" }
}
