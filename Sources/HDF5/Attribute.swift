import CHDF5

/// The decoded value of an attribute.
public enum AttributeValue: Sendable, Equatable, CustomStringConvertible {
    case integers([Int64])
    case unsignedIntegers([UInt64])
    case floats([Double])
    case strings([String])
    case bools([Bool])
    /// A null dataspace: the attribute exists and holds nothing.
    case empty
    /// A type this reader does not decode, with its description.
    case unsupported(String)

    /// The first string, when this is a string attribute.
    public var string: String? {
        if case .strings(let values) = self { return values.first }
        return nil
    }

    /// All strings, when this is a string attribute.
    public var strings: [String]? {
        if case .strings(let values) = self { return values }
        return nil
    }

    /// The first element as a Double, for any numeric attribute.
    public var double: Double? {
        switch self {
        case .integers(let values): return values.first.map(Double.init)
        case .unsignedIntegers(let values): return values.first.map(Double.init)
        case .floats(let values): return values.first
        case .bools(let values): return values.first.map { $0 ? 1 : 0 }
        default: return nil
        }
    }

    /// The first element as an Int, for integer attributes and integral floats.
    public var int: Int? {
        switch self {
        case .integers(let values): return values.first.map(Int.init)
        case .unsignedIntegers(let values): return values.first.flatMap { Int(exactly: $0) }
        case .floats(let values):
            guard let value = values.first, value.isFinite, value.rounded() == value, abs(value) < 9e15 else { return nil }
            return Int(value)
        case .bools(let values): return values.first.map { $0 ? 1 : 0 }
        default: return nil
        }
    }

    public var description: String {
        func list<T>(_ values: [T], _ render: (T) -> String) -> String {
            if values.count == 1 { return render(values[0]) }
            let shown = values.prefix(16).map(render).joined(separator: ", ")
            return "[" + shown + (values.count > 16 ? ", … (\(values.count) in all)" : "") + "]"
        }
        switch self {
        case .integers(let values): return list(values) { String($0) }
        case .unsignedIntegers(let values): return list(values) { String($0) }
        case .floats(let values): return list(values) { String($0) }
        case .strings(let values): return list(values) { "\"\($0)\"" }
        case .bools(let values): return list(values) { $0 ? "true" : "false" }
        case .empty: return "(empty)"
        case .unsupported(let what): return "(\(what), not decoded)"
        }
    }
}

/// A named attribute of a group or dataset.
public struct Attribute: Sendable, Equatable {
    public let name: String
    /// Dimensions of the attribute's dataspace: [] for a scalar.
    public let shape: [Int]
    public let value: AttributeValue
}

extension HDF5File {
    /// Every attribute of the object at `path`, decoded, sorted by name.
    /// An attribute that cannot be decoded is returned as `.unsupported` with the reason.
    /// The corresponding C functions are `H5Aopen_by_idx` and `H5Aread`.
    public func attributes(at path: String) throws -> [Attribute] {
        if let native, let attributes = try? native.attributes(path) { return attributes }
        Library.ensure()
        let object = try openObject(path)
        var info = H5O_info_t()
        guard H5Oget_info2(object.id, &info, UInt32(H5O_INFO_NUM_ATTRS)) >= 0 else {
            throw failure(path, "cannot read the object header")
        }
        let count = Int(info.num_attrs)
        guard count <= 100_000 else {
            throw HDF5Error(file: self.path, object: path, reason: .refused, message: "\(count) attributes: refused as implausible")
        }
        var result: [Attribute] = []
        for index in 0..<count {
            let aid = H5Aopen_by_idx(object.id, ".", H5_INDEX_NAME, H5_ITER_INC, hsize_t(index), gs_H5P_DEFAULT(), gs_H5P_DEFAULT())
            guard aid >= 0 else {
                let reason = Library.errorSummary() ?? "cannot be opened"
                result.append(Attribute(name: "#\(index)", shape: [], value: .unsupported("unreadable attribute: \(reason)")))
                continue
            }
            let attribute = Handle(aid, .attribute)
            let name = attributeName(attribute.id) ?? "#\(index)"
            result.append(decodeAttribute(attribute, name: name, objectPath: path))
        }
        return result
    }

    /// One attribute by name, or nil when the object has no such attribute.
    public func attribute(_ name: String, at path: String) throws -> AttributeValue? {
        if let native, let answer = try? native.attribute(name, at: path) { return answer }
        Library.ensure()
        let object = try openObject(path)
        let exists = H5Aexists(object.id, name)
        if exists < 0 { throw failure(path, "cannot look up attribute \(name)") }
        guard exists > 0 else { return nil }
        let aid = H5Aopen(object.id, name, gs_H5P_DEFAULT())
        guard aid >= 0 else { throw failure(path, "cannot open attribute \(name)") }
        return decodeAttribute(Handle(aid, .attribute), name: name, objectPath: path).value
    }

    /// A list of strings stored under `name`, or, when it was too long for one
    /// attribute, split across `name0`, `name1`, ... (as Keras does for `weight_names`).
    /// Returns nil when neither form exists; an empty array for an attribute holding no strings.
    public func stringList(_ name: String, at path: String) throws -> [String]? {
        if let value = try attribute(name, at: path) {
            switch value {
            case .strings(let strings): return strings
            case .empty, .floats, .integers: return []
            default: return nil
            }
        }
        var result: [String] = []
        var part = 0
        while let value = try attribute("\(name)\(part)", at: path) {
            result.append(contentsOf: value.strings ?? [])
            part += 1
        }
        return part > 0 ? result : nil
    }

    package func openObject(_ path: String) throws -> Handle {
        let oid = H5Oopen(handle.id, path, linkAccess.id)
        guard oid >= 0 else { throw failure(path, "cannot open object", reason: .notFound) }
        return Handle(oid, .object)
    }

    private func attributeName(_ aid: hid_t) -> String? {
        let length = H5Aget_name(aid, 0, nil)
        guard length > 0, length < 65_536 else { return nil }
        var buffer = [CChar](repeating: 0, count: Int(length) + 1)
        let status = buffer.withUnsafeMutableBufferPointer { H5Aget_name(aid, $0.count, $0.baseAddress) }
        guard status >= 0 else { return nil }
        return buffer.withUnsafeBufferPointer { pointer in
            pointer.baseAddress.map { String(cString: $0) } ?? ""
        }
    }

    private func decodeAttribute(_ attribute: Handle, name: String, objectPath: String) -> Attribute {
        let sid = H5Aget_space(attribute.id)
        guard sid >= 0 else {
            return Attribute(name: name, shape: [], value: .unsupported("corrupt dataspace: \(Library.errorSummary() ?? "unreadable")"))
        }
        let space = Handle(sid, .dataspace)
        let spaceClass = H5Sget_simple_extent_type(space.id)
        if spaceClass == H5S_NULL { return Attribute(name: name, shape: [], value: .empty) }
        let rank = Int(H5Sget_simple_extent_ndims(space.id))
        guard rank >= 0, rank <= 32 else {
            return Attribute(name: name, shape: [], value: .unsupported("corrupt dataspace"))
        }
        var dims = [hsize_t](repeating: 0, count: max(rank, 1))
        if rank > 0 { H5Sget_simple_extent_dims(space.id, &dims, nil) }
        let shape = rank == 0 ? [] : dims.prefix(rank).map { Int(clamping: $0) }
        let npoints = Int(H5Sget_simple_extent_npoints(space.id))
        guard npoints >= 0 else { return Attribute(name: name, shape: shape, value: .unsupported("corrupt dataspace")) }
        if npoints == 0 { return Attribute(name: name, shape: shape, value: .empty) }

        let tid = H5Aget_type(attribute.id)
        guard tid >= 0 else {
            return Attribute(name: name, shape: shape, value: .unsupported("corrupt datatype: \(Library.errorSummary() ?? "unreadable")"))
        }
        let type = Handle(tid, .datatype)
        let elementSize = Int(H5Tget_size(type.id))
        let limit = options.limits.maxAttributeBytes
        guard elementSize > 0, npoints <= limit / max(elementSize, 1) else {
            return Attribute(
                name: name, shape: shape,
                value: .unsupported("\(npoints) elements of \(elementSize) bytes: larger than the \(limit)-byte limit, not read"))
        }
        let (elementType, _) = ElementType.classify(type.id)
        switch elementType {
        case .string:
            return Attribute(name: name, shape: shape, value: readStrings(attribute.id, type: type.id, count: npoints, elementSize: elementSize))
        case .integer(let bits, let signed):
            if !signed && bits == 64 {
                var values = [UInt64](repeating: 0, count: npoints)
                guard H5Aread(attribute.id, gs_H5T_NATIVE_UINT64(), &values) >= 0 else { return unreadable(name, shape) }
                return Attribute(name: name, shape: shape, value: .unsignedIntegers(values))
            }
            var values = [Int64](repeating: 0, count: npoints)
            guard H5Aread(attribute.id, gs_H5T_NATIVE_INT64(), &values) >= 0 else { return unreadable(name, shape) }
            return Attribute(name: name, shape: shape, value: .integers(values))
        case .float16, .bfloat16, .float32, .float64, .otherFloat:
            var values = [Double](repeating: 0, count: npoints)
            guard H5Aread(attribute.id, gs_H5T_NATIVE_DOUBLE(), &values) >= 0 else { return unreadable(name, shape) }
            return Attribute(name: name, shape: shape, value: .floats(values))
        case .bool:
            let native = Handle(H5Tget_native_type(type.id, H5T_DIR_ASCEND), .datatype)
            var values = [UInt8](repeating: 0, count: npoints)
            guard native.id >= 0, H5Aread(attribute.id, native.id, &values) >= 0 else { return unreadable(name, shape) }
            return Attribute(name: name, shape: shape, value: .bools(values.map { $0 != 0 }))
        default:
            return Attribute(name: name, shape: shape, value: .unsupported(elementType.description))
        }
    }

    private func unreadable(_ name: String, _ shape: [Int]) -> Attribute {
        Attribute(name: name, shape: shape, value: .unsupported("unreadable: \(Library.errorSummary() ?? "read failed")"))
    }

    /// Reads string attributes in any of the three encodings checkpoints use:
    /// variable-length ASCII or UTF-8, and fixed-length null- or space-padded.
    private func readStrings(_ aid: hid_t, type: hid_t, count: Int, elementSize: Int) -> AttributeValue {
        let cset = H5Tget_cset(type)
        if H5Tis_variable_str(type) > 0 {
            let memType = Handle(H5Tcopy(gs_H5T_C_S1()), .datatype)
            H5Tset_size(memType.id, gs_H5T_VARIABLE())
            H5Tset_cset(memType.id, cset)
            var pointers = [UnsafeMutablePointer<CChar>?](repeating: nil, count: count)
            guard H5Aread(aid, memType.id, &pointers) >= 0 else {
                return .unsupported("unreadable string: \(Library.errorSummary() ?? "read failed")")
            }
            var strings: [String] = []
            strings.reserveCapacity(count)
            var total = 0
            for pointer in pointers {
                guard let pointer else {
                    strings.append("")
                    continue
                }
                let length = strnlen(pointer, options.limits.maxAttributeBytes)
                total += length
                if total > options.limits.maxAttributeBytes {
                    strings.append("")
                } else {
                    strings.append(String(decoding: UnsafeRawBufferPointer(start: pointer, count: length), as: UTF8.self))
                }
            }
            // Free what libhdf5 allocated for the strings.
            let space = Handle(H5Aget_space(aid), .dataspace)
            pointers.withUnsafeMutableBytes { raw in
                _ = H5Dvlen_reclaim(memType.id, space.id, gs_H5P_DEFAULT(), raw.baseAddress)
            }
            if total > options.limits.maxAttributeBytes {
                return .unsupported("strings longer than the \(options.limits.maxAttributeBytes)-byte limit, not read")
            }
            return .strings(strings)
        }
        var bytes = [UInt8](repeating: 0, count: count * elementSize)
        let memType = Handle(H5Tcopy(type), .datatype)
        guard H5Aread(aid, memType.id, &bytes) >= 0 else {
            return .unsupported("unreadable string: \(Library.errorSummary() ?? "read failed")")
        }
        var strings: [String] = []
        strings.reserveCapacity(count)
        for index in 0..<count {
            var slice = bytes[(index * elementSize)..<((index + 1) * elementSize)]
            if let nul = slice.firstIndex(of: 0) { slice = slice[..<nul] }
            while let last = slice.last, last == 0x20 { slice = slice.dropLast() }
            strings.append(String(decoding: slice, as: UTF8.self))
        }
        return .strings(strings)
    }
}

extension Attribute {
    /// A string attribute of another format (safetensors' `__metadata__`), for `gradscope ls`.
    package init(string name: String, _ value: String) {
        self.init(name: name, shape: [], value: .strings([value]))
    }
}
