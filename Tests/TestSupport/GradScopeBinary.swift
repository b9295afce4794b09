import Foundation

/// The `gradscope` executable the command-line tests run, found the way
/// swift-argument-parser's test helpers find theirs: in the products directory
/// the running test bundle was built into (the bundle's URL, less a trailing
/// `.xctest` component). With `swift test` that is `.build/<triple>/debug/`,
/// or the same under `--scratch-path`, so the tests run the binary of the
/// build they belong to, never a stale one from another build directory.
///
/// `GRADSCOPE_BINARY`, when set, names the binary instead; nothing else is
/// then tried, so a wrong value fails rather than testing some other binary.
public enum GradScopeBinary {
    /// The environment variable naming a binary to test in place of the built one.
    public static let environmentVariable = "GRADSCOPE_BINARY"

    /// The executable, or nil when `expectedPath` is not one.
    public static var path: String? {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: expectedPath, isDirectory: &isDirectory), !isDirectory.boolValue,
            FileManager.default.isExecutableFile(atPath: expectedPath)
        else { return nil }
        return expectedPath
    }

    /// Where the binary is looked for: `GRADSCOPE_BINARY`, else `gradscope` in `productsDirectory`.
    public static var expectedPath: String {
        overridePath ?? productsDirectory.appendingPathComponent("gradscope").standardizedFileURL.path
    }

    /// Why `path` is nil: where it looked, and how to fix it.
    public static var notFoundMessage: String {
        if let named = overridePath {
            return "the gradscope binary was not found: \(environmentVariable)=\(named) is not an executable file"
        }
        return "the gradscope binary was not found at \(expectedPath), next to the test bundle: "
            + "`swift test` builds it there (run `swift build` with the same --scratch-path if it is missing), "
            + "or set \(environmentVariable) to the binary to test"
    }

    /// The directory the running test bundle was built into.
    public static var productsDirectory: URL {
        let bundle = Bundle(for: BundleToken.self).bundleURL
        return bundle.pathExtension == "xctest" ? bundle.deletingLastPathComponent() : bundle
    }

    private final class BundleToken {}

    private static var overridePath: String? {
        ProcessInfo.processInfo.environment[environmentVariable].flatMap { $0.isEmpty ? nil : $0 }
    }
}
