import CDeflate
import CHDF5
import HDF5

#if canImport(Glibc)
import Glibc
#endif

/// A small HDF5 writer: enough to make the files checkpoints are (groups,
/// numeric datasets of every type frameworks use, string and numeric
/// attributes, links), for tests, fixtures and samples. gradscope itself
/// never writes to an input file.
public final class HDF5Writer {
    /// Element types the writer can store.
    public enum StoredType: Sendable {
        case float16, float32, float64, float32BigEndian, float64BigEndian
        /// bfloat16 as Keras writes it: 2-byte opaque plus a `dtype="bfloat16"` attribute.
        case bfloat16Opaque
        case int8, uint8, int16, int32, int64, uint64
        /// h5py's bool: an 8-bit enum FALSE=0, TRUE=1.
        case bool
    }

    /// How a string attribute is encoded.
    public enum StringEncoding: Sendable {
        case variableUTF8, variableASCII
        /// Fixed-length, null-padded, as Keras 2 wrote `layer_names`.
        case fixed
    }

    /// Attribute values the writer can store.
    public enum AttributeInput: Sendable {
        case int(Int64)
        case ints([Int64])
        case double(Double)
        case doubles([Double])
        case string(String, StringEncoding)
        case strings([String], StringEncoding)
        case bool(Bool)
    }

    public let path: String
    private let file: Handle

    /// Creates (or truncates) `path`. `userBlock` reserves that many bytes before the superblock.
    public init(creating path: String, userBlock: Int = 0) throws {
        Library.ensure()
        self.path = path
        let fcpl = Handle(H5Pcreate(gs_H5P_FILE_CREATE()), .plist)
        if userBlock > 0 { H5Pset_userblock(fcpl.id, hsize_t(userBlock)) }
        let id = H5Fcreate(path, gs_H5F_ACC_TRUNC(), fcpl.id, gs_H5P_DEFAULT())
        guard id >= 0 else { throw HDF5Error(file: path, reason: .io, message: "cannot create: \(Library.errorSummary() ?? "failed")") }
        file = Handle(id, .file)
    }

    /// Flushes everything written so far to disk; the file is closed when the writer is released.
    public func close() {
        H5Fflush(file.id, H5F_SCOPE_GLOBAL)
    }

    private func fail(_ object: String, _ what: String) -> HDF5Error {
        HDF5Error(file: path, object: object, reason: .io, message: "\(what): \(Library.errorSummary() ?? "failed")")
    }

    private func linkCreateList() -> Handle {
        let lcpl = Handle(H5Pcreate(gs_H5P_LINK_CREATE()), .plist)
        H5Pset_create_intermediate_group(lcpl.id, 1)
        H5Pset_char_encoding(lcpl.id, H5T_CSET_UTF8)
        return lcpl
    }

    /// Creates a group (and any missing parents).
    @discardableResult
    public func createGroup(_ groupPath: String) throws -> String {
        Library.ensure()
        let lcpl = linkCreateList()
        let gid = H5Gcreate2(file.id, groupPath, lcpl.id, gs_H5P_DEFAULT(), gs_H5P_DEFAULT())
        guard gid >= 0 else { throw fail(groupPath, "cannot create group") }
        H5Gclose(gid)
        return groupPath
    }

    private func fileType(_ type: StoredType) -> Handle {
        switch type {
        case .float16:
            let t = H5Tcopy(gs_H5T_IEEE_F32LE())
            H5Tset_fields(t, 15, 10, 5, 0, 10)
            H5Tset_size(t, 2)
            H5Tset_ebias(t, 15)
            return Handle(t, .datatype)
        case .float32: return Handle(H5Tcopy(gs_H5T_IEEE_F32LE()), .datatype)
        case .float64: return Handle(H5Tcopy(gs_H5T_IEEE_F64LE()), .datatype)
        case .float32BigEndian: return Handle(H5Tcopy(gs_H5T_IEEE_F32BE()), .datatype)
        case .float64BigEndian: return Handle(H5Tcopy(gs_H5T_IEEE_F64BE()), .datatype)
        case .bfloat16Opaque:
            let t = H5Tcreate(H5T_OPAQUE, 2)
            H5Tset_tag(t, "bfloat16")
            return Handle(t, .datatype)
        case .int8: return Handle(H5Tcopy(gs_H5T_STD_I8LE()), .datatype)
        case .uint8: return Handle(H5Tcopy(gs_H5T_STD_U8LE()), .datatype)
        case .int16: return Handle(H5Tcopy(gs_H5T_STD_I16LE()), .datatype)
        case .int32: return Handle(H5Tcopy(gs_H5T_STD_I32LE()), .datatype)
        case .int64: return Handle(H5Tcopy(gs_H5T_STD_I64LE()), .datatype)
        case .uint64: return Handle(H5Tcopy(gs_H5T_STD_U64LE()), .datatype)
        case .bool: return boolType()
        }
    }

    private func boolType() -> Handle {
        let t = H5Tenum_create(gs_H5T_NATIVE_INT8())
        var zero: Int8 = 0, one: Int8 = 1
        H5Tenum_insert(t, "FALSE", &zero)
        H5Tenum_insert(t, "TRUE", &one)
        return Handle(t, .datatype)
    }

    /// Writes a numeric dataset from Double values, converted to `type`.
    /// `shape` [] writes a scalar; `chunks` and `gzip` make it chunked and compressed, `shuffle`
    /// puts HDF5's shuffle filter before deflate and `fletcher32` a checksum after it (both need `chunks`).
    /// `writtenRows` writes only that many rows of axis 0, leaving the other chunks unallocated.
    public func write(
        _ datasetPath: String, _ values: [Double], shape: [Int], as type: StoredType = .float32,
        chunks: [Int]? = nil, gzip: Int? = nil, shuffle: Bool = false, fletcher32: Bool = false, compact: Bool = false,
        writtenRows: Int? = nil
    ) throws {
        let count = shape.reduce(1, *)
        guard values.count == count else {
            throw HDF5Error(file: path, object: datasetPath, reason: .io, message: "\(values.count) values for shape \(shape)")
        }
        let space: Handle
        if shape.isEmpty {
            space = Handle(H5Screate(H5S_SCALAR), .dataspace)
        } else {
            var dims = shape.map { hsize_t($0) }
            space = Handle(H5Screate_simple(Int32(shape.count), &dims, nil), .dataspace)
        }
        let dcpl = Handle(H5Pcreate(gs_H5P_DATASET_CREATE()), .plist)
        if let chunks {
            var chunkDims = chunks.map { hsize_t($0) }
            H5Pset_chunk(dcpl.id, Int32(chunks.count), &chunkDims)
            if shuffle { H5Pset_shuffle(dcpl.id) }
            if let gzip { H5Pset_deflate(dcpl.id, UInt32(gzip)) }
            if fletcher32 { H5Pset_fletcher32(dcpl.id) }
        } else if compact {
            H5Pset_layout(dcpl.id, H5D_COMPACT)
        }
        let stored = fileType(type)
        let lcpl = linkCreateList()
        let did = H5Dcreate2(file.id, datasetPath, stored.id, space.id, lcpl.id, dcpl.id, gs_H5P_DEFAULT())
        guard did >= 0 else { throw fail(datasetPath, "cannot create dataset") }
        let dataset = Handle(did, .dataset)
        guard count > 0 else { return }
        if let writtenRows, let rows = shape.first, rows > 0 {
            let inner = count / rows
            var input = Array(values.prefix(writtenRows * inner))
            var start = [hsize_t](repeating: 0, count: shape.count)
            var extent = shape.map { hsize_t($0) }
            extent[0] = hsize_t(writtenRows)
            let fileSpace = Handle(H5Dget_space(dataset.id), .dataspace)
            H5Sselect_hyperslab(fileSpace.id, H5S_SELECT_SET, &start, nil, &extent, nil)
            let memSpace = Handle(H5Screate_simple(Int32(extent.count), &extent, nil), .dataspace)
            guard H5Dwrite(dataset.id, gs_H5T_NATIVE_DOUBLE(), memSpace.id, fileSpace.id, gs_H5P_DEFAULT(), &input) >= 0 else {
                throw fail(datasetPath, "cannot write rows")
            }
            return
        }
        let status: herr_t
        switch type {
        case .bfloat16Opaque:
            var bits = values.map { UInt16(truncatingIfNeeded: Float($0).bitPattern >> 16) }
            status = H5Dwrite(dataset.id, stored.id, gs_H5S_ALL(), gs_H5S_ALL(), gs_H5P_DEFAULT(), &bits)
        case .bool:
            var bytes = values.map { Int8($0 != 0 ? 1 : 0) }
            status = H5Dwrite(dataset.id, stored.id, gs_H5S_ALL(), gs_H5S_ALL(), gs_H5P_DEFAULT(), &bytes)
        default:
            var input = values
            status = H5Dwrite(dataset.id, gs_H5T_NATIVE_DOUBLE(), gs_H5S_ALL(), gs_H5S_ALL(), gs_H5P_DEFAULT(), &input)
        }
        guard status >= 0 else { throw fail(datasetPath, "cannot write dataset") }
        if case .bfloat16Opaque = type {
            try setAttribute("dtype", .string("bfloat16", .variableUTF8), at: datasetPath)
        }
    }

    /// Writes float32 values.
    public func write(
        _ datasetPath: String, floats values: [Float], shape: [Int],
        chunks: [Int]? = nil, gzip: Int? = nil
    ) throws {
        try write(datasetPath, values.map(Double.init), shape: shape, as: .float32, chunks: chunks, gzip: gzip)
    }

    /// Creates a dataset with no data written (storage never allocated), as a
    /// save interrupted after creating the dataset leaves it.
    public func createEmpty(_ datasetPath: String, shape: [Int], as type: StoredType = .float32) throws {
        var dims = shape.map { hsize_t($0) }
        let space = Handle(H5Screate_simple(Int32(shape.count), &dims, nil), .dataspace)
        let dcpl = Handle(H5Pcreate(gs_H5P_DATASET_CREATE()), .plist)
        H5Pset_alloc_time(dcpl.id, H5D_ALLOC_TIME_LATE)
        let stored = fileType(type)
        let lcpl = linkCreateList()
        let did = H5Dcreate2(file.id, datasetPath, stored.id, space.id, lcpl.id, dcpl.id, gs_H5P_DEFAULT())
        guard did >= 0 else { throw fail(datasetPath, "cannot create dataset") }
        H5Dclose(did)
    }

    /// Creates a dataset whose raw data lives in `rawFile` (external storage).
    public func writeExternal(_ datasetPath: String, rawFile: String, count: Int) throws {
        var dims = [hsize_t(count)]
        let space = Handle(H5Screate_simple(1, &dims, nil), .dataspace)
        let dcpl = Handle(H5Pcreate(gs_H5P_DATASET_CREATE()), .plist)
        H5Pset_external(dcpl.id, rawFile, 0, hsize_t(count * 4))
        let stored = fileType(.float32)
        let lcpl = linkCreateList()
        let did = H5Dcreate2(file.id, datasetPath, stored.id, space.id, lcpl.id, dcpl.id, gs_H5P_DEFAULT())
        guard did >= 0 else { throw fail(datasetPath, "cannot create external dataset") }
        H5Dclose(did)
    }

    /// Creates a soft link at `linkPath` pointing to `target`.
    public func softLink(_ linkPath: String, target: String) throws {
        let lcpl = linkCreateList()
        guard H5Lcreate_soft(target, file.id, linkPath, lcpl.id, gs_H5P_DEFAULT()) >= 0 else {
            throw fail(linkPath, "cannot create soft link")
        }
    }

    /// Creates an external link at `linkPath` to `object` in `targetFile`.
    public func externalLink(_ linkPath: String, file targetFile: String, object: String) throws {
        let lcpl = linkCreateList()
        guard H5Lcreate_external(targetFile, object, file.id, linkPath, lcpl.id, gs_H5P_DEFAULT()) >= 0 else {
            throw fail(linkPath, "cannot create external link")
        }
    }

    /// Creates a second hard link to an existing object (a hard-link cycle when it points to an ancestor).
    public func hardLink(_ linkPath: String, target: String) throws {
        let lcpl = linkCreateList()
        guard H5Lcreate_hard(file.id, target, file.id, linkPath, lcpl.id, gs_H5P_DEFAULT()) >= 0 else {
            throw fail(linkPath, "cannot create hard link")
        }
    }

    /// Sets an attribute on the object at `objectPath` (replacing one of the same name).
    public func setAttribute(_ name: String, _ value: AttributeInput, at objectPath: String) throws {
        let oid = H5Oopen(file.id, objectPath, gs_H5P_DEFAULT())
        guard oid >= 0 else { throw fail(objectPath, "cannot open object") }
        let object = Handle(oid, .object)
        if H5Aexists(object.id, name) > 0 { H5Adelete(object.id, name) }

        func create(_ type: hid_t, _ shape: [Int]) -> Handle {
            let space: Handle
            if shape.isEmpty {
                space = Handle(H5Screate(H5S_SCALAR), .dataspace)
            } else {
                var dims = shape.map { hsize_t($0) }
                space = Handle(H5Screate_simple(Int32(shape.count), &dims, nil), .dataspace)
            }
            return Handle(H5Acreate2(object.id, name, type, space.id, gs_H5P_DEFAULT(), gs_H5P_DEFAULT()), .attribute)
        }
        var status: herr_t = -1
        switch value {
        case .int(let v):
            var x = v
            let attribute = create(gs_H5T_STD_I64LE(), [])
            status = H5Awrite(attribute.id, gs_H5T_NATIVE_INT64(), &x)
        case .ints(let v):
            var x = v
            let attribute = create(gs_H5T_STD_I64LE(), [v.count])
            status = H5Awrite(attribute.id, gs_H5T_NATIVE_INT64(), &x)
        case .double(let v):
            var x = v
            let attribute = create(gs_H5T_IEEE_F64LE(), [])
            status = H5Awrite(attribute.id, gs_H5T_NATIVE_DOUBLE(), &x)
        case .doubles(let v):
            var x = v
            let attribute = create(gs_H5T_IEEE_F64LE(), [v.count])
            status = H5Awrite(attribute.id, gs_H5T_NATIVE_DOUBLE(), &x)
        case .bool(let v):
            let type = boolType()
            var x: Int8 = v ? 1 : 0
            let attribute = create(type.id, [])
            status = H5Awrite(attribute.id, type.id, &x)
        case .string(let s, let encoding):
            status = writeStrings([s], encoding: encoding, shape: [], create: create)
        case .strings(let s, let encoding):
            status = writeStrings(s, encoding: encoding, shape: [s.count], create: create)
        }
        guard status >= 0 else { throw fail(objectPath, "cannot write attribute \(name)") }
    }

    private func writeStrings(
        _ strings: [String], encoding: StringEncoding, shape: [Int],
        create: (hid_t, [Int]) -> Handle
    ) -> herr_t {
        let type = Handle(H5Tcopy(gs_H5T_C_S1()), .datatype)
        switch encoding {
        case .variableUTF8, .variableASCII:
            H5Tset_size(type.id, gs_H5T_VARIABLE())
            H5Tset_cset(type.id, encoding == .variableUTF8 ? H5T_CSET_UTF8 : H5T_CSET_ASCII)
            let attribute = create(type.id, shape)
            var cStrings = strings.map { strdup($0) }
            defer { cStrings.forEach { free($0) } }
            return H5Awrite(attribute.id, type.id, &cStrings)
        case .fixed:
            let width = max(strings.map { $0.utf8.count }.max() ?? 1, 1)
            H5Tset_size(type.id, width)
            H5Tset_strpad(type.id, H5T_STR_NULLPAD)
            let attribute = create(type.id, shape)
            var bytes = [UInt8](repeating: 0, count: width * max(strings.count, 1))
            for (index, string) in strings.enumerated() {
                for (offset, byte) in string.utf8.enumerated() { bytes[index * width + offset] = byte }
            }
            return H5Awrite(attribute.id, type.id, &bytes)
        }
    }

    /// `bytes` compressed as a zlib stream (what HDF5's deflate filter stores), for tests that
    /// replace a chunk's stored bytes.
    public static func zlibCompress(_ bytes: [UInt8], level: Int32 = 4) -> [UInt8] {
        guard let compressor = libdeflate_alloc_compressor(level) else { return [] }
        defer { libdeflate_free_compressor(compressor) }
        var output = [UInt8](repeating: 0, count: libdeflate_zlib_compress_bound(compressor, bytes.count))
        let written = bytes.withUnsafeBytes { input in
            output.withUnsafeMutableBytes { out in
                libdeflate_zlib_compress(compressor, input.baseAddress, input.count, out.baseAddress, out.count)
            }
        }
        return Array(output.prefix(written))
    }
}
