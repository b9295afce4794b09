import GradScopeDiagnosis
import GradScopeModel

/// Text from a file made safe to print on a terminal. Names, paths, attribute
/// values and the messages built from them come from files, and files are
/// hostile (docs/ROBUSTNESS.md): an escape sequence in a tensor's name could
/// move the cursor, rewrite what was printed, or change the terminal's title.
/// Every control character is therefore shown escaped: newline as `\n`,
/// carriage return `\r`, tab `\t`, escape `\e`, other C0 and C1 controls and
/// DEL as `\xHH`, and the invisible characters that reorder or hide text
/// (bidirectional overrides and isolates, line and paragraph separators,
/// zero-width no-break space) as `\u{HHHH}`. Everything else, accents and
/// sparkline glyphs included, is kept. A backslash stays a backslash.
package func terminalSafe(_ text: String) -> String {
    guard text.unicodeScalars.contains(where: needsTerminalEscape) else { return text }
    var escaped = ""
    for scalar in text.unicodeScalars {
        switch scalar {
        case "\n": escaped += "\\n"
        case "\r": escaped += "\\r"
        case "\t": escaped += "\\t"
        case "\u{1B}": escaped += "\\e"
        default:
            if !needsTerminalEscape(scalar) {
                escaped.unicodeScalars.append(scalar)
            } else if scalar.value < 0x100 {
                escaped += "\\x" + hexDigits(scalar.value, width: 2)
            } else {
                escaped += "\\u{" + hexDigits(scalar.value, width: 4) + "}"
            }
        }
    }
    return escaped
}

/// Whether a character must not reach a terminal as itself (see ``terminalSafe(_:)``).
package func needsTerminalEscape(_ scalar: Unicode.Scalar) -> Bool {
    switch scalar.value {
    case 0x00...0x1F, 0x7F...0x9F: return true
    case 0x200E, 0x200F, 0x202A...0x202E, 0x2066...0x2069: return true
    case 0x2028, 0x2029, 0xFEFF: return true
    default: return false
    }
}

/// `value` in lowercase hexadecimal, zero-padded to `width` digits.
private func hexDigits(_ value: UInt32, width: Int) -> String {
    let digits = String(value, radix: 16)
    return String(repeating: "0", count: max(0, width - digits.count)) + digits
}

extension Finding {
    /// The finding with every string escaped for a terminal.
    package var terminalSafe: Finding {
        var copy = self
        copy.tensor = tensor.map(GradScopeRendering.terminalSafe)
        copy.layer = layer.map(GradScopeRendering.terminalSafe)
        copy.message = GradScopeRendering.terminalSafe(message)
        copy.explanation = GradScopeRendering.terminalSafe(explanation)
        copy.evidence = evidence.mapValues(\.terminalSafe)
        return copy
    }
}

extension EvidenceValue {
    /// The value with every string in it escaped for a terminal.
    package var terminalSafe: EvidenceValue {
        switch self {
        case .string(let text): return .string(GradScopeRendering.terminalSafe(text))
        case .list(let values): return .list(values.map(\.terminalSafe))
        default: return self
        }
    }
}

extension SkippedItem {
    /// The item and its reason escaped for a terminal.
    package var terminalSafe: SkippedItem {
        SkippedItem(item: GradScopeRendering.terminalSafe(item), kind: kind, reason: GradScopeRendering.terminalSafe(reason))
    }
}

extension NotChecked {
    /// The reason escaped for a terminal.
    package var terminalSafe: NotChecked { NotChecked(kind: kind, reason: GradScopeRendering.terminalSafe(reason)) }
}

extension TensorTimeline {
    /// The name and layer escaped for a terminal.
    package var terminalSafe: TensorTimeline {
        var copy = self
        copy.name = GradScopeRendering.terminalSafe(name)
        copy.layer = GradScopeRendering.terminalSafe(layer)
        return copy
    }
}

extension ScanReport {
    /// The report with every string that came from the run escaped for a terminal.
    package var terminalSafe: ScanReport {
        var copy = self
        copy.source = GradScopeRendering.terminalSafe(source)
        copy.layout = layout.map(GradScopeRendering.terminalSafe)
        copy.verdict = GradScopeRendering.terminalSafe(verdict)
        copy.findings = findings.map(\.terminalSafe)
        copy.skipped = skipped.map(\.terminalSafe)
        copy.notChecked = notChecked.map(\.terminalSafe)
        copy.notes = notes.map(GradScopeRendering.terminalSafe)
        copy.timeline = timeline.map(\.terminalSafe)
        copy.activations = activations.map(\.terminalSafe)
        copy.story = story.map { event in
            var safe = event
            safe.summary = GradScopeRendering.terminalSafe(event.summary)
            return safe
        }
        return copy
    }
}

extension InspectReport {
    /// The report with every string that came from the file escaped for a terminal.
    package var terminalSafe: InspectReport {
        var copy = self
        copy.file = GradScopeRendering.terminalSafe(file)
        copy.layout = GradScopeRendering.terminalSafe(layout)
        copy.framework = framework.map(GradScopeRendering.terminalSafe)
        copy.optimizer = optimizer.map(GradScopeRendering.terminalSafe)
        copy.tensors = tensors.map { tensor in
            var safe = tensor
            safe.name = GradScopeRendering.terminalSafe(tensor.name)
            safe.layer = GradScopeRendering.terminalSafe(tensor.layer)
            safe.slot = tensor.slot.map(GradScopeRendering.terminalSafe)
            safe.dtype = GradScopeRendering.terminalSafe(tensor.dtype)
            safe.path = GradScopeRendering.terminalSafe(tensor.path)
            safe.error = tensor.error.map(GradScopeRendering.terminalSafe)
            return safe
        }
        copy.findings = findings.map(\.terminalSafe)
        copy.notChecked = notChecked.map(\.terminalSafe)
        copy.skipped = skipped.map(\.terminalSafe)
        copy.notes = notes.map(GradScopeRendering.terminalSafe)
        copy.verdict = GradScopeRendering.terminalSafe(verdict)
        return copy
    }
}

extension DiffReport {
    /// The report with every string that came from the two files escaped for a terminal.
    package var terminalSafe: DiffReport {
        var copy = self
        copy.a = GradScopeRendering.terminalSafe(a)
        copy.b = GradScopeRendering.terminalSafe(b)
        copy.tensors = tensors.map { tensor in
            var safe = tensor
            safe.name = GradScopeRendering.terminalSafe(tensor.name)
            safe.layer = GradScopeRendering.terminalSafe(tensor.layer)
            safe.status = GradScopeRendering.terminalSafe(tensor.status)
            return safe
        }
        copy.added = added.map(GradScopeRendering.terminalSafe)
        copy.removed = removed.map(GradScopeRendering.terminalSafe)
        copy.reshaped = reshaped.map(GradScopeRendering.terminalSafe)
        copy.notes = notes.map(GradScopeRendering.terminalSafe)
        copy.findings = findings.map(\.terminalSafe)
        copy.notChecked = notChecked.map(\.terminalSafe)
        copy.skipped = skipped.map(\.terminalSafe)
        copy.verdict = GradScopeRendering.terminalSafe(verdict)
        return copy
    }
}
