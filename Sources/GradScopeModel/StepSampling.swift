/// Which saves of a long run keep their histograms and are drawn: at most ``limit``, evenly
/// spread, always with the first and the last. One rule for the scan (what it keeps of each save)
/// and its reports (what they draw), written down in docs/STATISTICS.md.
public enum StepSampling {
    /// Saves whose histograms a scan keeps, and points a report's charts draw over time.
    public static let limit = 400

    /// At most `limit` (at least 2) indices of `0..<count`, in order: `i * (count - 1) / (limit - 1)`
    /// for `i` in `0..<limit`, which takes the first and the last and spreads the rest evenly; all of
    /// them when `count <= limit`.
    public static func indices(count: Int, limit: Int = limit) -> [Int] {
        let limit = max(limit, 2)
        guard count > limit else { return Array(0..<max(count, 0)) }
        return (0..<limit).map { $0 * (count - 1) / (limit - 1) }
    }
}
