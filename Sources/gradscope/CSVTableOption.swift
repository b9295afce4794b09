import ArgumentParser
import GradScope

extension CSVTable: ExpressibleByArgument {}

/// Checks `--csv-table`: it needs `--format csv`, and the command must print
/// that table (`allowed`, in the order its help lists them).
func validateCSVTable(_ table: CSVTable?, format: OutputFormat, allowed: [CSVTable], command: String) throws {
    guard let table else { return }
    guard format == .csv else { throw ValidationError("--csv-table needs --format csv") }
    guard allowed.contains(table) else {
        let names = allowed.map(\.rawValue)
        throw ValidationError(
            "--csv-table \(table.rawValue): \(command) prints \(names.dropLast().joined(separator: ", ")) or \(names.last ?? "")")
    }
}
