import Foundation
import TestSupport
import Testing

/// The layers of the README's picture, kept: every source file imports only the layers
/// below its own (and the system's modules). The compiler already refuses a module that a
/// target does not depend on; this test also refuses a new upward dependency in Package.swift.
@Suite("Layers: every import points down")
struct LayeringTests {
    /// Each target and the targets it may import (transitively below it).
    static let allowed: [String: Set<String>] = {
        let below: [String: [String]] = [
            "ElementTypes": [],
            "HDF5": ["CHDF5", "CDeflate", "ElementTypes"],
            "GradScopeKernels": [],
            "CMapGuard": [],
            "GradScopeModel": ["ElementTypes"],
            "GradScopeSources": ["GradScopeModel", "HDF5", "CMapGuard"],
            "GradScopeStatistics": ["GradScopeKernels"],
            "GradScopeMeasurement": ["GradScopeSources", "GradScopeStatistics"],
            "GradScopeDiagnosis": ["GradScopeMeasurement"],
            "GradScopeRendering": ["GradScopeDiagnosis"],
            "GradScope": ["GradScopeRendering"],
            "gradscope": ["GradScope", "ArgumentParser"],
        ]
        func closure(_ target: String) -> Set<String> {
            var result = Set<String>()
            var stack = below[target] ?? []
            while let next = stack.popLast() {
                guard result.insert(next).inserted else { continue }
                stack.append(contentsOf: below[next] ?? [])
            }
            return result
        }
        return Dictionary(uniqueKeysWithValues: below.keys.map { ($0, closure($0)) })
    }()

    /// Modules of the toolchain and the system any layer may use.
    static let system: Set<String> = ["Foundation", "Dispatch", "Glibc", "Synchronization"]

    @Test("each target's files import only the layers below it")
    func importsPointDown() throws {
        let sources = packageRoot.appendingPathComponent("Sources")
        var checked = 0
        for target in Self.allowed.keys.sorted() {
            let directory = sources.appendingPathComponent(target)
            let files = (FileManager.default.enumerator(atPath: directory.path)?.compactMap { $0 as? String } ?? [])
                .filter { $0.hasSuffix(".swift") }
            if target != "GradScopeKernels" && target != "CMapGuard" { #expect(!files.isEmpty, "no Swift files in Sources/\(target)") }
            for file in files {
                let text = try String(contentsOf: directory.appendingPathComponent(file), encoding: .utf8)
                for line in text.split(separator: "\n") {
                    let words = line.split(separator: " ")
                    guard let index = words.firstIndex(of: "import"), words[..<index].allSatisfy({ $0.hasPrefix("@") }),
                        index + 1 < words.count
                    else { continue }
                    let module = String(words[index + 1])
                    checked += 1
                    #expect(
                        Self.system.contains(module) || Self.allowed[target, default: []].contains(module),
                        "Sources/\(target)/\(file) imports \(module), which is not below \(target)")
                }
            }
        }
        #expect(checked > 100)
    }

    @Test("the rule itself refuses an upward import")
    func ruleRefusesUpward() {
        #expect(!(Self.allowed["GradScopeModel"] ?? []).contains("GradScopeSources"))
        #expect(!(Self.allowed["GradScopeSources"] ?? []).contains("GradScopeMeasurement"))
        #expect(!(Self.allowed["GradScopeStatistics"] ?? []).contains("GradScopeModel"))
        #expect(!(Self.allowed["HDF5"] ?? []).contains("GradScopeModel"))
        #expect(
            (Self.allowed["GradScopeRendering"] ?? []).isSuperset(of: [
                "GradScopeDiagnosis", "GradScopeMeasurement", "GradScopeSources",
                "GradScopeModel", "HDF5", "CHDF5", "ElementTypes",
                "GradScopeStatistics", "GradScopeKernels",
            ]))
    }
}
