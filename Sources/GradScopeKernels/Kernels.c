// SIMD chunk kernels for the statistics. Written once (KernelBodies.h) with the
// compiler's vector extensions, for a vector width of 32 or 64 bytes, and
// compiled three times on x86-64: for the baseline instruction set (SSE2, 32-byte
// vectors split in two), for AVX2 with FMA (32-byte vectors) and for AVX-512
// (64-byte vectors); the version for the running CPU is chosen on first use, the
// widest it and its operating system support. The baseline copies keep their own
// names, and gs_kernels_for_isa hands out every copy this CPU can run, so tests
// can compare them all.

#include "GradScopeKernels.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#if defined(__linux__)
#include <link.h>
#include <sys/auxv.h>
#include <unistd.h>
#endif
#if defined(__GLIBC__)
#include <malloc.h>
#endif

typedef float f32x4 __attribute__((vector_size(16)));
typedef float f32x8 __attribute__((vector_size(32)));
typedef float f32x16 __attribute__((vector_size(64)));
typedef double f64x4 __attribute__((vector_size(32)));
typedef double f64x8 __attribute__((vector_size(64)));
typedef int32_t i32x8 __attribute__((vector_size(32)));
typedef int32_t i32x16 __attribute__((vector_size(64)));
typedef int64_t i64x8 __attribute__((vector_size(64)));
typedef uint32_t u32x8 __attribute__((vector_size(32)));
typedef uint32_t u32x16 __attribute__((vector_size(64)));
typedef uint16_t u16x8 __attribute__((vector_size(16)));
typedef uint16_t u16x16 __attribute__((vector_size(32)));
typedef uint64_t u64x8 __attribute__((vector_size(64)));
typedef uint64_t u64x16 __attribute__((vector_size(128)));

// Helpers are macros: a function taking or returning a vector would have a
// different calling convention in each copy.

// Lane-wise a < b ? a : b and a > b ? a : b, as selects of the comparison, which
// compile to one minps / maxps (minpd / maxpd) on x86. (The compiler's
// __builtin_elementwise_min and _max follow fmin, whose NaN rule costs two more
// instructions per use; the kernels refuse chunks with a NaN anyway.)
#define SELECT_(m, a, b) ((__typeof__(a))(((m) & (__typeof__(m))(a)) | (~(m) & (__typeof__(m))(b))))
#define MINV(a, b) ({ __typeof__(a) x_ = (a), y_ = (b); SELECT_(x_ < y_, x_, y_); })
#define MAXV(a, b) ({ __typeof__(a) x_ = (a), y_ = (b); SELECT_(x_ > y_, x_, y_); })

// The baseline copy.
#define GS_NAME(name) gs_##name##_baseline
#define GS_TARGET
#define GS_LINKAGE
#define GS_VECTOR_BYTES 32
#define GS_SEPARATE_DRIFT
#include "KernelBodies.h"
#undef GS_NAME
#undef GS_TARGET
#undef GS_LINKAGE
#undef GS_VECTOR_BYTES
#undef GS_SEPARATE_DRIFT

#if defined(__x86_64__) && defined(__clang__)
#define GS_X86 1
// The AVX2 + FMA copy.
#define GS_NAME(name) gs_##name##_avx2
#define GS_TARGET __attribute__((target("avx2,fma")))
#define GS_LINKAGE static
#define GS_VECTOR_BYTES 32
#include "KernelBodies.h"
#undef GS_NAME
#undef GS_TARGET
#undef GS_LINKAGE
#undef GS_VECTOR_BYTES

// The AVX-512 copy (foundation, VL, DQ, BW) with FMA. max(|a|, |b|) is one
// vrangepd (select the larger magnitude, sign cleared).
#define GS_NAME(name) gs_##name##_avx512
#define GS_TARGET __attribute__((target("avx512f,avx512vl,avx512dq,avx512bw,fma")))
#define GS_LINKAGE static
#define GS_VECTOR_BYTES 64
#define GS_MAX_ABS(a, b) ((f64x8)__builtin_ia32_rangepd512_mask((a), (b), 0xB, (a), (unsigned char)0xFF, 4))
#include "KernelBodies.h"
#undef GS_NAME
#undef GS_TARGET
#undef GS_LINKAGE
#undef GS_VECTOR_BYTES
#endif

#define TABLE(suffix, isa) \
    { isa, gs_summarize_##suffix, gs_count_keys_##suffix, gs_drift_##suffix, gs_squares_zeros_##suffix, gs_sum_counts_##suffix, \
      gs_drift_norms_##suffix, gs_summarize_drift_##suffix }
static const gs_kernel_table baselineTable = TABLE(baseline, "baseline");
#if GS_X86
static const gs_kernel_table avx2Table = TABLE(avx2, "avx2+fma");
static const gs_kernel_table avx512Table = TABLE(avx512, "avx512");
#endif

// The widest copy this CPU and its operating system support
// (__builtin_cpu_supports checks that the OS saves the AVX and AVX-512 registers).
static const gs_kernel_table *widest(void) {
#if GS_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
        __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("fma"))
        return &avx512Table;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return &avx2Table;
#endif
    return &baselineTable;
}

// NULL until first use.
static const gs_kernel_table *_Atomic chosen = NULL;

static const gs_kernel_table *choose(void) {
    const gs_kernel_table *table = chosen;
    if (table) return table;
    table = widest();
    chosen = table;
    return table;
}

const char *gs_kernels_isa(void) { return choose()->isa; }

const gs_kernel_table *gs_kernels_for_isa(const char *isa) {
    if (strcmp(isa, "baseline") == 0) return &baselineTable;
#if GS_X86
    const gs_kernel_table *best = widest();
    if (strcmp(isa, "avx2+fma") == 0 && best != &baselineTable) return &avx2Table;
    if (strcmp(isa, "avx512") == 0 && best == &avx512Table) return &avx512Table;
#endif
    return NULL;
}

bool gs_summarize_finite_f32(const float *values, int64_t n, double center, uint32_t *counts, gs_float_summary *out) {
    return choose()->summarize(values, n, center, counts, out);
}

void gs_count_keys_f32(const float *values, int64_t n, uint32_t *counts) { choose()->count_keys(values, n, counts); }

bool gs_drift_finite_f32(const float *a, const float *b, int64_t n, gs_drift_sums *out) { return choose()->drift(a, b, n, out); }

bool gs_drift_norms_finite_f32(const float *a, const float *b, int64_t n, gs_drift_sums *out) {
    return choose()->drift_norms(a, b, n, out);
}

bool gs_summarize_drift_finite_f32(
    const float *values, const float *before, int64_t n, double center, uint32_t *counts, gs_float_summary *out,
    gs_drift_sums *drift, bool *driftFinite) {
    return choose()->summarize_drift(values, before, n, center, counts, out, drift, driftFinite);
}

void gs_squares_zeros_f32(const float *values, int64_t n, double *squares, int64_t *zeros) {
    choose()->squares_zeros(values, n, squares, zeros);
}

uint64_t gs_sum_counts(const uint32_t *counts, int64_t n) { return choose()->sum_counts(counts, n); }

void gs_tune_allocator(int heaps) {
#if defined(__GLIBC__)
    mallopt(M_MMAP_THRESHOLD, 4 << 20);
    // And keep freed memory for the next tensor instead of returning it at once: 32 MiB in all,
    // shared among the heaps (each keeps up to its share). Each of four heaps keeping 32 MiB grew
    // the scan of 600 saves to 112 MB of all processes against 84 MB for 300 (1.33x); with the
    // share, 96 MB (one heap: 89 MB), at the same speed.
    mallopt(M_TRIM_THRESHOLD, heaps > 1 ? (32 << 20) / heaps : 32 << 20);
    // Few heaps (glibc's default is up to 8 per core). A process that describes files itself
    // (inspect, diff, a scan --no-isolation) gets one: its long-lived records, decoded by the
    // threads that describe and by the measuring threads, would end up scattered among each heap's
    // freed blocks, which no heap can hand back (5,000 saves of 298 tensors without isolation peaked
    // at 187 MB of all processes with one heap, 231 MB with two, 293 MB with four). A scan whose
    // files are described by workers gets a few: every block above the per-thread cache's largest
    // size (1,032 bytes: a small tensor's listed keys, a window's accumulators) takes its heap's
    // lock, and with one heap the measuring threads queued for it. With four, 300 saves took 9%
    // less time (1.415 -> 1.285 s, 6 alternated runs) and 5,000 saves 8.4-9.5 s against 10.4-11.9 s,
    // for 192-197 MB of all processes against 177 MB.
    mallopt(M_ARENA_MAX, heaps > 0 ? heaps : 1);
#else
    (void)heaps;
#endif
}

// malloc_trim hands back every free page inside the heap, one madvise per free block, and the
// next file faults the pages in again, zeroed: after each file of 298 datasets that took a
// describing worker about a third of its time. So it is called only when the heap holds more
// free memory than the threshold. mallinfo2 counts glibc's main heap only: a gradscope process has
// no other (M_ARENA_MAX = 1, gs_tune_allocator).
bool gs_release_free_memory(size_t threshold) {
#if defined(__GLIBC__)
    struct mallinfo2 info = mallinfo2();
    if (info.fordblks < threshold) return false;
    malloc_trim(0);
    return true;
#else
    (void)threshold;
    return false;
#endif
}

// Why a larger cache of freed blocks per thread: the scan's threads allocate and free millions of
// small blocks (descriptions, per-save records, histograms), and one thread often frees what another
// allocated. glibc's per-thread cache keeps 7 freed blocks of each size; past that, every allocation
// and free takes the heap's lock, and with several threads at work they queue for it (some 50,000
// waits in the kernel on a scan of 300 saves of 298 tensors). A cache of 2000 serves nearly all of
// them without the lock: on 5,000 saves of 298 tensors the scan took 25% less time (23.5 -> 17.7 s),
// for 4 MB more memory at most (192 -> 196 MB); 500 gained half of that, 65535 no more than 2000
// for 50 MB more. One heap stays (gs_tune_allocator): more heaps would also remove the lock, but a
// long run's records then lie scattered over several heaps' freed blocks (258 MB there).
static const char cacheSetting[] = "glibc.malloc.tcache_count=2000";
static const char cacheMarker[] = "GRADSCOPE_ALLOCATOR_CACHE";

bool gs_allocator_tunables(const char *current, char *out, size_t size) {
    if (!out || size == 0) return false;
    if (current && strstr(current, "glibc.malloc.tcache_count=")) return false;
    int n = current && *current ? snprintf(out, size, "%s:%s", current, cacheSetting) : snprintf(out, size, "%s", cacheSetting);
    return n > 0 && (size_t)n < size;
}

// Started as `ld.so ./gradscope ...`, the kernel started the loader as the program and no
// interpreter for it (no AT_BASE), and the loader then pointed AT_PHDR at the program's own
// headers, which ask for an interpreter (PT_INTERP). A statically linked program has neither
// an AT_BASE nor a PT_INTERP: /proc/self/exe is the program itself.
bool gs_started_by_loader(void) {
#if defined(__linux__)
    if (getauxval(AT_BASE) != 0) return false;
    const ElfW(Phdr) *headers = (const ElfW(Phdr) *)getauxval(AT_PHDR);
    unsigned long count = getauxval(AT_PHNUM);
    if (!headers) return false;
    for (unsigned long i = 0; i < count; i++)
        if (headers[i].p_type == PT_INTERP) return true;
    return false;
#else
    return false;
#endif
}

void gs_run_with_allocator_cache(char *const argv[]) {
#if defined(__GLIBC__) && defined(__linux__)
    if (!argv || !argv[0] || getenv(cacheMarker)) return;
    // Started by naming the dynamic loader, /proc/self/exe is the loader, which would take the
    // first argument for the program.
    if (gs_started_by_loader()) return;
    const char *current = getenv("GLIBC_TUNABLES");
    char tunables[4096];
    if (!gs_allocator_tunables(current, tunables, sizeof tunables)) return;
    char *saved = current ? strdup(current) : NULL;
    if (current && !saved) return;
    if (setenv(cacheMarker, "1", 1) == 0 && setenv("GLIBC_TUNABLES", tunables, 1) == 0) execv("/proc/self/exe", argv);
    // Not run again: on as before.
    if (saved) setenv("GLIBC_TUNABLES", saved, 1);
    else unsetenv("GLIBC_TUNABLES");
    unsetenv(cacheMarker);
    free(saved);
#else
    (void)argv;
#endif
}
