import Foundation

/// A datatype message, decoded as far as describing datasets and attributes needs.
struct NativeType {
    let typeClass: Int
    let version: Int
    let bits: UInt32
    let size: Int
    let properties: ByteCursor

    init(_ bytes: ByteCursor) throws {
        var cursor = bytes
        let first = try cursor.u8()
        typeClass = Int(first & 0x0f)
        version = Int(first >> 4)
        bits = UInt32(try cursor.unsigned(3))
        size = try cursor.u32()
        properties = cursor
        guard (1...3).contains(version), size > 0 else { throw NativeFormatError("datatype version or size") }
    }

    /// Byte order of a fixed-point, bit-field or time type.
    var plainOrder: ByteOrder { bits & 0x01 == 0 ? .little : .big }

    func floatOrder() throws -> ByteOrder {
        switch (bits & 0x40 != 0, bits & 0x01 != 0) {
        case (false, false): return .little
        case (false, true): return .big
        case (true, true): return .vax
        default: throw NativeFormatError("float byte order")
        }
    }

    struct FloatFields {
        var offset = 0, precision = 0, exponentPosition = 0, exponentSize = 0, mantissaPosition = 0, mantissaSize = 0, bias = 0
        var signPosition = 0
    }

    func floatFields() throws -> FloatFields {
        var cursor = properties
        var fields = FloatFields()
        fields.offset = try cursor.u16()
        fields.precision = try cursor.u16()
        fields.exponentPosition = Int(try cursor.u8())
        fields.exponentSize = Int(try cursor.u8())
        fields.mantissaPosition = Int(try cursor.u8())
        fields.mantissaSize = Int(try cursor.u8())
        fields.bias = try cursor.u32()
        fields.signPosition = Int((bits >> 8) & 0xff)
        guard fields.precision > 0, fields.offset + fields.precision <= size * 8 else { throw NativeFormatError("float fields") }
        return fields
    }

    /// Offset and precision of a fixed-point type.
    func integerFields() throws -> (offset: Int, precision: Int) {
        var cursor = properties
        let offset = try cursor.u16()
        let precision = try cursor.u16()
        guard precision > 0, offset + precision <= size * 8 else { throw NativeFormatError("integer fields") }
        return (offset, precision)
    }

    /// Member names of an enumeration, whose base type must be fixed-point.
    func enumNames() throws -> [String] {
        var cursor = properties
        let base = try NativeType(cursor)
        guard base.typeClass == 0 else { throw NativeFormatError("enumeration base") }
        _ = try base.integerFields()
        try cursor.skip(12)
        let count = Int(bits & 0xffff)
        var names: [String] = []
        for _ in 0..<count {
            let rest = cursor.bytes[cursor.position..<cursor.end]
            guard let nul = rest.firstIndex(of: 0) else { throw NativeFormatError("enumeration name") }
            let length = nul - cursor.position
            names.append(String(decoding: rest.prefix(length), as: UTF8.self))
            let stored = version < 3 ? (length + 1 + 7) / 8 * 8 : length + 1
            try cursor.skip(stored)
        }
        guard base.size == size else { throw NativeFormatError("enumeration base size") }
        try cursor.skip(count * size)
        return names
    }

    /// What `ElementType.classify` makes of the same type through libhdf5.
    func classify(dtypeAttribute: String? = nil) throws -> (ElementType, ByteOrder) {
        switch typeClass {
        case 0:
            _ = try integerFields()
            return (.integer(bits: size * 8, signed: bits & 0x08 != 0), plainOrder)
        case 1:
            let order = try floatOrder()
            let fields = try floatFields()
            if order == .vax { return (.otherFloat(bits: size * 8), order) }
            if size == 2 && fields.exponentSize == 5 && fields.mantissaSize == 10 { return (.float16, order) }
            if size == 2 && fields.exponentSize == 8 && fields.mantissaSize == 7 { return (.bfloat16, order) }
            if size == 4 && fields.exponentSize == 8 && fields.mantissaSize == 23 && fields.precision == 32 { return (.float32, order) }
            if size == 8 && fields.exponentSize == 11 && fields.mantissaSize == 52 && fields.precision == 64 { return (.float64, order) }
            return (.otherFloat(bits: size * 8), order)
        case 2:
            var cursor = properties
            _ = try cursor.u16()
            return (.other("time"), .none)
        case 3:
            guard bits & 0x0f <= 2, (bits >> 4) & 0x0f <= 1 else { throw NativeFormatError("string padding or character set") }
            return (.string, .none)
        case 4:
            _ = try integerFields()
            return (.other("bitfield[\(size)]"), plainOrder)
        case 5:
            let length = Int(bits & 0xff)
            var cursor = properties
            let raw = try cursor.take(length)
            let tag = String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
            if size == 2, dtypeAttribute == "bfloat16" || tag.lowercased().contains("bfloat16") {
                return (.bfloat16, .little)
            }
            return (.opaque(bytes: size, tag: tag), .none)
        case 8:
            let names = try enumNames()
            var cursor = properties
            let base = try NativeType(try cursor.sub(8))
            if size == 1, names.count == 2, Set(names.map { $0.uppercased() }) == ["FALSE", "TRUE"] { return (.bool, base.plainOrder) }
            return (.enumeration(bytes: size), base.plainOrder)
        case 9:
            var cursor = properties
            let base = try NativeType(cursor)
            try cursor.skip(8)
            if bits & 0x0f == 1 {
                guard base.typeClass == 0 || base.typeClass == 3, base.size == 1, (bits >> 8) & 0x0f <= 1 else {
                    throw NativeFormatError("variable-length string base")
                }
                return (.string, .none)
            }
            throw NativeFormatError("variable-length sequence")
        default:
            throw NativeFormatError("datatype class \(typeClass)")
        }
    }

    var isVariableString: Bool { typeClass == 9 && bits & 0x0f == 1 }
}

/// A dataspace message.
struct NativeSpace {
    /// 0 scalar, 1 simple, 2 null.
    let spaceClass: Int
    let dimensions: [UInt64]

    init(_ bytes: ByteCursor, lengthSize: Int) throws {
        var cursor = bytes
        let version = try cursor.u8()
        let rank = Int(try cursor.u8())
        let flags = try cursor.u8()
        guard rank <= 32, flags & 0xfe == 0 else { throw NativeFormatError("dataspace rank or flags") }
        switch version {
        case 1:
            try cursor.skip(5)
            spaceClass = rank > 0 ? 1 : 0
        case 2:
            let type = Int(try cursor.u8())
            guard type <= 2, (type == 1) == (rank > 0) else { throw NativeFormatError("dataspace type") }
            spaceClass = type
        default:
            throw NativeFormatError("dataspace version")
        }
        var dimensions: [UInt64] = []
        for _ in 0..<rank { dimensions.append(try cursor.unsigned(lengthSize)) }
        if flags & 0x01 != 0 {
            for _ in 0..<rank { _ = try cursor.unsigned(lengthSize) }
        }
        self.dimensions = dimensions
    }

    var shape: [Int] { dimensions.map { Int(clamping: $0) } }

    /// Number of elements, or nil when it overflows.
    var points: Int? {
        if spaceClass == 2 { return 0 }
        var count = 1
        for dimension in dimensions {
            guard dimension <= UInt64(Int.max) else { return nil }
            let (product, overflow) = count.multipliedReportingOverflow(by: Int(dimension))
            if overflow { return nil }
            count = product
        }
        return count
    }
}

extension NativeMetadata {
    /// The dataset at `path` described as libhdf5 describes it, or nil when the path does not lead
    /// to a dataset through hard links, or when the dataset is chunked or virtual (libhdf5 answers).
    package func datasetInfo(_ path: String) throws -> DatasetInfo? {
        if let known = knownInfo(path) { return known }
        guard let objectAddress = resolve(path), let object = objects[objectAddress], case .dataset = object.kind else { return nil }
        return try datasetInfo(path, object: object)
    }

    func datasetInfo(_ path: String, object: NativeObject) throws -> DatasetInfo? {
        guard let spaceMessage = object.message(1), let typeMessage = object.message(3), let layoutMessage = object.message(8) else {
            throw NativeFormatError("dataset without dataspace, datatype or layout")
        }
        for message in object.messages where message.isShared && [1, 3, 5, 7, 8, 11].contains(message.type) {
            throw NativeFormatError("shared message")
        }
        let space = try NativeSpace(spaceMessage.cursor, lengthSize: lengthSize)
        let type = try NativeType(typeMessage.cursor)
        var dtypeAttribute: String?
        if type.typeClass == 5, type.size == 2 {
            dtypeAttribute = (try? attribute("dtype", of: object, objectPath: path))??.string
        }
        let (elementType, order) = try type.classify(dtypeAttribute: dtypeAttribute)

        var layout = layoutMessage.cursor
        let version = try layout.u8()
        guard version == 3 || version == 4 else { throw NativeFormatError("layout version \(version)") }
        let layoutClass = try layout.u8()
        guard layoutClass <= 1 else { return nil }
        if object.message(11) != nil { throw NativeFormatError("filters on an unchunked dataset") }
        if object.message(5) != nil {
            guard let fillVersion = object.message(5)?.firstByte, (1...3).contains(fillVersion) else { throw NativeFormatError("fill value") }
        }
        var externalCount = 0
        if let efl = object.message(7) {
            var cursor = efl.cursor
            guard try cursor.u8() == 1 else { throw NativeFormatError("external file list version") }
            try cursor.skip(3)
            let allocatedSlots = try cursor.u16()
            externalCount = try cursor.u16()
            let heap = try address(&cursor)
            guard externalCount <= allocatedSlots, externalCount > 0 else { throw NativeFormatError("external file list slots") }
            try cursor.skip(externalCount * 3 * lengthSize)
            let head = try read(heap, count: 4)
            guard head == [0x48, 0x45, 0x41, 0x50] else { throw NativeFormatError("external file list heap") }
        }
        let storage: Int
        let allocated: Bool
        var offset: Int?
        switch layoutClass {
        case 0:
            guard externalCount == 0 else { throw NativeFormatError("compact external dataset") }
            let size = try layout.u16()
            try layout.skip(size)
            storage = size
            allocated = true
        case 1:
            let dataAddress = try address(&layout)
            let size = try layout.count(lengthSize)
            if externalCount > 0 {
                storage = size
                allocated = true
            } else {
                let defined = dataAddress != undefinedAddress
                storage = defined ? size : 0
                allocated = defined || storage > 0
                // H5Dget_offset adds the base address, wrapping an undefined address.
                let absolute = dataAddress &+ UInt64(base)
                if absolute != undefinedAddress { offset = Int(clamping: absolute) }
                if defined {
                    let (end, overflow) = dataAddress.addingReportingOverflow(UInt64(size))
                    guard !overflow, end <= endOfAddresses else { throw NativeFormatError("data beyond the end of the address space") }
                }
            }
        default:
            return nil
        }
        return DatasetInfo(
            path: path, shape: space.spaceClass == 1 ? space.shape : [], isNull: space.spaceClass == 2, type: elementType, byteOrder: order,
            layout: layoutClass == 0 ? .compact : .contiguous, chunkShape: nil, filters: [], storageSize: storage, dataOffset: offset,
            externalFileCount: externalCount, allocated: allocated)
    }

    func address(_ cursor: inout ByteCursor) throws -> UInt64 {
        let value = try cursor.unsigned(offsetSize)
        let allOnes: UInt64 = offsetSize == 8 ? UInt64.max : (UInt64(1) << UInt64(8 * offsetSize)) - 1
        return value == allOnes ? undefinedAddress : value
    }

    /// The object at `path`, when libhdf5 would open it (`H5Oopen` opens a dataset fully, so a dataset
    /// must be one the native reader describes); nil when libhdf5 is to answer.
    func openable(_ path: String) throws -> NativeObject? {
        guard let address = resolve(path), let object = objects[address] else { return nil }
        switch object.kind {
        case .group: return object
        case .dataset:
            if try datasetInfo(path) != nil { return object }
            return try chunkedOpens(object) ? object : nil
        default: return nil
        }
    }

    /// Whether a chunked dataset's header holds what libhdf5 needs to open it (a version 3 layout
    /// whose chunk has the dataset's rank, positive dimensions and the element's size, and a
    /// filter pipeline that decodes), without reading its chunk index.
    func chunkedOpens(_ object: NativeObject) throws -> Bool {
        guard let spaceMessage = object.message(1), let typeMessage = object.message(3), let layoutMessage = object.message(8) else {
            return false
        }
        let space = try NativeSpace(spaceMessage.cursor, lengthSize: lengthSize)
        let type = try NativeType(typeMessage.cursor)
        var layout = layoutMessage.cursor
        guard try layout.u8() == 3, try layout.u8() == 2 else { return false }
        let dimensionality = Int(try layout.u8())
        _ = try address(&layout)
        var chunk: [Int] = []
        for _ in 0..<dimensionality { chunk.append(try layout.u32()) }
        guard space.spaceClass == 1, dimensionality == space.dimensions.count + 1, chunk.allSatisfy({ $0 > 0 }), chunk.last == type.size else {
            return false
        }
        if let pipeline = object.message(11) {
            guard !pipeline.isShared else { return false }
            var cursor = pipeline.cursor
            let version = try cursor.u8()
            let count = Int(try cursor.u8())
            guard version == 1 || version == 2, count <= 32 else { return false }
            if version == 1 { try cursor.skip(6) }
            for _ in 0..<count {
                let id = try cursor.u16()
                let nameLength = version == 1 || id >= 256 ? try cursor.u16() : 0
                _ = try cursor.u16()
                let values = try cursor.u16()
                try cursor.skip(version == 1 ? (nameLength + 7) / 8 * 8 : nameLength)
                try cursor.skip(values * 4 + (version == 1 && values % 2 == 1 ? 4 : 0))
            }
        }
        return true
    }

    /// The attribute messages of an object, in libhdf5's name order.
    struct RawAttribute {
        let nameBytes: [UInt8]
        let type: ByteCursor
        let space: ByteCursor
        let data: ByteCursor
    }

    func rawAttributes(_ object: NativeObject) throws -> [RawAttribute] {
        // Attribute values are not among the bytes a parse notes as consulted (they differ from save to
        // save): a parse that reads one while describing its datasets is not kept (``ParseMemo``).
        record?.failed = true
        if let info = object.message(21) {
            var cursor = info.cursor
            guard try cursor.u8() == 0 else { throw NativeFormatError("attribute info version") }
            let flags = try cursor.u8()
            if flags & 0x01 != 0 { try cursor.skip(2) }
            guard try address(&cursor) == undefinedAddress else { throw NativeFormatError("dense attribute storage") }
        }
        var result: [RawAttribute] = []
        for message in object.messages where message.type == 12 {
            guard !message.isShared else { throw NativeFormatError("shared attribute") }
            var cursor = message.cursor
            let version = try cursor.u8()
            let flags = try cursor.u8()
            let nameSize = try cursor.u16()
            let typeSize = try cursor.u16()
            let spaceSize = try cursor.u16()
            func padded(_ size: Int) -> Int { version == 1 ? (size + 7) / 8 * 8 : size }
            switch version {
            case 1: break
            case 2: guard flags == 0 else { throw NativeFormatError("shared attribute parts") }
            case 3:
                guard flags == 0 else { throw NativeFormatError("shared attribute parts") }
                guard try cursor.u8() <= 1 else { throw NativeFormatError("attribute name encoding") }
            default: throw NativeFormatError("attribute version")
            }
            let rawName = try cursor.take(nameSize)
            try cursor.skip(padded(nameSize) - nameSize)
            let type = try cursor.sub(typeSize)
            try cursor.skip(padded(typeSize) - typeSize)
            let space = try cursor.sub(spaceSize)
            try cursor.skip(padded(spaceSize) - spaceSize)
            // libhdf5 refuses a name whose stored length is not its length plus the terminating NUL.
            guard rawName.last == 0, rawName.firstIndex(of: 0) == rawName.count - 1 else { throw NativeFormatError("attribute name length") }
            result.append(RawAttribute(nameBytes: Array(rawName.dropLast()), type: type, space: space, data: cursor))
        }
        guard result.count <= 100_000 else { throw NativeFormatError("too many attributes") }
        result.sort { $0.nameBytes.lexicographicallyPrecedes($1.nameBytes) }
        for index in result.indices.dropFirst() where result[index].nameBytes == result[index - 1].nameBytes {
            throw NativeFormatError("two attributes of one name")
        }
        return result
    }

    /// Every attribute of the object at `path`, or nil when the path is not reached through hard links.
    package func attributes(_ path: String) throws -> [Attribute]? {
        guard let object = try openable(path) else { return nil }
        var heaps: [UInt64: [Int: [UInt8]]] = [:]
        return try rawAttributes(object).enumerated().map { index, raw in
            let name = raw.nameBytes.isEmpty || raw.nameBytes.count >= 65_536 ? "#\(index)" : String(decoding: raw.nameBytes, as: UTF8.self)
            return try decode(raw, name: name, heaps: &heaps)
        }
    }

    /// One attribute by name: nil when the path is not reached natively, .some(nil) when there is no such attribute.
    package func attribute(_ name: String, at path: String) throws -> AttributeValue?? {
        guard let object = try openable(path) else { return nil }
        return .some(try attribute(name, of: object, objectPath: path))
    }

    func attribute(_ name: String, of object: NativeObject, objectPath: String) throws -> AttributeValue? {
        let wanted = Array(name.utf8)
        guard let raw = try rawAttributes(object).first(where: { $0.nameBytes == wanted }) else { return nil }
        var heaps: [UInt64: [Int: [UInt8]]] = [:]
        return try decode(raw, name: name, heaps: &heaps).value
    }

    /// Decodes an attribute exactly as `HDF5File.decodeAttribute` does through libhdf5.
    func decode(_ raw: RawAttribute, name: String, heaps: inout [UInt64: [Int: [UInt8]]]) throws -> Attribute {
        let space = try NativeSpace(raw.space, lengthSize: lengthSize)
        if space.spaceClass == 2 { return Attribute(name: name, shape: [], value: .empty) }
        let shape = space.spaceClass == 1 ? space.shape : []
        guard let points = space.points else { throw NativeFormatError("attribute size overflows") }
        if points == 0 { return Attribute(name: name, shape: shape, value: .empty) }
        let type = try NativeType(raw.type)
        let (elementType, _) = try type.classify()
        let elementSize = type.isVariableString ? MemoryLayout<UnsafeRawPointer>.size : type.size
        let limit = limits.maxAttributeBytes
        guard elementSize > 0, points <= limit / max(elementSize, 1) else {
            return Attribute(
                name: name, shape: shape,
                value: .unsupported("\(points) elements of \(elementSize) bytes: larger than the \(limit)-byte limit, not read"))
        }
        let fileSize = type.isVariableString ? 8 + offsetSize : type.size
        var data = raw.data
        let bytes = try data.take(points * fileSize)
        switch elementType {
        case .string:
            if type.isVariableString { return Attribute(name: name, shape: shape, value: try variableStrings(bytes, count: points, heaps: &heaps)) }
            var strings: [String] = []
            strings.reserveCapacity(points)
            for index in 0..<points {
                var slice = bytes[(index * fileSize)..<((index + 1) * fileSize)]
                if let nul = slice.firstIndex(of: 0) { slice = slice[..<nul] }
                while let last = slice.last, last == 0x20 { slice = slice.dropLast() }
                strings.append(String(decoding: slice, as: UTF8.self))
            }
            return Attribute(name: name, shape: shape, value: .strings(strings))
        case .integer(let bits, let signed):
            let fields = try type.integerFields()
            guard [1, 2, 4, 8].contains(type.size), fields.offset == 0, fields.precision == bits else {
                throw NativeFormatError("unusual integer attribute")
            }
            let big = type.plainOrder == .big
            var unsignedValues: [UInt64] = []
            unsignedValues.reserveCapacity(points)
            for index in 0..<points {
                var value: UInt64 = 0
                for byte in 0..<fileSize {
                    let position = index * fileSize + (big ? byte : fileSize - 1 - byte)
                    value = value << 8 | UInt64(bytes[position])
                }
                unsignedValues.append(value)
            }
            if !signed && bits == 64 { return Attribute(name: name, shape: shape, value: .unsignedIntegers(unsignedValues)) }
            let values = unsignedValues.map { value -> Int64 in
                if !signed { return Int64(value) }
                let shift = UInt64(64 - bits)
                return Int64(bitPattern: value << shift) >> Int64(shift)
            }
            return Attribute(name: name, shape: shape, value: .integers(values))
        case .float32, .float64:
            let fields = try type.floatFields()
            let order = try type.floatOrder()
            let normalization = (type.bits >> 4) & 0x03
            let standard =
                type.size == 4
                ? (fields.exponentPosition, fields.mantissaPosition, fields.bias, fields.signPosition) == (23, 0, 127, 31)
                : (fields.exponentPosition, fields.mantissaPosition, fields.bias, fields.signPosition) == (52, 0, 1023, 63)
            guard standard, fields.offset == 0, normalization == 2, order != .vax else { throw NativeFormatError("unusual float attribute") }
            var values: [Double] = []
            values.reserveCapacity(points)
            for index in 0..<points {
                var value: UInt64 = 0
                for byte in 0..<fileSize {
                    let position = index * fileSize + (order == .big ? byte : fileSize - 1 - byte)
                    value = value << 8 | UInt64(bytes[position])
                }
                values.append(fileSize == 4 ? Double(Float(bitPattern: UInt32(truncatingIfNeeded: value))) : Double(bitPattern: value))
            }
            return Attribute(name: name, shape: shape, value: .floats(values))
        case .float16, .bfloat16, .otherFloat:
            throw NativeFormatError("float attribute of an unusual size")
        case .bool:
            return Attribute(name: name, shape: shape, value: .bools(bytes.map { $0 != 0 }))
        default:
            return Attribute(name: name, shape: shape, value: .unsupported(elementType.description))
        }
    }

    /// Variable-length strings: each element names an object in a global heap collection.
    func variableStrings(_ bytes: [UInt8], count: Int, heaps: inout [UInt64: [Int: [UInt8]]]) throws -> AttributeValue {
        var cursor = ByteCursor(bytes)
        let limit = limits.maxAttributeBytes
        var strings: [String] = []
        strings.reserveCapacity(count)
        var total = 0
        for _ in 0..<count {
            let length = try cursor.u32()
            let collection = try address(&cursor)
            let index = try cursor.u32()
            if collection == 0 {
                strings.append("")
                continue
            }
            if heaps[collection] == nil { heaps[collection] = try globalHeap(collection) }
            guard let object = heaps[collection]?[index], object.count == length else { throw NativeFormatError("global heap object") }
            let visible = min(object.firstIndex(of: 0) ?? object.count, limit)
            total += visible
            strings.append(total > limit ? "" : String(decoding: object.prefix(visible), as: UTF8.self))
        }
        if total > limit { return .unsupported("strings longer than the \(limit)-byte limit, not read") }
        return .strings(strings)
    }

    /// The objects of a global heap collection, by index.
    func globalHeap(_ address: UInt64) throws -> [Int: [UInt8]] {
        let head = try read(address, count: 8 + lengthSize)
        guard Array(head.prefix(4)) == [0x47, 0x43, 0x4f, 0x4c], head[4] == 1 else { throw NativeFormatError("global heap signature") }
        var sizeCursor = ByteCursor(head, from: 8)
        let size = try sizeCursor.count(lengthSize)
        guard size >= 8 + lengthSize else { throw NativeFormatError("global heap size") }
        let block = try read(address, count: size)
        var cursor = ByteCursor(block, from: 8 + lengthSize)
        var objects: [Int: [UInt8]] = [:]
        while cursor.remaining >= 8 + lengthSize {
            let index = try cursor.u16()
            try cursor.skip(6)
            let objectSize = try cursor.count(lengthSize)
            if index == 0 { break }
            let data = try cursor.take(objectSize)
            try cursor.skip(min((objectSize + 7) / 8 * 8 - objectSize, cursor.remaining))
            guard objects[index] == nil else { throw NativeFormatError("global heap index twice") }
            objects[index] = data
        }
        return objects
    }
}
