import CHDF5

extension ElementType {
    /// Classifies a libhdf5 datatype. `dtypeAttribute` is the dataset's `dtype`
    /// attribute: bfloat16, which HDF5 has no type for, is stored as a 2-byte opaque
    /// type tagged or attributed `bfloat16` (the ml_dtypes convention h5py writes).
    package static func classify(_ type: hid_t, dtypeAttribute: String? = nil) -> (ElementType, ByteOrder) {
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

    package static func byteOrder(of type: hid_t) -> ByteOrder {
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
