/// The element types of stored tensors, and where contiguous ones lie in a file:
/// plain values shared by every reader (HDF5 today) and by the analysis.

/// Byte order of a stored numeric type.
public enum ByteOrder: String, Sendable, Equatable, Codable {
    case little, big, vax, none
}

/// The element type of a dataset or attribute, as far as a reader of
/// checkpoints cares: which numbers it can hold and how to convert them.
public enum ElementType: Sendable, Equatable, CustomStringConvertible, Codable {
    /// IEEE binary16.
    case float16
    /// bfloat16: a float with an 8-bit exponent and 7-bit mantissa, stored
    /// either as a float type with those fields or (Keras, ml_dtypes) as a
    /// 2-byte opaque type with a `dtype="bfloat16"` attribute.
    case bfloat16
    case float32
    case float64
    /// Any other floating-point format (80-bit long double, VAX, custom).
    case otherFloat(bits: Int)
    case integer(bits: Int, signed: Bool)
    /// h5py's bool: an 8-bit enum FALSE=0, TRUE=1.
    case bool
    case string
    case opaque(bytes: Int, tag: String)
    case compound(bytes: Int)
    case enumeration(bytes: Int)
    case complex(bytes: Int)
    case other(String)

    /// A short name: `float32`, `int64`, `bool`, `opaque[2]`.
    public var description: String {
        switch self {
        case .float16: return "float16"
        case .bfloat16: return "bfloat16"
        case .float32: return "float32"
        case .float64: return "float64"
        case .otherFloat(let bits): return "float\(bits)"
        case .integer(let bits, let signed): return signed ? "int\(bits)" : "uint\(bits)"
        case .bool: return "bool"
        case .string: return "string"
        case .opaque(let bytes, let tag): return tag.isEmpty ? "opaque[\(bytes)]" : "opaque[\(bytes)] \"\(tag)\""
        case .compound(let bytes): return "compound[\(bytes)]"
        case .enumeration(let bytes): return "enum[\(bytes)]"
        case .complex(let bytes): return "complex[\(bytes)]"
        case .other(let name): return name
        }
    }

    /// Parses the names `description` produces (`float32`, `int64`, `uint8`, `bool`, ...).
    public init(name: String) {
        switch name {
        case "float16": self = .float16
        case "bfloat16": self = .bfloat16
        case "float32": self = .float32
        case "float64": self = .float64
        case "bool": self = .bool
        case "string": self = .string
        default:
            if name.hasPrefix("int"), let bits = Int(name.dropFirst(3)) {
                self = .integer(bits: bits, signed: true)
            } else if name.hasPrefix("uint"), let bits = Int(name.dropFirst(4)) {
                self = .integer(bits: bits, signed: false)
            } else if name.hasPrefix("float"), let bits = Int(name.dropFirst(5)) {
                self = .otherFloat(bits: bits)
            } else {
                self = .other(name)
            }
        }
    }

    /// Whether values of this type can be read as numbers.
    public var isNumeric: Bool {
        switch self {
        case .float16, .bfloat16, .float32, .float64, .otherFloat, .integer, .bool: return true
        default: return false
        }
    }

    /// Whether this is a floating-point type (the types that hold weights).
    public var isFloatingPoint: Bool {
        switch self {
        case .float16, .bfloat16, .float32, .float64, .otherFloat: return true
        default: return false
        }
    }

    /// Whether Double is needed to hold every value exactly (float64, 64-bit integers).
    public var needsDouble: Bool {
        switch self {
        case .float64: return true
        case .otherFloat(let bits): return bits > 32
        case .integer(let bits, _): return bits > 16
        default: return false
        }
    }

    /// Size in bytes of one element, for fixed-size types.
    public var byteSize: Int? {
        switch self {
        case .float16, .bfloat16: return 2
        case .float32: return 4
        case .float64: return 8
        case .otherFloat(let bits): return bits / 8
        case .integer(let bits, _): return bits / 8
        case .bool: return 1
        case .opaque(let bytes, _), .compound(let bytes), .enumeration(let bytes), .complex(let bytes): return bytes
        default: return nil
        }
    }
}

extension ElementType {
    /// Encoded as its name, e.g. "float32".
    public init(from decoder: Decoder) throws {
        self.init(name: try decoder.singleValueContainer().decode(String.self))
    }

    public func encode(to encoder: Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(description)
    }
}

/// Where a dataset's elements lie in its file when they can be read directly: contiguous
/// float32 or float64 in the machine's byte order, or (`chunks`) gzip-compressed chunks of
/// float32 or float64 listed one by one. What a worker process tells its parent, which then
/// reads the bytes itself (see `HDF5File.readFully` and `DeflatedChunks`).
public struct DirectStorage: Sendable, Codable, Equatable {
    /// Byte offset of element 0 in the file (0 when the elements are in `chunks`).
    public var offset: Int
    /// Number of elements.
    public var count: Int
    /// `.float32` or `.float64`.
    public var type: ElementType
    /// When set, the elements are not contiguous at `offset` but in these compressed chunks.
    public var chunks: DeflatedChunkTable?

    public init(offset: Int, count: Int, type: ElementType, chunks: DeflatedChunkTable? = nil) {
        self.offset = offset
        self.count = count
        self.type = type
        self.chunks = chunks
    }

    /// Bytes per element (4 or 8).
    public var elementSize: Int { type == .float32 ? 4 : 8 }
    /// Whether the elements lie contiguous at `offset` (else they are in `chunks`).
    public var isContiguous: Bool { chunks == nil }
}

/// Where the chunks of a chunked, gzip-compressed (deflate, or shuffle then deflate) float32 or
/// float64 dataset lie in its file: every chunk of the grid, in row-major order of the grid, as
/// its file offset and stored size. Kept compact, since a run's descriptions hold one per
/// compressed tensor per save: two flat arrays, 12 bytes a chunk, behind one reference.
public final class DeflatedChunkTable: Sendable, Codable, Equatable {
    /// The dataset's shape and its chunks' shape (same rank, every extent at least 1).
    public let shape: [Int]
    public let chunkShape: [Int]
    /// Whether HDF5's shuffle filter ran before deflate.
    public let shuffled: Bool
    /// Whether the stored byte order is not the machine's.
    public let swapsBytes: Bool
    /// Per chunk, in the grid's row-major order: the file offset of its stored bytes.
    public let addresses: [Int]
    /// Per chunk: how many bytes are stored (compressed).
    public let sizes: [UInt32]

    public init(shape: [Int], chunkShape: [Int], shuffled: Bool, swapsBytes: Bool, addresses: [Int], sizes: [UInt32]) {
        self.shape = shape
        self.chunkShape = chunkShape
        self.shuffled = shuffled
        self.swapsBytes = swapsBytes
        self.addresses = addresses
        self.sizes = sizes
    }

    /// Number of chunks listed.
    public var count: Int { addresses.count }

    /// Whether chunks of `self` and `other` cover the same elements (same shape and chunk shape).
    public func sameGrid(as other: DeflatedChunkTable) -> Bool { shape == other.shape && chunkShape == other.chunkShape }

    public static func == (a: DeflatedChunkTable, b: DeflatedChunkTable) -> Bool {
        a === b
            || (a.shape == b.shape && a.chunkShape == b.chunkShape && a.shuffled == b.shuffled && a.swapsBytes == b.swapsBytes
                && a.addresses == b.addresses && a.sizes == b.sizes)
    }
}
