import GradScopeMeasurement
import GradScopeModel

/// One event of a run's story: findings of one kind that began at one save from the same causes
/// (the zero gradients of three layers after one layer went silent are one event).
public struct StoryEvent: Sendable, Codable, Equatable {
    /// The verdict's words for it, e.g. "gradients explode at step 60".
    public var summary: String
    /// The saved step it began at (nil when not step-bound).
    public var firstStep: Int?
    /// The positions of its findings in the report's findings.
    public var findings: [Int]
    /// The positions, in the story, of the events that caused it (empty for a root cause).
    public var causedBy: [Int]

    package enum CodingKeys: String, CodingKey {
        case summary
        case firstStep = "first_step"
        case findings
        case causedBy = "caused_by"
    }
}

/// Findings linked cause → consequences in the order they began (docs/DETECTORS.md, "One story
/// per run"). Only findings at warning or above take part: a note is not a problem and causes none.
///
/// A finding C is taken as a cause of a finding F when the kinds allow it (``canCause(_:_:depth:)``:
/// what the mathematics of training says one can bring about), C began no later than F (strictly
/// earlier where one must precede the other), and, where the rule is structural, F lies on C's
/// side of the layer chain. Of the possible causes, those that began last are kept (the nearest),
/// and among them those not themselves caused by another of them (the root of what happened then).
package enum Story {
    /// The order in which kinds are linked at one onset: a cause always comes before what it causes.
    static func rank(_ finding: Finding) -> Int {
        switch finding.kind {
        case .poorInit: return 0
        case .explodingGradient: return 1
        case .updateRatio: return 2
        case .nanInf: return 3
        case .collapsing: return finding.evidence["zero_output"] == .bool(true) ? 5 : 4
        case .deadUnits: return 6
        case .vanishingGradient: return 7
        case .frozen: return 8
        case .zeroGradient: return 9
        case .lossPlateau: return 10
        }
    }

    /// When a finding began, as a cause: its first step, or the start of the run when nothing saved
    /// shows it otherwise (a gradient zero at every save with one, a layer silent at every save that
    /// shows it, units alive at no save, an initialisation): the first save with gradients is step 20
    /// when step 0 holds only weights, yet what it shows was so from the start.
    static func onset(_ finding: Finding) -> Int {
        guard let first = finding.firstStep else { return Int.max }
        let fromStart: Bool
        switch finding.kind {
        case .poorInit: fromStart = true
        case .zeroGradient: fromStart = finding.evidence["last_nonzero_step"] == nil
        case .collapsing: fromStart = finding.evidence["zero_output"] == .bool(true) && finding.evidence["last_output_step"] == nil
        case .deadUnits: fromStart = finding.evidence["death_steps"] == nil && finding.evidence["never_alive"] != nil
        case .frozen: fromStart = finding.evidence["last_moved_step"] == nil
        default: fromStart = false
        }
        return fromStart ? Int.min : first
    }

    /// An update ratio too large (not a layer that barely moves).
    static func tooLarge(_ finding: Finding) -> Bool { finding.kind == .updateRatio && finding.evidence["per_step_lower_bound"] != nil }

    /// Whether `cause` can bring about `effect`, and whether it must begin strictly before it.
    /// `depth` gives a layer's position in the chain (nil when unknown).
    static func canCause(_ cause: Finding, _ effect: Finding, depth: (String?) -> Int?) -> (allowed: Bool, strictly: Bool) {
        let no = (false, false)
        // A layer at or after another in depth order (unknown depths do not link structurally).
        func atOrAfter(_ a: String?, _ b: String?) -> Bool {
            guard let x = depth(a), let y = depth(b) else { return false }
            return x >= y
        }
        let stopped = effect.kind == .frozen && effect.evidence["last_moved_step"] != nil
        switch cause.kind {
        case .explodingGradient:
            // One huge gradient makes a huge update at once; the weights it throws kill units, silence
            // layers and stop gradients after it, and NaN follows.
            switch effect.kind {
            case .updateRatio: return (tooLarge(effect), false)
            case .nanInf: return (true, false)
            case .deadUnits, .collapsing, .zeroGradient, .lossPlateau: return (true, true)
            case .frozen: return (stopped, true)
            default: return no
            }
        case .updateRatio:
            guard tooLarge(cause) else { return no }
            // An update far larger than the weights pushes pre-activations of this layer and the
            // later ones anywhere (units die, a layer goes silent); gradients and the loss follow.
            switch effect.kind {
            case .deadUnits, .collapsing: return (atOrAfter(effect.layer, cause.layer), true)
            case .nanInf, .zeroGradient, .lossPlateau: return (true, true)
            case .frozen: return (stopped, true)
            default: return no
            }
        case .poorInit:
            switch effect.kind {
            case .deadUnits, .collapsing, .vanishingGradient, .explodingGradient: return (atOrAfter(effect.layer, cause.layer), false)
            case .lossPlateau, .zeroGradient: return (true, false)
            default: return no
            }
        case .collapsing:
            if cause.evidence["zero_output"] == .bool(true) {
                // A layer that outputs zero passes nothing on and no gradient back: the next layer's
                // weights and every layer before it get none, and the model predicts a constant.
                guard case .string(let next)? = cause.evidence["next_layer"] else { return no }
                switch effect.kind {
                case .zeroGradient: return (atOrAfter(next, effect.layer), false)
                case .frozen: return (stopped && atOrAfter(next, effect.layer), false)
                case .lossPlateau: return (true, false)
                default: return no
                }
            }
            // Weights shrinking toward zero: the layer's units fall silent, then the whole layer.
            switch effect.kind {
            case .deadUnits: return (effect.layer == cause.layer, false)
            case .collapsing: return (effect.evidence["zero_output"] == .bool(true) && effect.layer == cause.layer, false)
            case .lossPlateau: return (true, false)
            default: return no
            }
        case .deadUnits, .vanishingGradient, .zeroGradient:
            // Lost capacity or a path that no longer learns holds the loss.
            return (effect.kind == .lossPlateau, false)
        case .frozen:
            return (effect.kind == .lossPlateau && !(cause.severity < .warning), false)
        case .nanInf, .lossPlateau:
            // After NaN every statistic it reached is meaningless: it is the end of a story, not a cause.
            return no
        }
    }

    /// `findings` (in the report's order) with `causedBy` set; `layers` in depth order.
    package static func link(_ findings: [Finding], layers: [String]) -> [Finding] {
        let depthOf = Dictionary(layers.enumerated().map { ($0.element, $0.offset) }, uniquingKeysWith: { a, _ in a })
        let depth: (String?) -> Int? = { $0.flatMap { depthOf[$0] } }
        // Processing order: by onset as a cause, then kind rank; causes come only from earlier.
        let order = findings.indices.filter { findings[$0].severity >= .warning }.sorted { a, b in
            let (x, y) = (findings[a], findings[b])
            let (ox, oy) = (onset(x), onset(y))
            if ox != oy { return ox < oy }
            if rank(x) != rank(y) { return rank(x) < rank(y) }
            return a < b
        }
        var causes: [Int: [Int]] = [:]
        var processed: [Int] = []
        for index in order {
            let effect = findings[index]
            let start = effect.firstStep.map { onset(effect) == Int.min ? Int.min : $0 } ?? Int.max
            var candidates: [Int] = []
            for candidate in processed {
                let cause = findings[candidate]
                let rule = canCause(cause, effect, depth: depth)
                guard rule.allowed else { continue }
                let begun = onset(cause)
                if rule.strictly ? begun < start : begun <= start { candidates.append(candidate) }
            }
            processed.append(index)
            guard let latest = candidates.map({ onset(findings[$0]) }).max() else { continue }
            let nearest = candidates.filter { onset(findings[$0]) == latest }
            // The root of what happened then: drop those another of them caused (directly or not).
            func reaches(_ from: Int, _ to: Int) -> Bool {
                var stack = causes[from] ?? [], seen = Set<Int>()
                while let next = stack.popLast() {
                    if next == to { return true }
                    if seen.insert(next).inserted { stack.append(contentsOf: causes[next] ?? []) }
                }
                return false
            }
            let roots = nearest.filter { c in !nearest.contains { other in other != c && reaches(c, other) } }
            causes[index] = roots.sorted()
        }
        var linked = findings
        for (index, list) in causes where !list.isEmpty { linked[index].causedBy = list }
        return linked
    }

    /// The findings `keep` keeps, their links renumbered to their new positions (links to findings
    /// left out are dropped).
    package static func keeping(_ findings: [Finding], _ keep: (Finding) -> Bool) -> [Finding] {
        let kept = findings.indices.filter { keep(findings[$0]) }
        let position = Dictionary(uniqueKeysWithValues: kept.enumerated().map { ($0.element, $0.offset) })
        return kept.map { index in
            var finding = findings[index]
            let causes = (finding.causedBy ?? []).compactMap { position[$0] }
            finding.causedBy = causes.isEmpty ? nil : causes
            return finding
        }
    }

    /// The events of linked findings, in the order they began; empty when no finding has a cause
    /// (then every finding stands alone and the verdict lists them as before).
    package static func events(_ findings: [Finding], phrase: (Finding) -> String) -> [StoryEvent] {
        let serious = findings.indices.filter { findings[$0].severity >= .warning }
        guard serious.contains(where: { findings[$0].causedBy != nil }) else { return [] }
        // Group: one kind, one onset, one set of causes (roots: none), one reading of the evidence.
        struct Key: Hashable {
            var kind: FindingKind
            var step: Int?
            var causes: [Int]
            var phraseOf: String
        }
        var groups: [(key: Key, members: [Int])] = []
        var position: [Key: Int] = [:]
        for index in serious {
            let finding = findings[index]
            let key = Key(
                kind: finding.kind, step: finding.firstStep, causes: finding.causedBy ?? [],
                phraseOf: String(describing: finding.evidence["zero_output"]))
            if let at = position[key] {
                groups[at].members.append(index)
            } else {
                position[key] = groups.count
                groups.append((key, [index]))
            }
        }
        // In the order they began: a cause's onset first, then kind rank, as the links were made.
        let sorted = groups.sorted { a, b in
            let (x, y) = (findings[a.members[0]], findings[b.members[0]])
            let (ox, oy) = (onset(x), onset(y))
            if ox != oy { return ox < oy }
            if rank(x) != rank(y) { return rank(x) < rank(y) }
            return a.members[0] < b.members[0]
        }
        var eventOf: [Int: Int] = [:]
        for (event, group) in sorted.enumerated() { for member in group.members { eventOf[member] = event } }
        return sorted.map { group in
            let first = findings[group.members[0]]
            var layers: [String] = []
            for member in group.members {
                if let layer = findings[member].layer ?? findings[member].tensor, !layers.contains(layer) { layers.append(layer) }
            }
            var summary = phrase(first)
            if layers.count > 1 {
                let others = layers.dropFirst().map { "`\($0)`" }
                let list = others.count == 1 ? others[0] : others.dropLast().joined(separator: ", ") + " and " + (others.last ?? "")
                summary += ", and \(first.layer != nil ? "layer\(others.count == 1 ? "" : "s") " : "")\(list) too"
            }
            let causedBy = Set(group.members.flatMap { findings[$0].causedBy ?? [] }.compactMap { eventOf[$0] }).sorted()
            return StoryEvent(summary: summary, firstStep: first.firstStep, findings: group.members, causedBy: causedBy)
        }
    }

    /// The events from each root cause, depth first in the order they began: each event once.
    package static func chains(_ events: [StoryEvent]) -> [[Int]] {
        var children: [Int: [Int]] = [:]
        for (index, event) in events.enumerated() {
            for cause in event.causedBy { children[cause, default: []].append(index) }
        }
        var placed = Set<Int>()
        var chains: [[Int]] = []
        for root in events.indices where events[root].causedBy.isEmpty {
            var chain: [Int] = []
            var queue = [root]
            // Breadth by onset: a consequence after all of its causes that are in this chain.
            while !queue.isEmpty {
                queue.sort()
                let next = queue.removeFirst()
                guard placed.insert(next).inserted else { continue }
                chain.append(next)
                queue.append(contentsOf: (children[next] ?? []).filter { !placed.contains($0) })
            }
            chains.append(chain)
        }
        return chains
    }

    /// The verdict of a linked run: the earliest root cause first, its consequences after it
    /// ("gradients explode at step 60 → layer `2` outputs zero for every input since step 100 → …"),
    /// then the other problems. Nil when nothing is linked.
    package static func verdict(_ events: [StoryEvent]) -> String? {
        guard !events.isEmpty else { return nil }
        let chains = chains(events)
        var parts: [String] = []
        var shown = 0
        let limit = 6
        for chain in chains {
            guard shown < limit else { break }
            let taken = Array(chain.prefix(limit - shown))
            shown += taken.count
            var text = taken.map { events[$0].summary }.joined(separator: " → ")
            if taken.count < chain.count { text += " → …" }
            parts.append(text)
        }
        let more = events.count - shown
        let count = events.count
        return
            "\(count) problem\(count == 1 ? "" : "s"): \(parts.joined(separator: "; "))\(more > 0 && parts.count < chains.count ? "; and \(chains.count - parts.count) more" : "")."
    }
}
