import Foundation
import GradScopeDiagnosis

/// Renders reports as the JSON contract of docs/JSON.md: one pretty-printed object
/// with sorted snake_case keys, then a newline.
package struct JSONRenderer: ReportRenderer, Sendable {
    /// A renderer; JSON has no options.
    package init() {}

    /// The scan as one JSON object.
    package func render(_ report: ScanReport) throws -> String { try encodeJSON(report) + "\n" }

    /// The inspected checkpoint as one JSON object.
    package func render(_ report: InspectReport) throws -> String { try encodeJSON(report) + "\n" }

    /// The diff as one JSON object.
    package func render(_ report: DiffReport) throws -> String { try encodeJSON(report) + "\n" }
}

/// Encodes a report as the JSON contract: snake_case keys, sorted, pretty-printed.
///
/// JSON has no NaN or infinity, so every non-finite number, wherever it stands (a
/// loss, a learning rate, an evidence value, an element of an array), is written as
/// one of the strings `"nan"`, `"inf"` and `"-inf"`: the one representation of
/// docs/JSON.md ("Non-finite numbers"). Evidence values encode the same way
/// (``EvidenceValue``).
public func encodeJSON<T: Encodable>(_ value: T) throws -> String {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
    encoder.nonConformingFloatEncodingStrategy = .convertToString(
        positiveInfinity: NonFiniteJSON.positiveInfinity, negativeInfinity: NonFiniteJSON.negativeInfinity, nan: NonFiniteJSON.nan)
    return String(decoding: try encoder.encode(value), as: UTF8.self)
}

/// The strings that stand for non-finite numbers in the JSON contract (docs/JSON.md).
public enum NonFiniteJSON {
    public static let nan = "nan"
    public static let positiveInfinity = "inf"
    public static let negativeInfinity = "-inf"
    /// All three, for readers that check a number field.
    public static let all: Set<String> = [nan, positiveInfinity, negativeInfinity]
}
