import Foundation

/// A fresh temporary directory for one test's files, removed when released.
public final class TemporaryDirectory {
    public let url: URL

    public init() throws {
        url = FileManager.default.temporaryDirectory.appendingPathComponent("gradscope-tests-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    }

    public func path(_ name: String) -> String { url.appendingPathComponent(name).path }

    deinit { try? FileManager.default.removeItem(at: url) }
}

/// SplitMix64: a small deterministic generator for reproducible test data.
public struct SplitMix64 {
    public var state: UInt64

    public init(state: UInt64) { self.state = state }
    public init(seed: UInt64) { state = seed }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    public mutating func uniform() -> Double { Double(next() >> 11) / Double(1 << 53) }

    public mutating func uniform(in range: ClosedRange<Double>) -> Double {
        range.lowerBound + (range.upperBound - range.lowerBound) * uniform()
    }

    /// Standard normal (Box–Muller, with the first uniform kept away from 0).
    public mutating func normal() -> Double {
        let u = max(uniform(), 1e-300), v = uniform()
        return (-2 * Foundation.log(u)).squareRoot() * Foundation.cos(2 * .pi * v)
    }

    /// Standard normal (Box–Muller, with the first uniform taken at the middle of its cell).
    public mutating func gaussian() -> Double {
        let u1 = (Double(next() >> 11) + 0.5) / Double(1 << 53)
        let u2 = uniform()
        return (-2 * Foundation.log(u1)).squareRoot() * Foundation.cos(2 * Double.pi * u2)
    }

    public mutating func normals(_ count: Int, std: Double) -> [Double] { (0..<count).map { _ in normal() * std } }

    public mutating func index(below n: Int) -> Int { Int(next() % UInt64(n)) }
}

/// The package's root directory (for SampleCheckpoints/ and the built binary).
public let packageRoot: URL = {
    var url = URL(fileURLWithPath: #filePath)
    for _ in 0..<3 { url.deleteLastPathComponent() }
    return url
}()

/// Where a file of the shared corpus of real HDF5 files lies, when it is there.
public func corpusFile(_ relative: String) -> String? {
    let path = packageRoot.deletingLastPathComponent().appendingPathComponent("shared/corpus").appendingPathComponent(relative).path
    return FileManager.default.fileExists(atPath: path) ? path : nil
}

/// A sample run bundled in SampleCheckpoints/.
public func samplePath(_ run: String) -> String {
    packageRoot.appendingPathComponent("SampleCheckpoints").appendingPathComponent(run).path
}
