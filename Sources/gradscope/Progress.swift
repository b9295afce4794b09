import Foundation
import Synchronization

/// A progress line on stderr: files done, bytes, rate, time left. Silent when
/// stderr is not a terminal or with --quiet.
final class Progress: Sendable {
    let enabled: Bool
    let start = Date()

    /// Whether a line is on screen, and when it was last drawn; held while drawing.
    private struct State {
        var shown = false
        var lastDraw = Date.distantPast
    }

    private let state = Mutex(State())

    init(enabled: Bool) {
        self.enabled = enabled && isatty(STDERR_FILENO) == 1
    }

    func update(_ phase: String, _ done: Int, _ total: Int, _ bytes: Int?, _ totalBytes: Int?) {
        guard enabled, total > 1 else { return }
        state.withLock { state in
            let now = Date()
            guard now.timeIntervalSince(state.lastDraw) > 0.1 || done == total else { return }
            state.lastDraw = now
            let elapsed = now.timeIntervalSince(start)
            let fraction = Double(done) / Double(max(total, 1))
            let width = 24
            let filled = Int(fraction * Double(width))
            var line =
                "\r\(phase) [" + String(repeating: "#", count: filled) + String(repeating: "-", count: width - filled) + "] \(done)/\(total) files"
            if let bytes, let totalBytes, totalBytes > 0 {
                let rate = elapsed > 0 ? Double(bytes) / elapsed : 0
                line += String(format: ", %.1f/%.1f MB, %.1f MB/s", Double(bytes) / 1e6, Double(totalBytes) / 1e6, rate / 1e6)
            }
            if fraction > 0 && fraction < 1 {
                line += String(format: ", %.0f s left", elapsed / fraction - elapsed)
            }
            FileHandle.standardError.write(Data((line + "\u{1B}[K").utf8))
            state.shown = true
        }
    }

    func finish() {
        state.withLock { state in
            if state.shown { FileHandle.standardError.write(Data("\r\u{1B}[K".utf8)) }
        }
    }
}
