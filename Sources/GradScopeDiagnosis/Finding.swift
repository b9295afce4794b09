import ElementTypes
import Foundation
import GradScopeMeasurement
import GradScopeModel
import GradScopeSources
import GradScopeStatistics

/// How serious a finding is.
public enum Severity: String, Sendable, Codable, Comparable, CaseIterable {
    case info, warning, error

    private var rank: Int {
        switch self {
        case .info: return 0
        case .warning: return 1
        case .error: return 2
        }
    }

    public static func < (lhs: Severity, rhs: Severity) -> Bool { lhs.rank < rhs.rank }
}

/// The kinds of problem gradscope looks for. These names are part of the JSON
/// contract and never change; new kinds may be added.
public enum FindingKind: String, Sendable, Codable, CaseIterable {
    case nanInf = "nan-inf"
    case frozen
    case zeroGradient = "zero-gradient"
    case deadUnits = "dead-units"
    case collapsing
    case lossPlateau = "loss-plateau"
    case vanishingGradient = "vanishing-gradient"
    case explodingGradient = "exploding-gradient"
    case updateRatio = "update-ratio"
    case poorInit = "poor-init"
}

/// A value in a finding's evidence: a number, a string, a list, or nothing.
public enum EvidenceValue: Sendable, Equatable, Codable {
    case int(Int)
    case double(Double)
    case string(String)
    case bool(Bool)
    case list([EvidenceValue])
    case null

    public init(from decoder: Decoder) throws {
        let container = try decoder.singleValueContainer()
        if container.decodeNil() {
            self = .null
        } else if let value = try? container.decode(Bool.self) {
            self = .bool(value)
        } else if let value = try? container.decode(Int.self) {
            self = .int(value)
        } else if let value = try? container.decode(Double.self) {
            self = .double(value)
        } else if let value = try? container.decode(String.self) {
            self = .string(value)
        } else {
            self = .list(try container.decode([EvidenceValue].self))
        }
    }

    public func encode(to encoder: Encoder) throws {
        var container = encoder.singleValueContainer()
        switch self {
        case .int(let value): try container.encode(value)
        case .double(let value):
            if value.isFinite { try container.encode(value) } else { try container.encode(value.isNaN ? "nan" : (value > 0 ? "inf" : "-inf")) }
        case .string(let value): try container.encode(value)
        case .bool(let value): try container.encode(value)
        case .list(let value): try container.encode(value)
        case .null: try container.encodeNil()
        }
    }
}

extension EvidenceValue: ExpressibleByIntegerLiteral, ExpressibleByFloatLiteral, ExpressibleByStringLiteral, ExpressibleByBooleanLiteral {
    public init(integerLiteral value: Int) { self = .int(value) }
    public init(floatLiteral value: Double) { self = .double(value) }
    public init(stringLiteral value: String) { self = .string(value) }
    public init(booleanLiteral value: Bool) { self = .bool(value) }

    /// A number, rounded to 6 significant digits so that evidence reads cleanly.
    public static func number(_ value: Double?) -> EvidenceValue {
        guard let value else { return .null }
        guard value.isFinite, value != 0 else { return .double(value) }
        let digits = 6 - Int((Foundation.log10(Swift.abs(value))).rounded(.up))
        if digits <= 0 || digits > 300 { return .double(value) }
        var scale = 1.0
        for _ in 0..<Swift.min(digits, 300) { scale *= 10 }
        let rounded = (value * scale).rounded() / scale
        return .double(rounded.isFinite ? rounded : value)
    }
}

/// One problem found, in the JSON contract's shape.
public struct Finding: Sendable, Equatable, Codable {
    public var kind: FindingKind
    public var severity: Severity
    /// The parameter's name, e.g. `head.3.weight`; nil for run-level findings such as the loss.
    public var tensor: String?
    /// The layer it belongs to.
    public var layer: String?
    /// The saved steps where it starts and ends (nil if not step-bound).
    public var firstStep: Int?
    public var lastStep: Int?
    /// One sentence a person can act on.
    public var message: String
    /// The numbers behind it.
    public var evidence: [String: EvidenceValue]
    /// The longer explanation for `--explain` and the report: what the numbers mean, likely causes, what to try.
    public var explanation: String
    /// The positions, in the report's findings, of the findings that caused this one (``Story``);
    /// nil when none is known.
    public var causedBy: [Int]? = nil

    package enum CodingKeys: String, CodingKey {
        case kind, severity, tensor, layer
        case firstStep = "first_step"
        case lastStep = "last_step"
        case message, evidence, explanation
        case causedBy = "caused_by"
    }

    public init(
        kind: FindingKind, severity: Severity, tensor: String?, layer: String?, firstStep: Int?, lastStep: Int?,
        message: String, evidence: [String: EvidenceValue], explanation: String
    ) {
        self.kind = kind
        self.severity = severity
        self.tensor = tensor
        self.layer = layer
        self.firstStep = firstStep
        self.lastStep = lastStep
        self.message = message
        self.evidence = evidence
        self.explanation = explanation
    }

    public func encode(to encoder: Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(kind, forKey: .kind)
        try container.encode(severity, forKey: .severity)
        try container.encode(tensor, forKey: .tensor)
        try container.encode(layer, forKey: .layer)
        try container.encode(firstStep, forKey: .firstStep)
        try container.encode(lastStep, forKey: .lastStep)
        try container.encode(message, forKey: .message)
        try container.encode(evidence, forKey: .evidence)
        try container.encode(explanation, forKey: .explanation)
        try container.encodeIfPresent(causedBy, forKey: .causedBy)
    }
}

/// A detector that could not run, with the reason.
public struct NotChecked: Sendable, Equatable, Codable {
    public var kind: FindingKind
    public var reason: String

    public init(kind: FindingKind, reason: String) {
        self.kind = kind
        self.reason = reason
    }
}
