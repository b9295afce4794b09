import GradScopeKernels

/// How a gradscope process starts: once more under a larger per-thread cache of freed blocks, and
/// what it is started as (`gs_run_with_allocator_cache`, `gs_started_by_loader`).
public enum ProcessStart {
    /// Call first thing in a program that measures many tensors on several threads: runs it again,
    /// with the same arguments, under a larger per-thread cache of freed blocks (glibc reads it
    /// only at start; see `gs_run_with_allocator_cache`), unless it already runs so. Returns when
    /// it did not run it again.
    public static func runWithAllocatorCache() { gs_run_with_allocator_cache(CommandLine.unsafeArgv) }

    /// Whether the program was started by naming the dynamic loader (`ld.so ./gradscope ...`), when
    /// /proc/self/exe names the loader, not the program.
    public static var startedByLoader: Bool { gs_started_by_loader() }

    /// The heaps a process started with `arguments` (the command line, the program's name first)
    /// allocates from: a few for the commands that measure whole runs from files described by worker
    /// processes (`commands`), as many as the cores between 4 and 8, so that the measuring threads do
    /// not queue for one heap's lock; one for everything else, a process that describes files itself
    /// (`--no-isolation`) included, whose long-lived records would scatter over several heaps (see
    /// `gs_tune_allocator`).
    public static func heaps(arguments: [String], cores: Int, commands: Set<String>) -> Int {
        guard arguments.count > 1, commands.contains(arguments[1]), !arguments.contains("--no-isolation") else { return 1 }
        return Swift.max(4, Swift.min(cores, 8))
    }

    /// The glibc tunables ``runWithAllocatorCache()`` runs the program under, given the
    /// environment's (nil when it already sets the cache's size).
    public static func allocatorTunables(adding current: String?) -> String? {
        var buffer = [CChar](repeating: 0, count: 4096)
        let made = buffer.withUnsafeMutableBufferPointer { out in gs_allocator_tunables(current, out.baseAddress, out.count) }
        return made ? buffer.withUnsafeBufferPointer { String(cString: $0.baseAddress!) } : nil
    }
}
