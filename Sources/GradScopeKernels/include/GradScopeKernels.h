#ifndef GRADSCOPE_KERNELS_H
#define GRADSCOPE_KERNELS_H

#include <stdbool.h>
#include <stdint.h>
#include <stddef.h>

/// Moments and extremes of a chunk of float32 values that are all finite.
typedef struct {
    int64_t zeros;
    double min;
    double max;
    double mean;
    double m2;
    double sumSquares;
    /// The bits of the smallest nonzero |x| (the magnitude bits of a float order as its
    /// value does); 0xFFFFFFFF when every value is zero.
    uint32_t minMagnitudeBits;
} gs_float_summary;

/// Sums over a chunk of finite float32 pairs (a earlier, b later).
typedef struct {
    int64_t changed;
    int64_t signFlips;
    double squaresA;
    double squaresB;
    double squaresDelta;
    double dot;
    double maxAbsDelta;
} gs_drift_sums;

/// Summarises `n >= 1` float32 values in one pass: min, max, zero count, and the moments
/// shifted by `center` (the mean so far; a non-finite center means the median of the first, middle and last values), see
/// StatsKernels.summarizeFiniteFloats. Unless `counts` is NULL, also adds 1 to
/// `counts[bits(values[i]) >> 16]` for every value (whether or not they are all finite).
/// Returns false, leaving `out` unspecified, when the chunk holds a NaN or an infinity.
bool gs_summarize_finite_f32(const float *values, int64_t n, double center, uint32_t *counts, gs_float_summary *out);

/// Adds 1 to `counts[bits(values[i]) >> 16]` for each of the `n` values (65536 counts).
void gs_count_keys_f32(const float *values, int64_t n, uint32_t *counts);

/// Drift sums of `n` pairs; returns false when a value is NaN or infinite (or the squares overflow).
bool gs_drift_finite_f32(const float *a, const float *b, int64_t n, gs_drift_sums *out);

/// The same sums without `dot`, `maxAbsDelta` and `signFlips` (left zero), bit for bit those
/// gs_drift_finite_f32 gives, for a caller that keeps only the norms and the changed count.
bool gs_drift_norms_finite_f32(const float *a, const float *b, int64_t n, gs_drift_sums *out);

/// gs_summarize_finite_f32 of `values` and gs_drift_norms_finite_f32 of the pairs
/// (`before[i]`, `values[i]`) in one pass over `values`, each result bit for bit the one its own
/// kernel gives: returns what gs_summarize_finite_f32 returns, and sets `*driftFinite` to what
/// gs_drift_norms_finite_f32 returns (`*drift` unspecified when false).
bool gs_summarize_drift_finite_f32(
    const float *values, const float *before, int64_t n, double center, uint32_t *counts, gs_float_summary *out,
    gs_drift_sums *drift, bool *driftFinite);

/// Σ x² (in float64) and the zero count of `n` finite float32 values.
void gs_squares_zeros_f32(const float *values, int64_t n, double *squares, int64_t *zeros);

/// The sum of `n` 32-bit counts (a range of a sketch table), without overflow.
uint64_t gs_sum_counts(const uint32_t *counts, int64_t n);

/// The instruction set the kernels run with on this machine: "avx512" (AVX-512 F, VL, DQ and BW
/// with FMA), "avx2+fma" or "baseline" (on x86-64, SSE2). The widest the CPU and OS support is
/// chosen on first use.
const char *gs_kernels_isa(void);

/// One copy of the kernels above, compiled for one instruction set.
typedef struct {
    const char *isa;
    bool (*summarize)(const float *values, int64_t n, double center, uint32_t *counts, gs_float_summary *out);
    void (*count_keys)(const float *values, int64_t n, uint32_t *counts);
    bool (*drift)(const float *a, const float *b, int64_t n, gs_drift_sums *out);
    void (*squares_zeros)(const float *values, int64_t n, double *squares, int64_t *zeros);
    uint64_t (*sum_counts)(const uint32_t *counts, int64_t n);
    bool (*drift_norms)(const float *a, const float *b, int64_t n, gs_drift_sums *out);
    bool (*summarize_drift)(
        const float *values, const float *before, int64_t n, double center, uint32_t *counts, gs_float_summary *out,
        gs_drift_sums *drift, bool *driftFinite);
} gs_kernel_table;

/// The copy of the kernels for `isa` (a name gs_kernels_isa returns), or NULL when this build has
/// no such copy or this CPU cannot run it (for tests, which compare every copy with the baseline).
const gs_kernel_table *gs_kernels_for_isa(const char *isa);

/// The baseline versions of the kernels above, whatever this CPU supports (for tests).
bool gs_summarize_baseline(const float *values, int64_t n, double center, uint32_t *counts, gs_float_summary *out);
void gs_count_keys_baseline(const float *values, int64_t n, uint32_t *counts);
bool gs_drift_baseline(const float *a, const float *b, int64_t n, gs_drift_sums *out);
void gs_squares_zeros_baseline(const float *values, int64_t n, double *squares, int64_t *zeros);
uint64_t gs_sum_counts_baseline(const uint32_t *counts, int64_t n);
bool gs_drift_norms_baseline(const float *a, const float *b, int64_t n, gs_drift_sums *out);
bool gs_summarize_drift_baseline(
    const float *values, const float *before, int64_t n, double center, uint32_t *counts, gs_float_summary *out,
    gs_drift_sums *drift, bool *driftFinite);

/// Keeps allocations below 4 MiB on the heap and up to 32 MiB of freed heap for reuse (glibc
/// otherwise maps every block of 128 KiB or more afresh, or hands freed memory back at once, and
/// the statistics allocate a 256 KiB sketch table per large tensor), in at most `heaps` heaps
/// (`heaps` threads allocate at once without waiting on each other). No-op outside glibc.
void gs_tune_allocator(int heaps);

/// Returns the heap's free memory to the system (between two files in a long-lived worker) when
/// it holds at least `threshold` free bytes; returns whether it did. No-op (false) outside glibc.
bool gs_release_free_memory(size_t threshold);

/// The glibc tunables a measuring process runs with: `current` (the environment's GLIBC_TUNABLES,
/// or NULL) with a per-thread cache of 2000 freed blocks of each size added
/// (`glibc.malloc.tcache_count=2000`; glibc's default is 7). Writes them to `out` and returns true;
/// false when `current` already sets that count (the user's choice stands) or they do not fit.
bool gs_allocator_tunables(const char *current, char *out, size_t size);

/// Whether this program was started by naming the dynamic loader (`ld.so ./gradscope ...`):
/// then /proc/self/exe is the loader, not the program.
bool gs_started_by_loader(void);

/// Runs this program again (`/proc/self/exe`, with `argv`) under ``gs_allocator_tunables``, which
/// glibc reads only when a program starts. Returns, changing nothing, when they are already set,
/// when `GRADSCOPE_ALLOCATOR_CACHE` is in the environment (set for the program run again, so it
/// never runs itself twice), outside glibc on Linux, when it was started by naming the dynamic
/// loader, or when the program cannot be run again.
void gs_run_with_allocator_cache(char *const argv[]);

#endif
