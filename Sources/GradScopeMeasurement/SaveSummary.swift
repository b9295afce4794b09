import Foundation
import GradScopeModel

/// What a scan keeps of one save: the checkpoint as it was described, every tensor's
/// measurements (compact numbers: moments, extremes, counts, sketch quantiles, histograms,
/// drift from the save before), the tensors that failed with their reasons, and the per-unit
/// liveness of the tensors whose units are judged. Per-unit arrays are already summarised
/// into the measurements' unit counts; only the liveness bits travel.
///
/// One value type for every place a save's measurements are kept: the scan engine builds a
/// run from them, and they have a stable, versioned binary form (``encoded()``) for storing them
/// outside one scan. A reader refuses a form of another version rather than guess at it.
public struct SaveSummary: Sendable, Codable {
    /// The version of the binary form, raised whenever the fields or their meaning change.
    /// Version 2: unit liveness packed as bits (``UnitSnapshot``), where version 1 had a character per unit.
    public static let formatVersion: UInt16 = 2
    /// The bytes every encoded summary starts with.
    public static let magic: [UInt8] = Array("GSSAVE".utf8)

    public var checkpoint: Checkpoint
    public var record: StepRecord
    public var units: [UnitSnapshot]

    public init(checkpoint: Checkpoint, record: StepRecord, units: [UnitSnapshot]) {
        self.checkpoint = checkpoint
        self.record = record
        self.units = units
    }

    /// The binary form: ``magic``, ``formatVersion`` (2 bytes, little-endian), then the summary
    /// in ``BinaryCoding`` (doubles as their 8 bytes, so NaN and infinities survive).
    public func encoded() throws -> Data {
        var data = Data(Self.magic)
        withUnsafeBytes(of: Self.formatVersion.littleEndian) { data.append(contentsOf: $0) }
        data.append(try BinaryCoding.encode(self))
        return data
    }

    /// Why bytes are not a summary this program can read.
    public enum DecodingError: Error, CustomStringConvertible, Equatable {
        case notASummary
        case version(UInt16)
        case malformed(String)

        public var description: String {
            switch self {
            case .notASummary: return "not a gradscope save summary"
            case .version(let version):
                return "a save summary of format version \(version); this gradscope reads version \(SaveSummary.formatVersion)"
            case .malformed(let reason): return "a malformed save summary (\(reason))"
            }
        }
    }

    /// Reads the binary form ``encoded()`` wrote.
    public init(decoding data: Data) throws {
        let bytes = [UInt8](data)
        let header = Self.magic.count + 2
        guard bytes.count >= header, Array(bytes.prefix(Self.magic.count)) == Self.magic else { throw DecodingError.notASummary }
        let version = UInt16(bytes[Self.magic.count]) | UInt16(bytes[Self.magic.count + 1]) << 8
        guard version == Self.formatVersion else { throw DecodingError.version(version) }
        do {
            self = try BinaryCoding.decode(SaveSummary.self, from: Data(bytes[header...]))
        } catch {
            throw DecodingError.malformed(String(describing: error))
        }
    }
}
