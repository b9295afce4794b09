import GradScopeKernels
import Synchronization

/// A one-pass, mergeable, log-bucketed sketch of a value distribution, keyed on
/// the `Float32` bit pattern.
///
/// Every value `x` is counted under the 16-bit key `bitPattern(Float(x)) >> 16`:
/// 1 sign bit, 8 exponent bits and the top 7 mantissa bits. For normal floats the
/// bucket of magnitude key `m` is `[lo, hi)` with `hi / lo <= 1 + 2^-7`, so its
/// geometric midpoint `sqrt(lo * hi)` is within `sqrt(1 + 2^-7) - 1 < 0.4%` of
/// every value in it. Keys with exponent field 255 (infinities and NaNs) are
/// counted but never reported. Magnitude key 0 holds both the zeros and the
/// nonzero values below `2^-133`; those tiny subnormals are additionally counted
/// by `floor(log2 |x|)` in ``tiny`` so that zeros can be told apart from them.
///
/// Storage is cheap for small tensors: up to ``pendingCapacity`` keys are kept in
/// a plain list; beyond that the sketch switches to a dense table of 65536
/// `UInt32` counts (``DenseCounts``: taken zeroed from a pool and handed back
/// zeroed, and read only over the magnitudes that were counted, so that a tensor
/// costs in proportion to its values, not to the table). Before a dense count
/// could wrap, all counts are spilled into a `UInt64` table, so counts are exact
/// for any number of values.
package struct LogBucketSketch: Sendable {
    package static let keySpace = 1 << 16
    package static let pendingCapacity = 2048
    /// Magnitude keys at or above this value hold only infinities and NaNs.
    package static let nonFiniteMagnitudeKey: UInt16 = 0x7F80
    package static let negativeFlag: UInt16 = 0x8000
    /// `floor(log2 |x|)` of the smallest tiny bucket (the smallest subnormal).
    package static let tinyExponentBase = -149
    package static let tinyExponentCount = 16

    private var pending: [UInt16] = []
    /// Shared between copies until one of them counts more (copy on write).
    private var dense: DenseCounts?
    private var wide: [UInt64] = []
    private var denseAddsSinceSpill = 0
    /// Dense adds allowed between spills; `UInt32.max` keeps every count exact.
    /// (Lowered only to exercise the spill path on small data.)
    package var spillThreshold = Int(UInt32.max)
    /// Tiny nonzero values (`|x| < 2^-133` as `Float`) by `floor(log2 |x|) + 149`;
    /// entries `0 ..< 16` are positive, `16 ..< 32` negative. Empty until needed.
    package private(set) var tiny: [Int] = []
    /// Number of keys counted so far (all values, including non-finite ones).
    package private(set) var total = 0

    package init() {}

    package var isEmpty: Bool { total == 0 }

    // MARK: Keys

    /// The `Float32` magnitude bits used to key a finite `Double`: clamped to
    /// `Float.greatestFiniteMagnitude` above, and to the smallest subnormal for
    /// nonzero values that would round to zero.
    @inline(__always)
    package static func floatMagnitudeBits(forFinite x: Double) -> UInt32 {
        let magnitude = Swift.min(x.magnitude, Double(Float.greatestFiniteMagnitude))
        let bits = Float(magnitude).bitPattern
        return (bits == 0 && magnitude != 0) ? 1 : bits
    }

    /// The representative value of a nonzero magnitude key `m` in
    /// `1 ..< nonFiniteMagnitudeKey`: the geometric midpoint of its bucket.
    package static func representative(magnitudeKey m: UInt16) -> Double {
        let lower = Double(Float(bitPattern: UInt32(m) << 16))
        let upper = m == 0x7F7F ? 0x1p128 : Double(Float(bitPattern: (UInt32(m) + 1) << 16))
        return (lower * upper).squareRoot()
    }

    /// ``representative(magnitudeKey:)`` of every magnitude key below ``nonFiniteMagnitudeKey`` (0 at key 0),
    /// computed once: every tensor's quantiles and histogram read a few thousand of them.
    package static let representatives: [Double] = (0..<Int(nonFiniteMagnitudeKey)).map {
        $0 == 0 ? 0 : representative(magnitudeKey: UInt16($0))
    }

    /// The representative magnitude of the tiny bucket with `floor(log2 |x|) == e`:
    /// the geometric midpoint of the smallest and largest subnormals in it.
    package static func tinyRepresentative(exponent e: Int) -> Double {
        let lower = Double(sign: .plus, exponent: e, significand: 1)
        let upper = 2 * lower - 0x1p-149
        return (lower * upper).squareRoot()
    }

    /// `floor(log2 |x|)` for every value with nonzero magnitude key `m` (exact
    /// except for `m < 128`, the subnormals, where it is exact as well because the
    /// key keeps the leading bit of any subnormal above `2^-133`).
    @inline(__always)
    package static func exponent(magnitudeKey m: UInt16) -> Int {
        let field = Int(m >> 7)
        if field > 0 { return field - 127 }
        return (15 - m.leadingZeroBitCount) - 133
    }

    // MARK: Adding

    /// Counts the keys of `n` `Float32` values. Returns how many of them fell on
    /// magnitude key 0 (zeros and values below `2^-133` in magnitude).
    package mutating func addFloats(_ values: UnsafePointer<Float>, count n: Int) -> Int {
        guard n > 0 else { return 0 }
        let raw = UnsafeRawPointer(values)
        if dense == nil && pending.count &+ n <= Self.pendingCapacity {
            total &+= n
            var hits = 0
            let start = pending.count
            pending.append(contentsOf: repeatElement(0, count: n))
            pending.withUnsafeMutableBufferPointer { list in
                guard let keys = list.baseAddress else { return }
                for i in 0..<n {
                    let key = UInt16(truncatingIfNeeded: raw.load(fromByteOffset: i &* 4, as: UInt32.self) &>> 16)
                    keys[start &+ i] = key
                    hits &+= key & 0x7FFF == 0 ? 1 : 0
                }
            }
            return hits
        }
        return countDense(n) { counts in
            gs_count_keys_f32(values, Int64(n), counts)
            return nil
        } ?? 0
    }

    /// Lets `body` count `n` more keys straight into the dense table (switching
    /// to it first) and returns how many of them fell on magnitude key 0; `nil`,
    /// with nothing counted, while the `n` keys still fit the short list.
    ///
    /// `body` returns the `Float32` magnitude bits (`bits & 0x7FFF_FFFF`) of the
    /// smallest nonzero and of the largest value it counted (NaN and infinities
    /// included), or `nil` when it does not know them: the table is then read whole.
    package mutating func countDense(
        _ n: Int, _ body: (UnsafeMutablePointer<UInt32>) -> (lowest: UInt32, highest: UInt32)?
    ) -> Int? {
        guard n > 0 else { return 0 }
        if dense == nil && pending.count &+ n <= Self.pendingCapacity { return nil }
        total &+= n
        let table = makeDense(reserving: n)
        let counts = table.counts
        let before = counts[0] &+ counts[0x8000]
        if let bounds = body(counts) {
            if bounds.lowest <= bounds.highest {
                table.widen(Int(bounds.lowest &>> 16), Int(bounds.highest &>> 16))
            }
        } else {
            table.widen(0, 0x7FFF)
        }
        let after = counts[0] &+ counts[0x8000]
        return Int(after &- before)
    }

    /// Switches to the dense table now (a caller about to add more values than the short
    /// list holds saves listing them first and counting the list again).
    package mutating func useDenseTable() {
        if dense == nil { makeDense(reserving: 0) }
    }

    /// Counts `n` precomputed keys.
    package mutating func addKeys(_ keys: UnsafePointer<UInt16>, count n: Int) {
        guard n > 0 else { return }
        total &+= n
        if dense == nil && pending.count &+ n <= Self.pendingCapacity {
            pending.append(contentsOf: UnsafeBufferPointer(start: keys, count: n))
            return
        }
        makeDense(reserving: n).add(UnsafeBufferPointer(start: keys, count: n))
    }

    /// Records a nonzero value below `2^-133` with `Float32` magnitude bits
    /// `bits` (in `1 ... 0xFFFF`). The value must also have been counted by key.
    @inline(__always)
    package mutating func recordTiny(magnitudeBits bits: UInt32, negative: Bool) {
        guard bits != 0, bits <= 0xFFFF else { return }
        if tiny.isEmpty { tiny = [Int](repeating: 0, count: 2 * Self.tinyExponentCount) }
        let index = 31 - bits.leadingZeroBitCount
        tiny[(negative ? Self.tinyExponentCount : 0) + index] &+= 1
    }

    /// Switches to the dense table (if not there yet) and makes room for `n`
    /// more counts without any `UInt32` count wrapping. Returns the table, this
    /// sketch's own (a table shared with a copy is copied first).
    @discardableResult
    private mutating func makeDense(reserving n: Int) -> DenseCounts {
        if dense == nil {
            let table = DenseCounts()
            dense = table
            let keys = pending
            pending = []
            denseAddsSinceSpill = 0
            if !keys.isEmpty {
                reserveDenseCapacity(keys.count, table)
                keys.withUnsafeBufferPointer { table.add($0) }
            }
        } else if !isKnownUniquelyReferenced(&dense) {
            dense = dense?.copy()
        }
        guard let table = dense else { preconditionFailure("the dense table was just made") }
        reserveDenseCapacity(n, table)
        return table
    }

    private mutating func reserveDenseCapacity(_ n: Int, _ table: DenseCounts) {
        if denseAddsSinceSpill &+ n > spillThreshold { spill(table) }
        denseAddsSinceSpill &+= n
    }

    /// Moves every dense count into the 64-bit table and zeroes the dense one
    /// (its range of magnitudes is kept: it now bounds the 64-bit counts).
    private mutating func spill(_ table: DenseCounts) {
        if wide.isEmpty { wide = [UInt64](repeating: 0, count: Self.keySpace) }
        let counts = table.counts
        table.forEachKey { key in
            wide[key] &+= UInt64(counts[key])
            counts[key] = 0
        }
        denseAddsSinceSpill = 0
    }

    // MARK: Merging

    /// Adds the counts of `other` (values from a disjoint part of the data).
    package mutating func merge(_ other: LogBucketSketch) {
        if !other.tiny.isEmpty {
            if tiny.isEmpty {
                tiny = other.tiny
            } else {
                for i in tiny.indices { tiny[i] &+= other.tiny[i] }
            }
        }
        guard other.total > 0 else { return }
        guard let source = other.dense else {
            let keys = other.pending
            total &+= keys.count
            if dense == nil && pending.count &+ keys.count <= Self.pendingCapacity {
                pending.append(contentsOf: keys)
            } else {
                let table = makeDense(reserving: keys.count)
                keys.withUnsafeBufferPointer { table.add($0) }
            }
            return
        }
        total &+= other.total
        let table = makeDense(reserving: other.denseAddsSinceSpill)
        table.widen(source.low, source.high)
        let counts = table.counts, added = source.counts
        source.forEachKey { key in counts[key] &+= added[key] }
        if !other.wide.isEmpty {
            if wide.isEmpty { wide = [UInt64](repeating: 0, count: Self.keySpace) }
            for i in 0..<Self.keySpace { wide[i] &+= other.wide[i] }
        }
    }

    // MARK: Reading

    /// The sketch's counts in a dense table: its own when it has one (and spilled no 64-bit
    /// counts from it), or for a sketch still listing its keys, all finite, a table counting them
    /// (from the pool, and back to it when released); `nil` otherwise.
    package func readableDenseTable() -> DenseCounts? {
        guard wide.isEmpty else { return nil }
        if let dense { return dense }
        var highest: UInt16 = 0
        for key in pending { highest = Swift.max(highest, key & 0x7FFF) }
        guard highest < Self.nonFiniteMagnitudeKey else { return nil }
        let table = DenseCounts()
        pending.withUnsafeBufferPointer { table.add($0) }
        return table
    }

    /// The exact `floor(log2 |x|)` histogram of a sketch still listing its keys, all finite, counted
    /// from the list itself (`zeros` as given); `nil` for a sketch in a dense table, or holding a
    /// non-finite key. The same histogram as the dense table's (``readableDenseTable()``): each
    /// nonzero magnitude key counted in its exponent's slot, the tiny buckets in theirs, empty slots
    /// at either end dropped. A small tensor (most of a model's tensors: biases, norms) then needs
    /// no table from the pool, no pass over its range and no zeroing of it, when nothing else is read.
    package func listedLog2Histogram(zeros: Int) -> Log2Histogram? {
        guard dense == nil, wide.isEmpty, pending.count <= Int(UInt16.max) else { return nil }
        // One slot per exponent, -149 ... 127 (slot = exponent + 149), counted on the stack in one pass.
        let slots = 128 - Self.tinyExponentBase
        return withUnsafeTemporaryAllocation(of: UInt16.self, capacity: slots) { table -> Log2Histogram? in
            table.initialize(repeating: 0)
            var finite = true
            pending.withUnsafeBufferPointer { keys in
                for key in keys {
                    let magnitude = key & 0x7FFF
                    guard magnitude != 0 else { continue }
                    guard magnitude < Self.nonFiniteMagnitudeKey else {
                        finite = false
                        continue
                    }
                    table[Self.exponent(magnitudeKey: magnitude) &- Self.tinyExponentBase] &+= 1
                }
            }
            guard finite else { return nil }
            // The tiny buckets' slots are the first 16.
            let tiny = self.tiny
            func count(_ slot: Int) -> Int {
                let listed = Int(table[slot])
                return slot < Self.tinyExponentCount && !tiny.isEmpty ? listed &+ tiny[slot] &+ tiny[Self.tinyExponentCount &+ slot] : listed
            }
            var first = 0
            while first < slots && count(first) == 0 { first &+= 1 }
            guard first < slots else { return Log2Histogram(minExponent: 0, counts: [], zeros: zeros) }
            var last = slots &- 1
            while count(last) == 0 { last &-= 1 }
            let counts = [Int](unsafeUninitializedCapacity: last &- first &+ 1) { buffer, initialized in
                for slot in first...last { buffer[slot &- first] = count(slot) }
                initialized = last &- first &+ 1
            }
            return Log2Histogram(minExponent: first &+ Self.tinyExponentBase, counts: counts, zeros: zeros)
        }
    }

    /// The nonzero counts of all keys whose magnitude is below
    /// ``nonFiniteMagnitudeKey``, in ascending key order.
    package func keyCounts() -> (keys: [UInt16], counts: [Int]) {
        var keys: [UInt16] = []
        var counts: [Int] = []
        guard let table = dense else {
            let sorted = Self.radixSorted(pending)
            keys.reserveCapacity(sorted.count)
            counts.reserveCapacity(sorted.count)
            var i = 0
            while i < sorted.count {
                let key = sorted[i]
                var j = i &+ 1
                while j < sorted.count && sorted[j] == key { j &+= 1 }
                if key & 0x7FFF < Self.nonFiniteMagnitudeKey {
                    keys.append(key)
                    counts.append(j &- i)
                }
                i = j
            }
            return (keys, counts)
        }
        let hasWide = !wide.isEmpty
        let base = table.counts
        // Ascending: magnitude 0, the positive range, then the same for the negative keys.
        let top = Swift.min(table.high, Int(Self.nonFiniteMagnitudeKey) - 1)
        if !hasWide {
            // Written straight into arrays of the most keys the range can hold (no check per append);
            // a key is written whatever its count and kept by advancing past it only when nonzero.
            let first = Swift.max(1, table.low)
            let capacity = 2 * (Swift.max(0, top - first + 1) + 1)
            var kept = 0
            keys = [UInt16](unsafeUninitializedCapacity: capacity) { keyBuffer, keyCount in
                counts = [Int](unsafeUninitializedCapacity: capacity) { countBuffer, countCount in
                    guard let keyOut = keyBuffer.baseAddress, let countOut = countBuffer.baseAddress else { return }
                    var n = 0
                    for sign in 0..<2 {
                        let zero = sign &* 0x8000
                        let zeroCount = base[zero]
                        keyOut[n] = UInt16(zero)
                        countOut[n] = Int(zeroCount)
                        n &+= zeroCount != 0 ? 1 : 0
                        var key = zero | first
                        let end = zero | top
                        while key <= end {
                            let count = base[key]
                            keyOut[n] = UInt16(truncatingIfNeeded: key)
                            countOut[n] = Int(count)
                            n &+= count != 0 ? 1 : 0
                            key &+= 1
                        }
                    }
                    kept = n
                    countCount = n
                }
                keyCount = kept
            }
            return (keys, counts)
        }
        keys.reserveCapacity(1024)
        counts.reserveCapacity(1024)
        for sign in [0, 0x8000] {
            let zero = sign
            let zeroCount = Int(base[zero]) &+ (hasWide ? Int(wide[zero]) : 0)
            if zeroCount != 0 {
                keys.append(UInt16(zero))
                counts.append(zeroCount)
            }
            var magnitude = Swift.max(1, table.low)
            while magnitude <= top {
                let key = sign | magnitude
                let count = Int(base[key]) &+ (hasWide ? Int(wide[key]) : 0)
                if count != 0 {
                    keys.append(UInt16(key))
                    counts.append(count)
                }
                magnitude &+= 1
            }
        }
        return (keys, counts)
    }

    /// The keys in ascending order: insertion-based standard sort for short
    /// lists, a least-significant-digit radix sort (two 8-bit passes) otherwise.
    package static func radixSorted(_ input: [UInt16]) -> [UInt16] {
        if input.count < 128 { return input.sorted() }
        var source = input
        var target = [UInt16](repeating: 0, count: input.count)
        withUnsafeTemporaryAllocation(of: Int.self, capacity: 256) { histogram in
            guard let offsets = histogram.baseAddress else { return }
            for shift in [UInt16(0), UInt16(8)] {
                offsets.initialize(repeating: 0, count: 256)
                source.withUnsafeBufferPointer { from in
                    target.withUnsafeMutableBufferPointer { to in
                        guard let src = from.baseAddress, let dst = to.baseAddress else { return }
                        let n = from.count
                        for i in 0..<n { offsets[Int((src[i] &>> shift) & 0xFF)] &+= 1 }
                        var running = 0
                        for digit in 0..<256 {
                            let c = offsets[digit]
                            offsets[digit] = running
                            running &+= c
                        }
                        for i in 0..<n {
                            let digit = Int((src[i] &>> shift) & 0xFF)
                            dst[offsets[digit]] = src[i]
                            offsets[digit] &+= 1
                        }
                    }
                }
                swap(&source, &target)
            }
        }
        return source
    }
}

/// A sketch's dense table: 65536 `UInt32` counts, and the range of magnitude keys
/// (`key & 0x7FFF`) that may hold counts, of either sign; magnitude 0 always may.
/// Reading and clearing cost in proportion to that range, not to the table: a
/// tensor's values span a few dozen binary orders of magnitude (a few thousand
/// keys), not all 256 of them.
///
/// Tables come from a small pool of zeroed ones and go back to it zeroed when the
/// last sketch holding them is gone, so a run of many tensors neither allocates
/// nor zeroes 256 KiB per tensor. A table is mutated only by a sketch that holds
/// the only reference to it (``LogBucketSketch`` copies it first otherwise), which
/// is what makes it safe to send.
package final class DenseCounts: @unchecked Sendable {
    package let counts: UnsafeMutablePointer<UInt32>
    /// Lowest and highest magnitude key that may hold counts (`low > high`: none but magnitude 0).
    package private(set) var low = Int.max
    package private(set) var high = -1

    package init() { counts = DenseCountsPool.take() }

    deinit { DenseCountsPool.give(counts, low: low, high: high) }

    /// Takes magnitude keys `lowest ... highest` into the range that may hold counts.
    @inline(__always)
    package func widen(_ lowest: Int, _ highest: Int) {
        if lowest < low { low = lowest }
        if highest > high { high = highest }
    }

    /// Counts `keys`.
    package func add(_ keys: UnsafeBufferPointer<UInt16>) {
        var lowest = Int.max, highest = -1
        for key in keys {
            let magnitude = Int(key & 0x7FFF)
            if magnitude < lowest { lowest = magnitude }
            if magnitude > highest { highest = magnitude }
            counts[Int(key)] &+= 1
        }
        widen(lowest, highest)
    }

    /// Calls `body` with every key that may hold a count, in ascending order.
    @inline(__always)
    package func forEachKey(_ body: (Int) -> Void) {
        for sign in [0, 0x8000] {
            body(sign)
            var magnitude = Swift.max(1, low)
            while magnitude <= high {
                body(sign | magnitude)
                magnitude &+= 1
            }
        }
    }

    /// A table with the same counts.
    package func copy() -> DenseCounts {
        let table = DenseCounts()
        table.widen(low, high)
        forEachKey { key in table.counts[key] = counts[key] }
        return table
    }
}

/// Zeroed dense tables kept for reuse (at most ``capacity``; the rest are freed).
///
/// A scan holds a table for each large tensor of a range of saves being measured, on each
/// thread, and until the shares of a tensor are merged: some 30 to 50 at once on two threads.
/// With fewer kept than that, every range allocated and zeroed the difference afresh (256 KiB
/// each); 64 tables are 16 MiB, about what the heap keeps of freed memory anyway.
package enum DenseCountsPool {
    package static let capacity = 64
    private static let free = Mutex<[UInt]>([])

    /// A zeroed table of 65536 counts.
    package static func take() -> UnsafeMutablePointer<UInt32> {
        if let address = free.withLock({ $0.popLast() }), let table = UnsafeMutablePointer<UInt32>(bitPattern: address) {
            return table
        }
        let table = UnsafeMutablePointer<UInt32>.allocate(capacity: LogBucketSketch.keySpace)
        table.initialize(repeating: 0, count: LogBucketSketch.keySpace)
        return table
    }

    /// Zeroes what may hold counts (magnitude 0 and `low ... high`, both signs) and keeps the
    /// table for reuse, or frees it when the pool is full.
    package static func give(_ table: UnsafeMutablePointer<UInt32>, low: Int, high: Int) {
        for sign in [0, 0x8000] {
            table[sign] = 0
            let first = Swift.max(1, low)
            if first <= high { (table + (sign | first)).update(repeating: 0, count: high - first + 1) }
        }
        let kept = free.withLock { pool -> Bool in
            guard pool.count < capacity else { return false }
            pool.append(UInt(bitPattern: table))
            return true
        }
        if !kept { table.deallocate() }
    }

    /// Tables held for reuse (for tests).
    package static var held: Int { free.withLock { $0.count } }
}
