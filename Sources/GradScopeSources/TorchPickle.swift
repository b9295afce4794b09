import Foundation

/// A value the restricted pickle reader builds. Lists and dicts are references (`APPEND` and
/// `SETITEM` change them after they are memoized), everything else a plain value.
indirect enum PickleValue {
    case none
    case bool(Bool)
    case int(Int)
    case float(Double)
    case string(String)
    /// A tuple, boxed like a list so that nothing nests by value (see ``PickleArena``).
    case tuple(PickleList)
    case list(PickleList)
    case dict(PickleDict)
    /// An allowed global, by `module.name`.
    case global(String)
    /// A storage named by a persistent id: its element type's global, its key and element count.
    case storage(type: String, key: String, count: Int)
    /// A tensor rebuilt by `_rebuild_tensor_v2`: a view of a storage.
    case tensor(PickleTensor)
    case mark
}

/// A list being built, or a tuple's items.
final class PickleList {
    var items: [PickleValue]

    init(_ items: [PickleValue] = []) { self.items = items }
}

/// Every list, tuple and dict one pickle built. Freeing a million nested containers one inside
/// the next would recurse a million deep; the arena holds them all and empties each before any is
/// freed, so each is freed alone. Keep it alive as long as the values are used.
final class PickleArena {
    private var lists: [PickleList] = []
    private var dicts: [PickleDict] = []

    init() {}

    func list(_ items: [PickleValue] = []) -> PickleList {
        let list = PickleList(items)
        lists.append(list)
        return list
    }

    func dict() -> PickleDict {
        let dict = PickleDict()
        dicts.append(dict)
        return dict
    }

    deinit {
        for list in lists { list.items.removeAll() }
        for dict in dicts { dict.items.removeAll() }
    }
}

/// A dict being built, in insertion order.
final class PickleDict {
    var items: [(PickleValue, PickleValue)] = []

    /// The value of a string key.
    subscript(key: String) -> PickleValue? {
        items.last { if case .string(key) = $0.0 { return true } else { return false } }?.1
    }
}

/// A tensor as `_rebuild_tensor_v2` describes it.
struct PickleTensor {
    let storageType: String
    let key: String
    let storageCount: Int
    let offset: Int
    let shape: [Int]
    let stride: [Int]
}

/// A pickle reader for torch.save's `data.pkl` that understands only the opcodes torch.save
/// writes and the globals PyTorch's `weights_only=True` loader allows. It builds values and
/// never calls anything: every other opcode or global refuses the file, naming it.
struct TorchPickle {
    /// The globals that may appear, and what `REDUCE` does with them.
    static let allowedGlobals: Set<String> = Set([
        "collections.OrderedDict", "torch._utils._rebuild_tensor_v2", "torch._utils._rebuild_parameter", "torch.Size",
        "torch.serialization._get_layout", "torch.strided",
    ]).union(storageTypes.keys.map { "torch." + $0 })

    /// The typed storages and the safetensors dtype name of their elements.
    static let storageTypes: [String: String] = [
        "FloatStorage": "F32", "DoubleStorage": "F64", "HalfStorage": "F16", "BFloat16Storage": "BF16", "LongStorage": "I64",
        "IntStorage": "I32", "ShortStorage": "I16", "CharStorage": "I8", "ByteStorage": "U8", "BoolStorage": "BOOL",
    ]

    static let maxNesting = 100
    static let maxObjects = 10_000_000
    static let maxMemo = 10_000_000
    /// The most values visited when the result is walked (shared values count every time they are reached).
    static let maxVisits = 1_000_000

    /// Why a pickle was refused.
    struct Refusal: Error {
        let reason: String
    }

    /// Reads `bytes` to the value `STOP` returns; its containers are held by `arena`.
    static func load(_ bytes: [UInt8], arena: PickleArena) throws -> PickleValue {
        var stack: [PickleValue] = []
        var marks: [Int] = []
        var memo: [Int: PickleValue] = [:]
        var position = 0
        var objects = 0
        func refuse(_ reason: String) -> Refusal { Refusal(reason: reason) }
        func take(_ count: Int) throws -> ArraySlice<UInt8> {
            guard count >= 0, position + count <= bytes.count else { throw refuse("the pickle ends in the middle of an instruction") }
            defer { position += count }
            return bytes[position..<(position + count)]
        }
        func uint(_ count: Int) throws -> Int {
            try take(count).reversed().reduce(0) { $0 << 8 | Int($1) }
        }
        func pop() throws -> PickleValue {
            guard let value = stack.popLast() else { throw refuse("stack underflow") }
            if case .mark = value { throw refuse("stack underflow (a value was expected, a mark found)") }
            return value
        }
        func popMark() throws -> [PickleValue] {
            guard let mark = marks.popLast(), mark <= stack.count else { throw refuse("stack underflow (no mark)") }
            let items = Array(stack[mark...])
            stack.removeSubrange(mark...)
            if items.contains(where: { if case .mark = $0 { return true } else { return false } }) { throw refuse("malformed marks") }
            return items
        }
        func push(_ value: PickleValue) throws {
            objects += 1
            guard objects <= maxObjects else { throw refuse("more than \(maxObjects) objects") }
            stack.append(value)
        }
        func string(_ count: Int) throws -> String {
            guard let text = String(validating: try take(count), as: UTF8.self) else { throw refuse("a string that is not UTF-8") }
            return text
        }
        func line() throws -> String {
            guard let end = bytes[position..<min(bytes.count, position + 257)].firstIndex(of: 0x0A) else { throw refuse("a GLOBAL without its name") }
            let text = String(decoding: bytes[position..<end], as: UTF8.self)
            position = end + 1
            return text
        }
        func setItems(_ target: PickleValue, _ pairs: [PickleValue]) throws {
            guard case .dict(let dict) = target, pairs.count % 2 == 0 else { throw refuse("SETITEM on something that is not a dict") }
            for index in stride(from: 0, to: pairs.count, by: 2) { dict.items.append((pairs[index], pairs[index + 1])) }
        }
        while true {
            let opcode = try take(1).first!
            switch opcode {
            case 0x80: _ = try take(1)  // PROTO
            case 0x95: _ = try take(8)  // FRAME
            case 0x7D: try push(.dict(arena.dict()))  // EMPTY_DICT }
            case 0x5D: try push(.list(arena.list()))  // EMPTY_LIST ]
            case 0x29: try push(.tuple(arena.list()))  // EMPTY_TUPLE )
            case 0x28:  // MARK
                guard marks.count < maxNesting else { throw refuse("nesting deeper than \(maxNesting) levels") }
                marks.append(stack.count)
            case 0x58: try push(.string(try string(try uint(4))))  // BINUNICODE
            case 0x8C: try push(.string(try string(try uint(1))))  // SHORT_BINUNICODE
            case 0x4A: try push(.int(Int(Int32(truncatingIfNeeded: try uint(4)))))  // BININT
            case 0x4B: try push(.int(try uint(1)))  // BININT1
            case 0x4D: try push(.int(try uint(2)))  // BININT2
            case 0x8A:  // LONG1
                let count = try uint(1)
                guard count <= 8 else { throw refuse("an integer of \(count) bytes") }
                let raw = try take(count)
                var value = 0
                for (index, byte) in raw.enumerated() { value |= Int(byte) << (8 * index) }
                if count > 0 && count < 8 && raw.last! & 0x80 != 0 { value -= 1 << (8 * count) }
                try push(.int(value))
            case 0x47:  // BINFLOAT, big-endian
                try push(.float(Double(bitPattern: UInt64(truncatingIfNeeded: try take(8).reduce(0) { $0 << 8 | Int($1) }))))
            case 0x4E: try push(.none)  // NONE
            case 0x88: try push(.bool(true))
            case 0x89: try push(.bool(false))
            case 0x74: try push(.tuple(arena.list(try popMark())))  // TUPLE
            case 0x85: try push(.tuple(arena.list([try pop()])))
            case 0x86:
                let b = try pop(), a = try pop()
                try push(.tuple(arena.list([a, b])))
            case 0x87:
                let c = try pop(), b = try pop(), a = try pop()
                try push(.tuple(arena.list([a, b, c])))
            case 0x6C:  // LIST
                try push(.list(arena.list(try popMark())))
            case 0x61, 0x65:  // APPEND, APPENDS
                let items = opcode == 0x61 ? [try pop()] : try popMark()
                guard case .list(let list) = try pop() else { throw refuse("APPEND on something that is not a list") }
                list.items += items
                stack.append(.list(list))
            case 0x64:  // DICT
                let dict = arena.dict()
                try setItems(.dict(dict), try popMark())
                try push(.dict(dict))
            case 0x73, 0x75:  // SETITEM, SETITEMS
                let pairs: [PickleValue]
                if opcode == 0x73 {
                    let value = try pop(), key = try pop()
                    pairs = [key, value]
                } else {
                    pairs = try popMark()
                }
                let target = try pop()
                try setItems(target, pairs)
                stack.append(target)
            case 0x71, 0x72:  // BINPUT, LONG_BINPUT
                let index = try uint(opcode == 0x71 ? 1 : 4)
                guard let top = stack.last else { throw refuse("stack underflow") }
                guard index < maxMemo else { throw refuse("memo index \(index) out of range") }
                memo[index] = top
            case 0x94:  // MEMOIZE
                guard let top = stack.last else { throw refuse("stack underflow") }
                guard memo.count < maxMemo else { throw refuse("memo over \(maxMemo) entries") }
                memo[memo.count] = top
            case 0x68, 0x6A:  // BINGET, LONG_BINGET
                let index = try uint(opcode == 0x68 ? 1 : 4)
                guard let value = memo[index] else { throw refuse("memo index \(index) out of range") }
                try push(value)
            case 0x63:  // GLOBAL
                let name = try line() + "." + (try line())
                guard allowedGlobals.contains(name) else {
                    // A class of the user's or of torch.nn: most often a whole model saved with torch.save(model).
                    let module = name.split(separator: ".").first.map(String.init) ?? ""
                    let hint =
                        (module == "__main__" || module == "torch" || name.split(separator: ".").last?.first?.isUppercase == true)
                            && !["os", "posix", "nt", "builtins", "subprocess"].contains(module)
                        ? "; a whole model saved with torch.save(model) is not read: save model.state_dict()" : ""
                    throw refuse("global \(name) is not allowed (only tensors, storages and plain containers are read\(hint))")
                }
                try push(.global(name))
            case 0x52:  // REDUCE
                let arguments = try pop(), callable = try pop()
                guard case .global(let name) = callable else { throw refuse("REDUCE on something that is not an allowed global") }
                guard case .tuple(let args) = arguments else { throw refuse("REDUCE of \(name) without an argument tuple") }
                try push(try reduce(name, args.items, arena: arena))
            case 0x62:  // BUILD: the state of an OrderedDict (_metadata) or a tensor (hooks) is dropped.
                _ = try pop()
                guard !stack.isEmpty else { throw refuse("stack underflow") }
            case 0x51:  // BINPERSID
                guard case .tuple(let box) = try pop(), case let id = box.items, id.count == 5, case .string("storage") = id[0],
                    case .global(let type) = id[1],
                    case .string(let key) = id[2], case .int(let count) = id[4], count >= 0
                else { throw refuse("a persistent id that is not ('storage', type, key, location, numel)") }
                guard let short = type.split(separator: ".").last, storageTypes[String(short)] != nil else {
                    throw refuse("persistent id of \(type), not a typed storage")
                }
                try push(.storage(type: String(short), key: key, count: count))
            case 0x2E:  // STOP
                let value = try pop()
                return value
            default:
                throw refuse(String(format: "unknown opcode 0x%02x at byte %d", opcode, position - 1))
            }
        }
    }

    /// What an allowed callable builds from `args`, without calling anything.
    static func reduce(_ name: String, _ args: [PickleValue], arena: PickleArena) throws -> PickleValue {
        switch name {
        case "collections.OrderedDict":
            guard args.isEmpty else { throw Refusal(reason: "OrderedDict built from arguments") }
            return .dict(arena.dict())
        case "torch.Size":
            guard args.count == 1, case .tuple = args[0] else { throw Refusal(reason: "torch.Size without a tuple") }
            return args[0]
        case "torch._utils._rebuild_parameter":
            guard args.count >= 1, case .tensor = args[0] else { throw Refusal(reason: "_rebuild_parameter without a tensor") }
            return args[0]
        case "torch._utils._rebuild_tensor_v2":
            func ints(_ value: PickleValue) -> [Int]? {
                guard case .tuple(let box) = value else { return nil }
                var result: [Int] = []
                for item in box.items {
                    guard case .int(let number) = item else { return nil }
                    result.append(number)
                }
                return result
            }
            guard args.count >= 4, case .storage(let type, let key, let count) = args[0], case .int(let offset) = args[1], offset >= 0,
                let shape = ints(args[2]), let stride = ints(args[3]), shape.count == stride.count, shape.allSatisfy({ $0 >= 0 })
            else { throw Refusal(reason: "_rebuild_tensor_v2 with arguments that are not (storage, offset, size, stride, ...)") }
            return .tensor(PickleTensor(storageType: type, key: key, storageCount: count, offset: offset, shape: shape, stride: stride))
        default:
            throw Refusal(reason: "REDUCE on \(name), which builds nothing gradscope reads")
        }
    }
}
