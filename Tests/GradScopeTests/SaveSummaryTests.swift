import Foundation
import GradScopeMeasurement
import GradScopeModel
import GradScopeSources
import TestSupport
import Testing

/// The per-save summary: one value a scan keeps of each save, with a versioned binary form.
@Suite("Save summaries")
struct SaveSummaryTests {
    /// The summaries of a real sample run, measured in this process.
    func summaries(_ run: String) throws -> [SaveSummary] {
        let loaded = try RunLoader.load(samplePath(run))
        let (kept, measurements) = ScanEngine.measure(loaded)
        #expect(kept.checkpoints.count == measurements.records.count)
        return zip(kept.checkpoints, measurements.records).map { SaveSummary(checkpoint: $0, record: $1, units: []) }
    }

    @Test("a summary of a measured save comes back from its binary form exactly, NaN and infinities included")
    func roundTrip() throws {
        // exploding-nan holds non-finite values and NaN norms.
        for summary in try summaries("exploding-nan") {
            var withUnits = summary
            withUnits.units = [UnitSnapshot(key: .gradient("x"), name: "x", layer: "l", source: .gradient, alive: [true, false, true])]
            let back = try SaveSummary(decoding: try withUnits.encoded())
            #expect(try BinaryCodingTests.json(back) == (try BinaryCodingTests.json(withUnits)))
            #expect(back.units.first?.alive == [true, false, true])
            #expect(back.checkpoint.stamp == summary.checkpoint.stamp && back.checkpoint.storage == summary.checkpoint.storage)
        }
    }

    @Test("unit liveness travels packed, six units to a character, and comes back exactly; the earlier 0/1 form is read")
    func packedUnits() throws {
        var noise = SplitMix64(seed: 7)
        for count in [0, 1, 7, 8, 9, 63, 64, 65, 1000] {
            let bits = (0..<count).map { _ in noise.next() % 3 != 0 }
            let text = UnitSnapshot.packed(bits)
            #expect(UnitSnapshot.unpacked(text) == bits, "\(count)")
            #expect(text.utf8.count <= "\(count):".utf8.count + 4 * ((count + 23) / 24))
            let snapshot = UnitSnapshot(key: .gradient("x"), name: "x", layer: "l", source: .gradient, alive: bits, inputsAlive: bits.reversed())
            let back = try BinaryCoding.decode(UnitSnapshot.self, from: try BinaryCoding.encode(snapshot))
            #expect(back.alive == bits && back.inputsAlive == bits.reversed())
        }
        #expect(UnitSnapshot.unpacked("1101") == [true, true, false, true])
        #expect(UnitSnapshot.unpacked("") == [])
        for bad in ["12", "9:AA==", "x:AA==", "8:not base64", "-1:"] { #expect(UnitSnapshot.unpacked(bad) == nil, "\(bad)") }
    }

    @Test("bytes of another version, another kind or cut short are refused with the reason")
    func refusals() throws {
        let summary = try #require(try summaries("healthy").first)
        let data = try summary.encoded()
        #expect(Array(data.prefix(SaveSummary.magic.count)) == SaveSummary.magic)
        var future = data
        future[SaveSummary.magic.count] = UInt8(truncatingIfNeeded: SaveSummary.formatVersion + 1)
        #expect(throws: SaveSummary.DecodingError.version(SaveSummary.formatVersion + 1)) { try SaveSummary(decoding: future) }
        #expect(throws: SaveSummary.DecodingError.notASummary) { try SaveSummary(decoding: Data("PK\u{3}\u{4}hello".utf8)) }
        #expect(throws: SaveSummary.DecodingError.notASummary) { try SaveSummary(decoding: Data()) }
        for cut in [SaveSummary.magic.count + 2, data.count / 2, data.count - 1] {
            #expect(throws: SaveSummary.DecodingError.self) { try SaveSummary(decoding: data.prefix(cut)) }
        }
    }
}

/// Tensor keys: typed, with one written form for JSON and messages between processes.
@Suite("Tensor keys")
struct TensorKeyTests {
    @Test("every role's key reads back from its written form, names with colons and slashes included")
    func writtenForm() throws {
        let keys: [TensorKey] = [
            .weight("dense/kernel:0"), .gradient("head.3.weight"), .activation("hidden2"),
            .optimizer("exp_avg_sq", "blocks.0.attn:qkv.weight"),
        ]
        #expect(
            keys.map(\.description) == [
                "weight:dense/kernel:0", "gradient:head.3.weight", "activation:hidden2",
                "optimizer:exp_avg_sq:blocks.0.attn:qkv.weight",
            ])
        for key in keys {
            #expect(TensorKey(key.description) == key)
            let json = try JSONEncoder().encode([key])
            #expect(String(decoding: json, as: UTF8.self) == "[\"\(key.description.replacingOccurrences(of: "/", with: "\\/"))\"]")
            #expect(try JSONDecoder().decode([TensorKey].self, from: json) == [key])
        }
        #expect(TensorKey(role: .weight, slot: "m", name: "w").slot == nil, "only optimizer state has a slot")
    }

    @Test("strings that are not keys are refused, in code and in decoding")
    func refusals() {
        for text in ["", "weight", "bias:x", "optimizer:m", ":x"] { #expect(TensorKey(text) == nil, "\(text)") }
        #expect(throws: DecodingError.self) { try JSONDecoder().decode([TensorKey].self, from: Data("[\"nonsense\"]".utf8)) }
    }
}
