import ElementTypes
import Foundation

/// Formats a byte count for people: `812 B`, `4.1 KB`, `1.3 GB` (powers of 1000).
public func formatBytes(_ bytes: Int) -> String {
    let units = ["B", "KB", "MB", "GB", "TB", "PB"]
    var value = Double(bytes)
    var unit = 0
    while value >= 1000 && unit < units.count - 1 {
        value /= 1000
        unit += 1
    }
    if unit == 0 { return "\(bytes) B" }
    return value >= 100 ? "\(Int(value.rounded())) \(units[unit])" : "\(formatFixed(value, digits: 1)) \(units[unit])"
}

/// `value` with exactly `digits` digits after the point.
public func formatFixed(_ value: Double, digits: Int) -> String {
    guard value.isFinite else { return value.isNaN ? "nan" : (value > 0 ? "inf" : "-inf") }
    var scale = 1.0
    for _ in 0..<digits { scale *= 10 }
    let rounded = (abs(value) * scale).rounded() / scale
    let integer = Int(rounded)
    var fraction = Int(((rounded - Double(integer)) * scale).rounded())
    var whole = integer
    if fraction >= Int(scale) {
        whole += 1
        fraction -= Int(scale)
    }
    let sign = value < 0 && rounded != 0 ? "-" : ""
    if digits == 0 { return "\(sign)\(whole)" }
    var fractionText = String(fraction)
    while fractionText.count < digits { fractionText = "0" + fractionText }
    return "\(sign)\(whole).\(fractionText)"
}

/// A shape as `[64, 128]`, `scalar` for [].
public func formatShape(_ shape: [Int]) -> String {
    shape.isEmpty ? "scalar" : "[" + shape.map(String.init).joined(separator: ", ") + "]"
}

/// A number in 3 significant digits for messages: 0.000123 -> 1.23e-4, 0.5 -> 0.5.
public func formatSignificant(_ value: Double?) -> String {
    guard let value else { return "n/a" }
    guard value.isFinite else { return value.isNaN ? "NaN" : (value > 0 ? "inf" : "-inf") }
    if value == 0 { return "0" }
    let magnitude = abs(value)
    if magnitude >= 1e-3 && magnitude < 1e5 {
        let digits = max(0, 2 - Int(floor(log10(magnitude))))
        var text = String(format: "%.\(digits)f", value)
        if text.contains(".") {
            while text.hasSuffix("0") { text.removeLast() }
            if text.hasSuffix(".") { text.removeLast() }
        }
        return text
    }
    return String(format: "%.2e", value).replacingOccurrences(of: "e-0", with: "e-").replacingOccurrences(of: "e+0", with: "e+")
}
