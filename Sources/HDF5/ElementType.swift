import CHDF5

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
            if name.hasPrefix("int"), let bits = Int(name.dropFirst(3)) { self = .integer(bits: bits, signed: true) }
            else if name.hasPrefix("uint"), let bits = Int(name.dropFirst(4)) { self = .integer(bits: bits, signed: false) }
            else if name.hasPrefix("float"), let bits = Int(name.dropFirst(5)) { self = .otherFloat(bits: bits) }
            else { self = .other(name) }
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

    /// Classifies a libhdf5 datatype. `dtypeAttribute` is the dataset's
    /// `dtype` attribute, which marks Keras's opaque bfloat16.
    static func classify(_ type: hid_t, dtypeAttribute: String? = nil) -> (ElementType, ByteOrder) {
        let cls = H5Tget_class(type)
        let size = Int(H5Tget_size(type))
        let order = byteOrder(of: type)
        switch cls {
        case H5T_FLOAT:
            var spos = 0, epos = 0, esize = 0, mpos = 0, msize = 0
            H5Tget_fields(type, &spos, &epos, &esize, &mpos, &msize)
            let precision = Int(H5Tget_precision(type))
            if order == .vax { return (.otherFloat(bits: size * 8), order) }
            if size == 2 && esize == 5 && msize == 10 { return (.float16, order) }
            if size == 2 && esize == 8 && msize == 7 { return (.bfloat16, order) }
            if size == 4 && esize == 8 && msize == 23 && precision == 32 { return (.float32, order) }
            if size == 8 && esize == 11 && msize == 52 && precision == 64 { return (.float64, order) }
            return (.otherFloat(bits: size * 8), order)
        case H5T_INTEGER:
            let signed = H5Tget_sign(type) == H5T_SGN_2
            return (.integer(bits: size * 8, signed: signed), order)
        case H5T_ENUM:
            if size == 1, isBoolEnum(type) { return (.bool, order) }
            return (.enumeration(bytes: size), order)
        case H5T_STRING:
            return (.string, .none)
        case H5T_OPAQUE:
            var tag = ""
            if let raw = H5Tget_tag(type) {
                tag = String(cString: raw)
                H5free_memory(raw)
            }
            if size == 2, dtypeAttribute == "bfloat16" || tag.lowercased().contains("bfloat16") {
                return (.bfloat16, .little)
            }
            return (.opaque(bytes: size, tag: tag), .none)
        case H5T_COMPOUND:
            if isComplex(type) { return (.complex(bytes: size), order) }
            return (.compound(bytes: size), .none)
        case H5T_ARRAY: return (.other("array[\(size)]"), .none)
        case H5T_VLEN: return (.other("vlen"), .none)
        case H5T_REFERENCE: return (.other("reference"), .none)
        case H5T_BITFIELD: return (.other("bitfield[\(size)]"), order)
        case H5T_TIME: return (.other("time"), .none)
        default: return (.other("unknown"), .none)
        }
    }

    static func byteOrder(of type: hid_t) -> ByteOrder {
        switch H5Tget_order(type) {
        case H5T_ORDER_LE: return .little
        case H5T_ORDER_BE: return .big
        case H5T_ORDER_VAX: return .vax
        default: return .none
        }
    }

    /// An 8-bit enum whose members are exactly FALSE=0 and TRUE=1 (h5py's bool).
    private static func isBoolEnum(_ type: hid_t) -> Bool {
        guard H5Tget_nmembers(type) == 2 else { return false }
        var names: [String] = []
        for index in 0..<2 {
            guard let raw = H5Tget_member_name(type, UInt32(index)) else { return false }
            names.append(String(cString: raw).uppercased())
            H5free_memory(raw)
        }
        return Set(names) == ["FALSE", "TRUE"]
    }

    /// A two-member compound of equal floats named like (r, i) / (real, imag).
    private static func isComplex(_ type: hid_t) -> Bool {
        guard H5Tget_nmembers(type) == 2 else { return false }
        for index in 0..<2 where H5Tget_member_class(type, UInt32(index)) != H5T_FLOAT { return false }
        return true
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
