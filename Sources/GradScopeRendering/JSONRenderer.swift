import Foundation
import GradScopeDiagnosis

/// Renders reports as the JSON contract of DESIGN.md: one pretty-printed object
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
public func encodeJSON<T: Encodable>(_ value: T) throws -> String {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
    encoder.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
    return String(decoding: try encoder.encode(value), as: UTF8.self)
}
