import CHDF5

/// How a dataset's raw data is stored.
public enum StorageLayout: String, Sendable, Equatable, Codable {
    case contiguous, chunked, compact, virtual, unknown
}

/// A filter in a chunked dataset's pipeline (gzip, shuffle, ...).
public struct Filter: Sendable, Equatable {
    public let id: Int
    public let name: String
    /// Whether this libhdf5 can apply it (false for plugins not loaded).
    public let available: Bool
}

/// What a dataset declares about itself, read without touching its data.
public struct DatasetInfo: Sendable, Equatable {
    public let path: String
    /// Dimensions; [] for a scalar.
    public let shape: [Int]
    /// True for a null dataspace (no elements, not even a scalar).
    public let isNull: Bool
    public let type: ElementType
    public let byteOrder: ByteOrder
    public let layout: StorageLayout
    public let chunkShape: [Int]?
    public let filters: [Filter]
    /// Bytes allocated in the file for the data.
    public let storageSize: Int
    /// Absolute file offset of contiguous raw data, when allocated.
    public let dataOffset: Int?
    /// Number of external raw-data files (0 for ordinary datasets).
    public let externalFileCount: Int
    /// Whether any storage has been allocated (false: every element is the fill value).
    public let allocated: Bool

    /// Number of elements: the product of the dimensions, 1 for a scalar, 0 for null.
    public var elementCount: Int {
        if isNull { return 0 }
        var count = 1
        for dimension in shape {
            let (product, overflow) = count.multipliedReportingOverflow(by: dimension)
            if overflow { return Int.max }
            count = product
        }
        return count
    }

    /// Bytes the elements occupy when unpacked, saturating at Int.max.
    public var declaredBytes: Int {
        let (bytes, overflow) = elementCount.multipliedReportingOverflow(by: type.byteSize ?? 1)
        return overflow ? Int.max : bytes
    }

    /// Why this dataset must not be read under the default safety rules, or nil.
    public func refusal(limits: ReadLimits, followLinks: Bool) -> String? {
        if layout == .virtual && !followLinks {
            return "virtual dataset: its data comes from other files, not read"
        }
        if externalFileCount > 0 && !followLinks {
            return "external-storage dataset: its raw data lives in \(externalFileCount) other file(s), not read"
        }
        let declared = declaredBytes
        if declared > limits.amplificationSlack {
            let ceiling = Double(max(storageSize, 0)) * limits.maxAmplification
            if storageSize == 0 && allocated == false {
                return nil
            }
            if Double(declared) > ceiling {
                return "declares \(declared) bytes but stores only \(storageSize): refused as a shape bomb"
            }
        }
        return nil
    }
}

/// A dataset opened for reading.
public final class Dataset: Sendable {
    public let file: HDF5File
    public let info: DatasetInfo
    package let handle: Handle

    public var path: String { info.path }

    package init(file: HDF5File, info: DatasetInfo, handle: Handle) {
        self.file = file
        self.info = info
        self.handle = handle
    }
}

extension HDF5File {
    /// Opens the dataset at `path` and reads what it declares.
    /// The corresponding C function is `H5Dopen2`.
    public func dataset(_ path: String) throws -> Dataset {
        Library.ensure()
        let did = H5Dopen2(handle.id, path, datasetAccess.id)
        guard did >= 0 else { throw failure(path, "cannot open dataset") }
        let dataset = Handle(did, .dataset)
        let info = try describe(dataset: dataset.id, path: path)
        return Dataset(file: self, info: info, handle: dataset)
    }

    /// The dataset's metadata, without keeping it open. Remembered for the
    /// file's lifetime (the file is read-only): asking again costs nothing.
    public func datasetInfo(_ path: String) throws -> DatasetInfo {
        if let native, let info = native.knownInfo(path) { return info }
        if let known = rememberedInfo(path) { return known }
        if let native, let info = try? native.datasetInfo(path) {
            remember(info, for: path)
            return info
        }
        let info = try dataset(path).info
        remember(info, for: path)
        return info
    }

    private func describe(dataset did: hid_t, path: String) throws -> DatasetInfo {
        let sid = H5Dget_space(did)
        guard sid >= 0 else { throw failure(path, "corrupt dataspace") }
        let space = Handle(sid, .dataspace)
        let spaceClass = H5Sget_simple_extent_type(space.id)
        guard spaceClass != H5S_NO_CLASS else { throw failure(path, "corrupt dataspace") }
        let rank = Int(H5Sget_simple_extent_ndims(space.id))
        guard rank >= 0, rank <= 32 else { throw failure(path, "corrupt dataspace: rank \(rank)") }
        var dims = [hsize_t](repeating: 0, count: max(rank, 1))
        var maxDims = [hsize_t](repeating: 0, count: max(rank, 1))
        if rank > 0, H5Sget_simple_extent_dims(space.id, &dims, &maxDims) < 0 {
            throw failure(path, "corrupt dataspace")
        }
        let shape = rank == 0 ? [] : dims.prefix(rank).map { Int(clamping: $0) }

        let tid = H5Dget_type(did)
        guard tid >= 0 else { throw failure(path, "corrupt datatype") }
        let type = Handle(tid, .datatype)
        var dtypeAttribute: String?
        if H5Tget_class(type.id) == H5T_OPAQUE, H5Tget_size(type.id) == 2 {
            dtypeAttribute = (try? attribute("dtype", at: path))??.string
        }
        let (elementType, order) = ElementType.classify(type.id, dtypeAttribute: dtypeAttribute)

        let pid = H5Dget_create_plist(did)
        guard pid >= 0 else { throw failure(path, "corrupt creation properties") }
        let plist = Handle(pid, .plist)
        let layout: StorageLayout
        switch H5Pget_layout(plist.id) {
        case H5D_CONTIGUOUS: layout = .contiguous
        case H5D_CHUNKED: layout = .chunked
        case H5D_COMPACT: layout = .compact
        case H5D_VIRTUAL: layout = .virtual
        default: layout = .unknown
        }
        var chunkShape: [Int]?
        if layout == .chunked {
            var chunk = [hsize_t](repeating: 0, count: 32)
            let chunkRank = Int(H5Pget_chunk(plist.id, 32, &chunk))
            if chunkRank > 0 { chunkShape = chunk.prefix(chunkRank).map { Int(clamping: $0) } }
            // HDF5 never creates a chunk larger than a fixed-size dimension; a file that
            // declares one is corrupt, and libhdf5 would read outside its own buffer.
            guard chunkRank == rank || chunkRank <= 0 else {
                throw HDF5Error(
                    file: self.path, object: path, reason: .corrupt, message: "chunk rank \(chunkRank) differs from the dataset's rank \(rank)")
            }
            for axis in 0..<max(0, min(chunkRank, rank)) where maxDims[axis] != gs_H5S_UNLIMITED() && chunk[axis] > maxDims[axis] && maxDims[axis] > 0
            {
                throw HDF5Error(
                    file: self.path, object: path, reason: .corrupt,
                    message: "chunk dimension \(chunk[axis]) exceeds the fixed dataset dimension \(maxDims[axis]): corrupt layout")
            }
        }
        var filters: [Filter] = []
        let filterCount = Int(H5Pget_nfilters(plist.id))
        if filterCount > 0 && filterCount <= 32 {
            for index in 0..<filterCount {
                var flags: UInt32 = 0
                var nelements: Int = 8
                var values = [UInt32](repeating: 0, count: 8)
                var name = [CChar](repeating: 0, count: 256)
                var config: UInt32 = 0
                let id = H5Pget_filter2(plist.id, UInt32(index), &flags, &nelements, &values, 256, &name, &config)
                guard id >= 0 else { continue }
                let label = name.withUnsafeBufferPointer { pointer in
                    pointer.baseAddress.map { String(cString: $0) } ?? ""
                }
                filters.append(
                    Filter(
                        id: Int(id), name: label.isEmpty ? Self.filterName(Int(id)) : label,
                        available: H5Zfilter_avail(id) > 0))
            }
        }
        let externalCount = max(Int(H5Pget_external_count(plist.id)), 0)
        let storage = Int(clamping: H5Dget_storage_size(did))
        var status = H5D_SPACE_STATUS_ERROR
        H5Dget_space_status(did, &status)
        let allocated = status == H5D_SPACE_STATUS_ALLOCATED || status == H5D_SPACE_STATUS_PART_ALLOCATED || storage > 0
        var offset: Int?
        if layout == .contiguous && externalCount == 0 {
            let address = H5Dget_offset(did)
            if address != gs_HADDR_UNDEF() { offset = Int(clamping: address) }
        }
        _ = Library.errorMessages()
        return DatasetInfo(
            path: path, shape: shape, isNull: spaceClass == H5S_NULL, type: elementType,
            byteOrder: order, layout: layout, chunkShape: chunkShape, filters: filters,
            storageSize: storage, dataOffset: offset, externalFileCount: externalCount,
            allocated: allocated)
    }

    package static func filterName(_ id: Int) -> String {
        switch id {
        case 1: return "deflate"
        case 2: return "shuffle"
        case 3: return "fletcher32"
        case 4: return "szip"
        case 5: return "nbit"
        case 6: return "scaleoffset"
        case 32000: return "lzf"
        case 32001: return "blosc"
        case 32004: return "lz4"
        case 32008: return "bitshuffle"
        case 32013: return "zfp"
        case 32015: return "zstd"
        default: return "filter \(id)"
        }
    }
}

extension DatasetInfo {
    /// A contiguous array of another format (a safetensors tensor), described as a dataset so
    /// that `gradscope ls` lists it as it lists HDF5 datasets.
    package init(contiguous path: String, shape: [Int], type: ElementType, byteOrder: ByteOrder, storageSize: Int, dataOffset: Int) {
        self.init(
            path: path, shape: shape, isNull: false, type: type, byteOrder: byteOrder, layout: .contiguous, chunkShape: nil,
            filters: [], storageSize: storageSize, dataOffset: dataOffset, externalFileCount: 0, allocated: true)
    }
}
