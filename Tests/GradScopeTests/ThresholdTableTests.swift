import Foundation
import GradScopeDiagnosis
import TestSupport
import Testing

@Suite("Thresholds: one table row per threshold, from which decoding, name=value, validation and the names come")
struct ThresholdTableTests {
    /// Every threshold's name and default, as gradscope has always had them.
    static let defaults: [(String, Double)] = [
        ("plateau_relative_tolerance", 0.03), ("plateau_min_saves", 3), ("plateau_min_run_fraction", 0.1),
        ("plateau_warning_run_fraction", 0.25), ("collapse_factor", 10), ("activation_collapse_factor", 10),
        ("dead_units_warning_fraction", 0.25), ("dead_units_info_fraction", 0.05), ("dead_activation_fraction", 0.99),
        ("vanishing_depth_ratio", 1e-3), ("vanishing_persistence", 0.5), ("exploding_growth", 10), ("exploding_ratio", 1),
        ("exploding_absolute_ratio", 100), ("update_ratio_high", 0.1), ("update_ratio_low", 1e-6), ("update_ratio_low_contrast", 100),
        ("init_too_small_factor", 0.1), ("init_too_large_factor", 10),
    ]

    /// A value in range for `descriptor`, different from its default and from every other's sample, and
    /// short in decimal (Foundation's JSONSerialization reads long decimals as NSDecimalNumber, rounded).
    func sample(_ descriptor: ThresholdDescriptor) -> Double {
        let index = Thresholds.table.firstIndex { $0.name == descriptor.name } ?? 0
        if descriptor.isCount { return descriptor.value(in: Thresholds()) + 4 }
        // A fraction takes a value below 1 (its index in hundredths), anything else one from 2.5.
        return descriptor.range.upperBound <= 1 ? Double(index + 1) / 100 : Double(index) + 2.5
    }

    @Test("names and defaults are unchanged, in their order")
    func namesAndDefaults() {
        #expect(Thresholds.names == Self.defaults.map(\.0))
        let defaults = Thresholds()
        for (name, value) in Self.defaults { #expect(defaults.value(name) == value, "\(name)") }
    }

    @Test("every stored threshold has exactly one row, and every row its own property")
    func everyPropertyHasARow() {
        let defaults = Array(Mirror(reflecting: Thresholds()).children)
        #expect(defaults.count == Thresholds.table.count)
        var changedLabels: [String] = []
        for descriptor in Thresholds.table {
            var thresholds = Thresholds()
            #expect(throws: Never.self) { try descriptor.set(sample(descriptor), in: &thresholds) }
            let changed = zip(defaults, Mirror(reflecting: thresholds).children).filter { "\($0.value)" != "\($1.value)" }.compactMap(\.0.label)
            #expect(changed.count == 1, "\(descriptor.name): \(changed)")
            changedLabels += changed
        }
        #expect(Set(changedLabels).count == Thresholds.table.count)
    }

    @Test("every threshold is set by name, by name=value and from a config file")
    func everyThresholdSets() throws {
        for descriptor in Thresholds.table {
            let value = sample(descriptor)
            var byName = Thresholds()
            try byName.set(descriptor.name, value)
            #expect(byName.value(descriptor.name) == value, "\(descriptor.name)")
            var byAssignment = Thresholds()
            try byAssignment.set(assignment: "\(descriptor.name)=\(value)")
            #expect(byAssignment == byName, "\(descriptor.name)")
            #expect(try Thresholds.load(json: Data(#"{"\#(descriptor.name)": \#(value)}"#.utf8)) == byName, "\(descriptor.name)")
            #expect(try Thresholds.load(json: Data(#"{"thresholds": {"\#(descriptor.name)": \#(value)}}"#.utf8)) == byName, "\(descriptor.name)")
            // Only this threshold moved.
            for other in Thresholds.table where other.name != descriptor.name {
                #expect(byName.value(other.name) == Thresholds().value(other.name))
            }
        }
    }

    @Test("out-of-range and non-finite values are a ThresholdError, never a trap, and leave the thresholds as they were")
    func rejects() throws {
        for descriptor in Thresholds.table {
            for bad: Double in [-1, -Double.ulpOfOne, .nan, .infinity, -.infinity] {
                var thresholds = Thresholds()
                #expect(throws: ThresholdError.self, "\(descriptor.name)=\(bad)") { try thresholds.set(descriptor.name, bad) }
                #expect(throws: ThresholdError.self, "\(descriptor.name)=\(bad)") { try thresholds.set(assignment: "\(descriptor.name)=\(bad)") }
                #expect(thresholds == Thresholds())
            }
            #expect(throws: ThresholdError.self) { try Thresholds.load(json: Data(#"{"\#(descriptor.name)": -2}"#.utf8)) }
            #expect(throws: ThresholdError.self) { try Thresholds.load(json: Data(#"{"\#(descriptor.name)": "ten"}"#.utf8)) }
            var thresholds = Thresholds()
            #expect(throws: ThresholdError.self) { try thresholds.set(assignment: "\(descriptor.name)=ten") }
            #expect(throws: ThresholdError.self) { try thresholds.set(assignment: descriptor.name) }
        }
        var thresholds = Thresholds()
        #expect(throws: ThresholdError.self) { try thresholds.set(assignment: "no_such_threshold=1") }
    }

    @Test("a count too large for an Int is a ThresholdError (plateau_min_saves=1e19); in range it is rounded down, at least 1")
    func countRange() throws {
        var thresholds = Thresholds()
        #expect(throws: ThresholdError.self) { try thresholds.set("plateau_min_saves", 1e19) }
        #expect(throws: ThresholdError.self) { try thresholds.set("plateau_min_saves", 0x1p63) }
        #expect(throws: ThresholdError.self) { try thresholds.set(assignment: "plateau_min_saves=1e19") }
        #expect(throws: ThresholdError.self) { try Thresholds.load(json: Data(#"{"plateau_min_saves": 1e19}"#.utf8)) }
        #expect(thresholds.plateauMinSaves == 3)
        try thresholds.set("plateau_min_saves", Double(Int.max).nextDown)
        #expect(thresholds.plateauMinSaves == Int(Double(Int.max).nextDown))
        try thresholds.set("plateau_min_saves", 4.9)
        #expect(thresholds.plateauMinSaves == 4)
        try thresholds.set("plateau_min_saves", 0.5)
        #expect(thresholds.plateauMinSaves == 1)
        // Real thresholds take any finite, non-negative number, as they always have.
        try thresholds.set("collapse_factor", 1e300)
        #expect(thresholds.collapseFactor == 1e300)
        try thresholds.set("dead_units_warning_fraction", 0)
        #expect(thresholds.deadUnitsWarningFraction == 0)
    }

    @Test("thresholds round-trip through JSON, every name a key, counts as integers")
    func jsonRoundTrip() throws {
        var thresholds = Thresholds()
        for descriptor in Thresholds.table { try descriptor.set(sample(descriptor), in: &thresholds) }
        let data = try JSONEncoder().encode(thresholds)
        let object = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        #expect(Set(object.keys) == Set(Thresholds.names))
        #expect(String(decoding: data, as: UTF8.self).contains(#""plateau_min_saves":7"#))
        #expect(try JSONDecoder().decode(Thresholds.self, from: data) == thresholds)
        #expect(try Thresholds.load(json: data) == thresholds)
        #expect(try JSONDecoder().decode(Thresholds.self, from: JSONEncoder().encode(Thresholds())) == Thresholds())
        // Decoding checks each value as setting it does.
        let negative = Data(
            String(decoding: data, as: UTF8.self).replacingOccurrences(of: #""collapse_factor":6.5"#, with: #""collapse_factor":-1"#).utf8)
        #expect(negative != data)
        #expect(throws: ThresholdError.self) { try JSONDecoder().decode(Thresholds.self, from: negative) }
    }

    @Test("every threshold is read by some detector, every name a detector declares exists, and DETECTORS.md documents each")
    func declaredByDetectors() throws {
        let declared = allDetectors.flatMap(\.thresholdNames)
        #expect(Set(declared).isSubset(of: Set(Thresholds.names)), "\(Set(declared).subtracting(Thresholds.names))")
        #expect(Set(declared) == Set(Thresholds.names), "\(Set(Thresholds.names).subtracting(declared))")
        for detector in allDetectors { #expect(Set(detector.thresholdNames).count == detector.thresholdNames.count, "\(detector.kind)") }
        let doc = try String(contentsOf: packageRoot.appendingPathComponent("docs/DETECTORS.md"), encoding: .utf8)
        for name in Thresholds.names { #expect(doc.contains("`\(name)`"), "\(name)") }
    }
}
